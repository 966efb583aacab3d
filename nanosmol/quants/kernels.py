"""Kernels on raw GGUF blocks: matrix-vector and matrix products, row dequantization, tiles for BLAS.

All take the type code and the weight as a 2-D uint8 array [rows, row_bytes] read straight
from the mapped file. A matrix-vector product takes x twice: as float32 and quantized
(`intdot.QuantizedVector`). The quantized types multiply the quantized x in integers
(intdot.py), in decode and in prefill (`matmul_quantized`); F32, F16 and BF16 accumulate
float products in 32 float32 lanes across a whole row, with one horizontal sum per row (both
in vecdot.py), and go through BLAS tiles in prefill.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from nanosmol.layers import silu
from nanosmol.quants.blocks import BF16, F16, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q8_0, row_values
from nanosmol.quants.intdot import (INT_DOT_TYPES, TOKEN_LANE_TYPES, dequantize_row_block32, dequantize_row_k4,
                                    row_by_tokens, row_dot, row_dots, tokens_per_pass)
from nanosmol.quants.q8_0_tiles import ROWS, rows_by_tokens, tiles_take
from nanosmol.quants.specialize import ConstantTypes
from nanosmol.quants.vecdot import PREFILL_TOKENS, dot_bf16, dot_f16, dot_f32
from nanosmol.simd import stack_token_lanes

# ConstantTypes: a kernel called with its type as a constant compiles that type's code only.
JIT = dict(cache=True, fastmath=True, boundscheck=False, error_model="numpy", pipeline_class=ConstantTypes)
ROWS_PER_TASK = ROWS  # rows a thread takes at a time: amortizes scratch set-up, balances load; Q8_0's tile


@njit(**JIT)
def dot_rows(qtype, w, x, xq, out, first, last):
    """out[r] = W[r] . x for rows first <= r < last: one task of a matvec, on one thread."""
    if qtype in INT_DOT_TYPES:
        for r in range(first, last):
            out[r] = row_dot(qtype, w[r], xq, x.shape[0])
        return
    acc, r = stack_token_lanes(), first
    if x.shape[0] > WIDE_ROW:
        while r + 4 <= last:
            four_rows_dot_float(qtype, w, r, x, out, acc)
            r += 4
    while r < last:
        acc[:32] = 0.0
        row_dot_float(qtype, w[r], x, acc)
        out[r] = acc[:32].sum()
        r += 1


# Float rows wider than WIDE_ROW go four at a time while four remain, sharing each load of x: a
# wide row's x (ffn_down's: 11008 float32, 43 KiB) does not stay in a 32 KiB L1 cache, and one
# row at a time read it from L2 as often as the weights (F16 at 2048 x 11008: 12 GB/s on one
# thread, 16 two rows at a time, 20 four). Narrower rows go one at a time, a single sequential
# stream, which the hardware prefetchers follow best (two at a time slowed 2048-wide rows 40%).
WIDE_ROW = 4096


@njit(inline="always", **JIT)
def dot_float(qtype, acc, row, b, x):
    """acc[0:32] += the products of the float row's b-th 32 values with x's."""
    if qtype == F16:
        dot_f16(acc, row, 64 * b, x, 32 * b)
    elif qtype == BF16:
        dot_bf16(acc, row, 64 * b, x, 32 * b)
    else:
        dot_f32(acc, row, 128 * b, x, 32 * b)


@njit(inline="always", **JIT)
def row_dot_float(qtype, row, x, acc):
    """acc[0:32] += the float row's products with x."""
    for b in range(x.shape[0] // 32):
        dot_float(qtype, acc, row, b, x)


@njit(inline="always", **JIT)
def four_rows_dot_float(qtype, w, r, x, out, acc):
    """out[r + k] = row r + k . x for k < 4, in one pass over x (acc: 128 lanes of scratch)."""
    row0, row1, row2, row3 = w[r], w[r + 1], w[r + 2], w[r + 3]
    acc1, acc2, acc3 = acc[32:64], acc[64:96], acc[96:128]
    acc[:] = 0.0
    for b in range(x.shape[0] // 32):
        dot_float(qtype, acc, row0, b, x)
        dot_float(qtype, acc1, row1, b, x)
        dot_float(qtype, acc2, row2, b, x)
        dot_float(qtype, acc3, row3, b, x)
    for k in range(4):
        out[r + k] = acc[32 * k : 32 * k + 32].sum()


@njit(inline="always", **JIT)
def task_rows(w, task):
    """The rows of task number `task` of a matvec over W."""
    first = task * ROWS_PER_TASK
    return first, min(w.shape[0], first + ROWS_PER_TASK)


@njit(inline="always", **JIT)
def n_tasks(w):
    return (w.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK


@njit(inline="always", **JIT)
def dot_task(qtype, w, x, xq, out, task):
    """Task number `task` of the matvec out = W @ x."""
    first, last = task_rows(w, task)
    dot_rows(qtype, w, x, xq, out, first, last)


@njit(parallel=True, **JIT)
def matvec(qtype, w, x, xq, out):
    """out = W @ x for W [rows, row_bytes] of type qtype, x float32 [cols] and quantized in xq."""
    for task in prange(n_tasks(w)):
        dot_task(qtype, w, x, xq, out, task)
    return out


@njit(parallel=True, **JIT)
def matvec_qkv(tq, wq, q, tk, wk, k, tv, wv, v, x, xq):
    """q, k, v = Wq x, Wk x, Wv x in one parallel region: three small matrices share it."""
    nq, nk = n_tasks(wq), n_tasks(wk)
    for task in prange(nq + nk + n_tasks(wv)):
        if task < nq:
            dot_task(tq, wq, x, xq, q, task)
        elif task < nq + nk:
            dot_task(tk, wk, x, xq, k, task - nq)
        else:
            dot_task(tv, wv, x, xq, v, task - nq - nk)


@njit(parallel=True, **JIT)
def matvec_swiglu(t_gate, w_gate, t_up, w_up, x, xq, out, up):
    """out = silu(W_gate x) * (W_up x), the whole SwiGLU input side in one parallel region."""
    for task in prange(n_tasks(w_gate)):
        first, last = task_rows(w_gate, task)
        dot_rows(t_gate, w_gate, x, xq, out, first, last)
        dot_rows(t_up, w_up, x, xq, up, first, last)
        for r in range(first, last):
            out[r] = silu(out[r]) * up[r]


@njit(inline="always", **JIT)
def rows_by_token_lanes(qtype, w, first, last, xq, n, out, lanes):
    """out[t, first:last] = rows first..last of W times token t, for the first `lanes` tokens,
    8 or 16 a pass in the token lanes (the rows are in the core's cache from the first pass)."""
    acc, t0 = stack_token_lanes(), 0
    while t0 < lanes:
        tokens = tokens_per_pass(qtype, t0, lanes)
        for r in range(first, last):
            if qtype in TOKEN_LANE_TYPES:
                row_by_tokens(qtype, w[r], xq, n, t0 * n, acc, tokens)
            else:
                row_dots(qtype, w[r], xq, n, t0 * n, PREFILL_TOKENS, acc)
            for t in range(min(tokens, out.shape[0] - t0)):
                out[t0 + t, r] = acc[t]
        t0 += tokens


@njit(parallel=True, **JIT)
def matmul_quantized(qtype, w, xq, n, out, lanes):
    """out[t] = W @ x_t for the rows x_t [n] of a batch quantized in xq (`quantize_rows`).

    Prefill's products, in integers as decode's: a task takes ROWS_PER_TASK weight rows
    through the whole batch, PREFILL_TOKENS activation rows at a time (Q8_0: 16 where it can,
    `tokens_per_pass`), so each weight block is unpacked once per pass while its rows stay in
    the core's cache. The first `lanes` tokens (a multiple of PREFILL_TOKENS) go that way;
    where lanes passes the batch's end, xq holds zero rows there (`padded_tail`) and only the
    batch's are written. The tokens after lanes go one at a time. Q8_0 on AVX2 without VNNI
    widens the task's rows to int16 once and takes them 6 tokens at a time instead
    (`q8_0_tiles`; xq then holds the activations widened too).
    """
    for task in prange(n_tasks(w)):
        first, last = task_rows(w, task)
        if qtype == Q8_0 and tiles_take(lanes):  # the constant type prunes this for the others
            tile, scales = np.empty(ROWS * n, np.int16), np.empty(n // 2, np.float32)
            rows_by_tokens(w, first, last, xq, n, out, lanes, tile, scales)
        else:
            rows_by_token_lanes(qtype, w, first, last, xq, n, out, lanes)
        for t in range(lanes, out.shape[0]):
            for r in range(first, last):
                out[t, r] = row_dot(qtype, w[r], xq, n, t * n)
    return out


@njit(**JIT)
def dequantize_row(qtype, row, out):
    """out = the row's values. Each 32-value type's branch passes it as a constant."""
    if qtype == Q8_0:
        dequantize_row_block32(Q8_0, row, 0, out)
    elif qtype == Q4_1:
        dequantize_row_block32(Q4_1, row, 0, out)
    elif qtype == Q5_0:
        dequantize_row_block32(Q5_0, row, 0, out)
    elif qtype == Q4_0:
        dequantize_row_block32(Q4_0, row, 0, out)
    elif qtype == Q5_1:
        dequantize_row_block32(Q5_1, row, 0, out)
    elif qtype == Q4_K:
        dequantize_row_k4(row, out, False)
    elif qtype == Q5_K:
        dequantize_row_k4(row, out, True)
    else:
        row_values(qtype, row, out)


@njit(parallel=True, **JIT)
def dequantize_rows(qtype, w, row_ids, out):
    """out[k] = row row_ids[k] of W, as float32 (embedding lookups)."""
    for k in prange(row_ids.shape[0]):
        dequantize_row(qtype, w[row_ids[k]], out[k])
    return out


@njit(nogil=True, **JIT)
def dequantize_tile(qtype, w, first_row, out):
    """out[k] = row first_row + k of W: a tile of weights for a BLAS matmul.

    Serial and without the GIL: matmul runs one tile per Python worker thread.
    """
    for k in range(out.shape[0]):
        dequantize_row(qtype, w[first_row + k], out[k])
    return out


@njit(**JIT)
def rescore_top(qtype, w, x, logits, k, scratch):
    """logits[i] = W[i] . x in float32 for the k largest logits (k <= len(logits)): exact values
    where decode's int8 activation decides the token. One pass finds them; k rows are
    dequantized into scratch."""
    top = np.arange(k)
    worst, threshold = k_th_best(logits, top)
    for i in range(k, logits.shape[0]):
        if logits[i] > threshold:  # rare after the first few hundred logits
            top[worst] = i
            worst, threshold = k_th_best(logits, top)
    for j in range(k):
        dequantize_row(qtype, w[top[j]], scratch)
        total = np.float32(0.0)
        for c in range(x.shape[0]):
            total += scratch[c] * x[c]
        logits[top[j]] = total


@njit(inline="always", **JIT)
def k_th_best(logits, top):
    """(position in top, value) of the smallest logit that top holds."""
    worst = 0
    for j in range(1, top.shape[0]):
        if logits[top[j]] < logits[top[worst]]:
            worst = j
    return worst, logits[top[worst]]
