"""The whole-block dot products of vecdot.py: the target's form against the portable one and float64."""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.quants.intdot import QuantizedVector, quantize_rows, quantize_vector, row_dot
from nanosmol.quants.synthetic import SCALE_OFFSETS, random_blocks
from nanosmol.quants.vecdot import (dot_bf16, dot_bf16_portable, dot_f16, dot_f16_portable, dot_f32,
                                    dot_f32_portable, dot_q4_0, dot_q4_0_portable, dot_q4_1, dot_q4_1_portable, dot_q4_k,
                                    dot_q4_k_portable, dot_q5_0, dot_q5_0_portable, dot_q5_1, dot_q5_1_portable,
                                    dot_q5_k, dot_q5_k_portable, dot_q6_k, dot_q6_k_portable, dot_q8_0,
                                    dot_q8_0_portable, row_q4_k_by_tokens, row_q4_k_by_tokens_portable,
                                    row_q5_k_by_tokens, row_q5_k_by_tokens_portable, row_q6_k_by_tokens,
                                    row_q6_k_by_tokens_portable, row_q8_0_by_tokens,
                                    row_q8_0_by_tokens_portable, row_q4_0_by_tokens, row_q4_0_by_tokens_portable,
                                    row_q4_1_by_tokens, row_q4_1_by_tokens_portable, row_q5_0_by_tokens,
                                    row_q5_0_by_tokens_portable, row_q5_1_by_tokens, row_q5_1_by_tokens_portable, store_f16,
                                    store_f16_portable, store_f32, store_f32_portable)

Q4_0, Q4_1, Q5_0, Q5_1 = int(T.Q4_0), int(T.Q4_1), int(T.Q5_0), int(T.Q5_1)
Q4_K, Q5_K, Q6_K, Q8_0 = int(T.Q4_K), int(T.Q5_K), int(T.Q6_K), int(T.Q8_0)
F16, BF16 = int(T.F16), int(T.BF16)
TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K]


