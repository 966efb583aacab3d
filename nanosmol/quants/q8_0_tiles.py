"""Q8_0 prefill on AVX2 without VNNI: weight rows widened to int16, 16 rows by 6 tokens a pass.

Q8_0's codes are signed, and vpmaddubsw multiplies unsigned bytes by signed ones, so the
token-lane kernel (vecdot's `_row32_by_tokens`) takes llama.cpp's sign trick: vpsignb,
vpmaddubsw and vpmaddwd for every 32 products, which on Zen 3 all issue on the same two
vector pipes (as do the block's vpshufd and vpabsb). Widened to int16, 16 products are one
vpmaddwd and a vpaddd, which issues on any pipe: a loop of 16 rows by 6 tokens ran 22
products a cycle where the sign trick's ran 16.5 (one core, data in L1, both loops as
assembly in one process).

A task's 16 weight rows are widened once into a tile (`widen_rows`): for each block of 32
values and each pair p of them, two vectors of 8 rows' (value 2p, value 2p + 1). Each
token's activations are widened once per batch (`QuantizedVector.q32_wide`), so a pair is
one broadcast 32-bit load. A block then takes, per pair, 2 tile loads, 6 broadcasts and 12
vpmaddwd + vpaddd into 12 int32 sums, all 16 vector registers; then each sum, converted to
float, meets its 8 rows' scales times its token's and adds into the float sums in memory.
The integer sums are exact and the float steps are the token-lane kernel's, in its order
(one fused multiply-add per block), so both give the same results bit for bit.

The block is written as assembly: from the same loop in vector IR, LLVM regrouped the
integer adds into trees and interleaved the pairs, which needs more registers than there
are, and spilled sums to the stack and back (92 stack accesses a block), which made it no
faster than the sign trick.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from nanosmol.quants.blocks import Q8_0, f16
from nanosmol.simd import I16x16, stack_token_lanes, target_has_avx2, target_has_vnni, vector_at

ROWS = 16  # weight rows per tile: two vectors of 8 lanes
TOKENS = 6  # tokens per pass: 12 int32 sums, 2 tile vectors, a broadcast and a product in 16 registers
MIN_TOKENS = 24  # from this many tokens in the lanes (16: as fast as the token lanes, which need no widening)
INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")
JIT = dict(cache=True, fastmath=True, boundscheck=False)


def _target_takes_tiles(context) -> bool:
    return target_has_avx2(context) and not target_has_vnni(context)


@intrinsic
def _takes_tiles(typingctx):
    def codegen(context, builder, signature, args):
        return ir.Constant(ir.IntType(1), int(_target_takes_tiles(context)))

    return types.boolean(), codegen


@njit(**INLINE)
def tiles_take(lanes) -> bool:
    """Whether Q8_0 weights multiply a batch with `lanes` tokens in the lanes in int16 tiles:
    from MIN_TOKENS on, where Numba compiles for AVX2 without VNNI (with VNNI, one vpdpbusd
    does the sign trick's work)."""
    return lanes >= MIN_TOKENS and _takes_tiles()


@njit(**JIT)
def uses_tiles(qtype, lanes) -> bool:
    """tiles_take for weights of type qtype (Python asks it: the batch is then widened)."""
    return qtype == Q8_0 and tiles_take(lanes)


# -- the tile: 16 rows widened to int16, each pair of values of 8 rows in one vector -------


def _transpose8(builder, rows):
    """The 8x8 transpose of eight <8 x i32>: vector p holds element p of each row, in row
    order. Three rounds of two-input shuffles (32-bit, 64-bit, 128-bit interleaves)."""
    shuffle = lambda a, c, mask: builder.shuffle_vector(a, c, ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))
    lo32, hi32 = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    lo64, hi64 = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    lo128, hi128 = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    t = [shuffle(rows[i], rows[i + 1], m) for i in range(0, 8, 2) for m in (lo32, hi32)]
    # u[j] (j < 4): rows 0-3's elements j and j + 4; u[4 + j]: rows 4-7's
    u = [shuffle(t[i + j], t[i + j + 2], m) for i in (0, 4) for j in (0, 1) for m in (lo64, hi64)]
    return [shuffle(u[p % 4], u[4 + p % 4], lo128 if p < 4 else hi128) for p in range(8)]


