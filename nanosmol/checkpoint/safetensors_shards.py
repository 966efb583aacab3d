"""The tensors of a folder's safetensors files, as raw bytes of the memory-mapped shards.

The `safetensors` library opens each shard and checks its header (JSON, dtypes, shapes,
offsets that cover the file exactly). Its numpy interface copies every tensor it returns
and has no bfloat16, so the bytes themselves are read here, zero-copy, from a memory map at
the offsets that checked header gives: a BF16 weight stays BF16 and is widened to float32
row by row by the same kernels that run BF16 GGUF files.
"""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from nanosmol.gguf_file import drop_pages

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
HEADER_LENGTH_BYTES = 8  # a little-endian u64: the length of the JSON header that follows


class CheckpointError(ValueError):
    """The folder is not a checkpoint this engine can read."""


@dataclass(frozen=True)
class StoredTensor:
    name: str
    dtype: str  # safetensors' code: "F32", "F16", "BF16", ...
    shape: tuple[int, ...]  # row-major, slowest dimension first (PyTorch order)
    data: np.ndarray  # uint8 view of the mapped shard
    mapping: mmap.mmap  # the shard's map, whose pages release_pages gives back
    offset: int  # of data in the shard

    def release_pages(self) -> None:
        drop_pages(self.mapping, self.offset, self.data.size)


def shard_names(folder: Path) -> dict[str, str]:
    """Tensor name -> the shard file holding it: from model.safetensors.index.json, or every
    tensor of model.safetensors."""
    index = folder / INDEX_FILE
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{INDEX_FILE} has no weight_map of tensor names to shard files")
        for shard in set(weight_map.values()):
            if Path(shard).name != shard or shard in ("", ".", ".."):
                raise CheckpointError(f"{INDEX_FILE} names the shard {shard[:80]!r}, which is not a file in the folder")
        return weight_map
    if (folder / SINGLE_FILE).exists():
        return {name: SINGLE_FILE for name in read_shard(folder / SINGLE_FILE)}
    raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in the folder")


def read_shard(path: Path) -> dict[str, StoredTensor]:
    """Every tensor of one safetensors file, its bytes mapped, not read."""
    if not path.exists():
        raise CheckpointError(f"shard {path.name} is missing")
    try:
        with safe_open(path, framework="numpy"):
            pass  # the library's checks of the header, before we trust its offsets
    except SafetensorError as e:
        raise CheckpointError(f"shard {path.name} is not a valid safetensors file: {e}") from None
    with open(path, "rb") as f:
        header_length = int.from_bytes(f.read(HEADER_LENGTH_BYTES), "little")
        header = json.loads(f.read(header_length))
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data = np.frombuffer(mapped, np.uint8)
    start = HEADER_LENGTH_BYTES + header_length
    return {
        name: StoredTensor(name, entry["dtype"], tuple(entry["shape"]),
                           data[start + entry["data_offsets"][0] : start + entry["data_offsets"][1]],
                           mapped, start + entry["data_offsets"][0])
        for name, entry in header.items() if name != "__metadata__"
    }


def read_tensors(folder: Path, where: dict[str, str], wanted: set[str]) -> dict[str, StoredTensor]:
    """The wanted tensors of the folder's shards (where: shard_names), opening only the shards that hold them."""
    missing = sorted(wanted - set(where))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CheckpointError(f"the checkpoint has no tensor {missing[0]}{more}")
    tensors: dict[str, StoredTensor] = {}
    for shard in sorted({where[name] for name in wanted}):
        stored = read_shard(folder / shard)
        for name in wanted:
            if where[name] == shard:
                if name not in stored:
                    raise CheckpointError(f"shard {shard} does not hold {name}, as {INDEX_FILE} says it does")
                tensors[name] = stored[name]
    return tensors


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path.name} is not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path.name} does not hold a JSON object")
    return value
