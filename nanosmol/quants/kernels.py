"""Kernels on raw GGUF blocks: matrix-vector product, row dequantization, tiles for BLAS.

All take the type code and the weight as a 2-D uint8 array [rows, row_bytes] read straight
from the mapped file. Products accumulate in 32 float32 lanes across a whole row, with one
horizontal sum per row: that is what vectorizes in Numba (integer dot products do not,
see ENGINEERING.md).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nanosmol.quants.blocks import row_values

JIT = dict(cache=True, fastmath=True, boundscheck=False)
LANES = 32  # float32 accumulators per row, one horizontal sum at the end
ROWS_PER_TASK = 16  # rows a thread takes at a time: amortizes scratch set-up, balances load


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, out):
    """out = W @ x for W [rows, row_bytes] of type qtype, x float32 [cols]."""
    rows = w.shape[0]
    n_tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    unused = np.empty(0, np.float32)
    for task in prange(n_tasks):
        acc = np.empty(LANES, np.float32)
        for r in range(task * ROWS_PER_TASK, min(rows, (task + 1) * ROWS_PER_TASK)):
            acc[:] = 0.0
            row_values(qtype, w[r], x, acc, unused, True)
            out[r] = acc.sum()
    return out


@njit(parallel=True, **JIT)
def dequantize_rows(qtype, w, row_ids, out):
    """out[k] = row row_ids[k] of W, as float32 (embedding lookups)."""
    unused = np.empty(0, np.float32)
    for k in prange(row_ids.shape[0]):
        row_values(qtype, w[row_ids[k]], unused, unused, out[k], False)
    return out


@njit(nogil=True, **JIT)
def dequantize_tile(qtype, w, first_row, out):
    """out[k] = row first_row + k of W: a tile of weights for a BLAS matmul.

    Serial and without the GIL: matmul runs one tile per Python worker thread.
    """
    unused = np.empty(0, np.float32)
    for k in range(out.shape[0]):
        row_values(qtype, w[first_row + k], unused, unused, out[k], False)
    return out
