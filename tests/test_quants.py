"""Quant kernels against an independent oracle: gguf-py's dequantize and float64 numpy."""

from __future__ import annotations

import ctypes
import mmap
from contextlib import contextmanager
from unittest.mock import patch

import numba
import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanosmol import quants
from nanosmol.quants import (SMALL_BATCH, SUPPORTED_TYPES, TILE_ROWS, TRANSPOSED_BATCH, QuantMatrix, UnsupportedTypeError,
                             matmul_all, quantize_batch)
from nanosmol.quants.intdot import ACTIVATION_BLOCK, QuantizedVector, quantize_rows, quantize_vector
from nanosmol.quants.kernels import WIDE_ROW, matvec_qkv, matvec_swiglu, rows_by_token_lanes
from nanosmol.quants.q8_0_tiles import MIN_TOKENS, ROWS, rows_by_tokens, uses_tiles
from nanosmol.quants.blocks import block_geometry
from nanosmol.quants.synthetic import SCALE_OFFSETS, random_blocks

TYPES = sorted(SUPPORTED_TYPES, key=lambda t: t.name)
assert set(TYPES) == set(SCALE_OFFSETS) | {T.F32, T.F16, T.BF16}
INT_TYPES = [t for t in TYPES if int(t) in ACTIVATION_BLOCK]

EXAMPLES = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(qtype: T, raw: np.ndarray) -> np.ndarray:
    return dequantize(raw, qtype).astype(np.float32).reshape(raw.shape[0], -1)


def assert_close_to_float_rounding(ours: np.ndarray, expected: np.ndarray) -> None:
    # Exact up to fused multiply-adds, which round once where numpy rounds twice.
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    np.testing.assert_allclose(ours, expected, rtol=2**-21, atol=2**-21 * scale)


def assert_product_close(ours: np.ndarray, W: np.ndarray, X: np.ndarray) -> None:
    """ours ~ W @ X in float64, within 1e-5 of the output's scale (|W| @ |X|)."""
    expected = W.astype(np.float64) @ X.astype(np.float64)
    scale = np.abs(W).astype(np.float64) @ np.abs(X).astype(np.float64)
    assert np.all(np.abs(ours - expected) <= 1e-5 * scale.max() + 1e-30)


def quantized(x: np.ndarray) -> QuantizedVector:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return quantize_vector(x, QuantizedVector.empty(len(x)))


