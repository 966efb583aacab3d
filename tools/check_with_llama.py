"""`nanosmol convert` checked with llama.cpp: does llama.cpp load and run each converted file
with nanosmol's logits, and (with --converter) is the file the one llama.cpp's own tools write?

FOLDER is converted to each of --types (nanosmol convert, in a temporary folder or --out).
Each file is loaded in llama.cpp (llama-cpp-python from --llama, in this process after our
packages) and in nanosmol, and their logits are compared on a few texts: max|diff| as a share
of max|logit| and how often the top token agrees. With --converter, llama.cpp's
convert_hf_to_gguf.py (it needs torch, transformers and sentencepiece: a venv of its own)
converts FOLDER too: to F32/F16/BF16/Q8_0 itself, to the other types through
llama_model_quantize from its automatic type, and each file is compared with ours.

    python tools/check_with_llama.py FOLDER --types F16,Q8_0,Q4_K_M --llama /work/venvs/llama-avx512 \\
        --converter /work/venvs/convert/bin/python:vendor/llama.cpp/convert_hf_to_gguf.py
"""

from __future__ import annotations

import argparse
import filecmp
import glob
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from compare_quantize import LLAMA_QUANTIZE, TEXT, compare_logits

REPO = Path(__file__).resolve().parents[1]
TEXTS = (TEXT, "def add(a, b):\n    return a + b  # 3 + 4 = 7\n",
         "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")


def compare_with_converter(ours: Path, theirs: Path) -> str:
    """'identical files', or what differs: metadata keys, values, tensor order, tensors."""
    from nanosmol.gguf_file import GGUFFile

    if filecmp.cmp(ours, theirs, shallow=False):
        return "identical files"
    a, b = GGUFFile(ours), GGUFFile(theirs)
    notes = []
    if list(a.metadata) != list(b.metadata):
        notes.append(f"keys only ours {sorted(set(a.metadata) - set(b.metadata))}, only theirs "
                     f"{sorted(set(b.metadata) - set(a.metadata))}, same order {list(a.metadata) == list(b.metadata)}")
    values = [k for k in a.metadata if k in b.metadata and (a.metadata[k], a.metadata_types[k]) != (
        b.metadata[k], b.metadata_types[k])]
    if values:
        notes.append(f"values differ: {', '.join(values)}")
    if list(a.tensors) != list(b.tensors):
        notes.append("tensor order differs")
    differ = [n for n, t in b.tensors.items() if n not in a.tensors or a.tensors[n].type != t.type
              or not np.array_equal(a.tensor_data(n), b.tensor_data(n))]
    notes.append(f"{len(b.tensors) - len(differ)} of {len(b.tensors)} tensors identical"
                 + (f", differing: {differ[:4]}" if differ else ""))
    return "; ".join(notes)


def llama_cpp_file(folder: Path, qtype: str, out: Path, converter: str, llama: Path) -> Path:
    """llama.cpp's file of the folder in qtype: its converter's, or llama_model_quantize of that."""
    from nanosmol.quants.mixes import find_mix

    python, script = converter.split(":", 1)
    outtype = qtype.lower() if qtype in CONVERTER_TYPES else "auto"
    converted = out / f"llama-{outtype}.gguf"
    if not converted.exists():
        subprocess.run([python, script, str(folder), "--outtype", outtype, "--outfile", str(converted)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if qtype in CONVERTER_TYPES:
        return converted
    quantized = out / f"llama-{qtype}.gguf"
    subprocess.run([str(llama / "bin" / "python"), "-c", LLAMA_QUANTIZE, str(converted), str(quantized), "2",
                    str(int(find_mix(qtype).file_type))], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return quantized


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--types", default="F16,Q8_0,Q4_K_M,Q5_K_M,Q6_K,Q3_K_M,Q2_K,Q4_0,Q4_1,Q5_0,Q5_1")
    parser.add_argument("--llama", type=Path, default=Path("/work/venvs/llama-avx512"),
                        help="venv of llama-cpp-python (bash ../shared/llama-cpp/build.sh)")
    parser.add_argument("--converter", metavar="PYTHON:SCRIPT",
                        help="a python with torch and transformers, and llama.cpp's convert_hf_to_gguf.py")
    parser.add_argument("--out", type=Path, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    sys.path.append(glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))[0])  # after ours

    from nanosmol.convert import convert_folder

    out = args.out or Path(tempfile.mkdtemp(prefix="check-with-llama-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.folder}: nanosmol convert, then llama.cpp ({args.llama.name}) and nanosmol on each file")
    for qtype in args.types.split(","):
        ours = out / f"nanosmol-{qtype}.gguf"
        mix, notes = convert_folder(args.folder, ours, qtype)
        print(f"{mix.name} ({ours.stat().st_size / 2**20:.1f} MiB): {compare_logits(ours, TEXTS)}", flush=True)
        for note in notes:
            print(f"  note: {note}")
        if args.converter:
            theirs = llama_cpp_file(args.folder, mix.name, out, args.converter, args.llama)
            print(f"  vs llama.cpp's {theirs.name}: {compare_with_converter(ours, theirs)}", flush=True)


if __name__ == "__main__":
    main()
