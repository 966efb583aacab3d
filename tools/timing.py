"""Timing helper shared by the benchmark scripts."""

from __future__ import annotations

import time


def best_time(fn, repeats: int, warmup: bool = True) -> float:
    """The fastest of `repeats` calls, in seconds: the least disturbed by a noisy machine."""
    if warmup:
        fn()  # first-run compilation, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)
