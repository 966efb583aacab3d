"""The IR-level helpers of simd.py against numpy (the int8 multiply-adds: test_vecdot.py)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.simd import or_bits, unpack_nibbles16


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
