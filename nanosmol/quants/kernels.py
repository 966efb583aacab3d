"""Kernels on raw GGUF blocks: matrix-vector product, row dequantization, tiles for BLAS.

All take the type code and the weight as a 2-D uint8 array [rows, row_bytes] read straight
from the mapped file. Block decoding goes through a small float32 buffer that stays in L1;
products accumulate in 32 float32 lanes across the whole row, with one horizontal sum per
row: that is what vectorizes well in Numba (integer dot products do not, see ENGINEERING.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nanosmol.quants.blocks import Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, decode_block

JIT = dict(cache=True, fastmath=True, boundscheck=False)
ROWS_PER_TASK = 16  # rows a thread takes at a time: amortizes scratch set-up, balances load


@njit(inline="always", cache=True)
def values_per_block(qtype):
    return 256 if qtype in (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K) else 32


@njit(inline="always", **JIT)
def row_dot(qtype, row, x, block, acc):
    """Dot product of one quantized row with x."""
    bs = values_per_block(qtype)
    n_blocks = x.shape[0] // bs
    block_bytes = row.shape[0] // n_blocks
    acc[:] = 0.0
    for b in range(n_blocks):
        decode_block(qtype, row, b * block_bytes, block, 0)
        xb = b * bs
        for lane0 in range(0, bs, 32):
            for i in range(32):
                acc[i] += block[lane0 + i] * x[xb + lane0 + i]
    return acc.sum()


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, out):
    """out = W @ x for W [rows, row_bytes] of type qtype, x float32 [cols]."""
    rows = w.shape[0]
    n_tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    for task in prange(n_tasks):
        block = np.empty(256, np.float32)
        acc = np.empty(32, np.float32)
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            out[r] = row_dot(qtype, w[r], x, block, acc)
    return out


@njit(inline="always", **JIT)
def dequantize_row(qtype, row, out):
    bs = values_per_block(qtype)
    n_blocks = out.shape[0] // bs
    block_bytes = row.shape[0] // n_blocks
    for b in range(n_blocks):
        decode_block(qtype, row, b * block_bytes, out, b * bs)


@njit(parallel=True, **JIT)
def dequantize_rows(qtype, w, row_ids, out):
    """out[k] = row row_ids[k] of W, as float32 (embedding lookups)."""
    for k in prange(row_ids.shape[0]):
        dequantize_row(qtype, w[row_ids[k]], out[k])
    return out


@njit(parallel=True, **JIT)
def dequantize_tile(qtype, w, first_row, out):
    """out[k] = row first_row + k of W: a tile of weights for a BLAS matmul."""
    for k in prange(out.shape[0]):
        dequantize_row(qtype, w[first_row + k], out[k])
    return out
