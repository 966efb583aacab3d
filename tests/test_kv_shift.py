"""Key shifts: which vector each span of slots gets, and when it is decided."""

from __future__ import annotations

import numpy as np

from nanosmol.kv.cache import KVCache
from nanosmol.kv.shift import MIN_ROWS, SPAN, KeyShifts, fix_shifts
from nanosmol.kv.types import CacheTypes

N_KV, HEAD_DIM = 2, 32


def keys_for(slots, seed=0):
    """Distinct rotated key rows [len(slots), N_KV * HEAD_DIM] with a large common part."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((len(slots), N_KV * HEAD_DIM)) + 10.0).astype(np.float32)


def store(shifts, slots, seed=0):
    slots = np.asarray(slots, np.int64)
    keys = keys_for(slots, seed)
    fix_shifts(shifts, 0, keys, slots)
    return keys


def per_head(rows):
    return rows.reshape(len(rows), N_KV, HEAD_DIM)


def test_a_prompt_gives_each_span_the_mean_of_its_own_keys_but_the_first():
    shifts = KeyShifts.of(1, N_KV, 3 * SPAN, HEAD_DIM)
    keys = store(shifts, range(SPAN + 100))
    np.testing.assert_allclose(shifts.vectors[0, :, 0], per_head(keys[1:SPAN]).mean(0), rtol=1e-5)
    np.testing.assert_allclose(shifts.vectors[0, :, 1], per_head(keys[SPAN:]).mean(0), rtol=1e-5)
    assert list(shifts.fixed[0]) == [True, True, False]


def test_decode_into_a_new_span_takes_the_mean_of_the_span_before():
    shifts = KeyShifts.of(1, N_KV, 2 * SPAN, HEAD_DIM)
    prompt = store(shifts, range(10), seed=1)  # too few for a mean of its own: span 0 gets none
    np.testing.assert_array_equal(shifts.vectors[0, :, 0], 0.0)
    steps = [store(shifts, [slot], seed=slot) for slot in range(10, SPAN + 1)]  # one token at a time
    span_0 = np.concatenate([prompt[1:]] + steps[:-1])
    np.testing.assert_allclose(shifts.vectors[0, :, 1], per_head(span_0).mean(0), rtol=1e-4)
    np.testing.assert_array_equal(shifts.vectors[0, :, 0], 0.0)  # decided once, kept


def test_without_recent_keys_a_span_takes_the_shift_before_it():
    shifts = KeyShifts.of(1, N_KV, 3 * SPAN, HEAD_DIM)
    store(shifts, range(2 * SPAN))
    shifts.running_count[:] = 0  # as after a truncation
    store(shifts, [2 * SPAN], seed=5)
    np.testing.assert_array_equal(shifts.vectors[0, :, 2], shifts.vectors[0, :, 1])


def test_enough_keys_of_the_span_itself_win_over_the_span_before():
    shifts = KeyShifts.of(1, N_KV, 2 * SPAN, HEAD_DIM)
    store(shifts, range(SPAN))
    keys = store(shifts, range(SPAN, SPAN + MIN_ROWS), seed=7)
    np.testing.assert_allclose(shifts.vectors[0, :, 1], per_head(keys).mean(0), rtol=1e-5)


def test_a_ring_wrap_keeps_the_shifts():
    shifts = KeyShifts.of(1, N_KV, 2 * SPAN, HEAD_DIM)
    store(shifts, range(2 * SPAN))
    before = shifts.vectors.copy()
    store(shifts, range(4, 4 + SPAN), seed=9)  # the ring overwrites past the sink
    np.testing.assert_array_equal(shifts.vectors, before)


def test_reset_and_truncate_forget_the_spans_they_empty():
    cache = KVCache(n_layer=1, n_ctx=3 * SPAN, n_head_kv=N_KV, head_dim=HEAD_DIM, types=CacheTypes("q4_0", "f16"))
    slots = cache.slots_for(2 * SPAN + 10)
    cache.store(0, keys_for(slots), keys_for(slots, 1), slots)
    cache.advance(slots)
    assert list(cache.shifts.fixed[0]) == [True, True, True]
    cache.truncate(SPAN + 3)  # span 1 keeps three keys
    assert list(cache.shifts.fixed[0]) == [True, True, False]
    cache.reset()
    assert not cache.shifts.fixed.any()
