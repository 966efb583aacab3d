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
    test: str  # "pp64": prefill of 64 tokens; "tg32": 32 decode steps
    tokens_per_second: float
    std: float
    samples: list[float]

    def as_dict(self) -> dict:
        return asdict(self)


def random_tokens(n: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, size=n, dtype=np.int64)


def time_prefill(model: Model, n: int) -> float:
    tokens = random_tokens(n, model.config.vocab_size, n)
    model.transformer.cache.reset()
    start = time.perf_counter()
    model.transformer.forward(tokens)
    return n / (time.perf_counter() - start)


def time_decode(model: Model, n: int) -> float:
    """n single-token steps after one, as llama-bench's tg test does."""
    tokens = random_tokens(n + 1, model.config.vocab_size, n)
    tr = model.transformer
    tr.cache.reset()
    tr.forward(tokens[:1])
    start = time.perf_counter()
    for i in range(1, n + 1):
        tr.forward(tokens[i : i + 1])
    return n / (time.perf_counter() - start)


def run_bench(model: Model, prompt_lengths, gen_lengths, thread_counts, repetitions: int, log=None):
    """Yield one BenchRecord per (threads, test); the first repetition of each is a warm-up."""
    size = model.checkpoint.file_size
    for threads in thread_counts:
        model.n_threads = set_threads(threads)  # the model keeps it on whichever thread runs it
        tests = [(f"pp{n}", time_prefill, n) for n in prompt_lengths]
        tests += [(f"tg{n}", time_decode, n) for n in gen_lengths]
        for name, timer, n in tests:
            timer(model, min(n, 8))  # warm-up: compiles and pages in the weights
            samples = [timer(model, n) for _ in range(repetitions)]
            std = statistics.stdev(samples) if len(samples) > 1 else 0.0
            record = BenchRecord(model.path.name, size, threads, name, statistics.mean(samples), std, samples)
            if log:
                log(record)
            yield record


def peak_rss_bytes() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


def format_table(records: list[BenchRecord]) -> str:
    lines = ["| file | size | threads | test | tok/s |", "|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r.file} | {r.size / 2**20:.0f} MiB | {r.threads} | {r.test} | "
                     f"{r.tokens_per_second:.2f} ± {r.std:.2f} |")
    return "\n".join(lines)
