"""KV cache types: f32, f16, q8_0, q4_0, as llama.cpp's `--cache-type-k/-v` offer them.

Each token's key (or value) of each KV head is stored as one row of GGML blocks of the type,
so attention reads the cache with the weights' own block dot products and decoders
(nanosmol/attention.py): a q8_0 cache takes 27% of f32's memory, q4_0 14%. This module
holds only names and sizes (no kernels), for the command line and the memory estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T

CACHE_TYPES = {"f32": int(T.F32), "f16": int(T.F16), "q8_0": int(T.Q8_0), "q4_0": int(T.Q4_0)}  # GGML type codes
DEFAULT_CACHE_TYPE = "f16"
ROTATED = ("q4_0",)  # stored rotated, keys less a shift per span (kv/rotation.py, kv/shift.py)
SHIFT_SPAN = 256  # cache slots per key shift


@dataclass(frozen=True)
class CacheTypes:
    """The types of the cached keys and values: one of CACHE_TYPES' names each."""

    k: str = DEFAULT_CACHE_TYPE
    v: str = DEFAULT_CACHE_TYPE

    def __post_init__(self):
        for which, name in (("K", self.k), ("V", self.v)):
            if name not in CACHE_TYPES:
                raise ValueError(f"unknown cache type {name!r} for {which}: choose one of {', '.join(CACHE_TYPES)}")

    def __str__(self) -> str:
        return f"K {self.k}, V {self.v}"


def row_bytes(cache_type: str, head_dim: int) -> int:
    """Bytes of one head's key (or value) row of one token."""
    size, nbytes = GGML_QUANT_SIZES[T(CACHE_TYPES[cache_type])]
    return head_dim // size * nbytes


def cache_bytes(n_layer: int, n_ctx: int, n_head_kv: int, head_dim: int, types: CacheTypes) -> int:
    """The KV cache's size when every slot is filled: its rows, and the float32 key shift of
    each span of SHIFT_SPAN slots where keys are quantized (1/256 of an f32 cache's keys)."""
    per_slot = row_bytes(types.k, head_dim) + row_bytes(types.v, head_dim)
    shifts = n_layer * n_head_kv * n_ctx * head_dim * 4 // SHIFT_SPAN if types.k in ROTATED else 0
    return n_layer * n_head_kv * n_ctx * per_slot + shifts
