"""Quantizers: float32 rows -> the blocks of a GGML type, as llama-quantize writes them.

Written from ggml-quants.c's reference quantizers (quantize_row_*_ref: what llama-quantize
runs without an importance matrix) for the block layouts of blocks.py: Q8_0, Q4_0, Q4_1,
Q5_0, Q5_1 pick one scale per 32 values from the block's extremes; the k-quants Q2_K ...
Q6_K fit a scale (and min) per 16 or 32 values with fit.py's searches, then store those
scales as 4-, 6- or 8-bit multiples of one fp16 scale per 256 values and round the values
again at the stored scales. The float32 steps follow llama.cpp's, in its order.

Each kernel quantizes whole rows, serially and without the GIL; `quantize_rows` gives
the worker threads (workers.py) a share of rows each. F32, F16 and BF16 are targets too
(numpy conversions, rounded to nearest even as ggml does), so that every tensor of a file
goes through one function.
"""

from __future__ import annotations

import math

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from numba import njit

from nanosmol.quants.blocks import F16_TO_F32, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, k4_scale_min, q3_k_scale
from nanosmol.quants.fit import GROUP_MAX_EPS, JIT, INLINE, clamp, f32, fit_scale_min, fit_symmetric, \
    fit_symmetric_3bit, largest_magnitude, nearest_int
from nanosmol.workers import n_workers, parallel_map

QUANTIZED_TYPES = (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)
TARGET_TYPES = QUANTIZED_TYPES + (T.F32, T.F16, T.BF16)
ROWS_PER_JOB = 64  # rows a worker takes at a time: small enough to balance two busy cores


# -- fp16 scales ----------------------------------------------------------------------------


@njit(**INLINE)
def f16_bits(value):
    """The IEEE half nearest to a float32 (ties to even), as bits: ggml's GGML_FP32_TO_FP16."""
    sign = 0x8000 if math.copysign(1.0, value) < 0 else 0
    a = abs(np.float64(value))  # exact: every float32 is a float64
    if a != a:
        return sign | 0x7E00
    if a >= 65520.0:  # halfway between the largest half, 65504, and 65536 rounds up
        return sign | 0x7C00
    if a < 2.0**-14:  # subnormal: multiples of 2^-24 (a carry into 0x0400 is the right answer)
        return sign | np.int64(np.rint(a * 2.0**24))
    fraction, exponent = math.frexp(a)  # a = fraction * 2^exponent, 0.5 <= fraction < 1
    return sign | (((exponent + 14) << 10) + np.int64(np.rint(fraction * 2048.0)) - 1024)


@njit(**INLINE)
def store_f16(out, o, value):
    """Write value as fp16 at out[o], out[o + 1]; return what the file will hold, as float32."""
    bits = f16_bits(value)
    out[o] = bits & 0xFF
    out[o + 1] = bits >> 8
    return F16_TO_F32[bits]


# -- 32-value blocks --------------------------------------------------------------------------


@njit(**INLINE)
def round_half_away(value):
    """C's roundf."""
    rounded = math.floor(abs(np.float64(value)) + 0.5)
    return -np.int64(rounded) if value < 0 else np.int64(rounded)


@njit(**INLINE)
def codes_symmetric(x, nmax, codes):
    """Q4_0 (nmax 8), Q5_0 (16): d = the value of largest magnitude / -nmax, codes x/d + nmax
    (truncated after adding nmax + 0.5). Returns d."""
    value, _ = largest_magnitude(x)
    d = value / f32(-nmax)
    inverse = f32(1.0) / d if d != 0 else f32(0.0)
    for j in range(32):
        codes[j] = min(2 * nmax - 1, np.int64(x[j] * inverse + f32(nmax + 0.5)))
    return d


@njit(**INLINE)
def codes_offset(x, nmax, codes):
    """Q4_1 (nmax 15), Q5_1 (31): d = (max - min) / nmax, codes (x - min) / d. Returns d, min."""
    low, high = f32(np.inf), f32(-np.inf)
    for v in x:
        low = min(low, v)
        high = max(high, v)
    d = (high - low) / f32(nmax)
    inverse = f32(1.0) / d if d != 0 else f32(0.0)
    for j in range(32):
        codes[j] = min(nmax, np.int64((x[j] - low) * inverse + f32(0.5)))
    return d, low


