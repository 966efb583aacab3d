"""Integer dot products for decode: weight rows times an activation quantized to int8.

llama.cpp's way, and the reason it decodes quantized files faster than float lanes can:
the activation is quantized once per matrix-vector product, to int8 with one float scale per
block (per 32 values for the 32-value weight types, as llama.cpp's Q8_0; per 256 for the
k-quants, as its Q8_K). Each weight block is then multiplied with it in integers, whole
blocks at a time in vector registers (vecdot.py), and only the block's integer sum meets a
float scale. Every type here has weights `d * code + m` per (sub-)block, so its dot product
is `d * dx * (codes . q) + m * dx * sum(q)`: the second term comes from block sums of the
quantized activation computed once. The same codes, unpacked and scaled back to floats 32
at a time, are these types' dequantization (the weight tiles of prefill's BLAS matmul).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit

from nanosmol.quants.blocks import (Q2_K, Q3_K, Q4_0, Q4_1, Q4_K, Q5_0, Q5_1, Q5_K, Q6_K, Q8_0, f16, high4, k4_scale_min,
                                    low4, u32)
from nanosmol.quants.vecdot import (dot_q2_k, dot_q2_k_x8, dot_q3_k, dot_q3_k_x8, dot_q4_0, dot_q4_1, dot_q4_k, dot_q5_0,
                                    dot_q5_1, dot_q5_k, dot_q6_k, dot_q8_0, row_q4_0_by_tokens,
                                    row_q4_1_by_tokens, row_q4_k_by_tokens, row_q5_0_by_tokens, row_q5_1_by_tokens,
                                    row_q5_k_by_tokens, row_q6_k_by_tokens, row_q8_0_by_16_tokens, row_q8_0_by_tokens)
from nanosmol.quants.specialize import ConstantTypes
from nanosmol.simd import (abs_max32, or_bits, prefetch, round_into32, stack_codes, stack_lanes, stack_token_lanes,
                          store_scaled_codes, store_scaled_int8, unpack_nibbles16)

INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")
JIT = dict(cache=True, fastmath=True, boundscheck=False)


# Decode reads each weight row once, from memory. With only the hardware prefetchers to fetch
# ahead, two threads streamed the 3B shapes at 13-19 GB/s on a Zen 3 host where plain reads
# run at 20-31: each block loop therefore also asks for the bytes PREFETCH_BYTES ahead of the
# block it multiplies (into the next rows at a row's end). On that host, 2 threads, the
# versions taking turns: Q4_K 15-17 -> 16-21 GB/s, Q6_K 15-19 -> 19-24, Q3_K 13-14 -> 14-17,
# and 3b-q4km decode 7.2-7.5 -> 8.9-9.9 tok/s; 4096 bytes ahead measured about the same, noisier.
PREFETCH_BYTES = 2048


@njit(**INLINE)
def prefetch_ahead(row, o, nbytes):
    """Ask for the cache lines of the nbytes that start PREFETCH_BYTES past byte o of the row."""
    for line in range(0, nbytes, 64):
        prefetch(row, o + PREFETCH_BYTES + line)


class QuantizedVector(NamedTuple):
    """An activation vector quantized to int8 both ways llama.cpp does (see quantize_vector)."""

    q32: np.ndarray  # int8 [n]: x / d32, rounded, in blocks of 32 (llama.cpp's Q8_0)
    d32: np.ndarray  # float32 [n / 32]
    s32: np.ndarray  # float32 [n / 32]: d32 * the block's sum of q32
    q256: np.ndarray  # int8 [n]: in blocks of 256, for the k-quants (llama.cpp's Q8_K)
    d256: np.ndarray  # float32 [n / 256]
    sum16: np.ndarray  # int16 [n / 16]: sums of 16 q256 values, for Q6_K's offsets
    sum32: np.ndarray  # int16 [n / 32]: sums of 32 q256 values, for Q4_K's and Q5_K's mins
    d32_by_8: np.ndarray  # float32 [n / 32]: d32 of rows (tokens) 8g..8g+7 side by side, block by block
    s32_by_8: np.ndarray  # float32 [n / 32]: the same of s32 (quantize_rows; prefill's 32-value types)
    q32_by_8: np.ndarray  # int8 [n]: q32 of tokens 8g..8g+7 in token lanes (in_token_lanes; prefill)
    q256_by_8: np.ndarray  # int8 [n]: the same of q256 (the k-quants)
    d256_by_8: np.ndarray  # float32 [n / 256]: d256 of those tokens side by side, block by block
    sum32_by_8: np.ndarray  # int16 [n / 32]: their sum32, per block: pairs of sub-blocks, token by token
    sum16_by_8: np.ndarray  # int16 [n / 16]: their sum16 the same way (Q6_K's offsets)
    q32_wide: np.ndarray  # int16 [n]: q32 widened (quantize_rows with wide32: prefill's Q8_0 tiles)

    @classmethod
    def empty(cls, n: int) -> "QuantizedVector":
        """Room for any vector of up to n values."""
        return cls(np.zeros(n, np.int8), np.zeros(n // 32, np.float32), np.zeros(n // 32, np.float32),
                   np.zeros(n, np.int8), np.zeros(n // 256 + 1, np.float32), np.zeros(n // 16, np.int16),
                   np.zeros(n // 32, np.int16), np.zeros(n // 32, np.float32), np.zeros(n // 32, np.float32),
                   np.zeros(n, np.int8), np.zeros(n, np.int8), np.zeros(n // 256 + 1, np.float32),
                   np.zeros(n // 32, np.int16), np.zeros(n // 16, np.int16), np.zeros(n, np.int16))


@njit(**INLINE)
def quantize_blocks(x, q, d, size, sums32):
    """q = round(x / d) per block of `size`, with d = max|x| / 127 of the block; sums32[k] =
    the sum of the k-th 32 of q."""
    for b in range(x.shape[0] // size):
        amax = np.float32(0.0)
        for i in range(size * b, size * b + size, 32):
            amax = max(amax, abs_max32(x, i))
        inverse = np.float32(127.0) / amax if amax > 0 else np.float32(0.0)
        for i in range(size * b, size * b + size, 32):
            sums32[i // 32] = round_into32(x, i, inverse, q)
        d[b] = amax / np.float32(127.0)


@njit(**INLINE)
def block_sums(q, sums, size):
    """sums[b] = the sum of q's b-th block of `size` values."""
    for b in range(sums.shape[0]):
        total = 0
        for value in q[size * b : size * b + size]:
            total += value
        sums[b] = total


