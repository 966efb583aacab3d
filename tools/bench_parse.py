"""Time GGUF metadata parsing (and, for comparison, gguf-py's GGUFReader) on the given files.

    python tools/bench_parse.py ../shared/fixtures/vocab/ggml-vocab-llama-bpe.gguf MODEL.gguf [--reader]
"""

from __future__ import annotations

import argparse

from nanosmol.gguf_file import GGUFFile
from timing import best_time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reader", action="store_true", help="also time gguf.GGUFReader (slow)")
    args = parser.parse_args()
    print("| file | tokens | merges | nanosmol parse | gguf-py GGUFReader |")
    print("|---|---|---|---|---|")
    for path in args.files:
        parsed = GGUFFile(path)
        tokens = len(parsed.metadata.get("tokenizer.ggml.tokens") or [])
        merges = len(parsed.metadata.get("tokenizer.ggml.merges") or [])
        ours = best_time(lambda: GGUFFile(path), args.repeats, warmup=False)
        reader = "-"
        if args.reader:
            from gguf import GGUFReader

            reader = f"{best_time(lambda: GGUFReader(path), 1, warmup=False):.2f} s"
        print(f"| {path.rsplit('/', 1)[-1]} | {tokens:,} | {merges:,} | {ours * 1000:.0f} ms | {reader} |")


if __name__ == "__main__":
    main()
