"""The IR-level helpers of simd.py against numpy, on both code paths of the int8 multiply-add."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.simd import (add_scaled, madd_block, madd_block_portable, or_bits, stack_int_lanes,
                                  unpack_nibbles16)


@njit(cache=True)
def madd_both_ways(codes, x, scale_lo, scale_hi):
    """madd_block (AVX2 where the machine has it) and the portable path, twice each into one sum."""
    out = np.empty((2, 8), np.int32)
    fast, portable = stack_int_lanes(), stack_int_lanes()
    fast[:] = 1
    portable[:] = 1
    for at in (0, 32):
        madd_block(fast, codes, at, x, at, scale_lo, scale_hi)
        madd_block_portable(portable, codes, at, x, at, scale_lo, scale_hi)
    out[0], out[1] = fast, portable
    return out


def madd_reference(codes, x, scale_lo, scale_hi):
    scales = np.where(np.arange(32) < 16, scale_lo, scale_hi)
    products = codes.astype(np.int64).reshape(2, 32) * x.reshape(2, 32) * scales
    return 1 + products.reshape(2, 8, 4).sum(axis=(0, 2))


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), code_bits=st.integers(1, 6),
       scales=st.tuples(st.integers(-128, 127), st.integers(-128, 127)))
def test_madd_block_matches_numpy_on_both_paths(seed, code_bits, scales):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**code_bits, 64).astype(np.uint8)
    x = rng.integers(-127, 128, 64).astype(np.int8)
    codes[:4], x[:4] = 2**code_bits - 1, -127  # the extremes, where a saturating add would show
    out = madd_both_ways(codes, x, *scales)
    expected = madd_reference(codes, x, *scales)
    assert np.array_equal(out[0], expected)
    assert np.array_equal(out[1], expected)


@njit(cache=True)
def unpack_q5_codes(packed, bits):
    codes = np.zeros(32, np.uint8)
    unpack_nibbles16(codes, packed, 0)
    or_bits(codes, bits, 16)
    return codes


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bits=st.integers(0, 2**32 - 1))
def test_nibbles_and_fifth_bits(seed, bits):
    packed = np.random.default_rng(seed).integers(0, 256, 16).astype(np.uint8)
    expected = np.concatenate([packed & 15, packed >> 4]) | (((bits >> np.arange(32)) & 1) << 4)
    assert np.array_equal(unpack_q5_codes(packed, np.uint32(bits)), expected)


@njit(cache=True)
def add_scaled_once(acc, lanes, scale):
    add_scaled(acc, lanes, scale)
    return acc


def test_add_scaled():
    lanes = np.arange(-4, 4, dtype=np.int32) * 1000
    acc = np.linspace(0, 1, 8).astype(np.float32)
    expected = acc + np.float32(0.25) * lanes.astype(np.float32)
    np.testing.assert_array_equal(add_scaled_once(acc.copy(), lanes, np.float32(0.25)), expected)
