"""Decode at depth: nanosmol and llama.cpp with the same KV cache types, side by side in one process.

For each file and cache type, both engines get their cache filled to each depth, then decode
-n tokens from there, alternating who goes first, for --rounds rounds; the table gives
medians and their ratio, in tokens per second and per CPU-second (the process's CPU time
over the run, which the other engine's idle threads do not add to): on a host other jobs
keep busy, only the second is worth comparing. llama.cpp fills its cache by prefill of random tokens (once per
cache type, extended depth by depth, rolled back to the depth after each run); nanosmol by
`bench.fill_cache`, random rows stored as prefill stores them (attention's cost does not
depend on the values). llama.cpp runs with flash attention, which its quantized V cache needs.
Same file, threads and instruction set; llama.cpp from llama-cpp-python built for it
(`bash ../shared/llama-cpp/build.sh avx2|avx512 VENV`):

    python tools/bench_kv_depth.py models --isa native --llama VENV_AVX512 --depths 4096,16384
"""

from __future__ import annotations

import argparse
import glob
import statistics
import sys
import time
from pathlib import Path

from isa import ISAS, describe_target, reexec_for

DEFAULT_MODEL = Path.home() / ".cache" / "nanosmol" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="holds the files named by --files (135m-q41: the default model)")
    parser.add_argument("--isa", choices=ISAS, required=True)
    parser.add_argument("--llama", type=Path, required=True, help="venv of llama-cpp-python built for --isa")
    parser.add_argument("--files", default="135m-q41")
    parser.add_argument("--types", default="f16,q8_0,q4_0", help="KV cache types (K and V alike)")
    parser.add_argument("--depths", default="4096,16384")
    parser.add_argument("-n", type=int, default=16, help="decode steps per run")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


class Nanosmol:
    name = "nanosmol"

    def __init__(self, path: Path, threads: int, n_ctx: int, cache_type: str):
        import nanosmol
        from nanosmol import bench

        self.model = nanosmol.load(path, n_ctx=n_ctx, n_threads=threads, cache_type_k=cache_type,
                                   cache_type_v=cache_type)
        self.bench = bench

    def fill(self, depth: int) -> None:
        self.bench.fill_cache(self.model, depth)

    def decode(self, n: int, depth: int) -> float:
        return self.bench.time_decode(self.model, n, depth)


class LlamaCpp:
    name = "llama.cpp"

    def __init__(self, path: Path, threads: int, n_ctx: int, cache_type: str):
        from llama_cpp import Llama

        from nanosmol.kv.types import CACHE_TYPES  # GGML's type ids, which llama.cpp takes

        code = CACHE_TYPES[cache_type]
        self.llm = Llama(str(path), n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                         type_k=code, type_v=code, flash_attn=True, verbose=False)

    def fill(self, depth: int) -> None:
        """Prefill random tokens up to depth, after those already in the cache."""
        import numpy as np

        have = self.llm.n_tokens
        self.llm.eval(np.random.default_rng(depth).integers(100, self.llm.n_vocab(), depth - have).tolist())

    def decode(self, n: int, depth: int) -> float:
        """One step, then n timed ones, from the cache holding `depth` tokens (eval drops the rest)."""
        self.llm.n_tokens = depth
        self.llm.eval([1])
        start = time.perf_counter()
        for i in range(n):
            self.llm.eval([100 + i])
        return n / (time.perf_counter() - start)


def run(engine, n: int, depth: int) -> tuple[float, float]:
    """(tokens per second, tokens per CPU-second) of n decode steps (and the untimed first) at depth."""
    cpu = time.process_time()
    per_second = engine.decode(n, depth)
    return per_second, (n + 1) / (time.process_time() - cpu)


def main():
    args = parse_args()
    reexec_for(args.isa)
    site = glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))
    if not site:
        sys.exit(f"no llama-cpp-python venv at {args.llama}: bash ../shared/llama-cpp/build.sh ISA {args.llama}")
    sys.path.append(site[0])  # after ours: our numpy, its llama_cpp

    depths = sorted(int(d) for d in args.depths.split(","))
    print(f"{describe_target()}; llama.cpp from {args.llama} (flash attention); {args.threads} threads, "
          f"tg{args.n} at each depth, medians of {args.rounds} rounds\n")
    print("| file | KV cache (K = V) | depth | nanosmol t/s | llama.cpp t/s | ratio | nanosmol t/CPU-s | "
          "llama.cpp t/CPU-s | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stem in args.files.split(","):
        path = DEFAULT_MODEL if stem == "135m-q41" else args.folder / f"{stem}.gguf"
        for cache_type in args.types.split(","):
            n_ctx = depths[-1] + args.n + 256
            engines = [Nanosmol(path, args.threads, n_ctx, cache_type), LlamaCpp(path, args.threads, n_ctx, cache_type)]
            for depth in depths:
                for engine in engines:
                    engine.fill(depth)
                    engine.decode(2, depth)  # warm-up
                samples = {e.name: [] for e in engines}
                for r in range(args.rounds):
                    for engine in engines[:: 1 if r % 2 == 0 else -1]:
                        samples[engine.name].append(run(engine, args.n, depth))
                (ours, ours_cpu), (theirs, theirs_cpu) = (
                    [statistics.median(column) for column in zip(*samples[e.name])] for e in engines)
                print(f"| {stem} | {cache_type} | {depth} | {ours:.1f} | {theirs:.1f} | {ours / theirs:.2f}x | "
                      f"{ours_cpu:.1f} | {theirs_cpu:.1f} | {ours_cpu / theirs_cpu:.2f}x |", flush=True)
            del engines


if __name__ == "__main__":
    main()
