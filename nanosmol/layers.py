"""The small layers of the transformer: RMSNorm, RoPE, SwiGLU. Numba, float32, in place where it pays.

Serial: the decode step calls them on one row from compiled code, and prefill on a batch's
rows between its BLAS calls (where Numba's own threads would spin after a parallel region
and starve the BLAS workers; for these small loops one thread is also the fastest).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from nanosmol.simd import float32_from_bits

# error_model="numpy": a division by zero gives inf rather than raising. Python's check on
# every division kept loops with one from vectorizing (SiLU: 10x slower).
JIT = dict(cache=True, fastmath=True, boundscheck=False, nogil=True, error_model="numpy")
INLINE = dict(cache=True, fastmath=True, boundscheck=False, error_model="numpy", inline="always")


@njit(**INLINE)
def exp32(x):
    """exp(x) in float32 to ~1 ulp, in plain arithmetic so loops of it vectorize.

    np.exp inside Numba is a scalar libm call per value (no SVML here): it made SwiGLU the
    slowest small layer. Cephes' expf: x = k ln2 + r, a polynomial for e^r, 2^k from bits.
    """
    x = min(max(x, np.float32(-87.3)), np.float32(88.0))  # the float32 range of exp
    k = np.floor(x * np.float32(1.44269504) + np.float32(0.5))
    r = x - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * r * r + r + np.float32(1.0)
    return p * float32_from_bits(np.int32((np.int32(k) + np.int32(127)) << np.int32(23)))


@njit(**INLINE)
def silu(g):
    return g / (np.float32(1.0) + exp32(-g))


@njit(**JIT)
def rmsnorm(x, weight, eps, out):
    """out[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, for each row t."""
    n, d = x.shape
    for t in range(n):
        ss = np.float32(0.0)
        for i in range(d):
            ss += x[t, i] * x[t, i]
        scale = np.float32(1.0) / np.sqrt(ss / d + eps)
        for i in range(d):
            out[t, i] = x[t, i] * scale * weight[i]
    return out


@njit(**JIT)
def rope_inplace(x, n_heads, head_dim, cos, sin):
    """Rotate adjacent pairs (x[2j], x[2j+1]) of every head: GGUF's permuted Q/K layout.

    x: [T, n_heads * head_dim]; cos, sin: [T, head_dim // 2] for each row's position.
    """
    n = x.shape[0]
    half = head_dim // 2
    for t in range(n):
        for h in range(n_heads):
            base = h * head_dim
            for j in range(half):
                a = x[t, base + 2 * j]
                b = x[t, base + 2 * j + 1]
                c = cos[t, j]
                s = sin[t, j]
                x[t, base + 2 * j] = a * c - b * s
                x[t, base + 2 * j + 1] = a * s + b * c


@njit(**JIT)
def swiglu_inplace(gate, up):
    """gate <- silu(gate) * up, the SwiGLU feed-forward activation."""
    n, d = gate.shape
    for t in range(n):
        for i in range(d):
            gate[t, i] = silu(gate[t, i]) * up[t, i]
    return gate


class RopeTable:
    """cos/sin of every position's angles, computed once and grown on demand."""

    def __init__(self, head_dim: int, theta: float, n_positions: int, freq_scale: float = 1.0):
        self.inv_freq = freq_scale * theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
        self._grow(max(n_positions, 1))

    def _grow(self, n_positions: int) -> None:
        angles = np.outer(np.arange(n_positions, dtype=np.float64), self.inv_freq)
        self.cos = np.cos(angles).astype(np.float32)
        self.sin = np.sin(angles).astype(np.float32)

    def lookup(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        needed = int(positions.max()) + 1
        if needed > len(self.cos):
            self._grow(max(needed, 2 * len(self.cos)))  # a context sliding past n_ctx
        return self.cos[positions], self.sin[positions]
