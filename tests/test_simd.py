"""The IR-level helpers of simd.py against numpy (the int8 multiply-adds: test_vecdot.py)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.simd import or_bits, target_aarch64, unpack_nibbles16


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


def aarch64_target(cpu: str, features: str):
    """A stand-in for Numba's CPU context compiling for an aarch64 CPU with LLVM features."""
    codegen = SimpleNamespace(_tm=SimpleNamespace(triple="aarch64-unknown-linux-gnu"), _tm_features=features,
                              _get_host_cpu_name=lambda: cpu)
    return SimpleNamespace(codegen=lambda: codegen)


@pytest.mark.parametrize("cpu, features, form", [
    ("cortex-a76", "", "dotprod"),
    ("cortex-a76", "-aes,-rand,-sha2,-sve", "dotprod"),  # what LLVM reads under qemu-user: the CPU decides
    ("cortex-a76", "+neon,-dotprod", "neon"),
    ("cortex-a72", "-aes,-rand,-sha2,-sve", "neon"),
    ("generic", "+neon,+dotprod", "dotprod"),  # a real board's list names it
    ("generic", "", "neon"),
])
def test_the_aarch64_dot_product_form_follows_the_target(cpu, features, form):
    assert target_aarch64(aarch64_target(cpu, features)) == form
