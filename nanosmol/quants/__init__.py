"""Quantized weight matrices kept as their raw GGUF blocks, with Numba kernels on the blocks."""

from __future__ import annotations

import threading

import numpy as np
from gguf import GGMLQuantizationType

from nanosmol.quants.blocks import SUPPORTED_TYPES, block_geometry
from nanosmol.quants import typed_kernels
from nanosmol.quants.intdot import ACTIVATION_BLOCK, QuantizedVector, quantize_rows, quantize_vector
from nanosmol.quants.q8_0_tiles import uses_tiles
from nanosmol.quants.vecdot import PREFILL_TOKENS
from nanosmol.workers import n_workers, parallel_map

__all__ = ["QuantMatrix", "SUPPORTED_TYPES", "UnsupportedTypeError", "matmul_all"]

TILE_ROWS = 512  # at most this many weight rows dequantized per BLAS call in matmul
TRANSPOSED_BATCH = 128  # up to this many activation rows, BLAS computes tile @ X.T
SMALL_BATCH = 4  # up to this many activation rows, repeated matvec beats dequantize + BLAS
SPLIT_QUANTIZATION = 1 << 20  # activation values from which the workers share their quantization
PADDED_TAIL = 4  # a batch's last tokens past its groups of 8, from this many, go through the lanes (lane_tokens)

_scratch = threading.local()


def _thread_buffer(name: str, rows: int, cols: int) -> np.ndarray:
    """A float32 [rows, cols] scratch array, kept by each worker thread under `name`."""
    buf = getattr(_scratch, name, None)
    if buf is None or buf.size < rows * cols:
        buf = np.empty(rows * cols, np.float32)
        setattr(_scratch, name, buf)
    return buf[: rows * cols].reshape(rows, cols)


class UnsupportedTypeError(ValueError):
    pass


