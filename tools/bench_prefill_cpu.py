"""Prefill on a busy host: prompt tokens per CPU-second, one thread each, nanosmol and llama.cpp
interleaved in one process (medians of 3). Wall clock means nothing when other jobs share the
cores; a single thread's CPU time still compares the two engines' work.

    python tools/bench_prefill_cpu.py models --isa avx2 --llama VENV_AVX2 --files 3b-q4km,135m-q41
"""

from __future__ import annotations

import argparse
import glob
import sys
import time
from pathlib import Path

from isa import ISAS, describe_target, reexec_for

DEFAULT_MODEL = Path("~/.cache/nanosmol/SmolLM2-135M-Instruct.Q4_1.gguf").expanduser()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--isa", choices=ISAS, required=True)
    parser.add_argument("--llama", type=Path, required=True, help="venv of llama-cpp-python built for --isa")
    parser.add_argument("--files", default="135m-q41,135m-q8,135m-q4km,3b-q4km,3b-q8")
    args = parser.parse_args()
    reexec_for(args.isa)
    sys.path.append(glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))[0])  # after ours
    import numpy as np
    from llama_cpp import Llama

    import nanosmol

    print(describe_target() + "; one thread each; prompt tokens per CPU-second, medians of 3\n")
    print("| file | test | nanosmol | llama.cpp | ratio |\n|---|---|---|---|---|")
    for stem in args.files.split(","):
        path = DEFAULT_MODEL if stem == "135m-q41" else args.folder / f"{stem}.gguf"
        model = nanosmol.load(path, n_ctx=1024, n_threads=1)
        llm = Llama(str(path), n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=1, n_threads_batch=1, verbose=False)
        for n in (64, 512):
            tokens = np.random.default_rng(n).integers(0, model.config.vocab_size, n)
            ours, theirs = [], []
            for _ in range(3):
                model.reset()
                start = time.process_time()
                model.transformer.forward(tokens)
                ours.append(n / (time.process_time() - start))
                llm.reset()
                start = time.process_time()
                llm.eval(list(tokens))
                theirs.append(n / (time.process_time() - start))
            a, b = np.median(ours), np.median(theirs)
            print(f"| {stem} | pp{n} | {a:.1f} | {b:.1f} | {a / b:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
