"""Key and value rows into the cache types' GGML blocks, as ggml's reference quantizers write them.

F32, F16, Q8_0 and Q4_0: the KV cache stores each token's key and value rows this way
(kv/cache.py), so attention reads them with the weights' block dot products and decoders.
Bit-exact with ggml (and gguf-py's `gguf.quants.quantize`): these run without fastmath,
whose reassociation and reciprocal tricks would move a rounding here and there.

Q4_0 goes one step further in the cache (quantize_row): ggml's block is refined by
alternating least-squares fits of its scale and codes while its squared error falls, so a
cached row is never further from its values than ggml's; 16 levels leave room for that.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from nanosmol.quants.blocks import F16, F16_TO_F32, F32, Q4_0, Q8_0
from nanosmol.simd import converts_halves, store_halves32

# Small helpers inline; the Q4_0 quantizer and its refinement are called: inlined, store_kv
# carried a copy per call site for every cache type (15 s of a cold start).
EXACT = dict(cache=True, boundscheck=False)
EXACT_INLINE = dict(EXACT, inline="always")


@intrinsic
def float_bits(typingctx, x):
    """The IEEE bits of a float32, as a uint32."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(**EXACT_INLINE)
def f16_bits(x):
    """float32 -> the bits of the nearest float16 (ties to even), as numpy's astype does."""
    f = np.int64(float_bits(np.float32(x)))
    sign = (f >> 16) & 0x8000
    magnitude = f & 0x7FFFFFFF
    if magnitude > 0x7F800000:  # NaN
        return sign | 0x7E00
    if magnitude >= 0x47800000:  # 65536 or more, or infinity
        return sign | 0x7C00
    if magnitude < 0x38800000:  # below float16's smallest normal: a subnormal half, or zero
        if magnitude < 0x33000000:  # at most half the smallest subnormal: rounds to zero
            return sign
        shift = 126 - (magnitude >> 23)
        mantissa = 0x800000 | (magnitude & 0x7FFFFF)
        half, rest, midpoint = mantissa >> shift, mantissa & ((1 << shift) - 1), 1 << (shift - 1)
    else:
        half, rest, midpoint = (magnitude >> 13) - (112 << 10), magnitude & 0x1FFF, 0x1000
    if rest > midpoint or (rest == midpoint and half & 1):
        half += 1  # a carry into the exponent is right, up to infinity
    return sign | half


@njit(**EXACT_INLINE)
def put_u16(out, o, bits):
    out[o] = np.uint8(bits & 0xFF)
    out[o + 1] = np.uint8(bits >> 8)


@njit(**EXACT_INLINE)
def roundf(x):
    """C's roundf: halves away from zero (np.rint would round them to even)."""
    a = abs(x)
    whole = np.floor(a)
    r = whole + np.floor(2 * (a - whole))
    return r if x >= 0 else -r


@njit(**EXACT_INLINE)
def quantize_q8_0(x, out, o):
    """One Q8_0 block (d f16, qs[32] int8) of x[0:32] at out[o]."""
    amax = np.float32(0.0)
    for j in range(32):
        amax = max(amax, abs(x[j]))
    d = np.float32(amax / np.float32(127.0))
    inverse = np.float32(1.0) / d if d != 0 else np.float32(0.0)
    put_u16(out, o, f16_bits(d))
    for j in range(32):
        out[o + 2 + j] = np.uint8(np.int64(roundf(np.float32(x[j] * inverse))) & 0xFF)


@njit(**EXACT)
def quantize_q4_0(x, out, o):
    """One Q4_0 block (d f16, qs[16]: value j in the low nibble of byte j, 16 + j in its high) at out[o]."""
    amax, extreme = abs(x[0]), x[0]
    for j in range(1, 32):  # the value of largest magnitude, with its sign; the first of ties
        if abs(x[j]) > amax:
            amax, extreme = abs(x[j]), x[j]
    d = np.float32(extreme / np.float32(-8.0))
    inverse = np.float32(1.0) / d if d != 0 else np.float32(0.0)
    put_u16(out, o, f16_bits(d))
    for j in range(16):
        low = min(15, np.int64(np.float32(x[j] * inverse) + np.float32(8.5)))
        high = min(15, np.int64(np.float32(x[16 + j] * inverse) + np.float32(8.5)))
        out[o + 2 + j] = np.uint8(low | (high << 4))


REFINE_STEPS = 3  # least-squares refits of a Q4_0 block at most: later ones seldom help


@njit(**EXACT)
def q4_0_code(out, o, j):
    """Value j's code of the Q4_0 block at out[o], from -8 to 7."""
    b = np.int64(out[o + 2 + j % 16])
    return ((b >> 4) if j >= 16 else (b & 0xF)) - 8


@njit(**EXACT)
def q4_0_nearest(x, d):
    """The code nearest x / d within -8..7."""
    return min(7, max(-8, np.int64(roundf(np.float32(x / d)))))


@njit(**EXACT)
def refine_q4_0(x, out, o):
    """The Q4_0 block at out[o] refined: the least-squares scale for its codes (as float16),
    then the nearest codes for that scale, repeated while the squared error falls."""
    d = F16_TO_F32[np.int64(out[o]) | (np.int64(out[o + 1]) << 8)]
    error = 0.0
    for j in range(32):
        error += (x[j] - q4_0_code(out, o, j) * np.float64(d)) ** 2
    for _ in range(REFINE_STEPS):
        dot, norm = 0.0, 0.0
        for j in range(32):
            code = q4_0_code(out, o, j)
            dot += np.float64(x[j]) * code
            norm += code * code
        if norm == 0 or dot == 0:
            return
        bits = f16_bits(np.float32(dot / norm))
        fitted = F16_TO_F32[bits]
        if fitted == 0 or not np.isfinite(fitted):
            return
        new_error = 0.0
        for j in range(32):
            new_error += (x[j] - q4_0_nearest(x[j], fitted) * np.float64(fitted)) ** 2
        if not new_error < error:
            return
        error = new_error
        put_u16(out, o, bits)
        for j in range(16):
            low, high = q4_0_nearest(x[j], fitted) + 8, q4_0_nearest(x[16 + j], fitted) + 8
            out[o + 2 + j] = np.uint8(low | (high << 4))


@njit(**EXACT_INLINE)
def quantize_row(qtype, x, out):
    """The row x (float32, a multiple of 32 values) into out (uint8, the row's bytes in qtype):
    ggml's blocks, Q4_0's refined (refine_q4_0)."""
    if qtype == Q8_0:
        for b in range(x.shape[0] // 32):
            quantize_q8_0(x[32 * b : 32 * b + 32], out, 34 * b)
    elif qtype == Q4_0:
        for b in range(x.shape[0] // 32):
            quantize_q4_0(x[32 * b : 32 * b + 32], out, 18 * b)
            refine_q4_0(x[32 * b : 32 * b + 32], out, 18 * b)
    elif qtype == F16:
        if converts_halves():  # 32 at a time (vcvtps2ph, fcvt): the scalar loop took 4% of a prefill
            for b in range(x.shape[0] // 32):
                store_halves32(out, 64 * b, x, 32 * b)
        else:
            for j in range(x.shape[0]):
                put_u16(out, 2 * j, f16_bits(x[j]))
    else:  # F32
        for j in range(x.shape[0]):
            bits = float_bits(x[j])
            for k in range(4):
                out[4 * j + k] = np.uint8((bits >> np.uint32(8 * k)) & np.uint32(0xFF))
