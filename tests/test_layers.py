"""The small layers' vectorizable float32 math against numpy in float64."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.layers import exp32, swiglu_inplace


@njit(cache=True)
def exp32_all(x):
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        out[i] = exp32(x[i])
    return out


def test_exp32_within_two_ulp_over_the_float32_range():
    x = np.linspace(-87.3, 88.0, 1_000_001, dtype=np.float32)
    expected = np.exp(x.astype(np.float64))
    assert np.all(np.abs(exp32_all(x) - expected) <= 2.5 * 2**-24 * expected)


def test_exp32_saturates_instead_of_overflowing():
    out = exp32_all(np.array([-np.inf, -1000.0, 1000.0, np.inf], np.float32))
    assert np.all(np.isfinite(out)) and out[0] < 1e-37 and out[-1] > 1e38


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), magnitude=st.sampled_from([0.1, 5.0, 100.0]))
def test_swiglu_matches_float64(seed, magnitude):
    rng = np.random.default_rng(seed)
    gate, up = (rng.standard_normal((3, 70)) * magnitude).astype(np.float32), rng.standard_normal((3, 70)).astype(np.float32)
    g = gate.astype(np.float64)
    expected = g * 0.5 * (1 + np.tanh(g / 2)) * up  # silu, without overflow in exp
    ours = swiglu_inplace(gate.copy(), up)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
