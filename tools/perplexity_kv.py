"""Perplexity with each KV cache type, nanosmol and llama.cpp, scored the same way.

Both score the same windows (`nanosmol.perplexity.window_nlls`: windows of --ctx tokens, the
second half of each scored, BOS first) with the K and V types of each of --types ("q8_0"
for K and V alike, "q4_0/f16" for K q4_0 with V f16); llama.cpp's logits come from
llama-cpp-python on the same token ids. Its quantized V cache needs flash attention, and
with flash attention llama.cpp casts an f32 cache to f16 (build_attn_mha), so its f32 row
runs without flash attention and every other row with it.

The table gives each perplexity and its change from the first type's (f32) on the same
engine, with the standard error of that change over the scored tokens: both runs score
the same tokens, so the error is that of the mean per-token difference. It is large even
for a tiny change of the cache because the matrix products round their activations to
int8: any change of the inputs flips some roundings, whose effect (~2% of the largest
logit here) dwarfs an f16 rounding of keys and values.

    python tools/perplexity_kv.py TEXTFILE [--llama VENV_AVX512] [-m FILE] [--ctx 2048]
"""

from __future__ import annotations

import argparse
import glob
import math
import sys
from pathlib import Path

import numpy as np


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("textfile", type=Path, nargs="+", help="texts, scored one after another")
    parser.add_argument("--llama", type=Path, help="venv of llama-cpp-python (leave out: nanosmol only)")
    parser.add_argument("-m", "--model", type=Path, help="GGUF file (default: the default model)")
    parser.add_argument("--ctx", type=int, default=2048)
    parser.add_argument("--types", default="f32,f16,q8_0,q4_0",
                        help="KV cache types, K/V or one for both; the first is the baseline")
    parser.add_argument("-t", "--threads", type=int, default=2)
    return parser.parse_args()


def cache_types(spec: str) -> tuple[str, str]:
    k, _, v = spec.partition("/")
    return k, v or k


class LlamaCppLogits:
    """What window_nlls asks of a model, answered by llama.cpp (nanosmol's tokenizer: same ids)."""

    def __init__(self, nano, path: Path, ctx: int, k: str, v: str, threads: int):
        from llama_cpp import Llama

        from nanosmol.kv.types import CACHE_TYPES  # GGML's type ids, which llama.cpp takes

        self.tokenize, self.tokenizer = nano.tokenize, nano.tokenizer
        self.flash_attn = (k, v) != ("f32", "f32")
        self.llm = Llama(str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=512, n_threads=threads, n_threads_batch=threads,
                         type_k=CACHE_TYPES[k], type_v=CACHE_TYPES[v], flash_attn=self.flash_attn, logits_all=True,
                         verbose=False)

    def logits(self, ids) -> np.ndarray:
        self.llm.reset()
        self.llm.eval(list(ids))
        return np.array(self.llm.scores[: len(ids)], np.float32)


def token_nlls(model, texts: list[str], ctx: int) -> np.ndarray:
    """The negative log-likelihood of every scored token of every text."""
    from nanosmol.perplexity import window_nlls

    return np.concatenate([nlls for text in texts for _, _, nlls in window_nlls(model, text, ctx)])


def cell(nlls: np.ndarray, base: np.ndarray) -> str:
    """Perplexity | its change from the baseline's, with the standard error of the change."""
    change = nlls - base
    error = change.std(ddof=1) / math.sqrt(len(change)) if len(change) > 1 else 0.0
    return f"{math.exp(nlls.mean()):.4f} | {100 * math.expm1(change.mean()):+.2f}% ± {100 * error:.2f}%"


def main():
    args = parse_args()
    import nanosmol

    if args.llama:
        site = glob.glob(str(args.llama / "lib" / "python3*" / "site-packages"))
        if not site:
            sys.exit(f"no llama-cpp-python venv at {args.llama}")
        sys.path.append(site[0])  # after ours: our numpy, its llama_cpp
    texts = [path.read_text(errors="replace") for path in args.textfile]
    engines = ["nanosmol"] + (["llama.cpp"] if args.llama else [])
    print(f"{', '.join(map(str, args.textfile))}, windows of {args.ctx} tokens, {args.threads} threads\n")
    print("| KV cache (K/V) | " + " | ".join(f"{e} | vs {args.types.split(',')[0]}" for e in engines) + " |")
    print("|---|" + "---|---|" * len(engines))
    base = {}
    for spec in args.types.split(","):
        k, v = cache_types(spec)
        nano = nanosmol.load(args.model, n_ctx=args.ctx, n_threads=args.threads, cache_type_k=k, cache_type_v=v)
        row = {"nanosmol": token_nlls(nano, texts, args.ctx)}
        if args.llama:
            row["llama.cpp"] = token_nlls(LlamaCppLogits(nano, nano.path, args.ctx, k, v, args.threads), texts, args.ctx)
        base = base or row
        print(f"| {k}/{v} | {' | '.join(cell(row[e], base[e]) for e in engines)} |", flush=True)


if __name__ == "__main__":
    main()
