"""Kernels on raw GGUF blocks: matrix-vector product, row dequantization, tiles for BLAS.

All take the type code and the weight as a 2-D uint8 array [rows, row_bytes] read straight
from the mapped file. Products accumulate in 32 float32 lanes across a whole row, with one
horizontal sum per row: that is what vectorizes in Numba (integer dot products do not,
see ENGINEERING.md).
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from nanosmol.quants.blocks import row_values

JIT = dict(cache=True, fastmath=True, boundscheck=False)
LANES = 32  # float32 accumulators per row, one horizontal sum at the end
ROWS_PER_TASK = 16  # rows a thread takes at a time: amortizes scratch set-up, balances load


@intrinsic
def _stack_lanes(typingctx):
    sig = types.CPointer(types.float32)()

    def codegen(context, builder, signature, args):
        return cgutils.alloca_once(builder, context.get_value_type(types.float32), size=LANES)

    return sig, codegen


@njit(inline="always", **JIT)
def stack_lanes():
    """LANES float32 accumulators on the stack of the calling kernel.

    LLVM keeps them in registers across a whole row. A heap array (np.empty) may alias
    the weights as far as LLVM knows, so every block would store and reload it: twice as
    slow for Q8_0 and Q4_1.
    """
    return numba.carray(_stack_lanes(), LANES)


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, out):
    """out = W @ x for W [rows, row_bytes] of type qtype, x float32 [cols]."""
    rows = w.shape[0]
    n_tasks = (rows + ROWS_PER_TASK - 1) // ROWS_PER_TASK
    unused = np.empty(0, np.float32)
    for task in prange(n_tasks):
        acc = stack_lanes()
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
