"""Float32 matrix products on small tiles, in registers: prefill attention's scores and mixing.

A BLAS call per tile ran on worker threads beside the OpenMP threads of the matmuls before
it (one of which spins for a while after each parallel region), at half its speed; compiled
here, the products run inside the attention's own parallel region. The inner step is the
classic one: ROWS rows of A times one 16-wide strip of B, 2 x ROWS accumulators of 8 lanes,
one broadcast of A's value per row and two loads of B per step of the shared dimension.
"""

from __future__ import annotations

from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from nanosmol.simd import splat, vector_at

INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")
ROWS, COLS = 4, 16  # the tile of C one step keeps in registers (8 of the 16 vector registers on AVX2)
F32, I64 = ir.FloatType(), ir.IntType(64)
F32x8 = ir.VectorType(F32, 8)


def _strip(rows: int):
    @intrinsic
    def strip(typingctx, c, c_at, c_stride, a, a_at, a_stride, b, b_at, b_stride, depth, accumulate):
        """c[c_at + i c_stride + j] = (c's value if accumulate) + the sum over k < depth of
        a[a_at + i a_stride + k] * b[b_at + k b_stride + j], for i < rows and j < 16 (flat arrays)."""

        def codegen(context, builder, signature, args):
            b = builder
            at = lambda base, i, stride: b.add(base, b.mul(stride, ir.Constant(I64, i))) if i else base
            vec = lambda arg, index: vector_at(context, b, signature.args[arg], args[arg], index, F32x8)
            c_lanes = [[b.add(at(args[1], i, args[2]), ir.Constant(I64, 8 * h)) for h in range(2)] for i in range(rows)]
            zero = ir.Constant(F32x8, [0.0] * 8)
            accs = [[cgutils.alloca_once_value(b, b.select(args[10], b.load(vec(0, c_lanes[i][h]), align=4), zero))
                     for h in range(2)] for i in range(rows)]
            a_rows = [at(args[4], i, args[5]) for i in range(rows)]
            with cgutils.for_range(b, args[9]) as loop:
                k = loop.index
                b_row = b.add(args[7], b.mul(k, args[8]))
                strip16 = [b.load(vec(6, b.add(b_row, ir.Constant(I64, 8 * h))), align=4) for h in range(2)]
                for i in range(rows):
                    a_value = b.load(vector_at(context, b, signature.args[3], args[3], b.add(a_rows[i], k), F32))
                    a_lanes = splat(b, a_value, F32x8)
                    for h in range(2):
                        acc = accs[i][h]
                        b.store(b.fadd(b.load(acc), b.fmul(a_lanes, strip16[h], flags=["fast"]), flags=["fast"]), acc)
            for i in range(rows):
                for h in range(2):
                    b.store(b.load(accs[i][h]), vec(0, c_lanes[i][h]), align=4)
            return context.get_dummy_value()

        i64 = types.int64
        return types.none(c, i64, i64, a, i64, i64, b, i64, i64, i64, types.boolean), codegen

    return strip


_strip_of_rows, _strip_of_one = _strip(ROWS), _strip(1)


@njit(**INLINE)
def tile_product(c, c_at, c_stride, a, a_at, a_stride, b, b_at, b_stride, rows, cols, depth, accumulate):
    """C[:rows, :cols] (+)= A[:rows, :depth] @ B[:depth, :cols] for matrices held row by row in
    flat float32 arrays (C at c[c_at:], its rows c_stride apart; A and B alike). cols: a
    multiple of 16. B's strip of 16 columns stays in L1 while every row of A meets it."""
    whole = rows - rows % ROWS
    for j in range(0, cols, COLS):
        for i in range(0, whole, ROWS):
            _strip_of_rows(c, c_at + i * c_stride + j, c_stride, a, a_at + i * a_stride, a_stride,
                           b, b_at + j, b_stride, depth, accumulate)
        for i in range(whole, rows):
            _strip_of_one(c, c_at + i * c_stride + j, c_stride, a, a_at + i * a_stride, a_stride,
                          b, b_at + j, b_stride, depth, accumulate)
