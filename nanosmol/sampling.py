"""Choosing the next token: repeat penalty, top-k, top-p, min-p, temperature, in llama.cpp's order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # <= 0: greedy
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # >= 1: off
    min_p: float = 0.05  # <= 0: off
    repeat_penalty: float = 1.0  # 1: off
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self):
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be positive")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be within [0, 1]")
        if self.top_p <= 0:
            raise ValueError("top_p must be positive")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int]) -> int:
        p = self.params
        logits = apply_repeat_penalty(logits, history[-p.repeat_last_n :] if p.repeat_last_n > 0 else [],
                                      p.repeat_penalty)
        if p.temperature <= 0:
            return int(np.argmax(logits))
        ids, kept = candidates(logits, p.top_k, p.top_p, p.min_p)
        probs = softmax(kept / p.temperature)
        return int(ids[self.rng.choice(len(ids), p=probs)])


def apply_repeat_penalty(logits: np.ndarray, recent: list[int], penalty: float) -> np.ndarray:
    """Make recently seen tokens less likely: divide positive logits, multiply negative ones."""
    if penalty == 1.0 or not recent:
        return logits
    logits = logits.copy()
    ids = np.unique(np.asarray(recent))
    seen = logits[ids]
    logits[ids] = np.where(seen > 0, seen / penalty, seen * penalty)
    return logits


def candidates(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Token ids still in the running after top-k, top-p and min-p, with their logits, best first."""
    k = len(logits) if top_k <= 0 else min(top_k, len(logits))
    ids = np.argpartition(-logits, k - 1)[:k] if k < len(logits) else np.arange(len(logits))
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    kept = logits[ids].astype(np.float64)
    probs = softmax(kept)
    if top_p < 1.0:
        # Keep the smallest prefix whose probability reaches top_p.
        n = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
        ids, kept, probs = ids[:n], kept[:n], probs[:n]
    if min_p > 0.0:
        n = max(1, int(np.count_nonzero(probs >= min_p * probs[0])))
        ids, kept = ids[:n], kept[:n]
    return ids, kept


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()
