"""Attention: the batched (BLAS) prefill path against the per-query decode kernel and float64."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanosmol.attention import attend, attend_batch


def float64_attention(q, k_cache, v_cache, slot_pos, q_pos, n_filled, n_head, head_dim):
    group = n_head // k_cache.shape[0]
    out = np.zeros(q.shape, np.float64)
    for t in range(len(q)):
        for h in range(n_head):
            seen = [s for s in range(n_filled) if 0 <= slot_pos[s] <= q_pos[t]]
            keys, values = k_cache[h // group, seen].astype(np.float64), v_cache[h // group, seen].astype(np.float64)
            scores = keys @ q[t, h * head_dim : (h + 1) * head_dim] / np.sqrt(head_dim)
            weights = np.exp(scores - scores.max())
            out[t, h * head_dim : (h + 1) * head_dim] = weights @ values / weights.sum()
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_kv=st.sampled_from([1, 2, 3]), group=st.sampled_from([1, 3, 4]), head_dim=st.sampled_from([8, 64]),
       n_q=st.integers(1, 300), n_past=st.integers(0, 40), holes=st.integers(0, 5), seed=st.integers(0, 2**32 - 1))
def test_batched_attention_matches_decode_kernel_and_float64(n_kv, group, head_dim, n_q, n_past, holes, seed):
    rng = np.random.default_rng(seed)
    n_head, n_filled = n_kv * group, n_past + n_q
    k_cache = rng.standard_normal((n_kv, n_filled + 3, head_dim)).astype(np.float32)
    v_cache = rng.standard_normal((n_kv, n_filled + 3, head_dim)).astype(np.float32)
    # Slots hold positions in ring order (not sorted), some past slots empty (-1).
    slot_pos = np.roll(np.arange(n_filled), rng.integers(0, n_filled)).astype(np.int64)
    slot_pos[rng.choice(n_filled, size=min(holes, n_past), replace=False)] = -1
    q_pos = np.arange(n_past, n_filled, dtype=np.int64)
    slot_pos[rng.choice(n_filled, size=1)] = q_pos[0]  # every query sees at least one key
    q = rng.standard_normal((n_q, n_head * head_dim)).astype(np.float32)
    args = (q, k_cache, v_cache, slot_pos, q_pos, n_filled, n_head, head_dim)
    batched = attend_batch(*args, np.full_like(q, np.nan))
    per_query = attend(*args, np.full_like(q, np.nan), np.full((n_q * n_head, n_filled + 3), np.nan, np.float32))
    np.testing.assert_allclose(batched, per_query, atol=2e-5)
    if n_q <= 20:
        np.testing.assert_allclose(batched, float64_attention(*args), atol=2e-5)
