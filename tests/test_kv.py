"""The KV cache: rows stored bit for bit as ggml quantizes them, sizes, types, the ring."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from nanosmol.kv.cache import KVCache, store_kv
from nanosmol.kv.types import CACHE_TYPES, CacheTypes, cache_bytes, row_bytes

finite32 = st.floats(-70000, 70000, width=32, allow_subnormal=True)
# Normal values, small ones (float16 subnormals), zeros and the float16 overflow edge.
rows = st.sampled_from([32, 64, 128]).flatmap(lambda n: arrays(np.float32, (3, n), elements=finite32)) | \
    st.sampled_from([64]).flatmap(lambda n: st.integers(0, 2**32 - 1).map(
        lambda seed: (np.random.default_rng(seed).standard_normal((3, n)) *
                      np.random.default_rng(seed + 1).choice([1e-6, 1e-3, 1.0, 100.0], (3, 1))).astype(np.float32)))


@settings(max_examples=200, deadline=None)
@given(x=rows, cache_type=st.sampled_from(list(CACHE_TYPES)))
def test_rows_are_stored_as_ggml_quantizes_them(x, cache_type):
    n_kv = 1
    head_dim = x.shape[1]
    k_cache = np.zeros((n_kv, 5, row_bytes(cache_type, head_dim)), np.uint8)
    v_cache = np.zeros_like(k_cache)
    code = CACHE_TYPES[cache_type]
    store_kv(k_cache, v_cache, code, code, x, -x, np.array([4, 0, 2]), head_dim)
    with np.errstate(all="ignore"):  # gguf-py's float16 overflow
        expected = quantize(x, T(code)).view(np.uint8)
    np.testing.assert_array_equal(k_cache[0, [4, 0, 2]], expected)
    assert not k_cache[0, [1, 3]].any()


def test_sizes_follow_llama_cpp():
    # SmolLM3-3B: 36 layers, 4 KV heads of 128; llama.cpp's q8_0 rows are 34 bytes per 32 values.
    n = dict(n_layer=36, n_ctx=65536, n_head_kv=4, head_dim=128)
    assert cache_bytes(**n, types=CacheTypes("f32", "f32")) == 36 * 65536 * 4 * 128 * 4 * 2
    assert cache_bytes(**n, types=CacheTypes("f16", "f16")) == 36 * 65536 * 4 * 128 * 2 * 2
    assert cache_bytes(**n, types=CacheTypes("q8_0", "q4_0")) == 36 * 65536 * 4 * 4 * (34 + 18)


@pytest.mark.parametrize("k, v", [("q5_0", "f16"), ("f16", "int8"), ("", "f16")])
def test_unknown_types_are_refused_by_name(k, v):
    with pytest.raises(ValueError, match="choose one of f32, f16, q8_0, q4_0"):
        CacheTypes(k, v)


def test_the_ring_keeps_its_sink_and_cycles_past_it():
    cache = KVCache(n_layer=1, n_ctx=8, n_head_kv=1, head_dim=32, n_keep=2, types=CacheTypes("q4_0", "q8_0"))
    cache.advance(cache.slots_for(7))
    slots = cache.slots_for(5)
    assert list(slots) == [7, 2, 3, 4, 5]
    cache.advance(slots)
    assert list(cache.slot_pos) == [0, 1, 8, 9, 10, 11, 6, 7]
    with pytest.raises(ValueError, match="wrapped"):
        cache.truncate(3)
