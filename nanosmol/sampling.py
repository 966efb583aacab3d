"""Choosing the next token: penalties, top-k, top-p, min-p, temperature, in llama.cpp's order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

PENALTY_RANGE = 2.0  # OpenAI's bound on presence_penalty and frequency_penalty


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # <= 0: greedy
    top_k: int = 40  # <= 0: off
    top_p: float = 0.95  # >= 1: off
    min_p: float = 0.05  # <= 0: off
    repeat_penalty: float = 1.0  # 1: off (llama.cpp's: over the last repeat_last_n tokens, prompt included)
    repeat_last_n: int = 64
    seed: int | None = None
    presence_penalty: float = 0.0  # 0: off (OpenAI's: over the tokens this completion generated)
    frequency_penalty: float = 0.0  # 0: off

    def __post_init__(self):
        if self.repeat_penalty <= 0:
            raise ValueError("repeat_penalty must be positive")
        if not 0 <= self.min_p <= 1:
            raise ValueError("min_p must be within [0, 1]")
        if self.top_p <= 0:
            raise ValueError("top_p must be positive")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -PENALTY_RANGE <= getattr(self, name) <= PENALTY_RANGE:
                raise ValueError(f"{name} must be within [-{PENALTY_RANGE:g}, {PENALTY_RANGE:g}]")


class Sampler:
    def __init__(self, params: SamplingParams):
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int], generated: Sequence[int] = ()) -> int:
        """The next token after `history` (prompt and answer so far), of which `generated` is the answer."""
        p = self.params
        logits = apply_repeat_penalty(logits, history[-p.repeat_last_n :] if p.repeat_last_n > 0 else [],
                                      p.repeat_penalty)
        logits = apply_openai_penalties(logits, generated, p.presence_penalty, p.frequency_penalty)
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


def apply_openai_penalties(logits: np.ndarray, generated: Sequence[int], presence: float,
                           frequency: float) -> np.ndarray:
    """OpenAI's penalties: logit -= presence * (count > 0) + frequency * count, counting each
    token in what this completion generated so far. Negative values favour repeats."""
    if (presence == 0.0 and frequency == 0.0) or len(generated) == 0:
        return logits
    ids, counts = np.unique(np.asarray(generated), return_counts=True)
    logits = logits.copy()
    logits[ids] -= np.float32(presence) + np.float32(frequency) * counts.astype(np.float32)
    return logits


def candidates(logits: np.ndarray, top_k: int, top_p: float, min_p: float) -> tuple[np.ndarray, np.ndarray]:
    """Token ids still in the running after top-k, top-p and min-p, with their logits, best first."""
    ids = top_k_ids(logits, len(logits) if top_k <= 0 else min(top_k, len(logits)))
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


def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, best first.

    np.argpartition over a 49k vocabulary takes ~0.5 ms, a tenth of a decode step of the
    default model, so it runs on a short list: the least of k chunk maxima is a bound below
    the k-th largest logit (k distinct logits reach it), and what reaches it holds the top k.
    """
    pool = np.arange(len(logits))
    if k < len(logits):
        chunk = len(logits) // k
        if chunk > 1:
            floor = logits[: k * chunk].reshape(k, chunk).max(axis=1).min()
            pool = np.flatnonzero(logits >= floor)
        pool = pool[np.argpartition(-logits[pool], k - 1)[:k]]
    return pool[np.argsort(-logits[pool], kind="stable")]


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()