@njit(**INLINE)
def pack_nibbles(codes, out, o):
    """qs[16]: value j in the low nibble of byte j, value j + 16 in the high one."""
    for j in range(16):
        out[o + j] = (codes[j] & 0xF) | ((codes[j + 16] & 0xF) << 4)


@njit(**INLINE)
def pack_fifth_bits(codes, out, o):
    """qh (u32): bit j is the fifth bit of value j."""
    for byte in range(4):
        bits = 0
        for k in range(8):
            bits |= ((codes[8 * byte + k] >> 4) & 1) << k
        out[o + byte] = bits


@njit(**INLINE)
def block_q8_0(x, out, o):
    """d (f16), qs[32] int8: d = max|x| / 127, codes roundf(x / d)."""
    _, amax = largest_magnitude(x)
    d = amax / f32(127.0)
    inverse = f32(1.0) / d if d != 0 else f32(0.0)
    store_f16(out, o, d)
    for j in range(32):
        out[o + 2 + j] = round_half_away(x[j] * inverse) & 0xFF


@njit(**INLINE)
def block32(qtype, x, out, o, codes):
    """One block of a 32-value type at out[o]."""
    if qtype == Q8_0:
        block_q8_0(x, out, o)
    elif qtype == Q4_0:  # d, qs[16]
        store_f16(out, o, codes_symmetric(x, 8, codes))
        pack_nibbles(codes, out, o + 2)
    elif qtype == Q5_0:  # d, qh[4], qs[16]
        store_f16(out, o, codes_symmetric(x, 16, codes))
        pack_fifth_bits(codes, out, o + 2)
        pack_nibbles(codes, out, o + 6)
    else:  # Q4_1: d, m, qs[16]; Q5_1: d, m, qh[4], qs[16]
        five_bits = qtype == Q5_1
        d, low = codes_offset(x, 31 if five_bits else 15, codes)
        store_f16(out, o, d)
        store_f16(out, o + 2, low)
        if five_bits:
            pack_fifth_bits(codes, out, o + 4)
        pack_nibbles(codes, out, o + 8 if five_bits else o + 4)


@njit(nogil=True, **JIT)
def rows_block32(qtype, x, out):
    codes = np.empty(32, np.int64)
    block_bytes = 34 if qtype == Q8_0 else 18 if qtype == Q4_0 else 20 if qtype == Q4_1 else 22 if qtype == Q5_0 else 24
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 32):
            block32(qtype, x[r, 32 * b : 32 * b + 32], out[r], block_bytes * b, codes)


# -- 256-value k-quant super-blocks -------------------------------------------------------------


@njit(**INLINE)
def pack_2bit_planes(L, out, o):
    """qs[64] of Q2_K and Q3_K: per 128 values, byte l holds values l, l+32, l+64, l+96."""
    for half in range(2):
        for l in range(32):
            j = 128 * half + l
            out[o + 32 * half + l] = L[j] | (L[j + 32] << 2) | (L[j + 64] << 4) | (L[j + 96] << 6)


