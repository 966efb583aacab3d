"""The memory a model needs at a context and KV cache types, and what fits in the memory available.

`inspect-gguf --ctx N` reports it; loading a model (`nanosmol.load`, every command) refuses a
context that cannot fit, naming a context or cache types that would.
"""

from __future__ import annotations

from typing import Any

from nanosmol.attention import CHUNK, KEY_TILE, QUERY_BLOCK
from nanosmol.config import ModelConfig
from nanosmol.float_tiles import COLS
from nanosmol.kv.types import CACHE_TYPES, CacheTypes, cache_bytes
from nanosmol.quants.q8_0_tiles import ROWS
from nanosmol.workers import n_workers

F32 = 4
PREFILL_CHUNK = 512  # tokens per prefill batch (model.PREFILL_CHUNK), for the scratch estimate
SMALLER_CACHES = [CacheTypes("q8_0", "q8_0"), CacheTypes("q4_0", "q4_0")]  # what a refusal suggests, in order


class ContextTooLargeError(ValueError):
    """The KV cache of the requested context would not fit in the memory available."""


def memory_estimate(c: ModelConfig, weight_bytes: int, ctx: int, types: CacheTypes = CacheTypes()) -> dict[str, Any]:
    """Bytes needed to run at context `ctx`: mapped weights, the KV cache of the given types, scratch."""
    kv_cache = cache_bytes(c.n_layer, ctx, c.n_head_kv, c.head_dim, types)
    total = weight_bytes + kv_cache + scratch_bytes(c, ctx)
    available = available_memory()
    return {
        "ctx": ctx,
        "cache_type_k": types.k,
        "cache_type_v": types.v,
        "weights": weight_bytes,
        "kv_cache": kv_cache,
        "kv_cache_by_type": {name: cache_bytes(c.n_layer, ctx, c.n_head_kv, c.head_dim, CacheTypes(name, name))
                             for name in CACHE_TYPES},
        "scratch": scratch_bytes(c, ctx),
        "total": total,
        "available": available,
        "fits": None if available is None else total <= available,
    }


def scratch_bytes(c: ModelConfig, ctx: int) -> int:
    """Activations of a prefill batch (and quantized: int8 in blocks of 32 and 256, each also in
    token lanes, and int16 for Q8_0's tiles, with each task's tile), its logits, attention's
    tiles and decode's per-slot scores."""
    chunk = min(ctx, PREFILL_CHUNK)
    q, kv = c.n_head * c.head_dim, c.n_head_kv * c.head_dim
    widest = max(c.n_embd, c.n_ff, q)
    activations = chunk * (3 * c.n_embd + q + 2 * kv + 3 * c.n_ff) * F32 + chunk * widest * (4 + 2)
    activations += n_workers() * ROWS * widest * 2
    rows, width = min(chunk, QUERY_BLOCK) * (c.n_head // c.n_head_kv), -(-c.head_dim // COLS) * COLS
    job = rows * (KEY_TILE + width) + KEY_TILE * (c.head_dim + width)  # scores, mixed rows; keys, values
    prefill_tiles = (n_workers() * job + 2 * chunk * q) * F32  # and the queries and outputs by KV head
    decode_scores = c.n_head * (ctx + -(-ctx // CHUNK) * (c.head_dim + 2)) * F32
    logits = chunk * c.vocab_size * F32
    return activations + prefill_tiles + decode_scores + logits


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(c: ModelConfig, weight_bytes: int, ctx: int, types: CacheTypes, available: int | None) -> None:
    """Raise ContextTooLargeError naming a context or cache types that fit, if this one does not."""
    need = memory_estimate(c, weight_bytes, ctx, types)["total"]
    if available is None or need <= available:
        return
    fits = lambda n, t: memory_estimate(c, weight_bytes, n, t)["total"] <= available
    options = [f"--cache-type-k {t.k} --cache-type-v {t.v}" for t in SMALLER_CACHES
               if cache_bytes(1, 1, 1, c.head_dim, t) < cache_bytes(1, 1, 1, c.head_dim, types) and fits(ctx, t)][:1]
    largest = largest_fitting_ctx(lambda n: fits(n, types), ctx)
    if largest:
        options.append(f"--ctx {largest}")
    advice = f": use {' or '.join(options)}" if options else ": not even a short context fits"
    raise ContextTooLargeError(f"--ctx {ctx} with a {types} cache needs {gib(need)} but {gib(available)} "
                               f"is available{advice}")


def largest_fitting_ctx(fits, ctx: int, step: int = 256) -> int | None:
    """The largest multiple of `step` below ctx for which fits(n) holds (fits grows with n)."""
    low, high = 0, ctx // step  # fits(low * step) is assumed, fits(ctx) is not
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle * step) else (low, middle)
    return low * step or None


def gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