@intrinsic
def _widen_16_rows(typingctx, tile, w, first, last, n_blocks):
    """The codes of Q8_0 rows first..first + 15 of W into the tile (see widen_rows); a row at or
    past last takes row last - 1's codes."""

    def codegen(context, builder, signature, args):
        b, i64 = builder, ir.IntType(64)
        c = lambda v: ir.Constant(i64, v)
        i8x32, i16x32, i32x16 = (ir.VectorType(ir.IntType(bits), n) for bits, n in ((8, 32), (16, 32), (32, 16)))
        half = lambda v, h: b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), 8), list(range(8 * h, 8 * h + 8))))
        first, last, n_blocks = args[2], args[3], args[4]
        row_bytes = b.mul(n_blocks, c(34))
        rows = [b.add(first, c(r)) for r in range(ROWS)]
        rows = [b.select(b.icmp_signed("<", r, last), r, b.sub(last, c(1))) for r in rows]
        with cgutils.for_range(b, n_blocks) as loop:
            k = loop.index
            for g in range(2):  # rows 8g..8g + 7: their 16 pairs each, as int32
                pairs = []
                for lane in range(8):
                    at = b.add(b.mul(rows[8 * g + lane], row_bytes), b.add(b.mul(k, c(34)), c(2)))
                    codes = b.load(vector_at(context, b, signature.args[1], args[1], at, i8x32), align=1)
                    pairs.append(b.bitcast(b.sext(codes, i16x32), i32x16))
                for h in range(2):
                    for p, vector in enumerate(_transpose8(b, [half(v, h) for v in pairs])):
                        at = b.add(b.mul(k, c(512)), c(32 * (8 * h + p) + 16 * g))
                        b.store(b.bitcast(vector, I16x16), vector_at(context, b, signature.args[0], args[0], at, I16x16),
                                align=1)
        return context.get_dummy_value()

    return types.none(tile, w, types.int64, types.int64, types.int64), codegen


@njit(**INLINE)
def widen_rows(w, first, last, tile, scales):
    """Rows first..last (at most ROWS) of the Q8_0 matrix W into the int16 tile and their
    scales: value 2p + h of block k of row r at tile[512k + 32p + 16(r // 8) + 2(r % 8) + h],
    its scale at scales[16k + r]. A last task's rows past last repeat row last - 1: their sums
    are computed and never written."""
    blocks = w.shape[1] // 34
    for r in range(ROWS):
        row = w[min(first + r, last - 1)]
        for k in range(blocks):
            scales[16 * k + r] = f16(row, 34 * k)
    _widen_16_rows(tile, w, first, last, blocks)


# -- a block of 16 rows by 6 tokens, as assembly ------------------------------------------

# The assembly's operands, all addresses or byte counts: the tile's block; tokens 0 and 3's
# values there and the bytes from one token to the next; the block's 16 row scales; tokens
# 0 and 3's scales of the block and the bytes between tokens' scales; the float sums.
TILE, X0, X3, X_STRIDE, ROW_SCALES, D0, D3, D_STRIDE, SUMS = (f"${i}" for i in range(9))


def _three_tokens(first: str, stride: str) -> list[str]:
    return [f"({first})", f"({first},{stride})", f"({first},{stride},2)"]


