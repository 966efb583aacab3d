"""GGML block layouts: each decoder turns one block of raw bytes into float32 values.

Written from ggml's block structs and dequantize_row_* (ggml-common.h, ggml-quants.c).
Every type's matrix-vector product runs in vecdot.py (through intdot.py for the quantized
ones); dequantization of Q8_0 and the 4- and 5-bit types (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K,
Q5_K) goes through their integer codes in intdot.py. Here are the other types' decoders, for
prefill's weight tiles and embedding lookups: the plain floats, Q2_K, Q3_K and Q6_K. Every
block function has the signature (row, o, out, j): the block's bytes start at row[o] and its
values go to out[j], out[j + 1], ... `row` is a uint8 array; fp16 scales are read as raw
bits through a lookup table, because float16 arrays cannot enter Numba. Constants and small
bit helpers here are shared with intdot.py.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from numba import njit

from nanosmol.quants.specialize import ConstantTypes

INLINE = dict(cache=True, fastmath=True, boundscheck=False, inline="always")

# fp16 bits -> float32, built once with numpy.
with np.errstate(invalid="ignore"):  # the NaN halves: ARM raises the flag on their cast, x86 does not
    F16_TO_F32 = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)
BF16_TO_F32 = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)  # bfloat16: a float32's top half

# Numba types integer arithmetic as int64, and int64 -> float32 conversion does not
# vectorize on AVX2. Nibbles and bit fields are therefore cut out by the helpers below,
# which truncate back to uint8 so LLVM keeps the whole loop narrow.

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
    return np.uint32(np.uint32(row[o]) | (np.uint32(row[o + 1]) << np.uint32(8))
                     | (np.uint32(row[o + 2]) << np.uint32(16)) | (np.uint32(row[o + 3]) << np.uint32(24)))



@njit(**INLINE)
def low4(q):
    return np.uint8(q & np.uint8(15))


@njit(**INLINE)
def high4(q):
    return np.uint8(q >> np.uint8(4))


@njit(**INLINE)
def bits2(q, shift):
    """Two bits of q from bit `shift` up."""
    return np.uint8((q >> shift) & np.uint8(3))


@njit(**INLINE)
def six_bits(low, h, shift):
    """A Q6_K value: four low bits, two high bits from h at `shift`."""
    return np.uint8(low | np.uint8(bits2(h, np.uint8(shift)) << np.uint8(4)))


# -- plain floats (in "blocks" of 32 values, for uniform kernels) -----------------------


@njit(**INLINE)
def block_f32(row, o, out, j):
    values = row[o : o + 128].view(np.float32)
    for i in range(32):
        out[j + i] = values[i]


@njit(**INLINE)
def block_f16(row, o, out, j):
    for i in range(32):
        out[j + i] = f16(row, o + 2 * i)


@njit(**INLINE)
def block_bf16(row, o, out, j):
    for i in range(32):
        out[j + i] = BF16_TO_F32[np.int64(row[o + 2 * i]) | (np.int64(row[o + 2 * i + 1]) << 8)]


# -- 256-value k-quant super-blocks ----------------------------------------------------


@njit(**INLINE)
def block_q2_k(row, o, out, j):
    # scales[16] (4-bit scale | 4-bit min), qs[64] (2-bit values), d, dmin (f16)
    d = f16(row, o + 80)
    dmin = f16(row, o + 82)
    for half in range(2):
        q = o + 16 + 32 * half
        for k in range(8):  # sub-blocks of 16: four bit planes of two groups each
            sc = row[o + half * 8 + k]
            dl = d * np.float32(sc & 0xF)
            ml = dmin * np.float32(sc >> 4)
            shift = np.uint8(2 * (k // 2))
            base = 16 * (k % 2)
            for i in range(16):
                value = dl * np.float32(bits2(row[q + base + i], shift)) - ml
                out[j + half * 128 + 16 * k + i] = value


@njit(**INLINE)
def q3_k_scale(row, o, k):
    """The k-th 6-bit signed scale of a Q3_K block (12 packed bytes at row[o])."""
    low = (np.int64(row[o + k % 8]) >> (4 * (k // 8))) & 0xF
    high = (np.int64(row[o + 8 + k % 4]) >> (2 * (k // 4))) & 3
    return (low | (high << 4)) - 32


@njit(**INLINE)
def block_q3_k(row, o, out, j):
    # hmask[32] (the 3rd bit), qs[64] (low 2 bits), scales[12] (16 x 6 bits), d (f16)
    d = f16(row, o + 108)
    for half in range(2):
        q = o + 32 + 32 * half
        for k in range(8):
            dl = d * np.float32(q3_k_scale(row, o + 96, half * 8 + k))
            shift = np.uint8(2 * (k // 2))
            base = 16 * (k % 2)
            mask = np.uint8(1 << (half * 4 + k // 2))
            for i in range(16):
                low = np.float32(bits2(row[q + base + i], shift))
                high_missing = np.float32(0.0) if (row[o + base + i] & mask) else np.float32(4.0)
                out[j + half * 128 + 16 * k + i] = dl * (low - high_missing)


@njit(**INLINE)
def k4_scale_min(row, o, k):
    """Scale and min of sub-block k (0..7) from the 12 packed bytes of Q4_K / Q5_K."""
    if k < 4:
        return row[o + k] & 63, row[o + k + 4] & 63
    sc = (row[o + k + 4] & 0xF) | ((row[o + k - 4] >> 6) << 4)
    mn = (row[o + k + 4] >> 4) | ((row[o + k] >> 6) << 4)
    return sc, mn


@njit(**INLINE)
def block_q6_k(row, o, out, j):
    # ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d (f16)
    d = f16(row, o + 208)
    for half in range(2):
        ql = o + 64 * half
        qh = o + 128 + 32 * half
        for s in range(2):  # the scale changes every 16 values
            sc = o + 192 + 8 * half + s
            d1, d2 = d * np.float32(np.int8(row[sc])), d * np.float32(np.int8(row[sc + 2]))
            d3, d4 = d * np.float32(np.int8(row[sc + 4])), d * np.float32(np.int8(row[sc + 6]))
            # Values are 6-bit unsigned minus 32: fold the -32 into an offset per scale.
            o1, o2, o3, o4 = np.float32(-32.0) * d1, np.float32(-32.0) * d2, np.float32(-32.0) * d3, np.float32(-32.0) * d4
            for i in range(16 * s, 16 * s + 16):
                h = row[qh + i]
                a = row[ql + i]
                b = row[ql + 32 + i]
                y = 128 * half + i
                out[j + y] = d1 * np.float32(six_bits(low4(a), h, 0)) + o1
                out[j + y + 32] = d2 * np.float32(six_bits(low4(b), h, 2)) + o2
                out[j + y + 64] = d3 * np.float32(six_bits(high4(a), h, 4)) + o3
                out[j + y + 96] = d4 * np.float32(six_bits(high4(b), h, 6)) + o4


@njit(cache=True, fastmath=True, boundscheck=False, pipeline_class=ConstantTypes)
def row_values(qtype, row, out):
    """out = one row's values: every block through its type's decoder (dispatch once per row)."""
    n = out.shape[0]
    if qtype == Q6_K:
        for b in range(n // 256):
            block_q6_k(row, 210 * b, out, 256 * b)
    elif qtype == Q3_K:
        for b in range(n // 256):
            block_q3_k(row, 110 * b, out, 256 * b)
    elif qtype == Q2_K:
        for b in range(n // 256):
            block_q2_k(row, 84 * b, out, 256 * b)
    elif qtype == F16:
        for b in range(n // 32):
            block_f16(row, 64 * b, out, 32 * b)
    elif qtype == BF16:
        for b in range(n // 32):
            block_bf16(row, 64 * b, out, 32 * b)
    else:  # F32
        for b in range(n // 32):
            block_f32(row, 128 * b, out, 32 * b)
