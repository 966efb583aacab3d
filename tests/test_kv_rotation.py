"""The rotation of quantized cache rows: the Walsh-Hadamard matrix, orthogonal, q . k kept."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hadamard import dense_rotation
from nanosmol.kv.rotation import rotate_rows

HEAD_DIMS = [32, 64, 96, 128, 256]  # 96: three blocks of 32, the largest power of two dividing it


rows = st.tuples(st.sampled_from(HEAD_DIMS), st.integers(1, 3), st.integers(1, 4), st.integers(0, 2**32 - 1))


def random_rows(head_dim, n_heads, n_rows, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, n_heads * head_dim)) * rng.choice([1e-3, 1.0, 50.0], (n_rows, 1))
    return x.astype(np.float32)


@settings(max_examples=60, deadline=None)
@given(rows)
def test_rotation_is_the_walsh_hadamard_matrix_per_head(shape):
    head_dim, n_heads, n_rows, seed = shape
    x = random_rows(head_dim, n_heads, n_rows, seed)
    expected = x.astype(np.float64) @ dense_rotation(head_dim, n_heads).T
    ours = rotate_rows(x.copy(), head_dim)
    np.testing.assert_allclose(ours, expected, atol=1e-5 * np.abs(x).max())


@settings(max_examples=60, deadline=None)
@given(rows)
def test_rotation_is_orthogonal_and_its_own_inverse(shape):
    head_dim, n_heads, n_rows, seed = shape
    x = random_rows(head_dim, n_heads, n_rows, seed)
    rotated = rotate_rows(x.copy(), head_dim)
    heads = lambda a: a.reshape(n_rows, n_heads, head_dim).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(heads(rotated), axis=2), np.linalg.norm(heads(x), axis=2), rtol=1e-5)
    np.testing.assert_allclose(rotate_rows(rotated.copy(), head_dim), x, atol=1e-5 * np.abs(x).max())


@settings(max_examples=60, deadline=None)
@given(rows)
def test_query_key_products_are_unchanged(shape):
    head_dim, n_heads, n_rows, seed = shape
    q, k = random_rows(head_dim, n_heads, n_rows, seed), random_rows(head_dim, n_heads, n_rows, seed + 1)
    heads = lambda a: a.reshape(n_rows, n_heads, head_dim).astype(np.float64)
    before = np.einsum("rhd,shd->rsh", heads(q), heads(k))
    after = np.einsum("rhd,shd->rsh", heads(rotate_rows(q.copy(), head_dim)), heads(rotate_rows(k.copy(), head_dim)))
    scale = np.linalg.norm(heads(q), axis=2)[:, None, :] * np.linalg.norm(heads(k), axis=2)[None, :, :]
    assert np.all(np.abs(after - before) <= 1e-5 * scale)


def test_an_outlier_channel_is_spread_over_the_block():
    x = np.zeros((1, 64), np.float32)
    x[0, 5] = 8.0
    np.testing.assert_allclose(np.abs(rotate_rows(x, 64)), 1.0, rtol=1e-6)  # 8 / sqrt(64) in every channel
