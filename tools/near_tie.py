"""Where two greedy continuations of a prompt part, how far apart this machine's decode puts
the two tokens: a near-tie, or a real difference.

Float sums run in a different order on each instruction set (vector widths, fused
multiply-adds), and decode's int8 activations turn last-bit differences into about 1% of
the logits' range: on the default model, NUMBA_CPU_NAME=generic and native decode logits
differ by up to 0.8 here. Greedy decoding then parts where two tokens are that close.
tools/arm64_check.sh accepts a board's text that parts from this machine's at such a tie.

    python tools/near_tie.py PROMPT TEXT_A TEXT_B [--tie 1.0]
    # prints where the texts part and the gap; exit 0 when they agree or part at a gap < tie
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

import nanosmol

TIE = 1.0  # logits: above the 0.8 measured between instruction sets, far below a broken kernel's


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first position where the token lists differ (None: one is a prefix of the other)."""
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def gap_where_they_part(model, prompt: str, a: str, b: str) -> tuple[int, float] | None:
    """(position, |logit of a's token - logit of b's token|) where a and b part, decoded as
    `nanosmol run --raw --temp 0` decodes (the prompt in one batch, then token by token)."""
    ta, tb = model.tokenize(a), model.tokenize(b)
    k = first_difference(ta, tb)
    if k is None:
        return None
    transformer = model.transformer
    transformer.cache.reset()
    logits = transformer.forward(np.array(model.tokenize(prompt), np.int64))
    for token in ta[:k]:
        logits = transformer.forward(np.array([token], np.int64))
    return k, abs(float(logits[ta[k]]) - float(logits[tb[k]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prompt")
    parser.add_argument("a")
    parser.add_argument("b")
    parser.add_argument("--tie", type=float, default=TIE, help="largest gap in logits called a tie")
    args = parser.parse_args()
    model = nanosmol.load(n_ctx=256)
    parted = gap_where_they_part(model, args.prompt, args.a, args.b)
    if parted is None:
        print("the texts agree token for token (one may stop earlier)")
        return 0
    k, gap = parted
    ta, tb = model.tokenize(args.a), model.tokenize(args.b)
    verdict = "a near-tie" if gap < args.tie else "not a tie"
    print(f"the texts part at generated token {k}: {model.detokenize([ta[k]])!r} vs {model.detokenize([tb[k]])!r}, "
          f"{gap:.3f} logits apart here: {verdict} (tie: < {args.tie})")
    return 0 if gap < args.tie else 1


if __name__ == "__main__":
    sys.exit(main())