@njit(**JIT)
def block_q2_k(x, out, o, L, Laux, weights, scales, mins):
    """scales[16] (4-bit scale | 4-bit min << 4), qs[64], d, dmin (f16): x ~ d*sc*q - dmin*m."""
    max_scale, max_min = f32(0.0), f32(0.0)
    for j in range(16):
        group = x[16 * j : 16 * j + 16]
        for l in range(16):
            weights[l] = abs(group[l])
        scales[j], mins[j] = fit_scale_min(group, weights[:16], L[16 * j : 16 * j + 16], Laux[:16], 3,
                                           f32(-0.5), f32(0.1), 15, True)
        max_scale = max(max_scale, scales[j])
        max_min = max(max_min, mins[j])
    packed = out[o : o + 16]
    packed[:] = 0
    d = dmin = f32(0.0)
    if max_scale > 0:
        iscale = f32(15.0) / max_scale
        for j in range(16):
            packed[j] = nearest_int(iscale * scales[j]) & 0xFF
        d = store_f16(out, o + 80, max_scale / f32(15.0))
    else:
        store_f16(out, o + 80, f32(0.0))
    if max_min > 0:
        iscale = f32(15.0) / max_min
        for j in range(16):
            packed[j] |= (nearest_int(iscale * mins[j]) << 4) & 0xFF
        dmin = store_f16(out, o + 82, max_min / f32(15.0))
    else:
        store_f16(out, o + 82, f32(0.0))
    for j in range(16):
        dl = d * f32(packed[j] & 0xF)
        if dl == 0:
            continue  # keeps the fitted codes
        ml = dmin * f32(packed[j] >> 4)
        for i in range(16 * j, 16 * j + 16):
            L[i] = clamp(nearest_int((x[i] + ml) / dl), 0, 3)
    pack_2bit_planes(L, out, o + 16)


