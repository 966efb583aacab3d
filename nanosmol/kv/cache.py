"""The KV cache's ring buffer: every layer's keys and values for `n_ctx` slots, in their cache types.

Slots fill in order; when all are taken, the oldest tokens after the first `n_keep` (an
attention sink) are overwritten and generation goes on. Keys are stored after RoPE, so they
keep the angles of their original positions; every slot remembers the position it holds.
Each token's key and value of each KV head is one row of GGML blocks (kv/types.py); q4_0
holds the rows rotated (kv/rotation.py), keys less their span's shift (kv/shift.py), as
attention expects them.
"""

from __future__ import annotations

import mmap
from functools import cache

import numpy as np
from numba import njit

from nanosmol.kv.types import CACHE_TYPES, CacheTypes, row_bytes
from nanosmol.kv.rotation import rotate_rows, rotates
from nanosmol.kv.rows import quantize_row
from nanosmol.kv.shift import SPAN, KeyShifts, fix_shifts
from nanosmol.quants.specialize import ConstantTypes, named_for


class KVCache:
    def __init__(self, n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int, n_keep: int = 4,
                 types: CacheTypes = CacheTypes()):
        if n_ctx <= n_keep:
            raise ValueError(f"context {n_ctx} must be larger than n_keep {n_keep}")
        if head_dim % 32:
            raise ValueError(f"head size {head_dim} is not a multiple of 32, as the KV cache's blocks need")
        self.n_ctx, self.n_keep, self.head_dim, self.types = n_ctx, n_keep, head_dim, types
        self.k_type, self.v_type = CACHE_TYPES[types.k], CACHE_TYPES[types.v]
        self._store = store_kv_of_types(self.k_type, self.v_type)
        # [layer, kv head, slot, row bytes]: each head's keys contiguous for the attention loop.
        self.k = lazy_bytes((n_layer, n_head_kv, n_ctx, row_bytes(types.k, head_dim)))
        self.v = lazy_bytes((n_layer, n_head_kv, n_ctx, row_bytes(types.v, head_dim)))
        self.slot_pos = np.full(n_ctx, -1, np.int64)  # position held by each slot, -1 = empty
        self.shifts = KeyShifts.of(n_layer, n_head_kv, n_ctx, head_dim)  # used by q4_0 keys
        self.reset()

    def reset(self) -> None:
        self.n_seen = 0  # tokens stored since the reset; the next token's position
        self.slot_pos[:] = -1
        self.shifts.reset()

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
        self.shifts.forget_from(self.n_seen)

    def store(self, layer: int, k: np.ndarray, v: np.ndarray, slots: np.ndarray) -> None:
        """Write rows k, v [T, n_kv * head_dim] of one layer into its cache slots."""
        self._store(self.k[layer], self.v[layer], k, v, slots, self.head_dim, self.shifts, layer)


def lazy_bytes(shape: tuple[int, ...]) -> np.ndarray:
    """uint8 zeros that become resident page by page, as the cache fills.

    numpy asks the kernel for transparent huge pages on large arrays, so writing the first
    token made each 2 MiB head region resident at once: a 3B model at --ctx 4096 held its
    whole 576 MiB KV cache after one token. An anonymous map faults in 4 KiB pages.
    """
    n_bytes = int(np.prod(shape))
    return np.frombuffer(mmap.mmap(-1, max(n_bytes, 1)), np.uint8, count=n_bytes).reshape(shape)


# No fastmath here: the quantizers round as ggml's do.
@njit(nogil=True, cache=True, boundscheck=False, pipeline_class=ConstantTypes)
def store_kv(k_cache, v_cache, k_type, v_type, k, v, slots, head_dim, shifts, layer):
    """Write rows k, v [T, n_kv * head_dim] into one layer's cache slots, in the cache's types.
    q4_0 keys go in rotated, less their span's shift (decided here: kv/shift.py); q4_0 values
    rotated."""
    if rotates(k_type):
        keys = rotate_rows(k.copy(), head_dim)
        fix_shifts(shifts, layer, keys, slots)
        for t in range(keys.shape[0]):
            for h in range(k_cache.shape[0]):
                keys[t, h * head_dim : (h + 1) * head_dim] -= shifts.vectors[layer, h, slots[t] // SPAN]
        store_rows(k_type, keys, k_cache, slots, head_dim)
    else:
        store_rows(k_type, k, k_cache, slots, head_dim)
    store_rows(v_type, rotate_rows(v.copy(), head_dim) if rotates(v_type) else v, v_cache, slots, head_dim)


@njit(nogil=True, cache=True, boundscheck=False, pipeline_class=ConstantTypes)
def store_rows(cache_type, x, cache, slots, head_dim):
    """Each head's row of x [T, n_kv * head_dim] into its cache slot, in the cache type.

    A function of its own, called once per type: Numba inlines quantize_row whole, every
    type's code, before the branches on the type are pruned; one call site here keeps that
    to one copy (store_kv had four, 10 s of a cold start)."""
    for t in range(x.shape[0]):
        for h in range(cache.shape[0]):
            quantize_row(cache_type, x[t, h * head_dim : (h + 1) * head_dim], cache[h, slots[t]])


@cache
def store_kv_of_types(k_type: int, v_type: int):
    """store_kv for Python's calls (prefill), compiled for these cache types alone: called with
    the types as runtime integers, it compiled all four types' code (10 s of a cold start)."""

    @njit(cache=True, nogil=True)
    @named_for((k_type, v_type))
    def store_kv_of_types(k_cache, v_cache, k, v, slots, head_dim, shifts, layer):
        store_kv(k_cache, v_cache, k_type, v_type, k, v, slots, head_dim, shifts, layer)

    return store_kv_of_types
