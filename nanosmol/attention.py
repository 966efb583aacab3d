"""Grouped-query attention over the KV cache (nanosmol/kv.py), read in the cache's own types.

Decode (`attend`) never makes a float copy of the cache: quantized keys meet the query
quantized to int8 in blocks of 32 (llama.cpp's Q8_0, as the matvecs take activations) in
integer block dot products, float keys meet it in float lanes; each value row is decoded
into a few registers' worth of floats and added in. Its jobs are (KV head, chunk of slots)
pairs: every key and value row is read once per step for all the query heads of its group,
and a deep cache spreads over the threads. Each chunk keeps its own softmax maximum and
sum, merged at the end (flash-decoding).

Prefill (`attend_batch`) decodes the cache a tile of KEY_TILE slots at a time and runs BLAS
on the tiles with an online softmax: no score matrix larger than a query block by a tile.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from nanosmol.layers import exp32
from nanosmol.quants.blocks import Q4_0, Q8_0, row_values
from nanosmol.quants.intdot import QuantizedVector, dequantize_row_block32, quantize_values, row_dots_block32
from nanosmol.quants.kernels import row_dot_float
from nanosmol.quants.specialize import ConstantTypes
from nanosmol.simd import stack_lanes
from nanosmol.workers import n_workers, parallel_map

# ConstantTypes: decode passes the cache types as constants, and only their code compiles.
JIT = dict(cache=True, fastmath=True, boundscheck=False, error_model="numpy", pipeline_class=ConstantTypes)
INLINE = dict(JIT, inline="always")
CHUNK = 256  # cache slots per decode job
QUERY_BLOCK = 128  # prompt rows per prefill attention job at most
KEY_TILE = 256  # cache slots per prefill score tile
SERIAL_QUERIES = 64  # up to this many prompt rows, attention runs on the calling thread
HIDDEN = np.float32(-3.0e38)  # the score of a slot a query does not see: finite, as fastmath assumes


class AttentionScratch(NamedTuple):
    """Decode's attention buffers, allocated once for up to `n_tokens` queries."""

    query: QuantizedVector  # the queries, int8 in blocks of 32 (for quantized keys)
    scores: np.ndarray  # [n_tokens * n_head, n_ctx]: scores, then softmax weights, per query head
    partial: np.ndarray  # [n_tokens * n_head, chunks, head_dim]: each chunk's weighted value sum
    chunk_max: np.ndarray  # [n_tokens * n_head, chunks]: each chunk's largest score
    chunk_sum: np.ndarray  # [n_tokens * n_head, chunks]: each chunk's sum of weights

    @classmethod
    def of(cls, n_tokens: int, n_head: int, head_dim: int, n_ctx: int) -> "AttentionScratch":
        rows, chunks = n_tokens * n_head, -(-n_ctx // CHUNK)
        return cls(QuantizedVector.empty(rows * head_dim), np.zeros((rows, n_ctx), np.float32),
                   np.zeros((rows, chunks, head_dim), np.float32), np.zeros((rows, chunks), np.float32),
                   np.zeros((rows, chunks), np.float32))


def is_quantized(cache_type: int) -> bool:
    return cache_type in (Q8_0, Q4_0)


@njit(**INLINE)
def key_score(k_type, key, q, query, at, head_dim, acc):
    """key . (the query head at q[at:]): integer block dot products on the int8 query for q8_0
    and q4_0 keys (into acc[0:16]), float lanes for f32 and f16 ones (acc[0:32])."""
    acc[:] = 0.0
    if k_type == Q8_0:
        row_dots_block32(Q8_0, key, query, head_dim, at, acc)
        return acc[:16].sum()
    if k_type == Q4_0:
        row_dots_block32(Q4_0, key, query, head_dim, at, acc)
        return acc[:16].sum()
    row_dot_float(k_type, key, q[at : at + head_dim], acc)
    return acc.sum()


@njit(**INLINE)
def value_row(v_type, row, out):
    """out = the cached row's values. Each quantized branch passes its type as a constant."""
    if v_type == Q8_0:
        dequantize_row_block32(Q8_0, row, out)
    elif v_type == Q4_0:
        dequantize_row_block32(Q4_0, row, out)
    else:
        row_values(v_type, row, out)  # F32, F16


@njit(**INLINE)
def attend_chunk(q, query, k_cache, v_cache, k_type, v_type, slot_pos, q_pos, t, kv, c, n_filled, n_head, head_dim,
                 scores, partial, chunk_max, chunk_sum):
    """Query token t's heads of KV head kv over the slots of chunk c: each head's chunk
    maximum, sum of weights and weighted value sum (see AttentionScratch).

    A slot the query does not see scores HIDDEN and weighs 0: after the score loop, the
    loops over slots are branch-free selects that vectorize.
    """
    group = n_head // k_cache.shape[0]
    first, last = c * CHUNK, min(n_filled, (c + 1) * CHUNK)
    keys, values, flat = k_cache[kv], v_cache[kv], q.reshape(-1)
    scale = np.float32(1.0 / math.sqrt(head_dim))
    j0 = t * n_head + kv * group  # the group's first query head
    acc = stack_lanes()
    for slot in range(first, last):  # each key row read once for the group's heads
        seen = 0 <= slot_pos[slot] <= q_pos
        for g in range(group):
            at = t * q.shape[1] + (kv * group + g) * head_dim
            scores[j0 + g, slot] = key_score(k_type, keys[slot], flat, query, at, head_dim, acc) * scale if seen \
                else HIDDEN
    for j in range(j0, j0 + group):
        weights, top, total = scores[j, first:last], HIDDEN, np.float32(0.0)
        for i in range(last - first):
            top = max(top, weights[i])
        for i in range(last - first):
            weights[i] = exp32(weights[i] - top) if weights[i] > HIDDEN else np.float32(0.0)
            total += weights[i]
        chunk_max[j, c], chunk_sum[j, c] = top, total
        partial[j, c, :] = 0.0
    value = np.empty(head_dim, np.float32)
    for slot in range(first, last):  # each value row decoded once for the group's heads
        if scores[j0, slot] == 0.0:
            continue  # unseen: exp32 gives a seen slot at least 1e-38
        value_row(v_type, values[slot], value)
        for j in range(j0, j0 + group):
            w = scores[j, slot]
            for i in range(head_dim):
                partial[j, c, i] += w * value[i]


@njit(**JIT)
def attend(q, k_cache, v_cache, k_type, v_type, slot_pos, q_pos, n_filled, n_head, head_dim, out, s):
    """Causal grouped-query attention of a few queries (decode), over the ring of slots.

    q: [T, n_head * head_dim] at positions q_pos; out: same shape; k_cache, v_cache: one
    layer's [n_kv, slots, row bytes] of types k_type, v_type; s: an AttentionScratch for at
    least T queries. A query sees every filled slot whose position is not after its own.
    """
    if k_type == Q8_0 or k_type == Q4_0:
        quantize_values(q.reshape(-1), s.query, False)
    # Parallel regions take no tuples of arrays made here: the scratch goes in array by array.
    attend_chunks(q, s.query, k_cache, v_cache, k_type, v_type, slot_pos, q_pos, n_filled, n_head, head_dim,
                  s.scores, s.partial, s.chunk_max, s.chunk_sum)
    return merge_chunks(s.partial, s.chunk_max, s.chunk_sum, (n_filled + CHUNK - 1) // CHUNK, n_head, head_dim, out)


@njit(parallel=True, **JIT)
def attend_chunks(q, query, k_cache, v_cache, k_type, v_type, slot_pos, q_pos, n_filled, n_head, head_dim,
                  scores, partial, chunk_max, chunk_sum):
    """attend_chunk for every (query token, KV head, chunk of slots), spread over the threads."""
    n_kv, n_chunks = k_cache.shape[0], (n_filled + CHUNK - 1) // CHUNK
    for job in prange(q.shape[0] * n_kv * n_chunks):
        t, kv, c = job // (n_kv * n_chunks), job // n_chunks % n_kv, job % n_chunks
        attend_chunk(q, query, k_cache, v_cache, k_type, v_type, slot_pos, q_pos[t], t, kv, c, n_filled, n_head,
                     head_dim, scores, partial, chunk_max, chunk_sum)


@njit(parallel=True, **JIT)
def merge_chunks(partial, chunk_max, chunk_sum, n_chunks, n_head, head_dim, out):
    """Each query head's output from its chunks: each rescaled to the overall maximum score."""
    for j in prange(out.shape[0] * n_head):
        t, h = j // n_head, j % n_head
        top, total = HIDDEN, np.float32(0.0)
        for c in range(n_chunks):
            if chunk_sum[j, c] > 0:
                top = max(top, chunk_max[j, c])
        mixed = out[t, h * head_dim : (h + 1) * head_dim]
        mixed[:] = 0.0
        for c in range(n_chunks):
            if chunk_sum[j, c] > 0:
                factor = exp32(chunk_max[j, c] - top)
                total += factor * chunk_sum[j, c]
                weighted = partial[j, c]
                for i in range(head_dim):
                    mixed[i] += factor * weighted[i]
        mixed *= np.float32(1.0) / total
    return out


@njit(nogil=True, **JIT)
def decode_slots(cache_type, cache, first, last, out):
    """out[h, k] = the values of slot first + k of KV head h: one tile of the cache, in float32."""
    for h in range(cache.shape[0]):
        for slot in range(first, last):
            value_row(cache_type, cache[h, slot], out[h, slot - first])
    return out


def attend_batch(q, k_cache, v_cache, k_type, v_type, slot_pos, q_pos, n_filled, n_head, head_dim, out):
    """attend() for a prompt block, through BLAS: all heads of a block of queries at once,
    over the cache one tile of KEY_TILE slots at a time (an online softmax across tiles).

    A query sees every filled slot whose position is not after its own. Blocks of queries
    go to the worker threads; up to SERIAL_QUERIES rows stay on this thread, where the
    hand-off to a worker costs more than the work (64 rows: 230 us here, 390 us spread).
    """
    n_kv = k_cache.shape[0]
    group = n_head // n_kv
    scale = np.float32(1.0 / math.sqrt(head_dim))

    def block(t0):
        t1 = min(t0 + size, len(q))
        n = t1 - t0
        # [kv head, (query, head in its group), head_dim]: one batched matmul for every head.
        queries = q[t0:t1].reshape(n, n_kv, group * head_dim).transpose(1, 0, 2).reshape(n_kv, n * group, head_dim)
        queries = queries * scale
        top = np.full((n_kv, n * group, 1), HIDDEN, np.float32)
        total = np.zeros((n_kv, n * group, 1), np.float32)
        mixed = np.zeros((n_kv, n * group, head_dim), np.float32)
        keys, values = (np.empty((n_kv, KEY_TILE, head_dim), np.float32) for _ in range(2))
        for first in range(0, n_filled, KEY_TILE):
            last = min(first + KEY_TILE, n_filled)
            positions = slot_pos[first:last]
            hidden = (positions < 0) | (positions[None, :] > q_pos[t0:t1, None])  # [query, slot]
            if hidden.all():
                continue
            m = last - first
            decode_slots(k_type, k_cache, first, last, keys)
            decode_slots(v_type, v_cache, first, last, values)
            scores = np.matmul(queries, keys[:, :m].transpose(0, 2, 1)).reshape(n_kv, n, group, m)
            scores += np.where(hidden, HIDDEN, np.float32(0.0))[None, :, None, :]
            scores = scores.reshape(n_kv, n * group, m)
            new_top = np.maximum(top, scores.max(axis=2, keepdims=True))
            correction = np.exp(top - new_top)  # the earlier tiles' weights, to the new maximum
            scores -= new_top
            np.exp(scores, out=scores)
            total = total * correction + scores.sum(axis=2, keepdims=True)
            mixed = mixed * correction + np.matmul(scores, values[:, :m])
            top = new_top
        mixed /= total
        out[t0:t1] = mixed.reshape(n_kv, n, group * head_dim).transpose(1, 0, 2).reshape(n, -1)

    size = len(q) if len(q) <= SERIAL_QUERIES else min(QUERY_BLOCK, -(-len(q) // n_workers()))
    if size == len(q):
        block(0)
    else:
        parallel_map(block, range(0, len(q), size))
    return out
