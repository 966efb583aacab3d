"""Write a Hugging Face checkpoint folder from a GGUF file (quantized tensors dequantized to
BF16), by inverting llama.cpp's conversion (tests/hf_folders.py): a real-sized folder to
measure `nanosmol run/bench -m DIR` on, without the hub.

    PYTHONPATH=. python tools/gguf_to_hf_folder.py ~/.cache/nanosmol/SmolLM2-135M-Instruct.Q4_1.gguf /tmp/smollm2-hf [--shards 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hf_folders import write_hf_folder  # noqa: E402
from nanosmol.gguf_file import GGUFFile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--shards", type=int, default=1)
    args = parser.parse_args()
    template = GGUFFile(args.gguf).metadata.get("tokenizer.chat_template")
    write_hf_folder(args.gguf, args.folder, shards=args.shards, chat_template=template)
    print(f"wrote {args.folder}: {sorted(p.name for p in args.folder.iterdir())}")


if __name__ == "__main__":
    main()