@njit(**INLINE)
def quantize_values(x, v, k_quant_blocks, at=0, blocks32=True):
    """Quantize the values x into v from value `at` on (a whole number of blocks), in blocks of
    32 (if blocks32) and of 256 (if k_quant_blocks)."""
    n, b0 = x.shape[0], at // 32
    if blocks32:
        quantize_blocks(x, v.q32[at : at + n], v.d32[b0 : b0 + n // 32], 32, v.s32[b0 : b0 + n // 32])
        # Loops, not slice arithmetic: an array stored into a slice (a[:m] *= b[:m] is one) makes
        # Numba compile its shape-mismatch message, string formatting and all: 2 s of a cold start.
        for b in range(b0, b0 + n // 32):
            v.s32[b] *= v.d32[b]
    if k_quant_blocks:
        quantize_blocks(x, v.q256[at : at + n], v.d256[at // 256 : (at + n) // 256], 256, v.sum32[b0 : b0 + n // 32])
        block_sums(v.q256[at : at + n], v.sum16[at // 16 : (at + n) // 16], 16)
    return v


@njit(nogil=True, **JIT)
def quantize_vector(x, v):
    """Quantize x into v (a QuantizedVector with room for it): once per matrix-vector product.
    K-quant rows are whole 256-value blocks; no k-quant matrix has other widths."""
    return quantize_values(x, v, x.shape[0] % 256 == 0)


@njit(nogil=True, **JIT)
def quantize_rows(X, v, first, last, blocks32=True, blocks256=True, wide32=False):
    """Quantize rows first..last of X [tokens, n] (C-contiguous) into v, one after another:
    token t's values from t * n on, in blocks of 32 and (where n allows) of 256, or only in
    the sizes asked for (what the batch's weight types take: ACTIVATION_BLOCK); with wide32,
    the blocks of 32 also widened to int16 (Q8_0's prefill tiles: q8_0_tiles.py). No block
    spans two rows, as n is a whole number of blocks. first is a multiple of 8, and so is
    last unless it is the end: each group of 8 rows also goes into prefill's token lanes.
    Without the GIL: workers take parts of X."""
    n = X.shape[1]
    blocks256 = blocks256 and n % 256 == 0
    quantize_values(X[first:last].reshape(-1), v, blocks256, first * n, blocks32)
    blocks, groups = n // 32, range(first // 8, last // 8)
    if blocks32:
        for g in groups:  # each group of 8 rows' scales, block by block
            for t in range(8):
                for b in range(blocks):
                    v.d32_by_8[8 * g * blocks + 8 * b + t] = v.d32[(8 * g + t) * blocks + b]
                    v.s32_by_8[8 * g * blocks + 8 * b + t] = v.s32[(8 * g + t) * blocks + b]
        in_token_lanes(v.q32, v.q32_by_8, groups, n)
        if wide32:
            for i in range(first * n, last * n):
                v.q32_wide[i] = v.q32[i]
    if blocks256:
        in_token_lanes(v.q256, v.q256_by_8, groups, n)
        k_quant_sums_side_by_side(v, groups, n)
    return v


@njit(**INLINE)
def in_token_lanes(q, q_by_8, groups, n):
    """The int8 activations q of each group of 8 tokens (rows of n values) in `groups` in token lanes, for
    prefill's `_by_tokens` intrinsics: per 32 values, for each 4 tokens (quad), 4 vectors of
    8 x 4 bytes: vector j lane l holds token 4 * quad + l % 4's values 4k..4k+3 with
    k = 8s + j + 4 * (l >= 4), the order in which one vpshufd spreads the weights' 4-byte
    groups over the lanes."""
    words_in, words_out = q.view(np.int32), q_by_8.view(np.int32)
    sub_blocks = n // 32
    for g in groups:
        for s in range(sub_blocks):
            for quad in range(2):
                for j in range(4):
                    for lane in range(8):
                        k = 8 * s + j + 4 * (lane >= 4)
                        at = (((g * sub_blocks + s) * 2 + quad) * 4 + j) * 8 + lane
                        words_out[at] = words_in[(8 * g + 4 * quad + lane % 4) * (n // 4) + k]


@njit(**INLINE)
def k_quant_sums_side_by_side(v, groups, n):
    """d256, sum32 and sum16 of each group of 8 tokens in `groups` side by side, block by block
    (the sums as pairs of sub-blocks, token by token: what one vpmaddwd with the block's mins
    takes)."""
    sub_blocks, blocks = n // 32, n // 256
    for g in groups:
        for blk in range(blocks):
            for t in range(8):
                v.d256_by_8[(g * blocks + blk) * 8 + t] = v.d256[(8 * g + t) * blocks + blk]
                for sub in range(8):
                    at = ((g * blocks + blk) * 4 + sub // 2) * 16 + 2 * t + sub % 2
                    v.sum32_by_8[at] = v.sum32[(8 * g + t) * sub_blocks + 8 * blk + sub]
                for sub in range(16):
                    at = ((g * blocks + blk) * 8 + sub // 2) * 16 + 2 * t + sub % 2
                    v.sum16_by_8[at] = v.sum16[(8 * g + t) * 2 * sub_blocks + 16 * blk + sub]


# -- 32-value blocks: codes into codes[0:32], weights d * code + m ----------------------


@njit(**INLINE)
def codes_q5(row, o, qh, codes):
    unpack_nibbles16(codes, row, o)
    or_bits(codes, qh, 16)  # bit i of qh is the fifth bit of value i


@njit(**INLINE)
def block32_scales(qtype, row, o):
    """d and m of the 32-value block at row[o]: its values are d * code + m."""
    d = f16(row, o)
    if qtype == Q4_0:  # d, qs[16]; code - 8
        return d, np.float32(-8.0) * d
    if qtype == Q5_0:  # d, qh (u32), qs[16]; code - 16
        return d, np.float32(-16.0) * d
    return d, f16(row, o + 2)  # Q4_1: d, m, qs[16]; Q5_1: d, m, qh, qs[16]


@njit(**INLINE)
def unpack_block32(qtype, row, o, codes):
    """The codes of the block at row[o], and its d and m."""
    if qtype == Q4_0:
        unpack_nibbles16(codes, row, o + 2)
    elif qtype == Q4_1:
        unpack_nibbles16(codes, row, o + 4)
    elif qtype == Q5_0:
        codes_q5(row, o + 6, u32(row, o + 2), codes)
    else:
        codes_q5(row, o + 8, u32(row, o + 4), codes)
    return block32_scales(qtype, row, o)


@njit(**INLINE)
def dot_block32(qtype, acc, row, o, v, x_at, n):
    """Decode: one 32-value block's dot product into acc (see vecdot): one intrinsic per type."""
    if qtype == Q4_0:
        dot_q4_0(acc, row, o, v.q32, x_at, n, v.d32, v.s32)
    elif qtype == Q4_1:
        dot_q4_1(acc, row, o, v.q32, x_at, n, v.d32, v.s32)
    elif qtype == Q5_0:
        dot_q5_0(acc, row, o, v.q32, x_at, n, v.d32, v.s32)
    elif qtype == Q5_1:
        dot_q5_1(acc, row, o, v.q32, x_at, n, v.d32, v.s32)
    else:
        dot_q8_0(acc, row, o, v.q32, x_at, n, v.d32, v.s32)


@njit(**INLINE)
def block32_bytes(qtype):
    """Bytes per block of a 32-value type."""
    if qtype == Q4_0:
        return 18
    if qtype == Q4_1:
        return 20
    if qtype == Q5_0:
        return 22
    return 24 if qtype == Q5_1 else 34


@njit(**INLINE)
def row_dots_block32(qtype, row, o, v, n, at, acc):
    """Decode: Q8_0 (d, qs[32] int8) and Q4_0/Q4_1/Q5_0/Q5_1: one integer sum, one float scale
    per 32-value block, for the row at byte o of row. (Prefill: row_by_tokens.)

    Even blocks add into lanes 0-15, odd ones into 16-31 (a last odd one into 0-15): with
    one accumulator every block's multiply-add waited for the previous one's (4 cycles on
    Zen 4), which held Q8_0 to 8 values per cycle. (Four chains ran no faster with
    AVX-512 and 15% slower for Q5_0 on AVX2, whose 16 registers they overfill. And this
    loop form: as `range(0, blocks - 1, 2)` with an `if` for the odd block, LLVM's code ran
    at half the speed.)"""
    nbytes, blocks = block32_bytes(qtype), n // 32
    odd, whole = acc[16:32], blocks - blocks % 2
    for b in range(0, whole, 2):
        prefetch_ahead(row, o + nbytes * b, 2 * nbytes)
        dot_block32(qtype, acc, row, o + nbytes * b, v, at + 32 * b, n)
        dot_block32(qtype, odd, row, o + nbytes * (b + 1), v, at + 32 * (b + 1), n)
    for b in range(whole, blocks):
        dot_block32(qtype, acc, row, o + nbytes * b, v, at + 32 * b, n)


@njit(**INLINE)
def row_dot_block32(qtype, row, o, v, n, at, acc):
    """row_dots_block32's dot product itself (acc: 32 lanes of scratch, `stack_lanes`)."""
    acc[:32] = 0.0
    row_dots_block32(qtype, row, o, v, n, at, acc)
    return acc[:32].sum()


@njit(**INLINE)
def dequantize_row_block32(qtype, row, o, out):
    """The values of a row of Q4_0/Q4_1/Q5_0/Q5_1 (or Q8_0) blocks at byte o of row."""
    codes = stack_codes()
    if qtype == Q8_0:  # d, qs[32] int8: the bytes are the codes
        for b in range(out.shape[0] // 32):
            store_scaled_int8(out, 32 * b, row, o + 34 * b + 2, f16(row, o + 34 * b), np.float32(0.0))
        return
    nbytes = block32_bytes(qtype)
    for b in range(out.shape[0] // 32):
        d, m = unpack_block32(qtype, row, o + nbytes * b, codes)
        store_scaled_codes(out, 32 * b, codes, 0, d, m)


# -- 256-value k-quant super-blocks: integer sums over the whole super-block --------------


@njit(**INLINE)
def unpack_k4_pair(row, o, pair, five_bits, codes):
    """Sub-blocks 2*pair and 2*pair + 1 of the Q4_K (or Q5_K) block at row[o]: their codes
    into codes[0:64], and their scales and mins (sc1, m1, sc2, m2) as returned."""
    q = o + (48 if five_bits else 16) + 32 * pair
    for i in range(32):
        b = row[q + i]
        lo, hi = low4(b), high4(b)
        if five_bits:  # qh[32] at o + 16: bit 2*pair is the low sub-block's, 2*pair + 1 the high's
            h = np.uint8(row[o + 16 + i] >> np.uint8(2 * pair))
            lo = np.uint8(lo | np.uint8((h & np.uint8(1)) << np.uint8(4)))
            hi = np.uint8(hi | np.uint8((h & np.uint8(2)) << np.uint8(3)))
        codes[i] = lo
        codes[32 + i] = hi
    sc1, m1 = k4_scale_min(row, o + 4, 2 * pair)
    sc2, m2 = k4_scale_min(row, o + 4, 2 * pair + 1)
    return sc1, m1, sc2, m2


@njit(**INLINE)
def row_dots_k4(row, v, n, at, acc, five_bits):
    """Decode: Q4_K / Q5_K: d, dmin (f16), scales[12] (6-bit scale and min per 32 values),
    [qh[32]], qs[128]. (Prefill: chunk_by_tokens.)"""
    block_bytes = 176 if five_bits else 144
    for blk in range(n // 256):
        o, x = block_bytes * blk, at + 256 * blk
        prefetch_ahead(row, o, block_bytes)
        if five_bits:
            dot_q5_k(acc, row, o, v.q256, x, n, v.sum32, v.d256)
        else:
            dot_q4_k(acc, row, o, v.q256, x, n, v.sum32, v.d256)


# Prefill multiplies these with 8 tokens in the lanes (`in_token_lanes`). A tuple, so that
# Numba prunes the other branch for a constant type.
TOKEN_LANE_TYPES = (Q4_K, Q5_K, Q6_K, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)


@njit(**INLINE)
def row_by_tokens(qtype, row, v, n, at, sums, tokens=8):
    """sums[t] = the row's dot product with token t of the 8 whose activations start at at
    (in token lanes: in_token_lanes), for the TOKEN_LANE_TYPES; Q8_0 also takes 16 (two
    groups of 8, one after the other: tokens_per_pass). Each branch passes its scales as laid
    out side by side for its block size."""
    if qtype == Q4_K:
        row_q4_k_by_tokens(sums, row, v.q256_by_8, at, v.d256_by_8, v.sum32_by_8, n // 256)
    elif qtype == Q6_K:
        row_q6_k_by_tokens(sums, row, v.q256_by_8, at, v.d256_by_8, v.sum16_by_8, n // 256)
    elif qtype == Q5_K:
        row_q5_k_by_tokens(sums, row, v.q256_by_8, at, v.d256_by_8, v.sum32_by_8, n // 256)
    elif qtype == Q8_0:
        if tokens == 16:
            row_q8_0_by_16_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32, 8 * n)
        else:
            row_q8_0_by_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q4_0:
        row_q4_0_by_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q4_1:
        row_q4_1_by_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q5_0:
        row_q5_0_by_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32)
    else:
        row_q5_1_by_tokens(sums, row, v.q32_by_8, at, v.d32_by_8, v.s32_by_8, n // 32)


@njit(**INLINE)
def tokens_per_pass(qtype, t0, lanes):
    """How many of the tokens from t0 on (of `lanes` in the lanes) row_by_tokens takes in one
    pass over a row: 16 for Q8_0 where 16 are left, else 8."""
    return 16 if qtype == Q8_0 and t0 + 16 <= lanes else 8


@njit(**INLINE)
def dequantize_row_k4(row, out, five_bits):
    """The values of a row of Q4_K (or Q5_K) blocks: d * scale * code - dmin * min."""
    codes = stack_codes()
    block_bytes = 176 if five_bits else 144
    for blk in range(out.shape[0] // 256):
        o = block_bytes * blk
        d, dmin = f16(row, o), f16(row, o + 2)
        for pair in range(4):
            sc1, m1, sc2, m2 = unpack_k4_pair(row, o, pair, five_bits, codes)
            j = 256 * blk + 64 * pair
            store_scaled_codes(out, j, codes, 0, d * np.float32(sc1), -dmin * np.float32(m1))
            store_scaled_codes(out, j + 32, codes, 32, d * np.float32(sc2), -dmin * np.float32(m2))


@njit(**INLINE)
def row_dots_q6_k(row, v, n, at, acc):
    """Decode: Q6_K: ql[128], qh[64], scales[16] (int8, one per 16 values), d (f16); code - 32."""
    for blk in range(n // 256):
        o = 210 * blk
        prefetch_ahead(row, o, 210)
        dot_q6_k(acc, row, o, v.q256, at + 256 * blk, n, v.sum16, v.d256)


@njit(**INLINE)
def row_dots_low_k(qtype, row, v, n, at, tokens, acc):
    """Q2_K (84-byte blocks) and Q3_K (110): 2-bit codes, scales per 16 values."""
    block_bytes = 84 if qtype == Q2_K else 110
    for blk in range(n // 256):
        o, x = block_bytes * blk, at + 256 * blk
        if tokens == 1:  # decode: the row streams from memory
            prefetch_ahead(row, o, block_bytes)
        if qtype == Q2_K:
            if tokens == 1:
                dot_q2_k(acc, row, o, v.q256, x, n, v.sum16, v.d256)
            else:
                dot_q2_k_x8(acc, row, o, v.q256, x, n, v.sum16, v.d256)
        elif tokens == 1:
            dot_q3_k(acc, row, o, v.q256, x, n, v.sum16, v.d256)
        else:
            dot_q3_k_x8(acc, row, o, v.q256, x, n, v.sum16, v.d256)


# The weight types whose matrix-vector products run here (F32/F16/BF16: float lanes in kernels.py),
# each with the block size of its quantized activation.
ACTIVATION_BLOCK = {Q8_0: 32, Q4_0: 32, Q4_1: 32, Q5_0: 32, Q5_1: 32, Q2_K: 256, Q3_K: 256, Q4_K: 256, Q5_K: 256,
                    Q6_K: 256}
INT_DOT_TYPES = tuple(ACTIVATION_BLOCK)


@njit(pipeline_class=ConstantTypes, **JIT)
def row_dots(qtype, row, v, n, at, tokens, sums):
    """sums[t] = the dot product of a weight row of n values with token t's activation
    quantized in v, from value at + t * n on, for t < tokens (1, or PREFILL_TOKENS for Q2_K
    and Q3_K: the TOKEN_LANE_TYPES prefill through row_by_tokens).

    The intrinsics add into float lanes, 16 per token (decode's one token: 32), held on
    this function's own stack so that they live in registers (an argument array might alias
    the row, and every block would store and reload them). Each branch passes its type as a
    constant, so every block loop is compiled for one type; callers pass `tokens` as a
    constant, so only one intrinsic of each pair survives.
    """
    acc = stack_token_lanes()
    acc[: 16 * max(tokens, 2)] = 0.0
    if qtype == Q4_K:
        row_dots_k4(row, v, n, at, acc, False)
    elif qtype == Q6_K:
        row_dots_q6_k(row, v, n, at, acc)
    elif qtype == Q8_0:
        row_dots_block32(Q8_0, row, 0, v, n, at, acc)
    elif qtype == Q5_0:
        row_dots_block32(Q5_0, row, 0, v, n, at, acc)
    elif qtype == Q4_1:
        row_dots_block32(Q4_1, row, 0, v, n, at, acc)
    elif qtype == Q4_0:
        row_dots_block32(Q4_0, row, 0, v, n, at, acc)
    elif qtype == Q5_1:
        row_dots_block32(Q5_1, row, 0, v, n, at, acc)
    elif qtype == Q2_K:
        row_dots_low_k(Q2_K, row, v, n, at, tokens, acc)
    elif qtype == Q3_K:
        row_dots_low_k(Q3_K, row, v, n, at, tokens, acc)
    else:
        row_dots_k4(row, v, n, at, acc, True)  # Q5_K (decode only: see TOKEN_LANE_TYPES)
    if tokens == 1:
        sums[0] = acc[:32].sum()
    else:
        for t in range(tokens):
            sums[t] = acc[16 * t : 16 * t + 16].sum()


@njit(**INLINE)
def row_dot(qtype, row, v, n, at=0):
    """row . x for a weight row of n values and x quantized in v from value `at` on: decode's
    one token."""
    sums = stack_lanes()
    row_dots(qtype, row, v, n, at, 1, sums)
    return sums[0]
