"""Writing a GGUF file with gguf-py's GGUFWriter: one tensor at a time, atomically.

The header and every tensor's name, shape and type go first; then each tensor's bytes are
made (read, quantized) and written in turn, so that memory holds one tensor, not the model.
The file is written under a temporary name in the target's folder and renamed at the end:
an error or Ctrl-C leaves neither a broken file nor the temporary one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter


@dataclass(frozen=True)
class MetadataEntry:
    key: str
    value: Any
    type: GGUFValueType
    element_type: GGUFValueType | None = None  # of an array


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]  # GGUF order: row length first
    type: GGMLQuantizationType
    make: Callable[[], np.ndarray]  # the tensor's bytes, made when its turn comes
    source: str = ""  # what it was made from, for the progress line (e.g. "F16")
    release: Callable[[], None] | None = None  # frees what make read, once the bytes are written

    @property
    def nbytes(self) -> int:
        block_size, block_bytes = GGML_QUANT_SIZES[self.type]
        return int(np.prod(self.shape)) // block_size * block_bytes

    @property
    def byte_shape(self) -> tuple[int, ...]:
        """numpy order, the last axis in bytes: how GGUFWriter takes raw tensor data."""
        outer = tuple(reversed(self.shape[1:]))
        return (*outer, self.nbytes // max(1, int(np.prod(outer))))


def progress_line(done: int, total: int, plan: TensorPlan, seconds: float) -> str:
    """One line per tensor, e.g. `[ 3/39] blk.0.attn_q.weight  [2048, 2048]  F16 -> Q4_K  2.25 MiB  0.41 s`."""
    width = len(str(total))
    change = plan.type.name if plan.source in ("", plan.type.name) else f"{plan.source} -> {plan.type.name}"
    return (f"[{done:{width}}/{total}] {plan.name:<28} {list(plan.shape)!s:<14} {change:<12} "
            f"{plan.nbytes / 2**20:8.2f} MiB {seconds:6.2f} s")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`: renamed to it if the block ends well, removed if not."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp's file is private; the result should not be
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


Progress = Callable[[int, int, TensorPlan, float], None]  # (tensors done, of all, the last one, its seconds)


def write_gguf(path: str | os.PathLike, arch: str, metadata: list[MetadataEntry], tensors: list[TensorPlan],
               progress: Progress | None = None) -> None:
    """Write a GGUF file: the metadata (general.architecture is `arch`), then each tensor as
    its plan makes it, reporting each to `progress`."""
    with atomic_file(path) as temp:
        writer = GGUFWriter(temp, arch)
        try:
            for entry in metadata:
                if entry.key == "general.architecture":
                    continue  # GGUFWriter writes it first
                if entry.key == "general.alignment":
                    writer.data_alignment = int(entry.value)
                writer.add_key_value(entry.key, entry.value, entry.type, sub_type=entry.element_type)
            for plan in tensors:
                writer.add_tensor_info(plan.name, plan.byte_shape, np.dtype(np.uint8), plan.nbytes, raw_dtype=plan.type)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for i, plan in enumerate(tensors):
                start = time.perf_counter()
                data = np.ascontiguousarray(plan.make()).view(np.uint8)
                if data.nbytes != plan.nbytes:
                    raise ValueError(f"tensor {plan.name}: made {data.nbytes} bytes, expected {plan.nbytes}")
                writer.write_tensor_data(data.reshape(-1))
                del data
                if plan.release is not None:
                    plan.release()
                if progress is not None:
                    progress(i + 1, len(tensors), plan, time.perf_counter() - start)
        finally:
            writer.close()