def _block_assembly() -> str:
    """ymm0-11 hold the int32 sums (rows 8g..8g + 7 and token t in ymm(6g + t)), ymm12-13 the
    tile's two vectors of a pair, ymm14 a token's pair (then its scale), ymm15 a product.
    At the end sums[16t + 8g : +8] += float(int sum) * (row scales * token scale)."""
    x = _three_tokens(X0, X_STRIDE) + _three_tokens(X3, X_STRIDE)
    d = _three_tokens(D0, D_STRIDE) + _three_tokens(D3, D_STRIDE)
    lines = [f"vpxor %ymm{i}, %ymm{i}, %ymm{i}" for i in range(12)]
    for p in range(16):
        lines += [f"vmovdqu {64 * p}({TILE}), %ymm12", f"vmovdqu {64 * p + 32}({TILE}), %ymm13"]
        for t in range(TOKENS):
            lines.append(f"vpbroadcastd {4 * p}{x[t]}, %ymm14")
            for g in range(2):
                lines += [f"vpmaddwd %ymm14, %ymm{12 + g}, %ymm15", f"vpaddd %ymm15, %ymm{6 * g + t}, %ymm{6 * g + t}"]
    for t in range(TOKENS):
        for g in range(2):
            acc, sums = f"%ymm{6 * g + t}", f"{64 * t + 32 * g}({SUMS})"
            lines += [f"vbroadcastss {d[t]}, %ymm14", f"vmulps {32 * g}({ROW_SCALES}), %ymm14, %ymm14",
                      f"vcvtdq2ps {acc}, {acc}", f"vfmadd213ps {sums}, %ymm14, {acc}", f"vmovups {acc}, {sums}"]
    return "\n".join(lines)


BLOCK_ASSEMBLY = _block_assembly()


@intrinsic
def tile_by_6_tokens(typingctx, sums, tile, scales, x16, x_at, n, d32, d_at, n_blocks):
    """sums[16t + r] += row r of the tile times token t's activations, for 6 tokens: token t's
    int16 values from x16[x_at + t * n] on, its block scales from d32[d_at + t * n_blocks] on.
    Only where _target_takes_tiles (elsewhere it is never called, and compiles to nothing)."""

    def codegen(context, builder, signature, args):
        if not _target_takes_tiles(context):
            return context.get_dummy_value()
        b, i64 = builder, ir.IntType(64)
        c = lambda v: ir.Constant(i64, v)
        x_at, n, d_at, n_blocks = args[4], args[5], args[7], args[8]

        def address(arg, index, element):
            return b.ptrtoint(vector_at(context, b, signature.args[arg], args[arg], index, element), i64)

        x_stride, d_stride = b.mul(n, c(2)), b.mul(n_blocks, c(4))
        clobbers = [f"~{{xmm{i}}}" for i in range(16)] + ["~{memory}"]
        block = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [i64] * 9), BLOCK_ASSEMBLY, ",".join(["r"] * 9 + clobbers),
                             side_effect=True)
        with cgutils.for_range(b, n_blocks) as loop:
            k = loop.index
            x0 = address(3, b.add(x_at, b.mul(k, c(32))), ir.IntType(16))
            d0 = address(6, b.add(d_at, k), ir.FloatType())
            b.call(block, [address(1, b.mul(k, c(512)), ir.IntType(16)), x0, b.add(x0, b.mul(x_stride, c(3))), x_stride,
                           address(2, b.mul(k, c(16)), ir.FloatType()), d0, b.add(d0, b.mul(d_stride, c(3))), d_stride,
                           address(0, 0, ir.FloatType())])
        return context.get_dummy_value()

    sig = types.none(sums, tile, scales, x16, types.int64, types.int64, d32, types.int64, types.int64)
    return sig, codegen


@njit(**INLINE)
def rows_by_tokens(w, first, last, v, n, out, lanes, tile, scales):
    """out[t, first:last] = rows first..last of the Q8_0 matrix W times token t, for the first
    `lanes` tokens (at least TOKENS), whose activations are quantized in v (`q32_wide`, `d32`),
    each n values. A last pass that would run past lanes starts earlier instead, computing a
    few tokens again (the same values)."""
    widen_rows(w, first, last, tile, scales)
    sums, blocks = stack_token_lanes(), n // 32
    for start in range(0, lanes, TOKENS):
        t0 = min(start, lanes - TOKENS)
        sums[: ROWS * TOKENS] = 0.0
        tile_by_6_tokens(sums, tile, scales, v.q32_wide, t0 * n, n, v.d32, t0 * blocks, blocks)
        for t in range(min(TOKENS, out.shape[0] - t0)):
            for r in range(last - first):
                out[t0 + t, first + r] = sums[ROWS * t + r]
