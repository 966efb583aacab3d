"""Benchmark the quant kernels: matvec (decode) and matmul (prefill) per type and thread count.

Prints a markdown table: GB/s of weight bytes and its share of the host's read bandwidth
(measured first, on as many threads), GFLOP/s, and the ratio to numpy's float32 `W @ x` (or
`X @ W.T`) on the same shape, measured in the same run.

    python tools/bench_kernels.py                  # every type, both shapes, 1 and 2 threads
    python tools/bench_kernels.py --types Q8_0,Q4_K --quick --isa avx2 --no-matmul
"""

from __future__ import annotations

import argparse

from isa import ISAS, describe_target, reexec_for

SHAPES = [(11008, 2048), (2048, 11008)]  # rows x cols: SmolLM3-3B's ffn_up and ffn_down
STREAMED_BYTES = 512 * 2**20  # matvec cycles through copies of a matrix this large in all, as a
# decode step does through its layers: one 13 MB matrix would be served from a 32 MB L3 cache


def random_matrix(qtype, rows: int, cols: int, rng):
    from nanosmol.quants import QuantMatrix
    from nanosmol.quants.blocks import block_geometry
    from nanosmol.quants.synthetic import random_blocks

    raw = random_blocks(qtype, rows, cols // block_geometry(qtype)[0], rng, scale=0.01)
    return QuantMatrix(raw.reshape(-1), qtype, rows, cols)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", help="comma-separated GGML type names (default: all supported)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--batch", type=int, default=64, help="activation rows for matmul")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--no-matmul", action="store_true", help="matvec (decode) only")
    parser.add_argument("--isa", choices=ISAS, help="compile for this instruction set (default: as the environment says)")
    args = parser.parse_args()
    if args.isa:
        reexec_for(args.isa)
    import numba
    import numpy as np
    from gguf import GGMLQuantizationType as T

    from bandwidth import read_bandwidth
    from nanosmol.quants import SUPPORTED_TYPES, QuantMatrix
    from timing import best_time

    types = [T[n] for n in args.types.split(",")] if args.types else sorted(SUPPORTED_TYPES, key=lambda t: t.value)
    repeats = 3 if args.quick else 10
    rng = np.random.default_rng(0)
    thread_counts = [int(t) for t in args.threads.split(",")]
    bandwidth = {t: read_bandwidth(t) for t in thread_counts}
    print(describe_target() + "; read bandwidth " + ", ".join(f"{b:.1f} GB/s on {t} thread(s)" for t, b in bandwidth.items()))
    print("| type | shape | threads | matvec GB/s | of read bandwidth | matvec vs f32 numpy | matmul GFLOP/s | matmul vs f32 numpy |")
    print("|---|---|---|---|---|---|---|---|")
    for qtype in types:
        for rows, cols in SHAPES:
            m = random_matrix(qtype, rows, cols, rng)
            copies = [m] + [QuantMatrix(m.raw.copy().reshape(-1), qtype, rows, cols)
                            for _ in range(STREAMED_BYTES // m.raw.nbytes)]
            dense = rng.standard_normal((rows, cols)).astype(np.float32)
            x = rng.standard_normal(cols).astype(np.float32)
            X = rng.standard_normal((args.batch, cols)).astype(np.float32)
            out = np.empty(rows, np.float32)
            for threads in thread_counts:
                numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
                t_mv = best_time(lambda: [c.matvec(x, out) for c in copies], repeats) / len(copies)
                t_np_mv = best_time(lambda: dense @ x, repeats)
                gbs = m.raw.nbytes / t_mv / 1e9
                row = f"| {qtype.name} | {rows}x{cols} | {threads} | {gbs:.1f} | {100 * gbs / bandwidth[threads]:.0f}% | {t_np_mv / t_mv:.2f}x |"
                if args.no_matmul:
                    print(row + " | |", flush=True)
                    continue
                t_mm = best_time(lambda: m.matmul(X), max(1, repeats // 3))
                t_np_mm = best_time(lambda: X @ dense.T, max(1, repeats // 3))
                flops = 2.0 * args.batch * rows * cols
                print(row + f" {flops / t_mm / 1e9:.0f} | {t_np_mm / t_mm:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
