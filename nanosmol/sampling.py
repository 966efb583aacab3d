"""Choosing the next token: penalties, top-k, top-p, min-p, temperature, in llama.cpp's order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from numba import njit

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
        return int(draw(logits, p.top_k, p.top_p, p.min_p, p.temperature, self.rng.random()))


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


SAMPLE = dict(cache=True, boundscheck=False)  # no fastmath: sums in order, as numpy's reference


@njit(**SAMPLE)
def draw(logits: np.ndarray, top_k: int, top_p: float, min_p: float, temperature: float, u: float) -> int:
    """llama.cpp's chain after the penalties: top-k, top-p, min-p, temperature, then the token
    at u (uniform in [0, 1)) of the candidates' cumulative distribution, as numpy's
    Generator.choice picks with one draw.

    One compiled call: written as ~45 numpy calls it took ~250 us a token in a decode loop
    (every call's code and data evicted by the weights streamed between two tokens), 3% of a
    decode step of the default model.
    """
    ids = top_k_ids(logits, top_k if 0 < top_k < logits.size else logits.size)
    n = kept_by_top_p_and_min_p(logits, ids, top_p, min_p)
    best = np.float64(logits[ids[0]])
    cdf = np.empty(n)
    total = 0.0
    for i in range(n):
        total += np.exp((np.float64(logits[ids[i]]) - best) / temperature)
        cdf[i] = total
    for i in range(n):
        if cdf[i] > u * total:  # the first candidate whose cumulative probability passes u
            return ids[i]
    return ids[n - 1]


@njit(**SAMPLE)
def kept_by_top_p_and_min_p(logits: np.ndarray, ids: np.ndarray, top_p: float, min_p: float) -> int:
    """How many of the candidates `ids` (best first) top-p and then min-p keep, both on the
    probabilities among the candidates at temperature 1."""
    best = np.float64(logits[ids[0]])
    weights = np.empty(ids.size)  # relative to the best candidate's
    total = 0.0
    for i in range(ids.size):
        weights[i] = np.exp(np.float64(logits[ids[i]]) - best)
        total += weights[i]
    n = ids.size
    if top_p < 1.0:  # the smallest prefix whose probability reaches top_p
        reached = 0.0
        for i in range(ids.size):
            reached += weights[i] / total
            if reached >= top_p:
                n = i + 1
                break
    if min_p > 0.0:  # those at least min_p times as likely as the best
        kept = 0
        for i in range(n):
            kept += weights[i] >= min_p
        n = max(1, kept)
    return n


@njit(fastmath=True, **SAMPLE)  # fastmath: vector max and compare (logits are finite); no sums here
def top_k_ids(logits: np.ndarray, k: int) -> np.ndarray:
    """The ids of the k largest logits, best first (of equal ones, the lower id first).

    It sorts a short list: the least of k chunk maxima is a bound below the k-th largest logit
    (k distinct logits reach it), so what reaches it holds the top k (~300 of a 49k vocabulary).
    """
    n = logits.size
    chunk = n // k
    floor = -np.inf
    if k < n and chunk > 1:
        floor = np.inf
        for c in range(k):
            best = logits[c * chunk]
            for i in range(c * chunk + 1, (c + 1) * chunk):
                best = max(best, logits[i])
            floor = min(floor, best)
    size = 0
    for i in range(n):
        size += logits[i] >= floor
    pool = np.empty(size, np.int64)  # counted first: a vocabulary-sized buffer costs page faults
    size = 0
    for i in range(n):
        if logits[i] >= floor:
            pool[size] = i
            size += 1
    order = np.argsort(-logits[pool], kind="mergesort")
    return pool[order[:k]]
