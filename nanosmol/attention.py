"""Grouped-query attention over the KV cache (nanosmol/kv.py), read in the cache's own types.

Decode (`attend`) never makes a float copy of the cache: quantized keys meet the query
quantized to int8 in blocks of 32 (llama.cpp's Q8_0, as the matvecs take activations) in
integer block dot products; an f16 or f32 key row is converted once for the group's query
heads, whose dot products then run in float lanes; each value row is decoded into a few
registers' worth of floats and added in. Its jobs are (KV head, chunk of slots)
pairs: every key and value row is read once per step for all the query heads of its group,
and a deep cache spreads over the threads. Each chunk keeps its own softmax maximum and
sum, merged at the end (flash-decoding).

Prefill (`attend_batch`) decodes the cache a tile of KEY_TILE slots at a time and runs BLAS
on the tiles with an online softmax: no score matrix larger than a query block by a tile.

q4_0 caches hold keys and values rotated (nanosmol/kv/rotation.py), and keys less a shift
per span of slots (nanosmol/kv/shift.py): both paths rotate the query alike before it
meets them, add its product with each span's shift back to the span's scores, and turn the
output back when the values are rotated.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from nanosmol.kv.rotation import rotate_rows, rotates
from nanosmol.kv.shift import SPAN
from nanosmol.layers import exp32
from nanosmol.quants.blocks import F16, Q4_0, Q8_0
from nanosmol.quants.intdot import QuantizedVector, dequantize_row_block32, quantize_values, row_dot_block32
from nanosmol.quants.specialize import ConstantTypes, named_for
from nanosmol.quants.vecdot import store_f16, store_f32
from nanosmol.simd import max_into16, stack_lanes
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

    rotated: np.ndarray  # [n_tokens, n_head * head_dim]: the queries rotated (for q4_0 keys)
    query: QuantizedVector  # the queries (rotated for q4_0), int8 in blocks of 32 (for q8_0 and q4_0 keys)
    partial: np.ndarray  # [n_tokens * n_head, chunks, head_dim]: each chunk's weighted value sum
    chunk_max: np.ndarray  # [n_tokens * n_head, chunks]: each chunk's largest score
    chunk_sum: np.ndarray  # [n_tokens * n_head, chunks]: each chunk's sum of weights

    @classmethod
    def of(cls, n_tokens: int, n_head: int, head_dim: int, n_ctx: int) -> "AttentionScratch":
        rows, chunks = n_tokens * n_head, -(-n_ctx // CHUNK)
        return cls(np.zeros((n_tokens, n_head * head_dim), np.float32), QuantizedVector.empty(rows * head_dim),
                   np.zeros((rows, chunks, head_dim), np.float32),
                   np.zeros((rows, chunks), np.float32), np.zeros((rows, chunks), np.float32))


@njit(**INLINE)
def key_score(k_type, cache, o, query, at, head_dim, acc):
    """The quantized key at byte o of cache . the int8 query head at query[at:]: integer
    block dot products (acc: row_dot_block32's scratch)."""
    return row_dot_block32(k_type, cache, o, query, head_dim, at, acc)


@njit(**INLINE)
def float_dot(key, heads, g):
    """key . query head g of heads [group, head_dim]: vector FMAs and one reduction. (Indexed
    from 0 by loop counters, so LLVM sees no negative index to wrap and loads vectors.)"""
    total = np.float32(0.0)
    for i in range(key.shape[0]):
        total += key[i] * heads[g, i]
    return total


@njit(**JIT)  # called, not inlined: compiled per cache type, where an inlined copy carried every type's code
def value_row(cache_type, cache, o, out):
    """out = the values of the cached row at byte o of cache (flat bytes). Each branch passes
    its type as a constant."""
    if cache_type == Q8_0:
        dequantize_row_block32(Q8_0, cache, o, out)
    elif cache_type == Q4_0:
        dequantize_row_block32(Q4_0, cache, o, out)
    elif cache_type == F16:
        for b in range(out.shape[0] // 32):
            store_f16(out, cache, o + 64 * b, 32 * b)
    else:
        for b in range(out.shape[0] // 32):
            store_f32(out, cache, o + 128 * b, 32 * b)


@njit(**JIT)  # a function of its own: inlined into the parallel loop, the quantized path ran 15% slower
def attend_chunk(q, query, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, t, kv, c, n_filled, n_head,
                 head_dim, partial, chunk_max, chunk_sum):
    """Query token t's heads of KV head kv over the slots of chunk c: each head's chunk
    maximum, sum of weights and weighted value sum (see AttentionScratch). q: the float
    queries (rotated for q4_0 keys), query: them in int8 (for q8_0 and q4_0 keys).

    A slot the query does not see scores HIDDEN and weighs 0: after the score loop, the
    loops over slots are branch-free selects that vectorize.
    """
    group = n_head // k_cache.shape[0]
    first, last = c * CHUNK, min(n_filled, (c + 1) * CHUNK)
    # Rows are read at byte offsets of flat views: a view per row would cost two atomic
    # reference-count updates, more than the row's arithmetic.
    keys, values, flat = k_cache.reshape(-1), v_cache.reshape(-1), q.reshape(-1)
    k_bytes, v_bytes = k_cache.shape[2], v_cache.shape[2]
    k_at, v_at = kv * k_cache.shape[1] * k_bytes, kv * v_cache.shape[1] * v_bytes  # KV head kv's slot 0
    scale = np.float32(1.0 / math.sqrt(head_dim))
    at = t * q.shape[1] + kv * group * head_dim  # the group's first query head in flat (and query)
    acc = stack_lanes()
    row = np.empty(head_dim, np.float32)  # a key or value row in float32, decoded once for the group
    weights = np.empty((group, last - first), np.float32)  # scores, then softmax weights
    heads = flat[at : at + group * head_dim].copy().reshape(group, head_dim)  # the group's query heads
    shifted = np.zeros(group, np.float32)  # each head's product with the key shift of the slot's span (q4_0)
    span = -1
    for k in range(last - first):  # each key row read once for the group's heads
        slot = first + k
        o = k_at + slot * k_bytes
        if rotates(k_type) and slot // SPAN != span:
            span = slot // SPAN
            shift = k_shift[kv, span]
            for g in range(group):
                shifted[g] = float_dot(shift, heads, g)
        if not 0 <= slot_pos[slot] <= q_pos:
            for g in range(group):
                weights[g, k] = HIDDEN
        elif k_type == Q8_0 or k_type == Q4_0:
            for g in range(group):
                score = key_score(k_type, keys, o, query, at + g * head_dim, head_dim, acc) + shifted[g]
                weights[g, k] = score * scale
        else:
            value_row(k_type, keys, o, row)
            for g in range(group):
                weights[g, k] = float_dot(row, heads, g) * scale
    j0 = t * n_head + kv * group  # the group's first query head
    for g in range(group):
        top, total = HIDDEN, np.float32(0.0)
        for k in range(last - first):
            top = max(top, weights[g, k])
        for k in range(last - first):
            e = exp32(weights[g, k] - top) if weights[g, k] > HIDDEN else np.float32(0.0)
            weights[g, k] = e
            total += e
        chunk_max[j0 + g, c], chunk_sum[j0 + g, c] = top, total
    mixed = np.zeros((group, head_dim), np.float32)
    for k in range(last - first):  # each value row decoded once for the group's heads
        if weights[0, k] == 0.0:
            continue  # unseen: exp32 gives a seen slot at least 1e-38
        value_row(v_type, values, v_at + (first + k) * v_bytes, row)
        for g in range(group):
            w = weights[g, k]
            for i in range(head_dim):
                mixed[g, i] += w * row[i]
    for g in range(group):
        for i in range(head_dim):
            partial[j0 + g, c, i] = mixed[g, i]


@njit(**JIT)
def attend(q, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head, head_dim, out, s):
    """Causal grouped-query attention of a few queries (decode), over the ring of slots.

    q: [T, n_head * head_dim] at positions q_pos; out: same shape; k_cache, v_cache: one
    layer's [n_kv, slots, row bytes] of types k_type, v_type; k_shift: its key shifts
    [n_kv, spans, head_dim] (KeyShifts.vectors[layer]; read for q4_0 keys only); s: an
    AttentionScratch for at least T queries. A query sees every filled slot whose position
    is not after its own.
    """
    # Parallel regions take no tuples of arrays made here: the scratch goes in array by array.
    if rotates(k_type):  # q4_0 keys, stored rotated: the query rotated alike, then in int8
        rotated = s.rotated[: q.shape[0]]
        rotated[:] = q
        quantize_values(rotate_rows(rotated, head_dim).reshape(-1), s.query, False)
        attend_chunks(rotated, s.query, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head,
                      head_dim, s.partial, s.chunk_max, s.chunk_sum)
    else:
        if k_type == Q8_0:  # integer dot products with the query in int8
            quantize_values(q.reshape(-1), s.query, False)
        attend_chunks(q, s.query, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head,
                      head_dim, s.partial, s.chunk_max, s.chunk_sum)
    merge_chunks(s.partial, s.chunk_max, s.chunk_sum, (n_filled + CHUNK - 1) // CHUNK, n_head, head_dim, out)
    if rotates(v_type):  # a weighted sum of rotated values: turned back
        rotate_rows(out, head_dim)
    return out


@njit(parallel=True, **JIT)
def attend_chunks(q, query, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head, head_dim,
                  partial, chunk_max, chunk_sum):
    """attend_chunk for every (query token, KV head, chunk of slots), spread over the threads."""
    n_kv, n_chunks = k_cache.shape[0], (n_filled + CHUNK - 1) // CHUNK
    for job in prange(q.shape[0] * n_kv * n_chunks):
        t, kv, c = job // (n_kv * n_chunks), job // n_chunks % n_kv, job % n_chunks
        attend_chunk(q, query, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos[t], t, kv, c, n_filled,
                     n_head, head_dim, partial, chunk_max, chunk_sum)


@njit(**JIT)  # serial: 4-43 us a layer (135M at depth 4k, 3B at 32k); parallel, 3-24 us and 1.5 s of compiling
def merge_chunks(partial, chunk_max, chunk_sum, n_chunks, n_head, head_dim, out):
    """Each query head's output from its chunks: each rescaled to the overall maximum score."""
    for j in range(out.shape[0] * n_head):
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
    flat, row_bytes = cache.reshape(-1), cache.shape[2]
    for h in range(cache.shape[0]):
        for slot in range(first, last):
            value_row(cache_type, flat, (h * cache.shape[1] + slot) * row_bytes, out[h, slot - first])
    return out


@cache
def decode_slots_of_type(cache_type: int):
    """decode_slots for Python's calls (prefill), compiled for this cache type alone."""

    @njit(cache=True, nogil=True)
    @named_for((cache_type,))
    def decode_slots_of_type(cache, first, last, out):
        return decode_slots(cache_type, cache, first, last, out)

    return decode_slots_of_type


@njit(nogil=True, **JIT)
def softmax_tile(scores, positions, q_pos, top, total, correction):
    """One tile of prefill's online softmax, in place, a score row at a time while it is in
    L1 (numpy's passes over the whole tile ran at memory speed: a third of the 135M model's
    pp512). scores [kv head, (query, head in its group), slot]: each becomes its weight
    e^(score - the row's maximum so far), or 0 where the query does not see the slot (empty, or
    at a later position). top, total: each row's maximum and sum of weights so far, brought up
    to date; correction: what the earlier tiles' weights are to be multiplied by."""
    n_kv, rows, m = scores.shape
    group = rows // q_pos.shape[0]
    in_order = positions[0] >= 0  # the slots hold consecutive positions (a prompt's cache)
    for j in range(1, m):
        in_order &= positions[j] == positions[0] + j
    lanes = stack_lanes()
    for h in range(n_kv):
        for r in range(rows):
            row, seen = scores[h, r], q_pos[r // group]
            if in_order:  # the slots a query sees are a prefix of the tile
                visible = min(max(seen - positions[0] + 1, 0), m)
            else:
                visible = m
                for j in range(m):
                    row[j] = row[j] if positions[j] >= 0 and positions[j] <= seen else HIDDEN
            best = row_max(row, visible, lanes, top[h, r])
            weights = np.float32(0.0)
            for j in range(visible):
                row[j] = exp32(row[j] - best)
                weights += row[j]
            row[visible:] = 0.0
            correction[h, r] = exp32(top[h, r] - best)
            total[h, r] = total[h, r] * correction[h, r] + weights
            top[h, r] = best


@njit(**INLINE)
def row_max(row, n, lanes, start):
    """The largest of start and row[:n], 16 lanes at a time (lanes: scratch on the stack)."""
    lanes[:16] = start
    whole = n - n % 16
    for j in range(0, whole, 16):
        max_into16(lanes, row, j)
    best = start
    for value in lanes[:16]:
        best = max(best, value)
    for value in row[whole:n]:
        best = max(best, value)
    return best


def attend_batch(q, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head, head_dim, out):
    """attend() for a prompt block, through BLAS: all heads of a block of queries at once,
    over the cache one tile of KEY_TILE slots at a time (an online softmax across tiles).

    A query sees every filled slot whose position is not after its own. Blocks of queries
    go to the worker threads; up to SERIAL_QUERIES rows stay on this thread, where the
    hand-off to a worker costs more than the work (64 rows: 230 us here, 390 us spread).
    """
    n_kv = k_cache.shape[0]
    group = n_head // n_kv
    scale = np.float32(1.0 / math.sqrt(head_dim))
    decode_keys, decode_values = decode_slots_of_type(k_type), decode_slots_of_type(v_type)

    def block(t0):
        t1 = min(t0 + size, len(q))
        n = t1 - t0
        # [kv head, (query, head in its group), head_dim]: one batched matmul for every head.
        queries = q[t0:t1].reshape(n, n_kv, group * head_dim).transpose(1, 0, 2).reshape(n_kv, n * group, head_dim)
        queries = queries * scale
        if rotates(k_type):  # keys stored rotated: the queries alike
            queries = rotate_rows(queries.reshape(-1, head_dim), head_dim).reshape(queries.shape)
        top = np.full((n_kv, n * group), HIDDEN, np.float32)
        total, correction = (np.zeros((n_kv, n * group), np.float32) for _ in range(2))
        mixed = np.zeros((n_kv, n * group, head_dim), np.float32)
        keys, values = (np.empty((n_kv, KEY_TILE, head_dim), np.float32) for _ in range(2))
        for first in range(0, n_filled, KEY_TILE):
            positions = slot_pos[first : min(first + KEY_TILE, n_filled)]
            seen = ((positions >= 0) & (positions[None, :] <= q_pos[t0:t1, None])).any(axis=0)  # by some query
            if not seen.any():
                continue
            m = np.flatnonzero(seen)[-1] + 1  # the slots after the last one seen need no scores
            last, positions = first + m, positions[:m]
            decode_keys(k_cache, first, last, keys)
            if rotates(k_type):  # each slot's key shift back in
                keys[:, :m] += k_shift[:, np.arange(first, last) // SPAN]
            decode_values(v_cache, first, last, values)
            scores = np.matmul(queries, keys[:, :m].transpose(0, 2, 1))
            softmax_tile(scores, positions, q_pos[t0:t1], top, total, correction)
            mixed *= correction[:, :, None]
            mixed += np.matmul(scores, values[:, :m])
        mixed /= total[:, :, None]
        if rotates(v_type):  # a weighted sum of rotated values: turned back
            mixed = rotate_rows(mixed.reshape(-1, head_dim), head_dim).reshape(mixed.shape)
        out[t0:t1] = mixed.reshape(n_kv, n, group * head_dim).transpose(1, 0, 2).reshape(n, -1)

    size = len(q) if len(q) <= SERIAL_QUERIES else min(QUERY_BLOCK, -(-len(q) // n_workers()))
    if size == len(q):
        block(0)
    else:
        parallel_map(block, reversed(range(0, len(q), size)))  # the longest first: later queries see more
    return out
