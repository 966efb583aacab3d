"""NaN and Inf in the weights, found at load by a scan of the block scales.

A quantized block is its fp16 scale (and min) times small integers, so a block holds a
NaN or Inf exactly when one of its fp16 scale fields does. Reading those 2-4 bytes of
every block costs a strided pass over the tensor, not a dequantization. Float tensors
(F32, F16, BF16: in practice the norm vectors) have every value checked.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from nanosmol.quants.blocks import block_geometry

# Byte offsets of the fp16 scale fields in one block (ggml-common.h's block structs).
SCALE_FIELDS = {
    T.Q4_0: (0,), T.Q4_1: (0, 2), T.Q5_0: (0,), T.Q5_1: (0, 2), T.Q8_0: (0,),
    T.Q2_K: (80, 82), T.Q3_K: (108,), T.Q4_K: (0, 2), T.Q5_K: (0, 2), T.Q6_K: (208,),
}
SCANNED = frozenset(SCALE_FIELDS) | {T.F32, T.F16, T.BF16}
# Exponent bits all set: Inf or NaN.
F16_EXPONENT, BF16_EXPONENT, F32_EXPONENT = 0x7C00, 0x7F80, 0x7F800000


class NonFiniteWeightsError(ValueError):
    """A tensor holds NaN or Inf: the model would compute garbage."""


def has_nonfinite(raw: np.ndarray, qtype) -> bool:
    """Does this tensor (its raw bytes) hold a NaN or Inf value or block scale?"""
    qtype = T(qtype)
    if qtype == T.F32:
        return _any_exponent_full(raw.view(np.uint32), F32_EXPONENT)
    if qtype == T.F16:
        return _any_exponent_full(raw.view(np.uint16), F16_EXPONENT)
    if qtype == T.BF16:
        return _any_exponent_full(raw.view(np.uint16), BF16_EXPONENT)
    _, block_bytes = block_geometry(qtype)
    blocks = raw.reshape(-1, block_bytes)
    return any(_any_exponent_full(blocks[:, o : o + 2].view(np.uint16), F16_EXPONENT) for o in SCALE_FIELDS[qtype])


def _any_exponent_full(bits: np.ndarray, mask: int) -> bool:
    return bool(np.any((bits & bits.dtype.type(mask)) == mask))


def nonfinite_tensors(gguf, names=None) -> list[str]:
    """The tensors (of `names`, default all) whose values or block scales hold NaN or Inf."""
    names = gguf.tensors if names is None else [n for n in names if n in gguf.tensors]
    tensors = gguf.tensors
    return [n for n in names if tensors[n].type in SCANNED and has_nonfinite(gguf.tensor_data(n), tensors[n].type)]


def nonfinite_problem(gguf, name: str) -> str:
    where = "values" if gguf.tensors[name].type in (T.F32, T.F16, T.BF16) else "values in its block scales"
    return f"tensor {name} holds NaN or Inf {where}"


def check_finite(gguf, names=None) -> None:
    bad = nonfinite_tensors(gguf, names)
    if bad:
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise NonFiniteWeightsError(nonfinite_problem(gguf, bad[0]) + more)