@njit(cache=True)
def lanes_both_ways(qtype, row, v, n):
    """acc lanes of one row's blocks, [0] through the target's intrinsics, [1] the portable ones."""
    acc = np.zeros((2, 32), np.float32)
    fast, portable = acc[0], acc[1]
    if qtype != Q4_K and qtype != Q5_K and qtype != Q6_K:
        for b in range(n // 32):
            x = 32 * b
            if qtype == Q8_0:
                dot_q8_0(fast, row, 34 * b, v.q32, x, n, v.d32, v.s32)
                dot_q8_0_portable(portable, row, 34 * b, v.q32, x, n, v.d32, v.s32)
            elif qtype == Q4_0:
                dot_q4_0(fast, row, 18 * b, v.q32, x, n, v.d32, v.s32)
                dot_q4_0_portable(portable, row, 18 * b, v.q32, x, n, v.d32, v.s32)
            elif qtype == Q4_1:
                dot_q4_1(fast, row, 20 * b, v.q32, x, n, v.d32, v.s32)
                dot_q4_1_portable(portable, row, 20 * b, v.q32, x, n, v.d32, v.s32)
            elif qtype == Q5_0:
                dot_q5_0(fast, row, 22 * b, v.q32, x, n, v.d32, v.s32)
                dot_q5_0_portable(portable, row, 22 * b, v.q32, x, n, v.d32, v.s32)
            else:
                dot_q5_1(fast, row, 24 * b, v.q32, x, n, v.d32, v.s32)
                dot_q5_1_portable(portable, row, 24 * b, v.q32, x, n, v.d32, v.s32)
        return acc
    for blk in range(n // 256):
        x = 256 * blk
        if qtype == Q6_K:
            dot_q6_k(fast, row, 210 * blk, v.q256, x, n, v.sum16, v.d256)
            dot_q6_k_portable(portable, row, 210 * blk, v.q256, x, n, v.sum16, v.d256)
        elif qtype == Q4_K:
            dot_q4_k(fast, row, 144 * blk, v.q256, x, n, v.sum32, v.d256)
            dot_q4_k_portable(portable, row, 144 * blk, v.q256, x, n, v.sum32, v.d256)
        else:
            dot_q5_k(fast, row, 176 * blk, v.q256, x, n, v.sum32, v.d256)
            dot_q5_k_portable(portable, row, 176 * blk, v.q256, x, n, v.sum32, v.d256)
    return acc


@njit(cache=True)
def one_row_dot(qtype, row, v, n):
    return row_dot(qtype, row, v, n)


def extreme_row(qtype: T, n_blocks: int, rng) -> np.ndarray:
    """Every code byte at its extreme (0xFF; Q8_0: -128), scales random: where a saturating add would show."""
    row = random_blocks(qtype, 1, n_blocks, rng)[0]
    blocks = row.reshape(n_blocks, -1).copy()
    keep = np.zeros(blocks.shape[1], bool)
    for offset in SCALE_OFFSETS[qtype]:
        keep[offset : offset + 2] = True  # fp16 scales stay finite
    if qtype == T.Q6_K:
        keep[192:208] = True  # int8 scales keep their random signs
    if qtype in (T.Q4_K, T.Q5_K):
        keep[4:16] = True  # 6-bit scales and mins
    blocks[:, ~keep] = 0x80 if qtype == T.Q8_0 else 0xFF
    return blocks.reshape(-1)


@settings(max_examples=80, deadline=None)
@given(qtype=st.sampled_from(TYPES), n_blocks=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       extreme=st.booleans())
def test_block_dots_agree_with_portable_and_float64(qtype, n_blocks, seed, extreme):
    rng = np.random.default_rng(seed)
    size = 256 if qtype in (T.Q4_K, T.Q5_K, T.Q6_K) else 32
    row = extreme_row(qtype, n_blocks, rng) if extreme else random_blocks(qtype, 1, n_blocks, rng)[0]
    x = rng.standard_normal(n_blocks * size).astype(np.float32)
    if extreme:  # activations at +-127 after quantization
        x = np.where(rng.random(len(x)) < 0.5, -1.0, 1.0).astype(np.float32)
    v = quantize_vector(x, QuantizedVector.empty(len(x)))
    acc = lanes_both_ways(int(qtype), row, v, len(x))
    assert np.array_equal(acc[0], acc[1])
    ours = one_row_dot(int(qtype), row, v, len(x))
    q, d = (v.q32, v.d32) if size == 32 else (v.q256, v.d256)
    x_used = q[: len(x)].astype(np.float64) * np.repeat(d[: len(x) // size], size)
    W = dequantize(row[None, :], qtype).astype(np.float64).reshape(-1)
    assert abs(ours - W @ x_used) <= 1e-5 * (np.abs(W) @ np.abs(x_used)) + 1e-30


@njit(cache=True)
def token_lanes_both_ways(qtype, row, v, n):
    """Prefill's 8 token sums of one row, [0] by the target's intrinsic, [1] the portable one."""
    sums = np.zeros((2, 8), np.float32)
    if qtype == Q6_K:
        row_q6_k_by_tokens(sums[0], row, v.q256_by_8, 0, v.d256_by_8, v.sum16_by_8, n // 256)
        row_q6_k_by_tokens_portable(sums[1], row, v.q256_by_8, 0, v.d256_by_8, v.sum16_by_8, n // 256)
    elif qtype == Q4_K:
        row_q4_k_by_tokens(sums[0], row, v.q256_by_8, 0, v.d256_by_8, v.sum32_by_8, n // 256)
        row_q4_k_by_tokens_portable(sums[1], row, v.q256_by_8, 0, v.d256_by_8, v.sum32_by_8, n // 256)
    elif qtype == Q5_K:
        row_q5_k_by_tokens(sums[0], row, v.q256_by_8, 0, v.d256_by_8, v.sum32_by_8, n // 256)
        row_q5_k_by_tokens_portable(sums[1], row, v.q256_by_8, 0, v.d256_by_8, v.sum32_by_8, n // 256)
    elif qtype == Q8_0:
        row_q8_0_by_tokens(sums[0], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
        row_q8_0_by_tokens_portable(sums[1], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q4_0:
        row_q4_0_by_tokens(sums[0], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
        row_q4_0_by_tokens_portable(sums[1], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q4_1:
        row_q4_1_by_tokens(sums[0], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
        row_q4_1_by_tokens_portable(sums[1], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
    elif qtype == Q5_0:
        row_q5_0_by_tokens(sums[0], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
        row_q5_0_by_tokens_portable(sums[1], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
    else:
        row_q5_1_by_tokens(sums[0], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
        row_q5_1_by_tokens_portable(sums[1], row, v.q32_by_8, 0, v.d32_by_8, v.s32_by_8, n // 32)
    return sums


@settings(max_examples=60, deadline=None)
@given(qtype=st.sampled_from(TYPES), n_blocks=st.integers(1, 4), seed=st.integers(0, 2**32 - 1), extreme=st.booleans())
def test_token_lane_prefill_equals_decode_per_token(qtype, n_blocks, seed, extreme):
    """8 tokens in the vector lanes (int16 sums on AVX2, VNNI, portable) give each token's
    decode dot product; extreme codes and +-127 activations are where an int16 sum would wrap."""
    rng = np.random.default_rng(seed)
    size = 256 if qtype in (T.Q4_K, T.Q5_K, T.Q6_K) else 32
    row = extreme_row(qtype, n_blocks, rng) if extreme else random_blocks(qtype, 1, n_blocks, rng)[0]
    X = rng.standard_normal((8, size * n_blocks)).astype(np.float32)
    if extreme:
        X = np.where(rng.random(X.shape) < 0.5, -1.0, 1.0).astype(np.float32)
    sums = token_lanes_both_ways(int(qtype), row, quantize_rows(X, QuantizedVector.empty(X.size), 0, len(X)), X.shape[1])
    W = np.abs(dequantize(row[None, :], qtype).astype(np.float64).reshape(-1))
    for t in range(8):
        v = quantize_vector(X[t], QuantizedVector.empty(X.shape[1]))
        decode = one_row_dot(int(qtype), row, v, X.shape[1])
        q, d = (v.q32, v.d32) if size == 32 else (v.q256, v.d256)
        bound = 1e-5 * (W @ np.abs(q[: X.shape[1]] * np.repeat(d[:n_blocks], size))) + 1e-30
        forms = sums[:, t] if not np.isnan(sums[0, 0]) else sums[1:, t]
        assert np.all(np.abs(forms - decode) <= bound)


@njit(cache=True)
def float_lanes_both_ways(qtype, row, x):
    """The 32 lanes of a float row's dot product, through the target's and the portable intrinsics."""
    acc = np.zeros((2, 32), np.float32)
    for b in range(x.shape[0] // 32):
        if qtype == F16:
            dot_f16(acc[0], row, 64 * b, x, 32 * b)
            dot_f16_portable(acc[1], row, 64 * b, x, 32 * b)
        elif qtype == BF16:
            dot_bf16(acc[0], row, 64 * b, x, 32 * b)
            dot_bf16_portable(acc[1], row, 64 * b, x, 32 * b)
        else:
            dot_f32(acc[0], row, 128 * b, x, 32 * b)
            dot_f32_portable(acc[1], row, 128 * b, x, 32 * b)
    return acc


@settings(max_examples=40, deadline=None)
@given(qtype=st.sampled_from([T.F32, T.F16, T.BF16]), n_blocks=st.integers(1, 5), seed=st.integers(0, 2**32 - 1),
       special=st.booleans())
def test_float_dots_agree_with_portable_and_float64(qtype, n_blocks, seed, special):
    rng = np.random.default_rng(seed)
    row = random_blocks(qtype, 1, n_blocks, rng)[0]
    if special and qtype == T.F16:  # subnormal, zero and largest halves: the integer conversion's edges
        halves = row.view(np.uint16)
        halves[:4] = [0x0001, 0x03FF, 0x8000, 0x7BFF]
    x = rng.standard_normal(32 * n_blocks).astype(np.float32)
    acc = float_lanes_both_ways(int(qtype), row, x)
    W = dequantize(row[None, :], qtype).astype(np.float64).reshape(-1)
    expected = W @ x
    for lanes in acc:
        assert abs(lanes.astype(np.float64).sum() - expected) <= 1e-5 * (np.abs(W) @ np.abs(x)) + 1e-30
    np.testing.assert_allclose(acc[0], acc[1], rtol=1e-6, atol=1e-6 * float(np.abs(acc).max()))


@njit(cache=True)
def float_values_both_ways(qtype, row, o, n):
    """The n float values of row from byte o, through the target's and the portable stores."""
    out = np.zeros((2, n), np.float32)
    for b in range(n // 32):
        if qtype == F16:
            store_f16(out[0], row, o + 64 * b, 32 * b)
            store_f16_portable(out[1], row, o + 64 * b, 32 * b)
        else:
            store_f32(out[0], row, o + 128 * b, 32 * b)
            store_f32_portable(out[1], row, o + 128 * b, 32 * b)
    return out


@settings(max_examples=30, deadline=None)
@given(qtype=st.sampled_from([T.F32, T.F16]), n_blocks=st.integers(1, 4), skip=st.integers(0, 2),
       seed=st.integers(0, 2**32 - 1))
def test_float_stores_equal_the_values(qtype, n_blocks, skip, seed):
    """The KV cache's f16 and f32 rows, read at a row's offset (attention reads rows so)."""
    rows = random_blocks(qtype, skip + 1, n_blocks, np.random.default_rng(seed))
    rows[skip].view(np.uint16)[:3] = [0x0001, 0x8000, 0x7BFF] if qtype == T.F16 else rows[skip].view(np.uint16)[:3]
    out = float_values_both_ways(int(qtype), rows.reshape(-1), skip * rows.shape[1], 32 * n_blocks)
    expected = dequantize(rows[skip][None, :], qtype).reshape(-1)
    np.testing.assert_array_equal(out[0], expected)
    np.testing.assert_array_equal(out[1], expected)
