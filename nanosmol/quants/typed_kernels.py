"""The kernels Python calls, each compiled for one weight type (specialize.py says why).

`typed_kernels.matvec(qtype)(w, x, xq, out)` is `kernels.matvec(qtype, w, x, xq, out)` with
qtype a constant: an entry per type, made once per process, compiled once and cached.
"""

from __future__ import annotations

from functools import cache

from numba import njit

from nanosmol.quants import kernels
from nanosmol.quants.specialize import named_for

ENTRY = dict(cache=True, nogil=True)  # nogil: prefill's tiles run on worker threads


@cache
def matvec(qtype: int):
    @njit(**ENTRY)
    @named_for((qtype,))
    def matvec_of_type(w, x, xq, out):
        return kernels.matvec(qtype, w, x, xq, out)

    return matvec_of_type


@cache
def matmul_quantized(qtype: int):
    @njit(**ENTRY)
    @named_for((qtype,))
    def matmul_quantized_of_type(w, xq, n, out, lanes):
        return kernels.matmul_quantized(qtype, w, xq, n, out, lanes)

    return matmul_quantized_of_type


@cache
def dequantize_rows(qtype: int):
    @njit(**ENTRY)
    @named_for((qtype,))
    def dequantize_rows_of_type(w, row_ids, out):
        return kernels.dequantize_rows(qtype, w, row_ids, out)

    return dequantize_rows_of_type


@cache
def dequantize_tile(qtype: int):
    @njit(**ENTRY)
    @named_for((qtype,))
    def dequantize_tile_of_type(w, first_row, out):
        return kernels.dequantize_tile(qtype, w, first_row, out)

    return dequantize_tile_of_type


@cache
def rescore_top(qtype: int):
    @njit(**ENTRY)
    @named_for((qtype,))
    def rescore_top_of_type(w, x, logits, k, scratch):
        return kernels.rescore_top(qtype, w, x, logits, k, scratch)

    return rescore_top_of_type
