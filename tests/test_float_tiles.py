"""float_tiles.tile_product against numpy's float64 product, on tiles inside larger buffers."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from nanosmol.float_tiles import tile_product


@njit(cache=True)
def product_in(c, c_at, c_stride, a, a_at, a_stride, b, b_at, b_stride, rows, cols, depth, accumulate):
    tile_product(c, c_at, c_stride, a, a_at, a_stride, b, b_at, b_stride, rows, cols, depth, accumulate)
    return c


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 13), strips=st.integers(1, 4), depth=st.integers(1, 70), margin=st.integers(0, 9),
       accumulate=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_tile_product_equals_numpy(rows, strips, depth, margin, accumulate, seed):
    """Every row count (4 at a time and the rest one by one), any depth, matrices starting
    inside their buffers with rows `margin` longer than they are: C's other values untouched."""
    rng = np.random.default_rng(seed)
    cols = 16 * strips
    a_stride, b_stride, c_stride = depth + margin, cols + margin, cols + margin
    a_at, b_at, c_at = (int(rng.integers(0, 5)) for _ in range(3))
    a = rng.standard_normal(a_at + rows * a_stride).astype(np.float32)
    b = rng.standard_normal(b_at + depth * b_stride).astype(np.float32)
    c = rng.standard_normal(c_at + rows * c_stride).astype(np.float32)
    A = a[a_at:].reshape(rows, a_stride)[:, :depth].astype(np.float64)
    B = b[b_at:].reshape(depth, b_stride)[:, :cols].astype(np.float64)
    expected = c.copy()
    tile = expected[c_at:].reshape(rows, c_stride)[:, :cols]
    tile[:] = (tile if accumulate else 0) + A @ B
    ours = product_in(c.copy(), c_at, c_stride, a, a_at, a_stride, b, b_at, b_stride, rows, cols, depth, accumulate)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5 * np.sqrt(depth))
