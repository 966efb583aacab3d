"""The generation loop: prefill, then sample token by token, streaming text, stopping cleanly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from nanosmol.sampling import Sampler


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    cached_tokens: int = 0  # prompt tokens the KV cache already held: not prefilled, not in prompt_tokens
    stop_reason: str = ""  # "eog", "stop", "length", "cancelled"
    tokens: list[int] = field(default_factory=list)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_seconds if self.decode_seconds else 0.0


def generate_tokens(
    forward: Callable[[np.ndarray], np.ndarray],
    prompt_ids: list[int],
    sampler: Sampler,
    max_tokens: int,
    eog_ids: Iterable[int],
    stats: GenerationStats,
    history: list[int] | None = None,
    forced: list[int] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[int]:
    """Yield sampled token ids. `forward(ids)` feeds ids after the cached ones, returns last logits.

    Tokens the consumer puts into `forced` while a token is out are fed and yielded next,
    in place of sampling (how a thinking budget closes the thought). `should_stop()` is asked
    before every forward pass, so another thread can end a generation within one step.
    """
    cancelled = should_stop or (lambda: False)
    forced = [] if forced is None else forced
    eog = frozenset(eog_ids)
    history = list(prompt_ids) if history is None else history

    def accept(token: int) -> int:
        history.append(token)
        stats.tokens.append(token)
        stats.generated_tokens += 1
        return token

    stats.prompt_tokens = len(prompt_ids)
    if cancelled():
        stats.stop_reason = "cancelled"
        return
    start = time.perf_counter()
    logits = forward(np.asarray(prompt_ids, np.int64))
    stats.prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    stats.stop_reason = "length"
    for _ in range(max_tokens):
        token = sampler(logits, history, stats.tokens)
        if token in eog:
            stats.stop_reason = "eog"
            break
        yield accept(token)
        fed = [token]
        while forced and stats.generated_tokens < max_tokens:
            fed.append(accept(forced.pop(0)))
            yield fed[-1]
        if stats.generated_tokens >= max_tokens:
            break
        if cancelled():
            stats.stop_reason = "cancelled"
            break
        logits = forward(np.array(fed, np.int64))
        stats.decode_steps += 1
        stats.decode_seconds = time.perf_counter() - start


def stream_text(token_ids: Iterable[int], decoder, stop: list[str], stats: GenerationStats) -> Iterator[str]:
    """Text pieces of the tokens, holding back what could begin a stop string; ends at a stop string."""
    scanner = StopScanner(stop)
    for token in token_ids:
        ready = scanner.feed(decoder.push(token))
        if ready:
            yield ready
        if scanner.hit:
            stats.stop_reason = "stop"
            return
    rest = scanner.feed(decoder.flush())
    if scanner.hit:
        stats.stop_reason = "stop"
    else:
        rest += scanner.flush()
    if rest:
        yield rest


class StopScanner:
    """Streams text on, holding back any tail that could begin a stop string.

    feed() returns the text that is safe to show; once a stop string appears it returns the
    text before it, sets `hit`, and swallows everything after.
    """

    def __init__(self, stop):
        self.stop = [s for s in stop if s]
        self.pending = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if self.hit:
            return ""
        self.pending += text
        at = _find_stop(self.pending, self.stop)
        if at is not None:
            self.hit = True
            ready, self.pending = self.pending[:at], ""
            return ready
        keep = _longest_stop_prefix(self.pending, self.stop)
        ready = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(ready):]
        return ready

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return "" if self.hit else rest


def _find_stop(text: str, stop: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return min(hits) if hits else None


def _longest_stop_prefix(text: str, stop: list[str]) -> int:
    """Length of the longest tail of text that is a proper prefix of a stop string."""
    best = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-n:]):
                best = n
                break
    return best
