"""`nanosmol bench`: prefill and decode speed in the spirit of llama-bench."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from nanosmol.api import Model, set_threads


@dataclass
class BenchRecord:
    file: str
    size: int
    threads: int
    test: str  # "pp64": prefill of 64 tokens; "tg32": 32 decode steps; "tg32 @ d4096": after 4096 cached tokens
    tokens_per_second: float
    std: float
    samples: list[float]
    depth: int = 0  # tokens in the KV cache before the test
    cache_types: str = ""  # the KV cache's, e.g. "K q8_0, V q8_0"

    def as_dict(self) -> dict:
        return asdict(self)


def random_tokens(n: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n, dtype=np.int64)


FILL_BLOCK = 512  # cache slots filled per step of fill_cache


def fill_cache(model: Model, depth: int, seed: int = 0) -> None:
    """Put `depth` tokens in every layer's KV cache quickly: random key and value rows, stored
    (quantized) as the forward pass stores them. llama-bench's -d prefills real tokens; the
    cost of attention depends on how many slots it reads, not on what they hold, and a 3B
    prefill of 32k tokens takes the better part of an hour here."""
    c, cache = model.config, model.transformer.cache
    cache.reset()
    rng = np.random.default_rng(seed)
    for first in range(0, depth, FILL_BLOCK):
        slots = cache.slots_for(min(FILL_BLOCK, depth - first))
        k, v = rng.standard_normal((2, len(slots), c.n_head_kv * c.head_dim), dtype=np.float32)
        for layer in range(c.n_layer):
            cache.store(layer, k, v, slots)
        cache.advance(slots)


def back_to_depth(model: Model, depth: int) -> None:
    """Forget what the last test added: the cache holds the `depth` filled tokens again."""
    model.transformer.cache.truncate(depth)


def time_prefill(model: Model, n: int, depth: int = 0) -> float:
    tokens = random_tokens(n, model.config.vocab_size, n)
    back_to_depth(model, depth)
    start = time.perf_counter()
    model.transformer.forward(tokens)
    return n / (time.perf_counter() - start)


def time_decode(model: Model, n: int, depth: int = 0) -> float:
    """n single-token steps after one, as llama-bench's tg test does."""
    tokens = random_tokens(n + 1, model.config.vocab_size, n)
    tr = model.transformer
    back_to_depth(model, depth)
    tr.forward(tokens[:1])
    start = time.perf_counter()
    for i in range(1, n + 1):
        tr.forward(tokens[i : i + 1])
    return n / (time.perf_counter() - start)


def run_bench(model: Model, prompt_lengths, gen_lengths, thread_counts, repetitions: int, log=None, depth: int = 0):
    """Yield one BenchRecord per (threads, test); the first repetition of each is a warm-up.
    With a depth, each test starts with that many tokens in the KV cache (fill_cache)."""
    size = model.checkpoint.file_size
    fill_cache(model, depth)
    at = f" @ d{depth}" if depth else ""
    for threads in thread_counts:
        model.n_threads = set_threads(threads)  # the model keeps it on whichever thread runs it
        tests = [(f"pp{n}{at}", time_prefill, n) for n in prompt_lengths]
        tests += [(f"tg{n}{at}", time_decode, n) for n in gen_lengths]
        for name, timer, n in tests:
            timer(model, min(n, 8), depth)  # warm-up: compiles and pages in the weights
            samples = [timer(model, n, depth) for _ in range(repetitions)]
            std = statistics.stdev(samples) if len(samples) > 1 else 0.0
            record = BenchRecord(model.path.name, size, threads, name, statistics.mean(samples), std, samples,
                                 depth, str(model.cache_types))
            if log:
                log(record)
            yield record


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def format_table(records: list[BenchRecord]) -> str:
    lines = ["| file | size | KV cache | threads | test | tok/s |", "|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.file} | {r.size / 2**20:.0f} MiB | {r.cache_types} | {r.threads} | {r.test} | "
                     f"{r.tokens_per_second:.2f} ± {r.std:.2f} |")
    return "\n".join(lines)
