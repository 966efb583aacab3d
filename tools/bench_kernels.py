"""Benchmark the quant kernels: matvec (decode) and matmul (prefill) per type and thread count.

Prints a markdown table: GB/s of weight bytes, GFLOP/s, and the ratio to numpy's float32
`W @ x` (or `X @ W.T`) on the same shape, measured in the same run.

    python tools/bench_kernels.py                  # every type, both shapes, 1 and 2 threads
    python tools/bench_kernels.py --types Q8_0,Q4_K --quick
"""

from __future__ import annotations

import argparse

import numba
import numpy as np
from gguf import GGMLQuantizationType as T

from nanosmol.quants import SUPPORTED_TYPES, QuantMatrix
from nanosmol.quants.blocks import block_geometry
from nanosmol.quants.synthetic import random_blocks
from timing import best_time

SHAPES = [(11008, 2048), (2048, 11008)]  # rows x cols: SmolLM3-3B's ffn_up and ffn_down


def random_matrix(qtype: T, rows: int, cols: int, rng) -> QuantMatrix:
    raw = random_blocks(qtype, rows, cols // block_geometry(qtype)[0], rng, scale=0.01)
    return QuantMatrix(raw.reshape(-1), qtype, rows, cols)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", help="comma-separated GGML type names (default: all supported)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=64, help="activation rows for matmul")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    types = [T[n] for n in args.types.split(",")] if args.types else sorted(SUPPORTED_TYPES, key=lambda t: t.value)
    repeats = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    print("| type | shape | threads | matvec GB/s | matvec vs f32 numpy | matmul GFLOP/s | matmul vs f32 numpy |")
    print("|---|---|---|---|---|---|---|")
    for qtype in types:
        for rows, cols in SHAPES:
            m = random_matrix(qtype, rows, cols, rng)
            dense = rng.standard_normal((rows, cols)).astype(np.float32)
            x = rng.standard_normal(cols).astype(np.float32)
            X = rng.standard_normal((args.batch, cols)).astype(np.float32)
            out = np.empty(rows, np.float32)
            for threads in [int(t) for t in args.threads.split(",")]:
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                t_mv = best_time(lambda: m.matvec(x, out), repeats)
                t_np_mv = best_time(lambda: dense @ x, repeats)
                t_mm = best_time(lambda: m.matmul(X), max(1, repeats // 3))
                t_np_mm = best_time(lambda: X @ dense.T, max(1, repeats // 3))
                flops = 2.0 * args.batch * rows * cols
                print(f"| {qtype.name} | {rows}x{cols} | {threads} | {m.raw.nbytes / t_mv / 1e9:.1f} | "
                      f"{t_np_mv / t_mv:.2f}x | {flops / t_mm / 1e9:.0f} | {t_np_mm / t_mm:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
