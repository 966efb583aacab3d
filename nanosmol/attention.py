"""Grouped-query attention over a preallocated KV ring buffer.

Each layer keeps float32 K and V for `n_ctx` slots, allocated once. Slots fill in order;
when all are taken, the oldest tokens after the first `n_keep` (an attention sink) are
overwritten and generation goes on. Keys are stored after RoPE, so they keep the angles
of their original positions; every slot remembers the position it holds.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
from numba import njit, prange

from nanosmol.layers import exp32
from nanosmol.workers import n_workers, parallel_map

JIT = dict(cache=True, fastmath=True, boundscheck=False, error_model="numpy")
QUERY_BLOCK = 128  # prompt rows per attention job at most: bounds the score matrix
SERIAL_QUERIES = 64  # up to this many prompt rows, attention runs on the calling thread


class KVCache:
    def __init__(self, n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int, n_keep: int = 4):
        if n_ctx <= n_keep:
            raise ValueError(f"context {n_ctx} must be larger than n_keep {n_keep}")
        self.n_ctx, self.n_keep = n_ctx, n_keep
        # [layer, kv head, slot, dim]: each head's keys contiguous for the attention loop.
        shape = (n_layer, n_head_kv, n_ctx, head_dim)
        self.k = lazy_zeros(shape)
        self.v = lazy_zeros(shape)
        self.slot_pos = np.full(n_ctx, -1, np.int64)  # position held by each slot, -1 = empty
        self.reset()

    def reset(self) -> None:
        self.n_seen = 0  # tokens stored since the reset; the next token's position
        self.slot_pos[:] = -1

    @property
    def n_filled(self) -> int:
        return min(self.n_seen, self.n_ctx)

    @property
    def ring_size(self) -> int:
        return self.n_ctx - self.n_keep

    def slots_for(self, n: int) -> np.ndarray:
        """Slots for the next n tokens: in order until full, then cycling past the sink."""
        seen = self.n_seen + np.arange(n)
        ring = self.n_keep + (seen - self.n_keep) % self.ring_size
        return np.where(seen < self.n_ctx, seen, ring)

    def advance(self, slots: np.ndarray) -> np.ndarray:
        """Claim slots for the next tokens; returns their positions."""
        positions = self.n_seen + np.arange(len(slots), dtype=np.int64)
        self.slot_pos[slots] = positions
        self.n_seen += len(slots)
        return positions

    def truncate(self, n_tokens: int) -> None:
        """Forget every token from position n_tokens on (only before the ring has wrapped)."""
        if self.n_seen > self.n_ctx:
            raise ValueError("cannot truncate a cache that has wrapped around")
        self.slot_pos[n_tokens:] = -1
        self.n_seen = min(self.n_seen, n_tokens)


def lazy_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """float32 zeros that become resident page by page, as the cache fills.

    numpy asks the kernel for transparent huge pages on large arrays, so writing the first
    token made each 2 MiB head region resident at once: a 3B model at --ctx 4096 held its
    whole 576 MiB KV cache after one token. An anonymous map faults in 4 KiB pages.
    """
    n_bytes = int(np.prod(shape)) * 4
    return np.frombuffer(mmap.mmap(-1, max(n_bytes, 1)), np.float32, count=n_bytes // 4).reshape(shape)


@njit(nogil=True, **JIT)
def store_kv(k_cache, v_cache, k, v, slots, head_dim):
    """Write rows k, v [T, n_kv * head_dim] into the layer's cache slots."""
    n_kv = k_cache.shape[0]
    for h in range(n_kv):
        for t in range(k.shape[0]):
            s = slots[t]
            for i in range(head_dim):
                k_cache[h, s, i] = k[t, h * head_dim + i]
                v_cache[h, s, i] = v[t, h * head_dim + i]


@njit(parallel=True, **JIT)
def attend(q, k_cache, v_cache, slot_pos, q_pos, n_filled, n_head, head_dim, out, scores):
    """Causal grouped-query attention of a few queries (decode), over the ring of slots.

    q: [T, n_head * head_dim] at positions q_pos; out: same shape; scores: scratch
    [T * n_head, >= n_filled]. A query sees every filled slot whose position is not after its
    own. Two passes over the slots (scores, then the softmax-weighted values), each a loop
    that vectorizes: 4-7x faster than one pass with an online softmax at 100-4000 slots.
    """
    group = n_head // k_cache.shape[0]
    scale = np.float32(1.0 / math.sqrt(head_dim))
    for job in prange(q.shape[0] * n_head):
        t, h = job // n_head, job % n_head
        keys, values, base = k_cache[h // group], v_cache[h // group], h * head_dim
        query, weights = q[t, base : base + head_dim], scores[job, :n_filled]
        for s in range(n_filled):
            key = keys[s]
            dot = np.float32(0.0)
            for i in range(head_dim):
                dot += query[i] * key[i]
            weights[s] = dot * scale
        top = np.float32(-3.0e38)  # finite: fastmath assumes no infinities
        for s in range(n_filled):
            if 0 <= slot_pos[s] <= q_pos[t]:
                top = max(top, weights[s])
        total = np.float32(0.0)
        for s in range(n_filled):
            weights[s] = exp32(weights[s] - top) if 0 <= slot_pos[s] <= q_pos[t] else np.float32(0.0)
            total += weights[s]
        mixed = out[t, base : base + head_dim]
        mixed[:] = 0.0
        for s in range(n_filled):
            w, value = weights[s] / total, values[s]
            for i in range(head_dim):
                mixed[i] += w * value[i]
    return out


def attend_batch(q, k_cache, v_cache, slot_pos, q_pos, n_filled, n_head, head_dim, out):
    """attend() for a prompt block, through BLAS: all heads of a block of queries at once.

    A query sees every filled slot whose position is not after its own. Blocks of queries
    go to the worker threads; up to SERIAL_QUERIES rows stay on this thread, where the
    hand-off to a worker costs more than the work (64 rows: 230 us here, 390 us spread).
    """
    n_kv = k_cache.shape[0]
    group = n_head // n_kv
    scale = np.float32(1.0 / math.sqrt(head_dim))
    keys, values, positions = k_cache[:, :n_filled], v_cache[:, :n_filled], slot_pos[:n_filled]

    def block(t0):
        t1 = min(t0 + size, len(q))
        n = t1 - t0
        # [kv head, (query, head in its group), head_dim]: one batched matmul for every head.
        queries = q[t0:t1].reshape(n, n_kv, group * head_dim).transpose(1, 0, 2).reshape(n_kv, n * group, head_dim)
        scores = np.matmul(queries, keys.transpose(0, 2, 1)).reshape(n_kv, n, group, n_filled)
        hidden = (positions < 0) | (positions[None, :] > q_pos[t0:t1, None])
        scores *= scale
        scores += np.where(hidden, np.float32(-np.inf), np.float32(0.0))[None, :, None, :]
        scores -= scores.max(axis=3, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=3, keepdims=True)
        mixed = np.matmul(scores.reshape(n_kv, n * group, n_filled), values)
        out[t0:t1] = mixed.reshape(n_kv, n, group * head_dim).transpose(1, 0, 2).reshape(n, -1)

    size = len(q) if len(q) <= SERIAL_QUERIES else min(QUERY_BLOCK, -(-len(q) // n_workers()))
    if size == len(q):
        block(0)
    else:
        parallel_map(block, range(0, len(q), size))
    return out
