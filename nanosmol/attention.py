"""Grouped-query attention over the KV cache (nanosmol/kv.py), read in the cache's own types.

Decode (`attend`) never makes a float copy of the cache: quantized keys meet the query
quantized to int8 in blocks of 32 (llama.cpp's Q8_0, as the matvecs take activations) in
integer block dot products; an f16 or f32 key row is converted once for the group's query
heads, whose dot products then run in float lanes; each value row is decoded into a few
registers' worth of floats and added in. Its jobs are (KV head, chunk of slots)
pairs: every key and value row is read once per step for all the query heads of its group,
and a deep cache spreads over the threads. Each chunk keeps its own softmax maximum and
sum, merged at the end (flash-decoding).

Prefill (`attend_batch`) decodes the cache a tile of KEY_TILE slots at a time into float32
and multiplies the tiles in registers (nanosmol/float_tiles.py) with an online softmax: no
score matrix larger than a query block by a tile. Its jobs are (KV head, block of queries)
pairs, in one parallel region like the matmuls around it.

q4_0 caches hold keys and values rotated (nanosmol/kv/rotation.py), and keys less a shift
per span of slots (nanosmol/kv/shift.py): both paths rotate the query alike before it
meets them, add its product with each span's shift back to the span's scores, and turn the
output back when the values are rotated.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit, prange

from nanosmol.float_tiles import COLS, tile_product
from nanosmol.kv.rotation import rotate_rows, rotates
from nanosmol.kv.shift import SPAN
from nanosmol.layers import exp32
from nanosmol.quants.blocks import F16, Q4_0, Q8_0
from nanosmol.quants.intdot import QuantizedVector, dequantize_row_block32, quantize_values, row_dot_block32
from nanosmol.quants.specialize import ConstantTypes
from nanosmol.quants.vecdot import store_f16, store_f32
from nanosmol.simd import max_into16, stack_lanes

# ConstantTypes: decode passes the cache types as constants, and only their code compiles.
JIT = dict(cache=True, fastmath=True, boundscheck=False, error_model="numpy", pipeline_class=ConstantTypes)
INLINE = dict(JIT, inline="always")
CHUNK = 256  # cache slots per decode job
QUERY_BLOCK = 32  # prompt queries per prefill attention job at most
KEY_TILE = 256  # cache slots per prefill score tile
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


@njit(**JIT)
def softmax_tile(scores, m, positions, q_pos, group, top, total, correction):
    """One tile of prefill's online softmax, in place, a score row at a time while it is in
    L1 (numpy's passes over the whole tile ran at memory speed: a third of the 135M model's
    pp512). scores[r, :m] (m slots at `positions`), row r belonging to the query at
    q_pos[r // group]: each becomes its weight e^(score - the row's maximum so far), or 0
    where the query does not see the slot (empty, or at a later position). top, total: each
    row's maximum and sum of weights so far, brought up to date; correction: what the earlier
    tiles' weights are to be multiplied by."""
    in_order = positions[0] >= 0  # the slots hold consecutive positions (a prompt's cache)
    for j in range(1, m):
        in_order &= positions[j] == positions[0] + j
    lanes = stack_lanes()
    for r in range(scores.shape[0]):
        row, seen = scores[r, :m], q_pos[r // group]
        if in_order:  # the slots a query sees are a prefix of the tile
            visible = min(max(seen - positions[0] + 1, 0), m)
        else:
            visible = m
            for j in range(m):
                row[j] = row[j] if positions[j] >= 0 and positions[j] <= seen else HIDDEN
        best = row_max(row, visible, lanes, top[r])
        weights = np.float32(0.0)
        for j in range(visible):
            row[j] = exp32(row[j] - best)
            weights += row[j]
        row[visible:] = 0.0
        correction[r] = exp32(top[r] - best)
        total[r] = total[r] * correction[r] + weights
        top[r] = best


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


@njit(**JIT)
def slots_seen(slot_pos, first, last, newest):
    """How many of the slots first..last-1 to score: up to the last one holding a position
    not after `newest` (the block's latest query); the ones after it no query sees."""
    m = 0
    for j in range(last - first):
        if 0 <= slot_pos[first + j] <= newest:
            m = j + 1
    return m


@njit(**JIT)
def attend_query_block(k_type, v_type, q, q_at, k_cache, v_cache, k_shift, slot_pos, q_pos, n_filled, kv, group,
                       head_dim, out, out_at):
    """One KV head's attention for the rows of a block of queries: rows r < len(q_pos) * group
    of the query matrix held in q (flat, from q_at, head_dim apart), into out alike.

    The cache goes by in tiles of KEY_TILE slots, decoded to float32 (keys transposed, the
    product's B), with an online softmax across tiles: no score matrix larger than the block
    by a tile."""
    rows, slots = q_pos.shape[0] * group, k_cache.shape[1]
    width = -(-head_dim // COLS) * COLS  # a mixed row, padded to the products' strips
    scores = np.empty((rows, KEY_TILE), np.float32)
    keys_t = np.zeros((head_dim, KEY_TILE), np.float32)
    values, mixed = np.zeros((KEY_TILE, width), np.float32), np.zeros((rows, width), np.float32)
    row = np.empty(head_dim, np.float32)
    top, total, correction = np.full(rows, HIDDEN), np.zeros(rows, np.float32), np.empty(rows, np.float32)
    k_flat, v_flat = k_cache.reshape(-1), v_cache.reshape(-1)
    scores_flat, keys_flat, values_flat, mixed_flat = (scores.reshape(-1), keys_t.reshape(-1), values.reshape(-1),
                                                       mixed.reshape(-1))
    newest = q_pos.max()
    for first in range(0, n_filled, KEY_TILE):
        m = slots_seen(slot_pos, first, min(first + KEY_TILE, n_filled), newest)
        if m == 0:
            continue
        cols = -(-m // COLS) * COLS
        for j in range(m):
            slot = kv * slots + first + j
            value_row(k_type, k_flat, slot * k_cache.shape[2], row)
            if rotates(k_type):  # the slot's key shift back in
                row += k_shift[(first + j) // SPAN]
            keys_t[:, j] = row
            value_row(v_type, v_flat, slot * v_cache.shape[2], row)
            values[j, :head_dim] = row
        keys_t[:, m:cols] = 0.0  # the strips' last columns: no slot
        values[m:cols] = 0.0
        tile_product(scores_flat, 0, KEY_TILE, q, q_at, head_dim, keys_flat, 0, KEY_TILE, rows, cols, head_dim, False)
        softmax_tile(scores, m, slot_pos[first : first + m], q_pos, group, top, total, correction)
        for r in range(rows):
            scores[r, m:cols] = 0.0
            mixed[r] *= correction[r]
        tile_product(mixed_flat, 0, width, scores_flat, 0, KEY_TILE, values_flat, 0, width, rows, width, cols, True)
    for r in range(rows):
        inverse = np.float32(1.0) / total[r]
        for i in range(head_dim):
            out[out_at + r * head_dim + i] = mixed[r, i] * inverse


@njit(parallel=True, **JIT)
def attend_prompt(k_type, v_type, queries, k_cache, v_cache, k_shift, slot_pos, q_pos, n_filled, group, blocks, out):
    """attend_query_block for every (KV head, block of QUERY_BLOCK queries starting at one of
    `blocks`), spread over the threads. queries, out: [n_kv, len(q_pos) * group, head_dim]."""
    n_kv, n_q, head_dim = queries.shape[0], q_pos.shape[0], queries.shape[2]
    q_flat, out_flat = queries.reshape(-1), out.reshape(-1)
    for job in prange(n_kv * blocks.shape[0]):
        kv, t0 = job % n_kv, blocks[job // n_kv]
        t1 = min(t0 + QUERY_BLOCK, n_q)
        at = (kv * n_q + t0) * group * head_dim
        attend_query_block(k_type, v_type, q_flat, at, k_cache, v_cache, k_shift[kv], slot_pos, q_pos[t0:t1],
                           n_filled, kv, group, head_dim, out_flat, at)


def balanced_blocks(n_queries: int) -> np.ndarray:
    """Where the query blocks start, the longest (latest, which see the most slots) and the
    shortest in turn: the threads take equal runs of jobs, and so about equal work."""
    starts, order = list(range(0, n_queries, QUERY_BLOCK)), []
    while starts:
        order.append(starts.pop())
        if starts:
            order.append(starts.pop(0))
    return np.array(order, np.int64)


def attend_batch(q, k_cache, v_cache, k_type, v_type, k_shift, slot_pos, q_pos, n_filled, n_head, head_dim, out):
    """attend() for a prompt block: every KV head's query rows [query, head in its group] at
    once, a block of queries per job (`attend_prompt`)."""
    n_kv, n_q = k_cache.shape[0], len(q)
    group = n_head // n_kv
    queries = np.empty((n_kv, n_q, group * head_dim), np.float32)  # a copy: q stays as it is
    np.multiply(q.reshape(n_q, n_kv, group * head_dim).transpose(1, 0, 2), np.float32(1.0 / math.sqrt(head_dim)),
                out=queries)
    queries = queries.reshape(n_kv, n_q * group, head_dim)
    if rotates(k_type):  # keys stored rotated: the queries alike
        rotate_rows(queries.reshape(-1, head_dim), head_dim)
    mixed = np.empty_like(queries)
    # The cache types as plain arguments: one compiled kernel serves every pair (per pair, as
    # constants, each took ~7 s to compile and ran no faster: the branches are per row, and
    # 135m-q8's pp512 attention took 203-215 ms against 188-216, taking turns).
    attend_prompt(k_type, v_type, queries, k_cache, v_cache, k_shift, slot_pos, q_pos, n_filled, group,
                  balanced_blocks(n_q), mixed)
    if rotates(v_type):  # a weighted sum of rotated values: turned back
        rotate_rows(mixed.reshape(-1, head_dim), head_dim)
    out[:] = mixed.reshape(n_kv, n_q, group * head_dim).transpose(1, 0, 2).reshape(n_q, -1)
    return out
