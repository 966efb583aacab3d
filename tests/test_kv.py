"""The KV cache: rows quantized as ggml does (q4_0 refined, never worse), stored in their slots,
sizes, types, the ring."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hadamard import dense_rotation
from nanosmol.kv.cache import KVCache, store_kv
from nanosmol.kv.rows import quantize_row
from nanosmol.kv.shift import SPAN, KeyShifts
from nanosmol.kv.types import CACHE_TYPES, CacheTypes, cache_bytes, row_bytes



def scaled_normal(scales):
    """Rows [3, 64] of normal values, each row times one of scales."""
    return st.integers(0, 2**32 - 1).map(
        lambda seed: (np.random.default_rng(seed).standard_normal((3, 64)) *
                      np.random.default_rng(seed + 1).choice(scales, (3, 1))).astype(np.float32))


finite32 = st.floats(-70000, 70000, width=32, allow_subnormal=True)
# Normal values, small ones (float16 subnormals), zeros and the float16 overflow edge.
rows = st.sampled_from([32, 64, 128]).flatmap(lambda n: arrays(np.float32, (3, n), elements=finite32)) | \
    scaled_normal([1e-6, 1e-3, 1.0, 100.0])
# What a stored row may differ from its values by, over the row's largest magnitude.
NOISE = {"f32": 0.0, "f16": 1e-3, "q8_0": 1e-2, "q4_0": 0.2}  # of the largest |value| of the rows


def quantized(x, cache_type):
    out = np.zeros((len(x), row_bytes(cache_type, x.shape[1])), np.uint8)
    for r in range(len(x)):
        quantize_row(CACHE_TYPES[cache_type], x[r], out[r])
    return out


@settings(max_examples=200, deadline=None)
@given(x=rows, cache_type=st.sampled_from(["f32", "f16", "q8_0"]))
def test_rows_are_quantized_bit_for_bit_as_ggml_does(x, cache_type):
    with np.errstate(all="ignore"):  # gguf-py's float16 overflow
        expected = quantize(x, T(CACHE_TYPES[cache_type])).view(np.uint8)
    np.testing.assert_array_equal(quantized(x, cache_type), expected)


@settings(max_examples=200, deadline=None)
@given(x=rows)
def test_q4_0_rows_are_never_further_off_than_ggml_makes_them(x):
    ours = dequantize(quantized(x, "q4_0"), T.Q4_0).reshape(-1, 32).astype(np.float64)
    ggml = dequantize(quantize(x, T.Q4_0), T.Q4_0).reshape(-1, 32).astype(np.float64)
    blocks = x.reshape(-1, 32).astype(np.float64)
    ours_error, ggml_error = ((ours - blocks) ** 2).sum(1), ((ggml - blocks) ** 2).sum(1)
    assert np.all(ours_error <= ggml_error * (1 + 1e-6) + 1e-30)


def test_q4_0_refinement_helps_on_normal_values():
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    ours = dequantize(quantized(x, "q4_0"), T.Q4_0) - x
    ggml = dequantize(quantize(x, T.Q4_0), T.Q4_0) - x
    assert (ours ** 2).mean() < 0.97 * (ggml ** 2).mean()  # 6% less here


@settings(max_examples=100, deadline=None)
@given(x=scaled_normal([1e-2, 1.0, 100.0]), cache_type=st.sampled_from(list(CACHE_TYPES)))
def test_store_puts_keys_and_values_in_their_slots(x, cache_type):
    head_dim, slots = 32, np.array([4, 0, 2])
    n_kv = x.shape[1] // head_dim
    code = CACHE_TYPES[cache_type]
    k_cache = np.zeros((n_kv, 5, row_bytes(cache_type, head_dim)), np.uint8)
    v_cache = np.zeros_like(k_cache)
    shifts = KeyShifts.of(1, n_kv, 5, head_dim)
    store_kv(k_cache, v_cache, code, code, x, -x, slots, head_dim, shifts, 0)
    assert not k_cache[:, [1, 3]].any() and not v_cache[:, [1, 3]].any()
    rotation = dense_rotation(head_dim, 1) if cache_type == "q4_0" else np.eye(head_dim)
    for cache, sign, shift in ((k_cache, 1, shifts.vectors[0]), (v_cache, -1, 0 * shifts.vectors[0])):
        with np.errstate(all="ignore"):
            rows = dequantize(cache[:, slots].reshape(n_kv * 3, -1), T(code)).reshape(n_kv, 3, head_dim)
        rows = (rows + shift[:, slots // SPAN]) @ rotation  # R is its own inverse
        values = sign * x.reshape(3, n_kv, head_dim).transpose(1, 0, 2)
        assert np.abs(rows - values).max() <= NOISE[cache_type] * np.abs(x).max() + 1e-30


def test_sizes_follow_llama_cpp():
    # SmolLM3-3B: 36 layers, 4 KV heads of 128; llama.cpp's q8_0 rows are 34 bytes per 32 values.
    n = dict(n_layer=36, n_ctx=65536, n_head_kv=4, head_dim=128)
    assert cache_bytes(**n, types=CacheTypes("f32", "f32")) == 36 * 65536 * 4 * 128 * 4 * 2
    assert cache_bytes(**n, types=CacheTypes("f16", "f16")) == 36 * 65536 * 4 * 128 * 2 * 2
    assert cache_bytes(**n, types=CacheTypes("q8_0", "q4_0")) == 36 * 65536 * 4 * 4 * (34 + 18)
    # q4_0 keys add a float32 shift vector per 256 slots (kv/shift.py).
    assert cache_bytes(**n, types=CacheTypes("q4_0", "q8_0")) == 36 * 65536 * 4 * 4 * (18 + 34) + 36 * 256 * 4 * 128 * 4
    assert cache_bytes(**n, types=CacheTypes("f16", "q4_0")) == 36 * 65536 * 4 * 128 * 2 + 36 * 65536 * 4 * 4 * 18


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