@njit(**JIT)
def block_q3_k(x, out, o, L, scales):
    """hmask[32] (bit 3 of each code), qs[64] (low 2 bits), scales[12] (16 x 6 bits), d (f16):
    x ~ d * (sc - 32) * (q - 4)."""
    max_scale, amax = f32(0.0), f32(0.0)
    for j in range(16):
        scales[j] = fit_symmetric_3bit(x[16 * j : 16 * j + 16], 4, L[16 * j : 16 * j + 16])
        if abs(scales[j]) > amax:
            amax, max_scale = abs(scales[j]), scales[j]
    packed = out[o + 96 : o + 108]
    packed[:] = 0
    if max_scale != 0:
        iscale = f32(-32.0) / max_scale
        for j in range(16):
            l = clamp(nearest_int(iscale * scales[j]), -32, 31) + 32
            if j < 8:
                packed[j] = l & 0xF
            else:
                packed[j - 8] |= (l & 0xF) << 4
            packed[8 + j % 4] |= (l >> 4) << (2 * (j // 4))
        d = store_f16(out, o + 108, f32(1.0) / iscale)
    else:
        d = store_f16(out, o + 108, f32(0.0))
    for j in range(16):
        dl = d * f32(q3_k_scale(out, o + 96, j))
        if dl == 0:
            continue
        for i in range(16 * j, 16 * j + 16):
            L[i] = clamp(nearest_int(x[i] / dl), -4, 3) + 4
    hmask = out[o : o + 32]
    hmask[:] = 0
    for j in range(256):  # the third bit of value j: bit j // 32 of hmask[j % 32]
        if L[j] > 3:
            hmask[j % 32] |= 1 << (j // 32)
            L[j] -= 4
    pack_2bit_planes(L, out, o + 32)


@njit(**JIT)
def block_k4(x, out, o, five_bits, L, Laux, weights, scales, mins):
    """Q4_K: d, dmin (f16), scales[12] (6-bit scale and min per 32 values), qs[128].
    Q5_K: the same with qh[32] (fifth bits) before qs. x ~ d * sc * q - dmin * m."""
    nmax = 31 if five_bits else 15
    max_scale, max_min = f32(0.0), f32(0.0)
    for j in range(8):
        group = x[32 * j : 32 * j + 32]
        sum_x2 = f32(0.0)
        for v in group:
            sum_x2 += v * v
        av_x = f32(math.sqrt(sum_x2 / f32(32.0)))
        for l in range(32):
            weights[l] = av_x + abs(group[l])
        scales[j], mins[j] = fit_scale_min(group, weights, L[32 * j : 32 * j + 32], Laux, nmax,
                                           f32(-0.5) if five_bits else f32(-1.0), f32(0.1), 15 if five_bits else 20,
                                           False)
        max_scale = max(max_scale, scales[j])
        max_min = max(max_min, mins[j])
    inv_scale = f32(63.0) / max_scale if max_scale > 0 else f32(0.0)
    inv_min = f32(63.0) / max_min if max_min > 0 else f32(0.0)
    packed = out[o + 4 : o + 16]
    for j in range(8):
        ls = min(63, nearest_int(inv_scale * scales[j]) & 0xFF)
        lm = min(63, nearest_int(inv_min * mins[j]) & 0xFF)
        if j < 4:
            packed[j] = ls
            packed[j + 4] = lm
        else:  # low 4 bits in bytes 8..11, the top 2 in the top bits of bytes 0..7
            packed[j + 4] = (ls & 0xF) | ((lm & 0xF) << 4)
            packed[j - 4] |= (ls >> 4) << 6
            packed[j] |= (lm >> 4) << 6
    d = store_f16(out, o, max_scale / f32(63.0))
    dmin = store_f16(out, o + 2, max_min / f32(63.0))
    for j in range(8):
        sc, m = k4_scale_min(out, o + 4, j)
        dl = d * f32(sc)
        if dl == 0:
            continue
        ml = dmin * f32(m)
        for i in range(32 * j, 32 * j + 32):
            L[i] = clamp(nearest_int((x[i] + ml) / dl), 0, nmax)
    qs = o + 48 if five_bits else o + 16
    if five_bits:
        out[o + 16 : o + 48] = 0
    for pair in range(4):  # 64 values: the first 32 in low nibbles, the next 32 in high ones
        for l in range(32):
            low, high = L[64 * pair + l], L[64 * pair + 32 + l]
            if five_bits:
                out[o + 16 + l] |= ((low >> 4) << (2 * pair)) | ((high >> 4) << (2 * pair + 1))
            out[qs + 32 * pair + l] = (low & 0xF) | ((high & 0xF) << 4)


@njit(**JIT)
def block_q6_k(x, out, o, L, scales):
    """ql[128] (low 4 bits), qh[64] (high 2 bits), scales[16] int8, d (f16): x ~ d * sc * (q - 32)."""
    max_scale, max_abs_scale = f32(0.0), f32(0.0)
    for j in range(16):
        scales[j] = fit_symmetric(x[16 * j : 16 * j + 16], 32, L[16 * j : 16 * j + 16])
        if abs(scales[j]) > max_abs_scale:
            max_abs_scale, max_scale = abs(scales[j]), scales[j]
    if max_abs_scale < GROUP_MAX_EPS:
        out[o : o + 210] = 0
        return
    iscale = f32(-128.0) / max_scale
    d = store_f16(out, o + 208, f32(1.0) / iscale)
    for j in range(16):
        out[o + 192 + j] = min(127, nearest_int(iscale * scales[j])) & 0xFF
    for j in range(16):
        dl = d * f32(np.int8(out[o + 192 + j]))
        if dl == 0:
            continue
        for i in range(16 * j, 16 * j + 16):
            L[i] = clamp(nearest_int(x[i] / dl), -32, 31) + 32
    for half in range(2):  # per 128 values: ql byte l holds values l (low) and l+64 (high), ...
        ql, qh, v = o + 64 * half, o + 128 + 32 * half, 128 * half
        for l in range(32):
            a, b, c, e = L[v + l], L[v + l + 32], L[v + l + 64], L[v + l + 96]
            out[ql + l] = (a & 0xF) | ((c & 0xF) << 4)
            out[ql + l + 32] = (b & 0xF) | ((e & 0xF) << 4)
            out[qh + l] = (a >> 4) | ((b >> 4) << 2) | ((c >> 4) << 4) | ((e >> 4) << 6)


@njit(nogil=True, **JIT)
def rows_q2_k(x, out):
    L, Laux, weights, scales, mins = k_scratch()
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            block_q2_k(x[r, 256 * b : 256 * b + 256], out[r], 84 * b, L, Laux, weights, scales, mins)


@njit(nogil=True, **JIT)
def rows_q3_k(x, out):
    L, _, _, scales, _ = k_scratch()
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            block_q3_k(x[r, 256 * b : 256 * b + 256], out[r], 110 * b, L, scales)


@njit(nogil=True, **JIT)
def rows_k4(five_bits, x, out):
    L, Laux, weights, scales, mins = k_scratch()
    block_bytes = 176 if five_bits else 144
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            block_k4(x[r, 256 * b : 256 * b + 256], out[r], block_bytes * b, five_bits, L, Laux, weights, scales, mins)


@njit(nogil=True, **JIT)
def rows_q6_k(x, out):
    L, _, _, scales, _ = k_scratch()
    for r in range(x.shape[0]):
        for b in range(x.shape[1] // 256):
            block_q6_k(x[r, 256 * b : 256 * b + 256], out[r], 210 * b, L, scales)


@njit(**INLINE)
def k_scratch():
    """Codes of a super-block, trial codes, weights, and the scales and mins of its groups."""
    return (np.empty(256, np.int32), np.empty(32, np.int32), np.empty(32, np.float32),
            np.empty(16, np.float32), np.empty(16, np.float32))


# -- whole matrices, threaded -----------------------------------------------------------------


def bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits, rounded to nearest even (ggml's GGML_FP32_TO_BF16; x finite)."""
    bits = x.view(np.uint32)
    return ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16).astype(np.uint16)


def _store_f32(x, out):
    out[:] = x.view(np.uint8)


def _store_f16(x, out):
    out[:] = x.astype(np.float16).view(np.uint8)


def _store_bf16(x, out):
    out[:] = bf16_bits(x).view(np.uint8)


def _kernel(qtype: T):
    """The rows kernel of a type, as fn(x, out)."""
    if qtype in (T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1):
        return lambda x, out: rows_block32(int(qtype), x, out)
    if qtype in (T.Q4_K, T.Q5_K):
        return lambda x, out: rows_k4(qtype == T.Q5_K, x, out)
    return {T.Q2_K: rows_q2_k, T.Q3_K: rows_q3_k, T.Q6_K: rows_q6_k,
            T.F32: _store_f32, T.F16: _store_f16, T.BF16: _store_bf16}[qtype]


def row_bytes(qtype, cols: int) -> int:
    block_size, block_bytes = GGML_QUANT_SIZES[T(qtype)]
    return cols // block_size * block_bytes


def check_target(qtype, cols: int) -> T:
    """qtype as a GGMLQuantizationType, if rows of `cols` values can be written in it."""
    qtype = T(qtype)
    if qtype not in TARGET_TYPES:
        raise ValueError(f"cannot quantize to {qtype.name} (types: {', '.join(t.name for t in TARGET_TYPES)})")
    block_size = GGML_QUANT_SIZES[qtype][0]
    if cols % block_size:
        raise ValueError(f"{cols} values per row is not a multiple of the {qtype.name} block size {block_size}")
    return qtype


def quantize_rows_with(read_rows, rows: int, cols: int, qtype) -> np.ndarray:
    """Quantize a matrix whose float32 rows r0..r1 read_rows(r0, r1) returns (finite values,
    C order): uint8 [rows, row_bytes]. The workers take ROWS_PER_JOB rows at a time, read
    (convert) and quantize them, so that only a few jobs' floats are in memory at once."""
    qtype = check_target(qtype, cols)
    out = np.empty((rows, row_bytes(qtype, cols)), np.uint8)
    kernel = _kernel(qtype)

    def job(r0):
        r1 = min(rows, r0 + ROWS_PER_JOB)
        kernel(read_rows(r0, r1), out[r0:r1])

    if rows <= ROWS_PER_JOB or n_workers() == 1:
        for r0 in range(0, rows, ROWS_PER_JOB):
            job(r0)
    else:
        parallel_map(job, range(0, rows, ROWS_PER_JOB))
    return out


def quantize_rows(values: np.ndarray, qtype) -> np.ndarray:
    """float32 [rows, cols] -> uint8 [rows, row_bytes]: each row in blocks of qtype (or as
    F32, F16 or BF16 values)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-D array of rows, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("cannot quantize NaN or Inf values")
    return quantize_rows_with(lambda r0, r1: values[r0:r1], values.shape[0], values.shape[1], qtype)
