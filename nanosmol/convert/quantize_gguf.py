"""Quantize a GGUF file to one of llama.cpp's mixes: `nanosmol quantize IN OUT TYPE`.

The planning (plan_tensors) takes any checkpoint open_checkpoint returns: `nanosmol convert`
plans a Hugging Face folder's tensors with it.

The metadata is copied with its types (general.quantization_version and general.file_type
set last, as llama-quantize sets them); each tensor gets the type mixes.py chooses and is
read (F32, F16, BF16: converted by numpy; a quantized one dequantized), quantized and
written in turn, in llama.cpp's order (layer, then name). A tensor already in its chosen
type is copied as it is. From the same source, the file is llama-quantize's byte for byte.
"""

from __future__ import annotations

import os

import numpy as np
from gguf import GGUFValueType
from gguf import GGMLQuantizationType as T

from nanosmol.checkpoint import HFFolder
from nanosmol.config import ModelConfig, tensor_problems
from nanosmol.convert.writer import MetadataEntry, Progress, TensorPlan, write_gguf
from nanosmol.finite import SCANNED, NonFiniteWeightsError, has_nonfinite, nonfinite_problem
from nanosmol.gguf_file import GGUFFile, TensorInfo
from nanosmol.quants.blocks import SUPPORTED_TYPES
from nanosmol.quants.kernels import dequantize_tile
from nanosmol.quants.mixes import FLOAT_TYPES, Mix, layer_of, tensor_type
from nanosmol.quants.quantize import quantize_rows_with

GGML_QUANTIZATION_VERSION = 2  # the block layouts written here (ggml's GGML_QNT_VERSION)

Checkpoint = GGUFFile | HFFolder  # what open_checkpoint returns


class QuantizeError(ValueError):
    """The input cannot be quantized as asked."""


def quantize_gguf(source: str | os.PathLike, target: str | os.PathLike, mix: Mix, pure: bool = False,
                  allow_requantize: bool = False, progress: Progress | None = None) -> None:
    """Write `target`: the model in `source` with its tensors in `mix`'s types."""
    with GGUFFile(source) as gguf:
        config, plans = plan_tensors(gguf, mix, pure, allow_requantize)
        write_gguf(target, config.arch, copied_metadata(gguf, mix), plans, progress)


def plan_tensors(checkpoint: Checkpoint, mix: Mix, pure: bool = False, allow_requantize: bool = False,
                 others_as: T | None = None) -> tuple[ModelConfig, list[TensorPlan]]:
    """The checked config of a checkpoint (a GGUFFile, or anything open_checkpoint returns)
    and a plan for each of its tensors in `mix`, in llama-quantize's order (layer, then name).
    others_as: the type of the tensors the mix leaves alone (norms); None keeps theirs."""
    config = ModelConfig.from_gguf(checkpoint.metadata, checkpoint.tensors.keys())
    problems = tensor_problems(config, checkpoint.tensors)
    if problems:
        raise QuantizeError(problems[0] + (f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""))
    in_llama_cpp_order = sorted(checkpoint.tensors.values(), key=lambda t: (layer_of(t.name), t.name))
    return config, [plan_tensor(checkpoint, info, mix, config, pure, allow_requantize, others_as)
                    for info in in_llama_cpp_order]


def copied_metadata(gguf: GGUFFile, mix: Mix) -> list[MetadataEntry]:
    """The source's metadata and its types, then the quantization version and file type."""
    new = {"general.quantization_version": GGML_QUANTIZATION_VERSION, "general.file_type": int(mix.file_type)}
    kept = [MetadataEntry(key, value, *gguf.metadata_types[key]) for key, value in gguf.metadata.items() if key not in new]
    return kept + [MetadataEntry(key, value, GGUFValueType.UINT32) for key, value in new.items()]


def plan_tensor(gguf: Checkpoint, info: TensorInfo, mix: Mix, config: ModelConfig, pure: bool,
                allow_requantize: bool, others_as: T | None = None) -> TensorPlan:
    target = tensor_type(info.name, info.shape, mix, config.n_layer, config.gqa_ratio, config.tied_embeddings, pure)
    if target is None:
        target = info.type if others_as is None else others_as
    release = lambda: gguf.release(info.name)  # noqa: E731  (the source's pages, once written)
    if target == info.type:
        return TensorPlan(info.name, info.shape, info.type, lambda: finite_copy(gguf, info), info.type.name, release)
    if info.type not in FLOAT_TYPES:
        if info.type not in SUPPORTED_TYPES:
            raise QuantizeError(f"tensor {info.name} is {info.type.name}, which nanosmol cannot read")
        if not allow_requantize:
            raise QuantizeError(f"tensor {info.name} is already quantized ({info.type.name}): quantize from an F32, "
                                f"F16 or BF16 file, or allow requantizing, which loses more than quantizing once")
    return TensorPlan(info.name, info.shape, target, lambda: quantized(gguf, info, target), info.type.name, release)


# NaN and Inf are looked for tensor by tensor, as each is read: a scan of the whole file first
# would read (and keep in memory) every page of it.

def finite_copy(gguf: Checkpoint, info: TensorInfo) -> np.ndarray:
    """The tensor's bytes as they are."""
    if info.type in SCANNED and has_nonfinite(gguf.tensor_data(info.name), info.type):
        raise NonFiniteWeightsError(nonfinite_problem(gguf, info.name))
    return gguf.tensor_data(info.name)


def quantized(gguf: Checkpoint, info: TensorInfo, target: T) -> np.ndarray:
    """The tensor in `target`'s blocks: uint8 [rows, row_bytes]."""
    raw = gguf.tensor_data(info.name).reshape(info.rows, -1)

    def read_rows(r0: int, r1: int) -> np.ndarray:
        rows = float_rows(raw, info.type, info.cols, r0, r1)
        if not np.isfinite(rows).all():
            raise NonFiniteWeightsError(nonfinite_problem(gguf, info.name))
        return rows

    return quantize_rows_with(read_rows, info.rows, info.cols, target)


def float_rows(raw: np.ndarray, qtype: T, cols: int, r0: int, r1: int) -> np.ndarray:
    """Rows r0..r1 of a tensor (its bytes as [rows, row_bytes]) as float32 [r1 - r0, cols]."""
    rows = raw[r0:r1]
    if qtype == T.F32:
        return rows.view(np.float32)
    if qtype == T.F16:
        return rows.view(np.float16).astype(np.float32)
    if qtype == T.BF16:
        return (rows.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return dequantize_tile(int(qtype), raw, r0, np.empty((r1 - r0, cols), np.float32))
