"""The oracle of the cache's rotation (nanosmol/kv/rotation.py), a dense matrix built independently."""

from __future__ import annotations

import numpy as np


def sylvester(n: int) -> np.ndarray:
    """H_n by Sylvester's construction, [[H, H], [H, -H]], over sqrt(n): orthogonal and symmetric."""
    h = np.ones((1, 1))
    while len(h) < n:
        h = np.kron([[1, 1], [1, -1]], h)
    return h / np.sqrt(n)


def dense_rotation(head_dim: int, n_heads: int) -> np.ndarray:
    """The rotation of a row of heads as one matrix: blocks of the largest power of two in head_dim."""
    size = max(p for p in (32, 64, 128, 256) if head_dim % p == 0)
    return np.kron(np.eye(n_heads * head_dim // size), sylvester(size))
