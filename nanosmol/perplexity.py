"""Perplexity scored as llama.cpp's perplexity tool does: windows of n_ctx tokens, second half scored."""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np


def window_nlls(model, text: str, n_ctx: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield (window index, window count, the negative log-likelihood of each scored token)."""
    tokens = model.tokenize(text)
    n_windows = len(tokens) // n_ctx
    if n_windows == 0:
        raise ValueError(f"the text has {len(tokens)} tokens, fewer than one window of {n_ctx}")
    first = n_ctx // 2
    bos = model.tokenizer.bos_id if model.tokenizer.add_bos else None
    for w in range(n_windows):
        window = list(tokens[w * n_ctx : (w + 1) * n_ctx])
        if bos is not None:
            window[0] = bos  # llama.cpp starts every window with BOS when the model wants one
        logits = model.logits(window)[first : n_ctx - 1].astype(np.float64)
        targets = np.asarray(window[first + 1 :])
        log_norm = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        yield w, n_windows, log_norm - logits[np.arange(len(targets)), targets]


def perplexity_windows(model, text: str, n_ctx: int) -> Iterator[tuple[int, int, float]]:
    """Yield (window index, window count, running perplexity) after each window."""
    nll_sum, count = 0.0, 0
    for w, n_windows, nlls in window_nlls(model, text, n_ctx):
        nll_sum += float(np.sum(nlls))
        count += len(nlls)
        yield w, n_windows, math.exp(nll_sum / count)
