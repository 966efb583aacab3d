"""Attention over every cache type: the decode kernel and the tiled BLAS prefill against float64 numpy.

Two oracles: attention on the cache as gguf-py dequantizes it (with the query rounded to int8
as decode rounds it for quantized keys), which the kernels must match to float32
rounding; and attention on the float keys and values before they were cached, which they
must match within the cache type's quantization noise.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanosmol.attention import CHUNK, KEY_TILE, AttentionScratch, attend, attend_batch
from nanosmol.kv.cache import store_kv
from nanosmol.kv.types import CACHE_TYPES, row_bytes

# Largest |error| over max |value| against the float keys and values, for random normal data.
NOISE = {"f32": 1e-5, "f16": 2e-3, "q8_0": 3e-2, "q4_0": 0.25}


def float64_attention(q, keys, values, slot_pos, q_pos, n_head, head_dim):
    """keys, values: [n_kv, slots, head_dim] floats."""
    group = n_head // keys.shape[0]
    out = np.zeros(q.shape, np.float64)
    for t in range(len(q)):
        seen = (slot_pos >= 0) & (slot_pos <= q_pos[t])
        for h in range(n_head):
            k, v = keys[h // group, seen].astype(np.float64), values[h // group, seen].astype(np.float64)
            scores = k @ q[t, h * head_dim : (h + 1) * head_dim].astype(np.float64) / np.sqrt(head_dim)
            weights = np.exp(scores - scores.max())
            out[t, h * head_dim : (h + 1) * head_dim] = weights @ v / weights.sum()
    return out


def int8_rounded(x):
    """x as the kernels quantize activations: blocks of 32, d = max|x| / 127, round to nearest."""
    blocks = x.reshape(-1, 32)
    d = np.abs(blocks).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d > 0, np.rint(blocks / d), 0)
    return (q * d).reshape(x.shape).astype(np.float32)


def cached(rows, cache_type):
    """Float rows [n_kv, slots, head_dim] stored as the cache stores them: [n_kv, slots, row bytes]."""
    n_kv, slots, head_dim = rows.shape
    cache = np.zeros((n_kv, slots, row_bytes(cache_type, head_dim)), np.uint8)
    other = np.zeros_like(cache)
    flat = np.ascontiguousarray(rows.transpose(1, 0, 2).reshape(slots, -1))
    code = CACHE_TYPES[cache_type]
    store_kv(cache, other, code, code, flat, flat, np.arange(slots), head_dim)
    return cache


def as_stored(cache, cache_type, head_dim):
    """The cache's rows as gguf-py dequantizes them."""
    n_kv, slots, _ = cache.shape
    return dequantize(cache.reshape(n_kv * slots, -1), T(CACHE_TYPES[cache_type])).reshape(n_kv, slots, head_dim)


def ring_positions(rng, n_past, n_q, holes):
    """Slots holding positions in ring order (rolled, as after wrapping), some empty (-1)."""
    n_filled = n_past + n_q
    slot_pos = np.roll(np.arange(n_filled), rng.integers(0, n_filled)).astype(np.int64)
    slot_pos[rng.choice(n_filled, size=min(holes, n_past), replace=False)] = -1
    q_pos = np.arange(n_past, n_filled, dtype=np.int64)
    slot_pos[rng.choice(n_filled, size=1)] = q_pos[0]  # every query sees at least one key
    return slot_pos, q_pos


def check(cache_type_k, cache_type_v, n_kv, group, head_dim, n_q, n_past, holes, seed, decode):
    rng = np.random.default_rng(seed)
    n_head, n_filled = n_kv * group, n_past + n_q
    keys = rng.standard_normal((n_kv, n_filled + 3, head_dim)).astype(np.float32)
    values = rng.standard_normal((n_kv, n_filled + 3, head_dim)).astype(np.float32)
    q = rng.standard_normal((n_q, n_head * head_dim)).astype(np.float32)
    slot_pos, q_pos = ring_positions(rng, n_past, n_q, holes)
    slot_pos = np.concatenate([slot_pos, [-1, -1, -1]])
    k_cache, v_cache = cached(keys, cache_type_k), cached(values, cache_type_v)
    k_code, v_code = CACHE_TYPES[cache_type_k], CACHE_TYPES[cache_type_v]
    args = (q, k_cache, v_cache, k_code, v_code, slot_pos, q_pos, n_filled, n_head, head_dim, np.full_like(q, np.nan))
    if decode:
        ours = attend(*args, AttentionScratch.of(n_q, n_head, head_dim, n_filled + 3))
    else:
        ours = attend_batch(*args)
    # Decode takes the query in int8 to quantized keys; prefill takes it in float to decoded key tiles.
    query = int8_rounded(q) if decode and cache_type_k in ("q8_0", "q4_0") else q
    stored = float64_attention(query, as_stored(k_cache, cache_type_k, head_dim),
                               as_stored(v_cache, cache_type_v, head_dim), slot_pos, q_pos, n_head, head_dim)
    np.testing.assert_allclose(ours, stored, atol=3e-5)
    exact = float64_attention(q, keys, values, slot_pos, q_pos, n_head, head_dim)
    noise = max(NOISE[cache_type_k], NOISE[cache_type_v])
    assert np.abs(ours - exact).max() <= noise * np.abs(exact).max()


cache_types = st.sampled_from(list(CACHE_TYPES))
shapes = dict(n_kv=st.sampled_from([1, 2, 3]), group=st.sampled_from([1, 3, 4]),
              head_dim=st.sampled_from([32, 64, 128]), holes=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=cache_types, v=cache_types, n_q=st.integers(1, 2), n_past=st.integers(0, 2 * CHUNK + 40), **shapes)
def test_decode_attention_on_each_cache_type(k, v, n_kv, group, head_dim, n_q, n_past, holes, seed):
    check(k, v, n_kv, group, head_dim, n_q, n_past, holes, seed, decode=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=cache_types, v=cache_types, n_q=st.integers(1, 150), n_past=st.integers(0, KEY_TILE + 60), **shapes)
def test_prefill_attention_on_each_cache_type(k, v, n_kv, group, head_dim, n_q, n_past, holes, seed):
    check(k, v, n_kv, group, head_dim, n_q, n_past, holes, seed, decode=False)