class QuantMatrix:
    """A weight matrix [rows, cols] as its raw GGUF block bytes (a view, never a copy)."""

    def __init__(self, raw: np.ndarray, qtype, rows: int, cols: int, name: str = ""):
        try:
            qtype = GGMLQuantizationType(qtype)
        except ValueError:
            raise UnsupportedTypeError(f"tensor {name!r}: unknown GGML type {qtype}") from None
        if qtype not in SUPPORTED_TYPES:
            raise UnsupportedTypeError(
                f"tensor {name!r} has type {qtype.name}, which nanosmol does not support "
                f"(supported: {', '.join(sorted(t.name for t in SUPPORTED_TYPES))})"
            )
        block_size, block_bytes = block_geometry(qtype)
        if cols % block_size:
            raise ValueError(f"tensor {name!r}: {cols} columns is not a multiple of the {qtype.name} block {block_size}")
        row_bytes = cols // block_size * block_bytes
        if raw.size != rows * row_bytes:
            raise ValueError(f"tensor {name!r}: {raw.size} bytes, expected {rows * row_bytes}")
        self.name, self.qtype, self.rows, self.cols = name, qtype, rows, cols
        self.code = int(qtype)
        self.raw = raw.reshape(rows, row_bytes)
        self.integer_products = self.code in ACTIVATION_BLOCK  # else float lanes and BLAS

    def dequantize_rows(self, row_ids) -> np.ndarray:
        ids = np.ascontiguousarray(row_ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.rows):
            raise IndexError(f"row index out of range for {self.name!r} with {self.rows} rows")
        if self.code == GGMLQuantizationType.F32:  # the norms: rows as they are, no kernel to compile
            return self.raw[ids].view(np.float32)
        out = np.empty((ids.shape[0], self.cols), np.float32)
        return typed_kernels.dequantize_rows(self.code)(self.raw, ids, out)

    def matvec(self, x: np.ndarray, out: np.ndarray | None = None,
               xq: QuantizedVector | None = None) -> np.ndarray:
        """W @ x. xq: room for x quantized (decode passes its scratch; else one is made)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if out is None:
            out = np.empty(self.rows, np.float32)
        xq = quantize_vector(x, QuantizedVector.empty(len(x)) if xq is None else xq)
        return typed_kernels.matvec(self.code)(self.raw, x, xq, out)

    def matmul(self, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Y = X @ W.T for activations X [n, cols]."""
        return matmul_all([self], X, None if out is None else [out])[0]

    def tiles(self, workers: int) -> list[tuple[int, int]]:
        """(first row, rows) of each weight tile of a matmul: a whole number per worker."""
        n_tiles = workers * -(-self.rows // (workers * TILE_ROWS))
        tile_rows = -(-self.rows // n_tiles)
        return [(r0, min(tile_rows, self.rows - r0)) for r0 in range(0, self.rows, tile_rows)]

    def multiply_tile(self, X: np.ndarray, r0: int, n: int, out: np.ndarray) -> None:
        """out[:, r0:r0+n] = X @ (rows r0..r0+n of W).T, on this thread's scratch tile."""
        tile = _thread_buffer("tile", n, self.cols)
        typed_kernels.dequantize_tile(self.code)(self.raw, r0, tile)
        if X.shape[0] <= TRANSPOSED_BATCH:  # BLAS is 10-25% faster this way round here
            tile_out = _thread_buffer("out", n, X.shape[0])
            np.matmul(tile, X.T, out=tile_out)
            out[:, r0 : r0 + n] = tile_out.T
        else:  # and the transposing copy would cost more than it saves
            np.matmul(X, tile.T, out=out[:, r0 : r0 + n])


def matmul_all(matrices: list[QuantMatrix], X: np.ndarray, outs: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """X @ W.T for each W (all with X's width).

    Quantized weights multiply X quantized to int8 (once for all of them), as decode does
    and as llama.cpp does in both. Float weights go to BLAS tile by tile: every matrix's
    tiles share one hand-off to the workers, so Q, K and V cost one round trip, not three.
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    if outs is None:
        outs = [np.empty((X.shape[0], m.rows), np.float32) for m in matrices]
    integer = [(m, out) for m, out in zip(matrices, outs) if m.integer_products]
    if integer:
        lanes = lane_tokens(len(X))
        wide = any(uses_tiles(m.code, lanes) for m, _ in integer)
        xq = quantize_batch(padded_tail(X, lanes), {ACTIVATION_BLOCK[m.code] for m, _ in integer}, wide)
        for m, out in integer:
            typed_kernels.matmul_quantized(m.code)(m.raw, xq, X.shape[1], out, lanes)
    floats = [(m, out) for m, out in zip(matrices, outs) if not m.integer_products]
    if floats:
        _matmul_float([m for m, _ in floats], X, [out for _, out in floats])
    return outs


def lane_tokens(n: int) -> int:
    """How many of a batch's n tokens the prefill kernels take 8 at a time: the whole groups of
    8, and a last group of PADDED_TAIL or more padded with zero rows. (The 135M Q8_0 model's
    prefill of 32 tokens: 77 ms, 38: 103 ms, 40: 94 ms: 6 tokens one at a time cost more than
    8 in the lanes.)"""
    tail = n % PREFILL_TOKENS
    return n - tail + (PREFILL_TOKENS if tail >= PADDED_TAIL else 0)


def padded_tail(X: np.ndarray, lanes: int) -> np.ndarray:
    """X with zero rows up to `lanes` rows (none where it has as many)."""
    if lanes <= len(X):
        return X
    return np.concatenate([X, np.zeros((lanes - len(X), X.shape[1]), np.float32)])


def quantize_batch(X: np.ndarray, block_sizes=(32, 256), wide32: bool = False) -> QuantizedVector:
    """X's rows quantized for prefill (`quantize_rows`) in the activation block sizes its
    weights take (a Q8_0 model's batch needs no blocks of 256, a Q4_K one's none of 32, and
    its blocks of 32 widened where it multiplies in int16: `q8_0_tiles.uses_tiles`), on
    every worker, 8-row groups each, into this thread's scratch. (Serial and into fresh
    arrays, this took 8% of a 3B model's prefill: 17 ms per 512 rows of 11008, 5 ms of it
    page faults. Split, 7.5 ms; but 64 rows of 576 take 0.1 ms, and handing them to the
    workers cost the 135M model 10-15% of its pp64.)"""
    xq = getattr(_scratch, "xq", None)
    if xq is None or xq.q32.size < X.size:
        xq = _scratch.xq = QuantizedVector.empty(X.size)
    sizes = 32 in block_sizes, 256 in block_sizes, wide32
    groups = -(-len(X) // 8)
    per_worker = -(-groups // n_workers())
    bounds = [(8 * g, min(len(X), 8 * (g + per_worker))) for g in range(0, groups, per_worker)]
    if len(bounds) == 1 or X.size < SPLIT_QUANTIZATION:  # else the hand-off costs more than it saves
        return quantize_rows(X, xq, 0, len(X), *sizes)
    parallel_map(lambda b: quantize_rows(X, xq, *b, *sizes), bounds)
    return xq


def _matmul_float(matrices: list[QuantMatrix], X: np.ndarray, outs: list[np.ndarray]) -> None:
    if X.shape[0] <= SMALL_BATCH:
        for m, out in zip(matrices, outs):
            for i in range(X.shape[0]):
                m.matvec(X[i], out[i])
        return
    workers = n_workers()
    tiles = [(m, r0, n, out) for m, out in zip(matrices, outs) for r0, n in m.tiles(workers)]
    parallel_map(lambda w: [m.multiply_tile(X, r0, n, out) for m, r0, n, out in tiles[w::workers]], range(workers))
