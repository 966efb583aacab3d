"""Perplexity with each KV cache type, nanosmol and llama.cpp, scored the same way.

Both score the same windows (`nanosmol.perplexity.perplexity_windows`: windows of --ctx
tokens, the second half of each scored, BOS first) with K and V in each of --types;
llama.cpp's logits come from llama-cpp-python (flash attention, which its quantized V
cache needs) on the same token ids. The table gives each perplexity and its change from
the f32 cache of the same engine:

    python tools/perplexity_kv.py TEXTFILE --llama VENV_AVX512 [-m FILE] [--ctx 2048]
"""

from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("textfile", type=Path)
    parser.add_argument("--llama", type=Path, help="venv of llama-cpp-python (leave out: nanosmol only)")
    parser.add_argument("-m", "--model", type=Path, help="GGUF file (default: the default model)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--types", default="f32,f16,q8_0,q4_0", help="KV cache types (K and V alike); f32 first")
    parser.add_argument("-t", "--threads", type=int, default=2)
    return parser.parse_args()


class LlamaCppLogits:
    """What perplexity_windows asks of a model, answered by llama.cpp (nanosmol's tokenizer: same ids)."""

    def __init__(self, nano, path: Path, ctx: int, cache_type: str, threads: int):
        from llama_cpp import Llama

        from nanosmol.kv.types import CACHE_TYPES  # GGML's type ids, which llama.cpp takes

        self.tokenize, self.tokenizer = nano.tokenize, nano.tokenizer
        code = CACHE_TYPES[cache_type]
        self.llm = Llama(str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                         type_k=code, type_v=code, flash_attn=True, logits_all=True, verbose=False)

    def logits(self, ids) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], np.float32)


def perplexity(model, text: str, ctx: int) -> float:
    from nanosmol.perplexity import perplexity_windows

    return [ppl for _, _, ppl in perplexity_windows(model, text, ctx)][-1]


def main():
    args = parse_args()
    import nanosmol

    if args.llama:
        site = glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))
        if not site:
            sys.exit(f"no llama-cpp-python venv at {args.llama}")
        sys.path.append(site[0])  # after ours: our numpy, its llama_cpp
    text = args.textfile.read_text(errors="replace")
    print(f"{args.textfile}, windows of {args.ctx} tokens, {args.threads} threads\n")
    print("| KV cache (K = V) | nanosmol | vs f32 | llama.cpp | vs f32 |")
    print("|---|---|---|---|---|")
    base = {}
    for cache_type in args.types.split(","):
        nano = nanosmol.load(args.model, n_ctx=args.ctx, n_threads=args.threads, cache_type_k=cache_type,
                             cache_type_v=cache_type)
        row = {"nanosmol": perplexity(nano, text, args.ctx)}
        if args.llama:
            row["llama.cpp"] = perplexity(LlamaCppLogits(nano, nano.path, args.ctx, cache_type, args.threads), text,
                                          args.ctx)
        base = base or row
        cells = [f"{row[e]:.4f} | {100 * (row[e] / base[e] - 1):+.2f}%" if e in row else "- | -"
                 for e in ("nanosmol", "llama.cpp")]
        print(f"| {cache_type} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
