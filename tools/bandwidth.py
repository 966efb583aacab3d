"""The host's memory read bandwidth: the physical limit of a memory-bound decode.

    python tools/bandwidth.py -t 1,2
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from numba import njit, prange

from timing import best_time


@njit(parallel=True, cache=True, fastmath=True)
def sum_words(words, parts):
    """The sum of every word, in `parts` contiguous stretches read in parallel."""
    total = np.uint64(0)
    step = (words.shape[0] + parts - 1) // parts
    for p in prange(parts):
        chunk = words[p * step : min(words.shape[0], (p + 1) * step)]
        partial = np.uint64(0)
        for w in chunk:
            partial += w
        total += partial
    return total


def read_bandwidth(threads: int, gib: float = 2.0, repeats: int = 5) -> float:
    """GB/s of a streaming read over `gib` GiB (far beyond the caches) on `threads` threads."""
    words = np.ones(int(gib * 2**30) // 8, np.uint64)
    numba.set_num_threads(threads)
    return words.nbytes / best_time(lambda: sum_words(words, threads), repeats) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-t", "--threads", default="1,2")
    for threads in [int(t) for t in parser.parse_args().threads.split(",")]:
        print(f"read bandwidth, {threads} thread(s): {read_bandwidth(threads):.1f} GB/s")


if __name__ == "__main__":
    main()
