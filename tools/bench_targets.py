"""The issue-6 speed table: `nanosmol bench` on the five target files next to llama.cpp's figures.

llama.cpp's figures are those in ../shared/ENGINEERING.md (llama-bench, 2 threads, this
machine class). Make the synthetic files first, then point this script at their folder:

    D=~/.cache/nanosmol/SmolLM2-135M-Instruct.Q4_1.gguf    # the default model
    python tools/make_synthetic.py smollm2-135m Q8_0 models/135m-q8.gguf --vocab $D
    python tools/make_synthetic.py smollm2-135m Q4_K_M models/135m-q4km.gguf --vocab $D
    python tools/make_synthetic.py smollm3-3b Q4_K_M models/3b-q4km.gguf
    python tools/make_synthetic.py smollm3-3b Q8_0 models/3b-q8.gguf
    python tools/bench_targets.py models
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

# file stem: (llama.cpp prefill tok/s, the prompt length it was measured at, decode tok/s)
LLAMA_CPP = {
    "135m-q41": (284, 128, 121), "135m-q8": (510, 128, 100), "135m-q4km": (432, 128, 115),
    "3b-q4km": (25.6, 64, 8.76), "3b-q8": (23.6, 64, 5.63),
}
DEFAULT_MODEL = Path.home() / ".cache" / "nanosmol" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def bench(path: Path, small: bool, threads: int) -> list[dict]:
    prompts, gen, reps = ("64,128,512", "32", "3") if small else ("64,512", "16", "2")
    cmd = ["nanosmol", "bench", "-m", str(path), "-p", prompts, "-n", gen, "-t", str(threads), "-r", reps,
           "-c", "4096", "--json"]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="holds 135m-q8.gguf, 135m-q4km.gguf, 3b-q4km.gguf, 3b-q8.gguf")
    parser.add_argument("-t", "--threads", type=int, default=2)
    args = parser.parse_args()
    print("| file | test | nanosmol tok/s | llama.cpp tok/s | ratio | load | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for stem, (pp_ref, pp_at, tg_ref) in LLAMA_CPP.items():
        path = DEFAULT_MODEL if stem == "135m-q41" else args.folder / f"{stem}.gguf"
        if not path.exists():
            print(f"| {stem} | missing: {path} |", flush=True)
            continue
        for r in bench(path, stem.startswith("135m"), args.threads):
            ref = tg_ref if r["test"].startswith("tg") else pp_ref
            ref_note = "" if r["test"].startswith("tg") or r["test"] == f"pp{pp_at}" else f" (pp{pp_at})"
            print(f"| {stem} | {r['test']} | {r['tokens_per_second']:.1f} ± {r['std']:.1f} | {ref}{ref_note} | "
                  f"{r['tokens_per_second'] / ref:.2f}x | {r['load_seconds']:.2f} s | {r['peak_rss'] / 2**20:.0f} MiB |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
