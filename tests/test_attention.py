"""Attention over every cache type: the decode kernel and the tiled BLAS prefill against float64 numpy.

Two oracles: attention on the cache as gguf-py dequantizes it (quantized types hold rows
rotated by the Walsh-Hadamard matrix, built here by Sylvester's construction, and keys less
their span's shift: the query is rotated alike, rounded to int8 as decode rounds it, meets
the shifts in float, and the output is turned back), which the kernels must match to float32
rounding; and attention on the float keys and values before they were cached, which they
must match within the cache type's quantization noise. Keys and values are stored as a
prompt and then a few at a time, as generation stores them.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hadamard import dense_rotation
from reference import int8_rounded

from nanosmol.attention import CHUNK, KEY_TILE, AttentionScratch, attend, attend_batch
from nanosmol.kv.cache import store_kv
from nanosmol.kv.rotation import rotate_rows
from nanosmol.kv.shift import SPAN, KeyShifts
from nanosmol.kv.types import CACHE_TYPES, row_bytes

# Largest |error| over max |value| against the float keys and values, for random normal data.
NOISE = {"f32": 1e-5, "f16": 2e-3, "q8_0": 3e-2, "q4_0": 0.25}
ROTATED = ("q4_0",)  # the cache types stored rotated


def float64_attention(q, keys, values, slot_pos, q_pos, n_head, head_dim, shift_query=None, key_shifts=None):
    """keys, values: [n_kv, slots, head_dim] floats. Scores are keys . q, plus key_shifts .
    shift_query where given (each slot's key shift, [n_kv, slots, head_dim])."""
    group = n_head // keys.shape[0]
    out = np.zeros(q.shape, np.float64)
    for t in range(len(q)):
        seen = (slot_pos >= 0) & (slot_pos <= q_pos[t])
        for h in range(n_head):
            head = slice(h * head_dim, (h + 1) * head_dim)
            k, v = keys[h // group, seen].astype(np.float64), values[h // group, seen].astype(np.float64)
            scores = k @ q[t, head].astype(np.float64)
            if key_shifts is not None:
                scores += key_shifts[h // group, seen].astype(np.float64) @ shift_query[t, head].astype(np.float64)
            weights = np.exp((scores - scores.max()) / np.sqrt(head_dim))
            out[t, head] = weights @ v / weights.sum()
    return out


def cached(keys, values, k_type, v_type, batches):
    """Float rows [n_kv, slots, head_dim] stored as the cache stores them, batch after batch of
    slots: the caches [n_kv, slots, row bytes] and their KeyShifts (one layer)."""
    n_kv, slots, head_dim = keys.shape
    k_cache = np.zeros((n_kv, slots, row_bytes(k_type, head_dim)), np.uint8)
    v_cache = np.zeros((n_kv, slots, row_bytes(v_type, head_dim)), np.uint8)
    shifts = KeyShifts.of(1, n_kv, slots, head_dim)
    rows = lambda x, batch: np.ascontiguousarray(x[:, batch].transpose(1, 0, 2).reshape(len(batch), -1))
    for batch in batches:
        store_kv(k_cache, v_cache, CACHE_TYPES[k_type], CACHE_TYPES[v_type], rows(keys, batch), rows(values, batch),
                 batch, head_dim, shifts, 0)
    return k_cache, v_cache, shifts


def prompt_then_steps(rng, slots):
    """Slots 0..slots-1 as a prompt of random length, then batches of one to three."""
    cuts = [0, int(rng.integers(1, slots + 1))]
    while cuts[-1] < slots:
        cuts.append(min(slots, cuts[-1] + int(rng.integers(1, 4))))
    return [np.arange(a, b, dtype=np.int64) for a, b in zip(cuts, cuts[1:])]


def as_stored(cache, cache_type, head_dim):
    """The cache's rows as gguf-py dequantizes them."""
    n_kv, slots, _ = cache.shape
    return dequantize(cache.reshape(n_kv * slots, -1), T(CACHE_TYPES[cache_type])).reshape(n_kv, slots, head_dim)


def per_head(x, head_dim):
    """Each head of the rows x [n, n_head * head_dim] rotated (R is symmetric and its own inverse)."""
    return x @ dense_rotation(head_dim, x.shape[1] // head_dim)


def ring_positions(rng, n_past, n_q, holes, in_order=False):
    """Slots holding positions in ring order (rolled, as after wrapping), some empty (-1); or
    in_order, slot i holding position i (a prompt's cache before it wraps)."""
    n_filled = n_past + n_q
    if in_order:
        return np.arange(n_filled, dtype=np.int64), np.arange(n_past, n_filled, dtype=np.int64)
    slot_pos = np.roll(np.arange(n_filled), rng.integers(0, n_filled)).astype(np.int64)
    slot_pos[rng.choice(n_filled, size=min(holes, n_past), replace=False)] = -1
    q_pos = np.arange(n_past, n_filled, dtype=np.int64)
    slot_pos[rng.choice(n_filled, size=1)] = q_pos[0]  # every query sees at least one key
    return slot_pos, q_pos


def run(q, k_cache, v_cache, k_type, v_type, shifts, slot_pos, q_pos, n_head, head_dim, decode):
    """Our attention: decode's kernel or prefill's tiles."""
    n_filled = len(slot_pos) - 3
    args = (q, k_cache, v_cache, CACHE_TYPES[k_type], CACHE_TYPES[v_type], shifts.vectors[0], slot_pos, q_pos,
            n_filled, n_head, head_dim, np.full_like(q, np.nan))
    if decode:
        return attend(*args, AttentionScratch.of(len(q), n_head, head_dim, n_filled + 3))
    return attend_batch(*args)


def check(cache_type_k, cache_type_v, n_kv, group, head_dim, n_q, n_past, holes, offset, seed, decode, in_order=False):
    rng = np.random.default_rng(seed)
    n_head, n_filled = n_kv * group, n_past + n_q
    # Keys with a common part of each KV head (as real keys have), which the key shifts take off.
    keys = rng.standard_normal((n_kv, n_filled + 3, head_dim)) + offset * rng.standard_normal((n_kv, 1, head_dim))
    keys = keys.astype(np.float32)
    values = rng.standard_normal((n_kv, n_filled + 3, head_dim)).astype(np.float32)
    q = rng.standard_normal((n_q, n_head * head_dim)).astype(np.float32)
    slot_pos, q_pos = ring_positions(rng, n_past, n_q, holes, in_order)
    slot_pos = np.concatenate([slot_pos, [-1, -1, -1]])
    k_cache, v_cache, shifts = cached(keys, values, cache_type_k, cache_type_v, prompt_then_steps(rng, n_filled + 3))
    ours = run(q, k_cache, v_cache, cache_type_k, cache_type_v, shifts, slot_pos, q_pos, n_head, head_dim, decode)
    stored_keys = as_stored(k_cache, cache_type_k, head_dim)
    if cache_type_k in ROTATED:
        # Stored rotated less their span's shift: the query meets them rotated (in int8 in decode,
        # in float against prefill's decoded tiles), and the shifts in float.
        rotated = per_head(q, head_dim)
        # Decode's int8 query is rounded from the kernel's float32 rotation (pinned to the dense
        # one by test_kv_rotation): rounding is discontinuous, and a value the two rotations put
        # on either side of a half rounds apart (seed 78: -82.5 and -82.500008 in int8 units).
        query = rotated
        if decode:
            float32_rotated = rotate_rows(q.reshape(-1, head_dim).copy(), head_dim).reshape(q.shape)
            query = int8_rounded(float32_rotated, 32).astype(np.float32)
        key_shifts = shifts.vectors[0][:, np.arange(n_filled + 3) // SPAN]
        stored = float64_attention(query, stored_keys, as_stored(v_cache, cache_type_v, head_dim), slot_pos, q_pos,
                                   n_head, head_dim, rotated, key_shifts)
    else:  # decode scores q8_0 keys against the query in int8
        query = int8_rounded(q, 32).astype(np.float32) if decode and cache_type_k == "q8_0" else q
        stored = float64_attention(query, stored_keys, as_stored(v_cache, cache_type_v, head_dim), slot_pos, q_pos,
                                   n_head, head_dim)
    stored = per_head(stored, head_dim) if cache_type_v in ROTATED else stored
    np.testing.assert_allclose(ours, stored, atol=3e-5 * (1 + offset))
    if cache_type_k == "q4_0" and offset and not shifts.vectors.any():
        return  # a prompt too short for a shift: the keys' common part takes most of q4_0's 16 levels
    exact = float64_attention(q, keys, values, slot_pos, q_pos, n_head, head_dim)
    noise = max(NOISE[cache_type_k], NOISE[cache_type_v]) * np.hypot(1, offset)  # keys that much larger
    assert np.abs(ours - exact).max() <= noise * np.abs(exact).max()


cache_types = st.sampled_from(list(CACHE_TYPES))
shapes = dict(n_kv=st.sampled_from([1, 2, 3]), group=st.sampled_from([1, 3, 4]),
              head_dim=st.sampled_from([32, 64, 96, 128]), holes=st.integers(0, 5), offset=st.sampled_from([0.0, 3.0]),
              seed=st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=cache_types, v=cache_types, n_q=st.integers(1, 2), n_past=st.integers(0, 2 * CHUNK + 40), **shapes)
@example(k="q8_0", v="f32", n_q=1, n_past=133, n_kv=2, group=3, head_dim=128, holes=0, offset=0.0, seed=67108864)
@example(k="q4_0", v="f32", n_q=2, n_past=78, n_kv=2, group=4, head_dim=96, holes=0, offset=0.0, seed=78)
def test_decode_attention_on_each_cache_type(k, v, n_kv, group, head_dim, n_q, n_past, holes, offset, seed):
    check(k, v, n_kv, group, head_dim, n_q, n_past, holes, offset, seed, decode=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=cache_types, v=cache_types, n_q=st.integers(1, 150), n_past=st.integers(0, KEY_TILE + 60),
       in_order=st.booleans(), **shapes)
def test_prefill_attention_on_each_cache_type(k, v, n_kv, group, head_dim, n_q, n_past, holes, offset, seed, in_order):
    """Slots in ring order with holes, or in order (where each query's slots are a prefix of a tile)."""
    check(k, v, n_kv, group, head_dim, n_q, n_past, holes, offset, seed, decode=False, in_order=in_order)
