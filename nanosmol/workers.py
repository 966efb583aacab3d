"""Python worker threads for the batched (prefill) path, each running single-threaded BLAS.

OpenBLAS's idle workers spin, starving Numba's threads of the cores (matvec at 2 threads
fell from 5 to 1.6 GB/s after a BLAS call). So BLAS runs single-threaded, and batched work
is spread over these threads instead: numpy and the nogil kernels release the GIL.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numba
from threadpoolctl import threadpool_limits

threadpool_limits(1, user_api="blas")
_pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="nanosmol-worker")


def n_workers() -> int:
    """As many workers as Numba uses threads (set by --threads)."""
    return numba.get_num_threads()


def parallel_map(fn: Callable, jobs: Iterable) -> list:
    """fn(job) for every job, spread over the worker threads; the first error is raised here."""
    return list(_pool.map(fn, jobs))
