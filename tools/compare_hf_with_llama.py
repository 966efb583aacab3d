"""A Hugging Face folder in nanosmol against llama.cpp's own conversion of it: the tensors
nanosmol presents (names, Q/K permutation, bytes) must equal those llama.cpp's converter wrote,
the logits must agree, and the speed is compared per CPU-second, one thread each, interleaved.

Convert first with llama.cpp's converter (its source is in the llama-cpp-python sdist, under
vendor/llama.cpp; it needs torch, transformers and sentencepiece):
    python vendor/llama.cpp/convert_hf_to_gguf.py FOLDER --outtype bf16 --outfile OUT.gguf
then:
    PYTHONPATH=. python tools/compare_hf_with_llama.py FOLDER OUT.gguf --isa native --llama VENV
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

from isa import ISAS, describe_target, reexec_for

TEXT = "The capital of France is Paris. It is known for the Eiffel Tower, museums and food. " * 3


def per_cpu_second(run, n_tokens: int) -> float:
    """Median over 3 runs of tokens per CPU-second of this thread's process."""
    import numpy as np

    rates = []
    for _ in range(3):
        start = time.process_time()
        run()
        rates.append(n_tokens / (time.process_time() - start))
    return float(np.median(rates))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("converted", type=Path, help="llama.cpp's conversion of the folder")
    parser.add_argument("--isa", choices=ISAS, required=True)
    parser.add_argument("--llama", type=Path, required=True, help="venv of llama-cpp-python built for --isa")
    args = parser.parse_args()
    reexec_for(args.isa)
    sys.path.append(glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))[0])  # after ours
    import numpy as np
    from llama_cpp import Llama

    import nanosmol
    from nanosmol.checkpoint import open_checkpoint

    folder, gguf = open_checkpoint(args.folder), open_checkpoint(args.converted)
    differing = [n for n, t in folder.tensors.items() if n not in gguf.tensors or gguf.tensors[n].type != t.type
                 or not np.array_equal(gguf.tensor_data(n).reshape(-1), folder.tensor_data(n).reshape(-1))]
    print(f"tensors: {len(folder.tensors)} presented from the folder, {len(differing)} differ from llama.cpp's "
          f"conversion {differing[:3]}")

    ours, ours_gguf = nanosmol.load(args.folder, n_ctx=512, n_threads=1), nanosmol.load(args.converted, n_ctx=512, n_threads=1)
    print(f"hyperparameters equal: {ours.config == ours_gguf.config}")
    llm = Llama(str(args.converted), n_ctx=512, n_batch=512, n_ubatch=512, n_threads=1, n_threads_batch=1,
                logits_all=True, verbose=False)
    tokens = ours.tokenize(TEXT)
    print(f"tokens equal to llama.cpp's: {tokens == llm.tokenize(TEXT.encode(), add_bos=ours.tokenizer.add_bos)}")
    logits = ours.logits(tokens)
    llm.reset()
    llm.eval(tokens)
    theirs = np.array(llm.scores[: len(tokens)])
    error = np.abs(logits - theirs).max() / np.abs(theirs).max()
    print(f"logits of {len(tokens)} tokens vs llama.cpp: max error {error:.4f} of max|logit|, argmax agrees on "
          f"{np.mean(logits.argmax(1) == theirs.argmax(1)):.0%}; vs nanosmol on the converted file: "
          f"{np.abs(logits - ours_gguf.logits(tokens)).max():.2g}")

    print(f"\n{describe_target()}; one thread each; tokens per CPU-second, medians of 3")
    print("| test | nanosmol (folder) | llama.cpp (its BF16 conversion) | ratio |\n|---|---|---|---|")
    prompt = tokens[:64]

    def decode(step):
        for t in prompt[:16]:
            step(t)

    tests = {
        "pp64": (lambda: ours.logits(prompt), lambda: (llm.reset(), llm.eval(prompt)), 64),
        "tg16": (lambda: (ours.reset(), decode(lambda t: ours.transformer.forward(np.array([t])))),
                 lambda: (llm.reset(), decode(lambda t: llm.eval([t]))), 16),
    }
    for name, (a, b, n) in tests.items():
        x, y = per_cpu_second(a, n), per_cpu_second(b, n)
        print(f"| {name} | {x:.1f} | {y:.1f} | {x / y:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