def matvec_input(qtype: T, x: np.ndarray) -> np.ndarray:
    """What a matvec multiplies W of this type by: x, or x quantized to int8 as llama.cpp does.

    The quantizer itself is checked against numpy in test_quantize_vector_rounds_to_nearest.
    """
    size = ACTIVATION_BLOCK.get(int(qtype))
    if size is None:
        return x
    v = quantized(x)
    q, d = (v.q32, v.d32) if size == 32 else (v.q256, v.d256)
    return q[: len(x)].astype(np.float64) * np.repeat(d[: len(x) // size], size)


def matrix(qtype: T, rows: int, n_blocks: int, seed: int, scale: float = 1.0) -> tuple[QuantMatrix, np.ndarray]:
    raw = random_blocks(qtype, rows, n_blocks, np.random.default_rng(seed), scale)
    cols = n_blocks * block_geometry(qtype)[0]
    return QuantMatrix(raw.reshape(-1), qtype, rows, cols, name="w"), oracle(qtype, raw)


shapes = st.tuples(st.integers(1, 9), st.integers(1, 6), st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@EXAMPLES
@given(shape=shapes)
def test_dequantize_rows_matches_gguf(qtype, shape):
    rows, n_blocks, seed = shape
    m, W = matrix(qtype, rows, n_blocks, seed)
    ids = np.random.default_rng(seed).integers(0, rows, size=rows + 2)
    assert_close_to_float_rounding(m.dequantize_rows(ids), W[ids])


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@EXAMPLES
@given(shape=shapes)
def test_matvec_matches_float64(qtype, shape):
    rows, n_blocks, seed = shape
    m, W = matrix(qtype, rows, n_blocks, seed)
    x = np.random.default_rng(seed + 1).standard_normal(m.cols).astype(np.float32)
    assert_product_close(m.matvec(x), W, matvec_input(qtype, x))


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.sampled_from([6, 9]), seed=st.integers(0, 2**32 - 1))
def test_matvec_on_wide_rows_matches_float64(qtype, rows, seed):
    """Rows wider than WIDE_ROW: float rows go four at a time (the rest one by one), the
    32-value types. blocks into two accumulators, here with an odd block last."""
    n_blocks = (WIDE_ROW + 256 + 32 * 3) // block_geometry(qtype)[0]  # 139 blocks of 32, 17 of 256
    m, W = matrix(qtype, rows, n_blocks, seed)
    assert m.cols > WIDE_ROW
    x = np.random.default_rng(seed + 1).standard_normal(m.cols).astype(np.float32)
    assert_product_close(m.matvec(x), W, matvec_input(qtype, x))


@contextmanager
def before_a_guard_page(raw: np.ndarray):
    """raw's bytes copied to where a page the process may not touch (PROT_NONE) begins."""
    page, libc = mmap.PAGESIZE, ctypes.CDLL(None, use_errno=True)
    pad = -raw.nbytes % page
    data = np.frombuffer(mmap.mmap(-1, pad + raw.nbytes + page), np.uint8)  # unmapped when no view is left
    data[pad : pad + raw.nbytes] = raw.reshape(-1)
    guard = ctypes.c_void_p(data.ctypes.data + pad + raw.nbytes)
    assert libc.mprotect(guard, page, 0) == 0  # PROT_NONE
    try:
        yield data[pad : pad + raw.nbytes]
    finally:
        libc.mprotect(guard, page, mmap.PROT_READ | mmap.PROT_WRITE)


@pytest.mark.parametrize("qtype", INT_TYPES, ids=lambda t: t.name)
def test_matvec_before_a_guard_page(qtype):
    """Decode asks for the cache lines PREFETCH_BYTES past each block, which past the last row
    of a file's last matrix lie outside the mapping: a hint, which must neither fault nor
    change a value. (A real load there ends the process.)"""
    raw = random_blocks(qtype, 5, 3, np.random.default_rng(int(qtype)))
    with before_a_guard_page(raw) as data:
        m = QuantMatrix(data, qtype, 5, 3 * block_geometry(qtype)[0], name="w")
        x = np.random.default_rng(1).standard_normal(m.cols).astype(np.float32)
        assert_product_close(m.matvec(x), oracle(qtype, raw), matvec_input(qtype, x))


@settings(max_examples=50, deadline=None)
@given(n_blocks=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       magnitude=st.sampled_from([0.0, 1e-6, 1.0, 1e4]))
def test_quantize_vector_rounds_to_nearest(n_blocks, seed, magnitude):
    """Per block: d = max|x| / 127 and q = round(x / d), so |x - d q| <= d / 2; sums match."""
    x = (np.random.default_rng(seed).standard_normal(256 * n_blocks) * magnitude).astype(np.float32)
    v = quantized(x)
    for size, q, d in ((32, v.q32, v.d32), (256, v.q256, v.d256)):
        blocks = x.reshape(-1, size).astype(np.float64)
        d = d[: len(blocks)].astype(np.float64)
        np.testing.assert_allclose(d, np.abs(blocks).max(axis=1) / 127, rtol=1e-6)
        error = np.abs(blocks - q.reshape(-1, size) * d[:, None])
        assert np.all(error <= d[:, None] * (0.5 + 1e-5))
    np.testing.assert_allclose(v.s32[: len(x) // 32], v.q32.reshape(-1, 32).sum(axis=1) * v.d32[: len(x) // 32],
                               rtol=1e-6)
    assert np.array_equal(v.sum16, v.q256.reshape(-1, 16).sum(axis=1))
    assert np.array_equal(v.sum32, v.q256.reshape(-1, 32).sum(axis=1))


@settings(max_examples=10, deadline=None)
@given(tokens=st.integers(1, 150), width=st.sampled_from([96, 512]), sizes=st.sampled_from([(32,), (256,), (32, 256)]),
       seed=st.integers(0, 2**32 - 1))
def test_quantize_batch_on_workers_equals_one_pass(tokens, width, sizes, seed):
    """Prefill's activations quantized in parts by the workers, into a scratch kept between
    calls, in the block sizes asked for (those of 32 also widened), are the one-pass result
    bit for bit: every field the batch fills, as far as it fills it (the token-lane fields:
    its whole groups of 8; the 256-value ones: 256-wide rows)."""
    X = np.random.default_rng(seed).standard_normal((tokens, width)).astype(np.float32)
    quantize_batch(np.ones((150, 512), np.float32))  # the scratch holds an earlier, larger batch
    with patch.object(quants, "SPLIT_QUANTIZATION", 0):  # split even these small batches
        ours = quantize_batch(X, sizes, 32 in sizes)
    one_pass = quantize_rows(X, QuantizedVector.empty(X.size), 0, tokens, True, True, True)
    whole_groups = tokens - tokens % 8
    fields = ["q32", "d32", "s32", "d32_by_8", "s32_by_8", "q32_by_8", "q32_wide"] if 32 in sizes else []
    if width % 256 == 0 and 256 in sizes:
        fields += ["q256", "d256", "sum16", "sum32", "q256_by_8", "d256_by_8", "sum32_by_8", "sum16_by_8"]
    for field in fields:
        values = whole_groups * width if field.endswith("_by_8") else X.size
        reach = int(values * field_density(field))
        assert reach > 0 or values == 0
        assert np.array_equal(getattr(ours, field)[:reach], getattr(one_pass, field)[:reach]), field
    if 32 in sizes:
        assert np.array_equal(ours.q32_wide[: X.size], ours.q32[: X.size])


def field_density(field: str) -> float:
    """Entries of a QuantizedVector field per activation value."""
    base = field.removesuffix("_by_8").removesuffix("_wide")
    return {"q32": 1, "d32": 1 / 32, "s32": 1 / 32, "q256": 1, "d256": 1 / 256, "sum16": 1 / 16, "sum32": 1 / 32}[base]


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.one_of(st.integers(1, 40), st.integers(TRANSPOSED_BATCH + 1, TRANSPOSED_BATCH + 20)),
       rows=st.sampled_from([1, 7, 33, TILE_ROWS + 3]), seed=st.integers(0, 2**32 - 1))
def test_matmul_matches_float64(qtype, n, rows, seed):
    m, W = matrix(qtype, rows, 2, seed)
    X = np.random.default_rng(seed + 1).standard_normal((n, m.cols)).astype(np.float32)
    out = m.matmul(X)
    assert out.shape == (n, rows)
    # Quantized weights meet each row of X rounded to int8, as in a matvec; float ones X itself.
    assert_product_close(out.T, W, np.stack([matvec_input(qtype, x) for x in X]).T)


@pytest.mark.parametrize("qtype", INT_TYPES, ids=lambda t: t.name)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 27), rows=st.integers(1, 40), n_blocks=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_matmul_rows_equal_matvecs(qtype, n, rows, n_blocks, seed):
    """Prefill's kernel (a weight block against 8 tokens at once, then one by one for the rest)
    gives each token what decode's matvec gives it, to float rounding."""
    m, _ = matrix(qtype, rows, n_blocks, seed)
    X = np.random.default_rng(seed + 1).standard_normal((n, m.cols)).astype(np.float32)
    expected = np.stack([m.matvec(x) for x in X])
    np.testing.assert_allclose(m.matmul(X), expected, rtol=1e-5, atol=1e-6 * float(np.abs(expected).max()))


@pytest.mark.parametrize("qtype", INT_TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("n", [3, 11, 12, 15, 16, 27, 30])
def test_matmul_tail_padded_or_one_by_one_equals_matvecs(qtype, n):
    """A batch's tokens past its groups of 8 go one by one (3, 11, 27) or, from PADDED_TAIL on,
    through the lanes beside zero rows (12, 15, 30); the zero rows write nothing (out is exactly
    n rows, and each equals the matvec), nor does an empty tail (16). Q8_0 takes 16 tokens a
    pass where 16 are left: 27 goes 16 + 8 + 3, 30 two passes of 16, the second padded."""
    assert quants.lane_tokens(n) == {3: 0, 11: 8, 12: 16, 15: 16, 16: 16, 27: 24, 30: 32}[n]
    m, _ = matrix(qtype, 21, 2, int(qtype))
    X = np.random.default_rng(n).standard_normal((n, m.cols)).astype(np.float32)
    expected = np.stack([m.matvec(x) for x in X])
    out = np.full((n + 1, m.rows), np.nan, np.float32)
    matmul_all([m], X, [out[:n]])
    np.testing.assert_allclose(out[:n], expected, rtol=1e-5, atol=1e-6 * float(np.abs(expected).max()))
    assert np.isnan(out[n]).all()


Q8 = int(T.Q8_0)


@numba.njit(cache=True)
def q8_0_by_token_lanes(w, xq, n, out, lanes):
    for first in range(0, w.shape[0], ROWS):
        rows_by_token_lanes(Q8, w, first, min(w.shape[0], first + ROWS), xq, n, out, lanes)


@numba.njit(cache=True)
def q8_0_by_tiles(w, xq, n, out, lanes):
    tile, scales = np.empty(ROWS * n, np.int16), np.empty(n // 2, np.float32)
    for first in range(0, w.shape[0], ROWS):
        rows_by_tokens(w, first, min(w.shape[0], first + ROWS), xq, n, out, lanes, tile, scales)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 40), n_blocks=st.integers(1, 4), groups=st.integers(MIN_TOKENS // 8, 7),
       all_minus_128=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_q8_0_tiles_equal_token_lanes(rows, n_blocks, groups, all_minus_128, seed):
    """Q8_0's int16 tiles (16 rows widened, 6 tokens a pass, the last pass starting early
    where the tokens are no multiple of 6) give the token-lane kernel's results bit for bit,
    for every row count (a last task of fewer than 16 rows repeats its last row in the tile)
    and for codes of -128, whose magnitude the sign trick takes as 128. Where the target has
    no tiles (no AVX2, or VNNI), prefill never takes them."""
    lanes = 8 * groups
    if not uses_tiles(Q8, lanes):
        assert not any(uses_tiles(Q8, t) for t in range(0, 1025, 8))
        return
    assert not uses_tiles(Q8, MIN_TOKENS - 8) and not uses_tiles(int(T.Q4_0), lanes)
    m, _ = matrix(T.Q8_0, rows, n_blocks, seed)
    if all_minus_128:
        m.raw.reshape(rows, n_blocks, 34)[:, 0, 2:] = 0x80
    X = np.random.default_rng(seed + 1).standard_normal((lanes, m.cols)).astype(np.float32)
    xq = quantize_batch(X, (32,), True)
    ours, expected = (np.full((lanes, rows), np.nan, np.float32) for _ in range(2))
    q8_0_by_tiles(m.raw, xq, m.cols, ours, lanes)
    q8_0_by_token_lanes(m.raw, xq, m.cols, expected, lanes)
    assert np.array_equal(ours, expected)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(types=st.lists(st.sampled_from(TYPES), min_size=1, max_size=3),
       rows=st.lists(st.sampled_from([1, 5, 64, TILE_ROWS + 7]), min_size=3, max_size=3),
       n=st.integers(SMALL_BATCH + 1, 70), seed=st.integers(0, 2**32 - 1))
def test_matmul_all_matches_float64(types, rows, n, seed):
    """Several matrices' tiles sharing one hand-off to the workers, as prefill's Q, K, V do."""
    mats = [matrix(t, r, 256 // block_geometry(t)[0], seed + i) for i, (t, r) in enumerate(zip(types, rows))]
    X = np.random.default_rng(seed).standard_normal((n, 256)).astype(np.float32)
    outs = matmul_all([m for m, _ in mats], X)
    for out, (m, W) in zip(outs, mats):
        assert out.shape == (n, m.rows)
        assert_product_close(out.T, W, np.stack([matvec_input(m.qtype, x) for x in X]).T)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(types=st.tuples(*[st.sampled_from(TYPES)] * 3), rows=st.tuples(*[st.integers(1, 40)] * 3),
       seed=st.integers(0, 2**32 - 1))
def test_fused_qkv_matches_float64(types, rows, seed):
    """Three matrices of any types sharing one parallel region, as Q, K and V do in decode."""
    mats = [matrix(t, r, 256 // block_geometry(t)[0], seed + i) for i, (t, r) in enumerate(zip(types, rows))]
    x = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    outs = [np.full(m.rows, np.nan, np.float32) for m, _ in mats]
    matvec_qkv(*[a for (m, _), out in zip(mats, outs) for a in (m.code, m.raw, out)], x, quantized(x))
    for out, (_, W), qtype in zip(outs, mats, types):
        assert_product_close(out, W, matvec_input(qtype, x))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gate_type=st.sampled_from(TYPES), up_type=st.sampled_from(TYPES), rows=st.integers(1, 70),
       seed=st.integers(0, 2**32 - 1))
def test_fused_swiglu_matches_float64(gate_type, up_type, rows, seed):
    (g, G), (u, U) = matrix(gate_type, rows, 256 // block_geometry(gate_type)[0], seed), \
        matrix(up_type, rows, 256 // block_geometry(up_type)[0], seed + 1)
    x = np.random.default_rng(seed).standard_normal(256).astype(np.float32)
    out, up = np.full(rows, np.nan, np.float32), np.empty(rows, np.float32)
    matvec_swiglu(g.code, g.raw, u.code, u.raw, x, quantized(x), out, up)
    gate64, up64 = G.astype(np.float64) @ matvec_input(gate_type, x), U.astype(np.float64) @ matvec_input(up_type, x)
    expected = gate64 * 0.5 * (1 + np.tanh(gate64 / 2)) * up64  # silu, without overflow in exp
    scale = (np.abs(G) @ np.abs(x)).max() * (np.abs(U) @ np.abs(x)).max()
    assert np.all(np.abs(out - expected) <= 1e-5 * scale + 1e-30)


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
def test_thread_counts_agree(qtype):
    m, _ = matrix(qtype, 67, 3, seed=5)
    x = np.random.default_rng(6).standard_normal(m.cols).astype(np.float32)
    results = []
    for threads in (1, 2):
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        results.append(m.matvec(x))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6 * np.abs(results[0]).max())


@pytest.mark.parametrize("qtype", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("scale", [0.0, 1e-4, 60000.0])
def test_zero_and_extreme_scales(qtype, scale):
    m, W = matrix(qtype, 3, 1, seed=7, scale=scale)
    assert np.all(np.isfinite(W))
    x = np.random.default_rng(8).standard_normal(m.cols).astype(np.float32) * 1e-3
    assert_close_to_float_rounding(m.dequantize_rows([0, 1, 2]), W)
    assert_product_close(m.matvec(x), W, matvec_input(qtype, x))
    if scale == 0.0 and qtype not in (T.Q4_1, T.Q5_1, T.Q2_K, T.Q4_K, T.Q5_K):  # types with mins keep them
        assert not np.any(m.matvec(x))


@pytest.mark.parametrize("qtype", [T.Q8_0, T.Q4_K, T.F16])
def test_one_block_one_row_and_non_contiguous_input(qtype):
    m, W = matrix(qtype, 1, 1, seed=9)
    wide = np.random.default_rng(10).standard_normal(2 * m.cols).astype(np.float32)
    x = wide[::2]
    assert not x.flags.c_contiguous
    assert_product_close(m.matvec(x), W, matvec_input(qtype, x))
    X = np.stack([x] * (SMALL_BATCH + 2))
    assert_product_close(m.matmul(X).T, W, np.stack([matvec_input(qtype, x)] * len(X)).T)


@pytest.mark.parametrize("qtype", [T.IQ2_XXS, T.TQ1_0, T.MXFP4, T.IQ4_NL])
def test_unsupported_types_are_refused_by_name(qtype):
    block_size, block_bytes = GGML_QUANT_SIZES[qtype]
    with pytest.raises(UnsupportedTypeError, match=f"blk.0.ffn_up.weight.*{qtype.name}"):
        QuantMatrix(np.zeros(block_bytes, np.uint8), qtype, 1, block_size, name="blk.0.ffn_up.weight")


def test_matvec_writes_into_given_buffer():
    m, W = matrix(T.Q8_0, 5, 2, seed=11)
    out = np.full(5, np.nan, np.float32)
    x = np.ones(m.cols, np.float32)
    assert m.matvec(x, out) is out
    assert_product_close(out, W, x)
