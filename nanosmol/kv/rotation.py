"""The Walsh-Hadamard rotation of q4_0 cache rows (QuaRot's trick for 4-bit keys).

A few channels of a key carry most of its size (RoPE pairs of low frequency, outliers of
the projection), so a block of 32 quantized together spends its 16 levels of q4_0 on one
value and rounds the rest to nothing. Keys and queries are therefore rotated per head by the
same orthogonal matrix R = H / sqrt(n) (H the n x n Walsh-Hadamard matrix) after RoPE,
before the keys are quantized: q . k = (R q) . (R k) exactly, and R spreads every channel
evenly over all n. Values are stored as R v and the attention output (a weighted sum of
stored values, so R o) is turned back by R's inverse, which is R itself (R is symmetric).

Float and q8_0 caches store rows as they are. n is the largest power of two dividing the
head size (64 or 128 for SmolLM2 and SmolLM3), so R is block diagonal over a head otherwise.
The transform runs in place in n log n additions per block.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from nanosmol.quants.blocks import Q4_0

INLINE = dict(cache=True, boundscheck=False, inline="always")


@njit(**INLINE)
def rotates(cache_type):
    """Whether rows of this cache type are stored rotated: q4_0's. (q8_0's 256 levels lose
    0.1-0.2% of perplexity as they are; rotated, a key's common part would set every block's scale.)"""
    return cache_type == Q4_0


@njit(**INLINE)
def rotation_size(head_dim):
    """The block R acts on: the largest power of two that divides the head size."""
    return head_dim & -head_dim


@njit(**INLINE)
def hadamard(x):
    """x = R x in place (R = H / sqrt(n), n = len(x) a power of two): butterflies of width
    1, 2, 4, ... (the fast Walsh-Hadamard transform), then the scale that makes R orthogonal."""
    n = x.shape[0]
    width = 1
    while width < n:
        for first in range(0, n, 2 * width):
            for j in range(first, first + width):
                a, b = x[j], x[j + width]
                x[j] = a + b
                x[j + width] = a - b
        width *= 2
    scale = np.float32(1.0 / math.sqrt(n))
    for j in range(n):
        x[j] *= scale


@njit(**INLINE)
def rotate_row(x, head_dim):
    """Every head of the row x (heads of head_dim values side by side) rotated in place by R."""
    size = rotation_size(head_dim)
    for first in range(0, x.shape[0], size):
        hadamard(x[first : first + size])


@njit(nogil=True, cache=True, boundscheck=False)
def rotate_rows(x, head_dim):
    """rotate_row for each row of x [rows, a multiple of head_dim]. R is its own inverse,
    so this also turns a rotated row back."""
    for r in range(x.shape[0]):
        rotate_row(x[r], head_dim)
    return x
