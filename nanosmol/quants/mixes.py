"""llama.cpp's quant mixes: which type each tensor of a llama-style model gets.

Written from llama-quant.cpp (llama_tensor_get_type and its fallbacks) for the mixes
llama-quantize names Q4_0 ... Q8_0, Q2_K, Q3_K_M, Q4_K_M, Q5_K_M, Q6_K and the float ones,
as it chooses them without an importance matrix for dense, untied or tied, llama-style
architectures (llama, smollm3): the attention V and FFN down projections of some layers,
and the output projection, get more bits; a k-quant on rows that are not a whole number of
256-value blocks falls back to a 32-value type. A pure function of the tensor's name and
shape and of the model's layer count, GQA ratio and tied embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGMLQuantizationType as T
from gguf import LlamaFileType as F

from nanosmol.quants.blocks import block_geometry

FLOAT_TYPES = (T.F32, T.F16, T.BF16)


@dataclass(frozen=True)
class Mix:
    name: str  # as llama-quantize spells it
    base: T  # the type of every tensor the rules below do not single out
    file_type: F  # general.file_type of the result


MIXES = {m.name: m for m in (
    Mix("F32", T.F32, F.ALL_F32), Mix("F16", T.F16, F.MOSTLY_F16), Mix("BF16", T.BF16, F.MOSTLY_BF16),
    Mix("Q8_0", T.Q8_0, F.MOSTLY_Q8_0), Mix("Q4_0", T.Q4_0, F.MOSTLY_Q4_0), Mix("Q4_1", T.Q4_1, F.MOSTLY_Q4_1),
    Mix("Q5_0", T.Q5_0, F.MOSTLY_Q5_0), Mix("Q5_1", T.Q5_1, F.MOSTLY_Q5_1), Mix("Q2_K", T.Q2_K, F.MOSTLY_Q2_K),
    Mix("Q3_K_M", T.Q3_K, F.MOSTLY_Q3_K_M), Mix("Q4_K_M", T.Q4_K, F.MOSTLY_Q4_K_M),
    Mix("Q5_K_M", T.Q5_K, F.MOSTLY_Q5_K_M), Mix("Q6_K", T.Q6_K, F.MOSTLY_Q6_K),
)}
ALIASES = {"Q3_K": "Q3_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M"}  # llama-quantize's

# A k-quant on rows that are not a multiple of 256 (llama.cpp's tensor_type_fallback).
FALLBACK = {T.Q2_K: T.Q4_0, T.Q3_K: T.Q4_0, T.Q4_K: T.Q5_0, T.Q5_K: T.Q5_1, T.Q6_K: T.Q8_0}


def find_mix(name: str) -> Mix:
    """The mix of that name (or alias), any case; a ValueError naming the choices."""
    key = ALIASES.get(name.upper(), name.upper())
    if key not in MIXES:
        raise ValueError(f"unknown type {name!r} (types: {', '.join([*MIXES, *ALIASES])})")
    return MIXES[key]


def is_quantizable(name: str, shape: tuple[int, ...]) -> bool:
    """Weight matrices are; vectors (norms) and what llama.cpp leaves alone are not."""
    dims = len(shape)
    while dims > 1 and shape[dims - 1] == 1:  # ggml_n_dims: trailing 1s do not count
        dims -= 1
    return dims >= 2 and name.endswith("weight") and "_norm.weight" not in name and "ffn_gate_inp" not in name


def uses_more_bits(layer: int, n_layers: int) -> bool:
    """The first and last eighth of the layers, and every third one between them."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def layer_of(name: str) -> int:
    return int(name.split(".")[1]) if name.startswith("blk.") else -1


def tensor_type(name: str, shape: tuple[int, ...], mix: Mix, n_layers: int, gqa_ratio: int = 1,
                tied_embeddings: bool = False, pure: bool = False) -> T | None:
    """The type llama-quantize gives this tensor (shape in GGUF order, row length first),
    or None where it keeps the tensor as it is. pure: every weight matrix in the mix's base
    type (llama-quantize --pure), k-quant fallbacks aside."""
    if not is_quantizable(name, shape):
        return None
    if mix.base in FLOAT_TYPES:
        return mix.base
    qtype = mix.base if pure else _mix_choice(name, shape[0], mix, n_layers, gqa_ratio, tied_embeddings)
    return fallback(qtype, shape[0])


def fallback(qtype: T, cols: int) -> T:
    """qtype, or the type llama.cpp falls back to when rows of `cols` values do not fit its blocks."""
    if cols % block_geometry(qtype)[0] == 0:
        return qtype
    qtype = FALLBACK.get(qtype, qtype)
    return qtype if cols % block_geometry(qtype)[0] == 0 else T.F16


def _mix_choice(name: str, cols: int, mix: Mix, n_layers: int, gqa_ratio: int, tied_embeddings: bool) -> T:
    role = name.split(".")[-2] if name.count(".") >= 1 else name
    layer = layer_of(name)
    if name == "output.weight" or (tied_embeddings and name == "token_embd.weight"):
        if cols % block_geometry(mix.base)[0]:
            return T.Q8_0
        return mix.base if mix.base == T.Q8_0 else T.Q6_K
    if role == "attn_v":  # llama.cpp counts V projections in layer order: the layer index
        if mix.name == "Q2_K":
            return T.Q4_K if gqa_ratio >= 4 else T.Q3_K
        if mix.name == "Q3_K_M":
            return T.Q5_K if layer < 2 else T.Q4_K
        if mix.name in ("Q4_K_M", "Q5_K_M") and uses_more_bits(layer, n_layers):
            return T.Q6_K
    elif role == "ffn_down":
        if mix.name == "Q2_K":
            return T.Q3_K
        if mix.name == "Q3_K_M":
            return T.Q5_K if layer < n_layers // 16 else T.Q4_K
        if mix.name in ("Q4_K_M", "Q5_K_M") and uses_more_bits(layer, n_layers):
            return T.Q6_K
    elif role == "attn_output":
        if mix.name == "Q2_K":
            return T.Q3_K
        if mix.name == "Q3_K_M":
            return T.Q4_K
    return mix.base
