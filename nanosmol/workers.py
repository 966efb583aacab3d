"""Python worker threads for the batched (prefill) path, each running single-threaded BLAS.

OpenBLAS's idle workers spin, starving Numba's threads of the cores (matvec at 2 threads
fell from 5 to 1.6 GB/s after a BLAS call). So while nanosmol computes, BLAS runs
single-threaded (`single_threaded_blas`, scoped to nanosmol's own calls: the user's other
numpy work keeps its threads), and batched work is spread over these threads instead:
numpy and the nogil kernels release the GIL.
"""

from __future__ import annotations

import glob
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import numba
import numpy as np
from threadpoolctl import ThreadpoolController

_blas = ThreadpoolController()
_pool = ThreadPoolExecutor(max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="nanosmol-worker")


def single_threaded_blas():
    """A context manager: BLAS on one thread inside it, as it was outside (about 10 us)."""
    return _blas.limit(limits=1, user_api="blas")


def n_workers() -> int:
    """As many workers as Numba uses threads (set by --threads)."""
    return numba.get_num_threads()


def parallel_map(fn: Callable, jobs: Iterable) -> list:
    """fn(job) for every job, spread over the worker threads; the first error is raised here.

    The workers take the caller's numpy error settings (np.errstate is per thread), so a
    caller that silences overflow warnings silences them in its workers too.
    """
    settings = np.geterr()

    def run(job):
        with np.errstate(**settings):
            return fn(job)

    with single_threaded_blas():
        return list(_pool.map(run, jobs))


def physical_cores() -> int:
    """Cores this process may run on, counting SMT siblings once (Linux); else all CPUs.

    Decode is bound by memory and prefill by the vector units a core's siblings share, so a
    second thread per core only adds contention.
    """
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        siblings = glob.glob(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        cores.add(open(siblings[0]).read().strip() if siblings else str(cpu))
    return max(1, min(len(cores), numba.config.NUMBA_NUM_THREADS))
