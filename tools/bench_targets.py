"""The speed table: nanosmol and llama.cpp side by side, in one process, on one instruction set.

Both engines load the same file with the same threads; every test runs nanosmol then llama.cpp
(alternating who goes first), for --rounds rounds, and the table gives medians and their
ratio, the GB/s of weights each decode streams and its share of the host's read bandwidth
(measured here, first), and the GFLOP/s of each prefill (2 x weights x tokens) with its share
of the host's compute peak for the file's main weight type (tools/peak.py, measured here
too: the int8 step, for Q8_0 the faster of llama.cpp's sign trick and the int16 step, or float
FMAs). The test `chat` is the time to the first token of a fresh chat turn in milliseconds:
nanosmol renders the file's template around a system prompt and one question, tokenizes,
prefills and picks the token; llama.cpp prefills the same token ids and picks the token.

llama.cpp comes from llama-cpp-python built for the same instruction set
(`bash ../shared/llama-cpp/build.sh avx2|avx512 VENV`), never from the project's dependencies:

    python tools/make_synthetic.py smollm3-3b Q4_K_M models/3b-q4km.gguf    # and the others:
    python tools/make_synthetic.py smollm3-3b Q8_0 models/3b-q8.gguf       # see make_synthetic.py
    python tools/bench_targets.py models --isa avx2 --llama VENV_AVX2
    python tools/bench_targets.py models --isa native --llama VENV_AVX512
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
import time
from pathlib import Path

from isa import ISAS, describe_target, reexec_for

FILES = ("135m-q41", "135m-q8", "135m-q4km", "3b-q4km", "3b-q8")  # stems in the folder; 135m-q41: the default model
CHAT = [{"role": "system", "content": "You are a helpful assistant. Answer in one sentence."},
        {"role": "user", "content": "Why is the sky blue, and why are sunsets red?"}]
DEFAULT_MODEL = Path.home() / ".cache" / "nanosmol" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="holds 135m-q8.gguf, 135m-q4km.gguf, 3b-q4km.gguf, 3b-q8.gguf")
    parser.add_argument("--isa", choices=ISAS, required=True)
    parser.add_argument("--llama", type=Path, required=True, help="venv of llama-cpp-python built for --isa")
    parser.add_argument("--files", default=",".join(FILES))
    parser.add_argument("--tests", default="pp64,pp512,tg32,chat")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


class Nanosmol:
    name = "nanosmol"

    def __init__(self, path: Path, threads: int):
        import nanosmol
        from nanosmol import bench

        self.model, self.bench = nanosmol.load(path, n_ctx=1024, n_threads=threads), bench
        self.vocab = self.model.config.vocab_size

    def prefill(self, tokens) -> float:
        return self.bench.time_prefill(self.model, len(tokens))

    def decode(self, n: int) -> float:
        return self.bench.time_decode(self.model, n)

    def chat_ids(self) -> list[int]:
        return self.model.tokenize(self.model.chat_prompt(CHAT), special=True)

    def first_token(self, ids) -> float:
        self.model.reset()
        start = time.perf_counter()
        list(self.model.chat(CHAT, max_tokens=1, temperature=0.0))
        return time.perf_counter() - start


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int):
        from llama_cpp import Llama

        self.llm = Llama(str(path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=threads,
                         n_threads_batch=threads, verbose=False)

    def prefill(self, tokens) -> float:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(list(tokens))
        return len(tokens) / (time.perf_counter() - start)

    def decode(self, n: int) -> float:
        """n single-token steps after one, as nanosmol's bench (and llama-bench's tg) does."""
        self.llm.reset()
        self.llm.eval([1])
        start = time.perf_counter()
        for i in range(n):
            self.llm.eval([100 + i])
        return n / (time.perf_counter() - start)

    def first_token(self, ids) -> float:
        import numpy as np

        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),)).argmax()
        return time.perf_counter() - start


def run_test(engine, test: str, vocab: int, chat_ids: list[int]) -> float:
    import numpy as np

    if test == "chat":
        return engine.first_token(chat_ids)
    n = int(test[2:])
    if test.startswith("pp"):
        return engine.prefill(np.random.default_rng(n).integers(0, vocab, n))
    return engine.decode(n)


def weight_bytes(path: Path) -> tuple[int, int, str]:
    """(bytes a decode step reads, weights a prefill multiplies per token, the type holding
    most of them): all matrices but the embedding table, which is only looked up, unless it
    is also the output."""
    from collections import Counter

    from nanosmol.gguf_file import GGUFFile

    with GGUFFile(path) as f:
        tied = "output.weight" not in f.tensors
        used = [t for name, t in f.tensors.items() if tied or name != "token_embd.weight"]
        by_type = Counter()
        for t in used:
            if len(t.shape) == 2:
                by_type[t.type.name] += t.n_elements
        return sum(t.nbytes for t in used), sum(by_type.values()), by_type.most_common(1)[0][0]


def peak_of(peaks: dict, main_type: str) -> tuple[str, float | None]:
    """The host peak (tools/peak.py) that bounds a prefill of weights mostly of main_type: for
    Q8_0 the faster of the sign trick and the int16 step (ours where it takes int16 tiles)."""
    if main_type in ("F32", "F16", "BF16"):
        return "f32", peaks["f32"]
    if main_type != "Q8_0":
        return "int8", peaks["int8"]
    return max([("q8_0", peaks["q8_0"]), ("int16", peaks["int16"])], key=lambda kv: kv[1] or 0.0)


def main():
    args = parse_args()
    reexec_for(args.isa)
    site = glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))
    if not site:
        sys.exit(f"no llama-cpp-python venv at {args.llama}: bash ../shared/llama-cpp/build.sh ISA {args.llama}")
    sys.path.append(site[0])  # after ours: our numpy, its llama_cpp

    from bandwidth import read_bandwidth
    from peak import compute_peaks

    bandwidth, peaks = read_bandwidth(args.threads), compute_peaks(args.threads)
    measured = ", ".join(f"{kind} {value:.0f}" for kind, value in peaks.items() if value is not None)
    print(f"{describe_target()}; llama.cpp from {args.llama}; {args.threads} threads, "
          f"medians of {args.rounds} rounds; read bandwidth {bandwidth:.1f} GB/s; "
          f"compute peaks (tools/peak.py, G operations/s): {measured}\n")
    print("| file | test | nanosmol t/s | llama.cpp t/s | ratio | nanosmol | llama.cpp |")
    print("|---|---|---|---|---|---|---|")
    for stem in args.files.split(","):
        path = DEFAULT_MODEL if stem == "135m-q41" else args.folder / f"{stem}.gguf"
        if not path.exists():
            print(f"| {stem} | missing: {path} |", flush=True)
            continue
        nbytes, n_weights, main_type = weight_bytes(path)
        peak_name, peak = peak_of(peaks, main_type)
        engines = [Nanosmol(path, args.threads), LlamaCpp(path, args.threads)]
        vocab, chat_ids = engines[0].vocab, engines[0].chat_ids()
        for test in args.tests.split(","):
            for engine in engines:
                run_test(engine, test if test == "chat" else test[:2] + "8", vocab, chat_ids)  # warm-up: compiles, pages in
            samples = {e.name: [] for e in engines}
            for r in range(args.rounds):
                for engine in engines[:: 1 if r % 2 == 0 else -1]:
                    samples[engine.name].append(run_test(engine, test, vocab, chat_ids))
            ours, theirs = (statistics.median(samples[e.name]) for e in engines)

            if test == "chat":  # seconds: lower is better
                print(f"| {stem} | chat: first token ({len(chat_ids)}-token prompt) | {1e3 * ours:.0f} ms | "
                      f"{1e3 * theirs:.0f} ms | {theirs / ours:.2f}x | | |", flush=True)
                continue

            def rate(tps):
                if test.startswith("tg"):
                    gbs = tps * nbytes / 1e9
                    return f"{gbs:.1f} GB/s ({100 * gbs / bandwidth:.0f}%)"
                flops = 2 * n_weights * tps / 1e9
                return f"{flops:.0f} GFLOP/s" + (f" ({100 * flops / peak:.0f}% of {peak_name})" if peak else "")

            print(f"| {stem} | {test} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x | {rate(ours)} | {rate(theirs)} |",
                  flush=True)
        del engines


if __name__ == "__main__":
    main()
