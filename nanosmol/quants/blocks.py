"""GGML block layouts: each decoder turns one block of raw bytes into float32 values.

Written from ggml's block structs and dequantize_row_* (ggml-common.h, ggml-quants.c).
Every decoder has the signature (row, o, out, j): the block's bytes start at row[o],
its values go to out[j : j + block_size]. `row` is a uint8 array; fp16 scales are read
as raw bits through a lookup table, because float16 arrays cannot enter Numba.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from numba import njit

INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")

# fp16 bits -> float32, built once with numpy.
F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
BF16_TO_F32 = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)  # bfloat16: a float32's top half

# Type codes the kernels dispatch on (GGML's own ids).
F32, F16, BF16 = int(T.F32), int(T.F16), int(T.BF16)
Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 = int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1), int(T.Q8_0)
Q2_K, Q3_K, Q4_K, Q5_K, Q6_K = int(T.Q2_K), int(T.Q3_K), int(T.Q4_K), int(T.Q5_K), int(T.Q6_K)

SUPPORTED_TYPES = frozenset(T(c) for c in (F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K))


def block_geometry(qtype: int) -> tuple[int, int]:
    """(values per block, bytes per block) as the kernels see them: floats come in blocks of 32."""
    block_size, block_bytes = GGML_QUANT_SIZES[T(qtype)]
    if block_size == 1:
        return 32, 32 * block_bytes
    return block_size, block_bytes


@njit(**INLINE)
def f16(row, o):
    return F16_TO_F32[np.int64(row[o]) | (np.int64(row[o + 1]) << 8)]


@njit(**INLINE)
def u32(row, o):
    return np.int64(row[o]) | (np.int64(row[o + 1]) << 8) | (np.int64(row[o + 2]) << 16) | (np.int64(row[o + 3]) << 24)


# -- plain floats (a "block" of 32 values, for uniform kernels) -------------------------


@njit(**INLINE)
def decode_f32(row, o, out, j):
    values = row[o : o + 128].view(np.float32)
    for i in range(32):
        out[j + i] = values[i]


@njit(**INLINE)
def decode_f16(row, o, out, j):
    for i in range(32):
        out[j + i] = f16(row, o + 2 * i)


@njit(**INLINE)
def decode_bf16(row, o, out, j):
    for i in range(32):
        out[j + i] = BF16_TO_F32[np.int64(row[o + 2 * i]) | (np.int64(row[o + 2 * i + 1]) << 8)]


# -- 32-value blocks ------------------------------------------------------------------


@njit(**INLINE)
def decode_q8_0(row, o, out, j):
    # d (f16), qs[32] int8
    d = f16(row, o)
    for i in range(32):
        out[j + i] = d * np.float32(np.int8(row[o + 2 + i]))


@njit(**INLINE)
def decode_q4_0(row, o, out, j):
    # d (f16), qs[16]: low nibbles are values 0..15, high nibbles 16..31, offset by 8
    d = f16(row, o)
    for i in range(16):
        q = row[o + 2 + i]
        out[j + i] = d * np.float32(np.int32(q & 0xF) - 8)
        out[j + i + 16] = d * np.float32(np.int32(q >> 4) - 8)


@njit(**INLINE)
def decode_q4_1(row, o, out, j):
    # d, m (f16), qs[16]: value = d * q + m
    d = f16(row, o)
    m = f16(row, o + 2)
    for i in range(16):
        q = row[o + 4 + i]
        out[j + i] = d * np.float32(q & 0xF) + m
        out[j + i + 16] = d * np.float32(q >> 4) + m


@njit(**INLINE)
def decode_q5_0(row, o, out, j):
    # d (f16), qh (u32: the 5th bit of each value), qs[16]; offset by 16
    d = f16(row, o)
    qh = u32(row, o + 2)
    for i in range(16):
        q = np.int64(row[o + 6 + i])
        lo = (q & 0xF) | (((qh >> i) << 4) & 0x10)
        hi = (q >> 4) | ((qh >> (i + 12)) & 0x10)
        out[j + i] = d * np.float32(lo - 16)
        out[j + i + 16] = d * np.float32(hi - 16)


@njit(**INLINE)
def decode_q5_1(row, o, out, j):
    # d, m (f16), qh (u32), qs[16]: value = d * q + m
    d = f16(row, o)
    m = f16(row, o + 2)
    qh = u32(row, o + 4)
    for i in range(16):
        q = np.int64(row[o + 8 + i])
        lo = (q & 0xF) | (((qh >> i) << 4) & 0x10)
        hi = (q >> 4) | ((qh >> (i + 12)) & 0x10)
        out[j + i] = d * np.float32(lo) + m
        out[j + i + 16] = d * np.float32(hi) + m


# -- 256-value k-quant super-blocks ----------------------------------------------------


@njit(**INLINE)
def decode_q2_k(row, o, out, j):
    # scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit values), d, dmin (f16)
    d = f16(row, o + 80)
    dmin = f16(row, o + 82)
    for half in range(2):
        q = o + 16 + 32 * half
        for k in range(8):  # sub-blocks of 16, four bit-planes of two groups
            sc = row[o + half * 8 + k]
            dl = d * np.float32(sc & 0xF)
            ml = dmin * np.float32(sc >> 4)
            shift = 2 * (k // 2)
            base = 16 * (k % 2)
            y = j + half * 128 + 16 * k
            for i in range(16):
                out[y + i] = dl * np.float32((row[q + base + i] >> shift) & 3) - ml


@njit(**INLINE)
def q3_k_scale(row, o, k):
    """The k-th 6-bit signed scale of a Q3_K block (12 packed bytes at row[o])."""
    low = (np.int64(row[o + k % 8]) >> (4 * (k // 8))) & 0xF
    high = (np.int64(row[o + 8 + k % 4]) >> (2 * (k // 4))) & 3
    return (low | (high << 4)) - 32


@njit(**INLINE)
def decode_q3_k(row, o, out, j):
    # hmask[32] (the 3rd bit), qs[64] (low 2 bits), scales[12] (16 x 6 bits), d (f16)
    d = f16(row, o + 108)
    for half in range(2):
        q = o + 32 + 32 * half
        for k in range(8):
            dl = d * np.float32(q3_k_scale(row, o + 96, half * 8 + k))
            shift = 2 * (k // 2)
            base = 16 * (k % 2)
            mask = 1 << (half * 4 + k // 2)
            y = j + half * 128 + 16 * k
            for i in range(16):
                low = (np.int64(row[q + base + i]) >> shift) & 3
                high_missing = 0 if (row[o + base + i] & mask) else 4
                out[y + i] = dl * np.float32(low - high_missing)


@njit(**INLINE)
def k4_scale_min(row, o, k):
    """Scale and min of sub-block k (0..7) from the 12 packed bytes of Q4_K / Q5_K."""
    if k < 4:
        return row[o + k] & 63, row[o + k + 4] & 63
    sc = (row[o + k + 4] & 0xF) | ((row[o + k - 4] >> 6) << 4)
    mn = (row[o + k + 4] >> 4) | ((row[o + k] >> 6) << 4)
    return sc, mn


@njit(**INLINE)
def decode_q4_k(row, o, out, j):
    # d, dmin (f16), scales[12], qs[128]: 8 sub-blocks of 32 values
    d = f16(row, o)
    dmin = f16(row, o + 2)
    for pair in range(4):
        sc1, m1 = k4_scale_min(row, o + 4, 2 * pair)
        sc2, m2 = k4_scale_min(row, o + 4, 2 * pair + 1)
        d1, d2 = d * np.float32(sc1), d * np.float32(sc2)
        mn1, mn2 = dmin * np.float32(m1), dmin * np.float32(m2)
        q = o + 16 + 32 * pair
        y = j + 64 * pair
        for i in range(32):
            out[y + i] = d1 * np.float32(row[q + i] & 0xF) - mn1
            out[y + 32 + i] = d2 * np.float32(row[q + i] >> 4) - mn2


@njit(**INLINE)
def decode_q5_k(row, o, out, j):
    # d, dmin (f16), scales[12], qh[32] (5th bits), qs[128]
    d = f16(row, o)
    dmin = f16(row, o + 2)
    for pair in range(4):
        sc1, m1 = k4_scale_min(row, o + 4, 2 * pair)
        sc2, m2 = k4_scale_min(row, o + 4, 2 * pair + 1)
        d1, d2 = d * np.float32(sc1), d * np.float32(sc2)
        mn1, mn2 = dmin * np.float32(m1), dmin * np.float32(m2)
        q = o + 48 + 32 * pair
        u1, u2 = 1 << (2 * pair), 2 << (2 * pair)
        y = j + 64 * pair
        for i in range(32):
            h = row[o + 16 + i]
            lo = np.int64(row[q + i] & 0xF) + (16 if h & u1 else 0)
            hi = np.int64(row[q + i] >> 4) + (16 if h & u2 else 0)
            out[y + i] = d1 * np.float32(lo) - mn1
            out[y + 32 + i] = d2 * np.float32(hi) - mn2


@njit(**INLINE)
def decode_q6_k(row, o, out, j):
    # ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d (f16)
    d = f16(row, o + 208)
    for half in range(2):
        ql = o + 64 * half
        qh = o + 128 + 32 * half
        sc = o + 192 + 8 * half
        y = j + 128 * half
        for i in range(32):
            h = np.int64(row[qh + i])
            a = np.int64(row[ql + i])
            b = np.int64(row[ql + 32 + i])
            s = i // 16
            out[y + i] = d * np.float32(np.int8(row[sc + s])) * np.float32(((a & 0xF) | ((h & 3) << 4)) - 32)
            out[y + 32 + i] = d * np.float32(np.int8(row[sc + s + 2])) * np.float32(((b & 0xF) | (((h >> 2) & 3) << 4)) - 32)
            out[y + 64 + i] = d * np.float32(np.int8(row[sc + s + 4])) * np.float32(((a >> 4) | (((h >> 4) & 3) << 4)) - 32)
            out[y + 96 + i] = d * np.float32(np.int8(row[sc + s + 6])) * np.float32(((b >> 4) | (((h >> 6) & 3) << 4)) - 32)


@njit(**INLINE)
def decode_block(qtype, row, o, out, j):
    """Decode the block of type `qtype` at row[o] into out[j:]. One branch, hoisted out of loops."""
    if qtype == Q8_0:
        decode_q8_0(row, o, out, j)
    elif qtype == Q4_K:
        decode_q4_k(row, o, out, j)
    elif qtype == Q6_K:
        decode_q6_k(row, o, out, j)
    elif qtype == Q4_0:
        decode_q4_0(row, o, out, j)
    elif qtype == Q4_1:
        decode_q4_1(row, o, out, j)
    elif qtype == Q5_0:
        decode_q5_0(row, o, out, j)
    elif qtype == Q5_1:
        decode_q5_1(row, o, out, j)
    elif qtype == Q5_K:
        decode_q5_k(row, o, out, j)
    elif qtype == Q3_K:
        decode_q3_k(row, o, out, j)
    elif qtype == Q2_K:
        decode_q2_k(row, o, out, j)
    elif qtype == F16:
        decode_f16(row, o, out, j)
    elif qtype == BF16:
        decode_bf16(row, o, out, j)
    else:
        decode_f32(row, o, out, j)
