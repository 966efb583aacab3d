"""Record transformers' logits on the Hugging Face folders that tests/hf_folders.py makes from
the GGUF fixtures: the second oracle of tests/test_hf_checkpoint.py (the first is llama.cpp's
logits on the GGUF the folder came from), and the only one for configs llama.cpp's conventions
do not cover: a SmolLM3 no_rope_layers list that is not every 4th layer, linear RoPE scaling.

Needs torch and transformers, which are NOT project dependencies (a separate venv will do):
    pip install torch==2.13.0 transformers
    PYTHONPATH=. python tools/make_hf_fixtures.py [--out tests/data/hf_logits.npz]
transformers computes in float32 (BF16 weights widened), eager attention, one batch per sequence.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MICRO = REPO.parent / "shared" / "fixtures" / "micro"
sys.path.insert(0, str(REPO / "tests"))

from hf_folders import ORACLE_CASES, write_hf_folder  # noqa: E402


def transformers_logits(folder: Path, tokens: list[int]) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].numpy().astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "hf_logits.npz")
    args = parser.parse_args()
    index = {e["file"]: e["seqs"] for e in json.loads((MICRO / "index.json").read_text())}
    arrays = {}
    with tempfile.TemporaryDirectory() as tmp:
        for case, (gguf, config) in ORACLE_CASES.items():
            folder = write_hf_folder(MICRO / gguf, Path(tmp) / case, config=config)
            for seq, tokens in index[gguf].items():
                arrays[f"{case}.{seq}"] = transformers_logits(folder, tokens)
                print(case, seq, arrays[f"{case}.{seq}"].shape)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
