"""GGUF files: a fast, defensive parser over one memory map of the whole file.

A GGUF file is untrusted input. Every length, count and offset is checked against
the bytes actually present before anything is allocated, and every problem is
reported as one `GGUFError` naming the byte offset and what is wrong.

gguf-py supplies the constants (type ids, block sizes); the parser is ours because
`gguf.GGUFReader` builds a numpy view per string and needs seconds on a large vocabulary.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 8

# Scalar metadata types: struct format and size in bytes.
_SCALAR_FORMATS = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
    GGUFValueType.BOOL: "<B",
}
_SCALAR_DTYPES = {t: np.dtype(f) for t, f in _SCALAR_FORMATS.items()}
_VALUE_TYPES = {t.value: t for t in GGUFValueType}
_TENSOR_TYPES = {t.value: t for t in GGMLQuantizationType}


def quoted(name: str, limit: int = 80) -> str:
    """A name from the file for a one-line message: repr escapes line breaks; a long one is cut."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class GGUFError(ValueError):
    """A malformed or unsupported GGUF file."""

    def __init__(self, offset: int, message: str):
        super().__init__(f"at byte {offset}: {message}")
        self.offset = offset


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: fastest-varying dimension first
    type: GGMLQuantizationType
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def rows(self) -> int:
        """Rows of the matrix view: the product of every dimension but the first."""
        n = 1
        for d in self.shape[1:]:
            n *= d
        return n

    @property
    def cols(self) -> int:
        return self.shape[0]


class _Cursor:
    """Reads little-endian values from a buffer, refusing to run past its end."""

    def __init__(self, buf, size: int, pos: int = 0):
        self.buf = buf
        self.size = size
        self.pos = pos

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise GGUFError(
                self.pos, f"truncated {what}: needs {n} bytes, {self.size - self.pos} left"
            )

    def scalar(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        (value,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return value

    def u32(self, what: str) -> int:
        return self.scalar("<I", what)

    def u64(self, what: str) -> int:
        return self.scalar("<Q", what)

    def string(self, what: str) -> str:
        start = self.pos
        n = self.u64(f"{what} length")
        if n > self.size - self.pos:
            raise GGUFError(start, f"{what} length {n} runs past the end of the file")
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise GGUFError(start, f"{what} is not valid UTF-8 ({e.reason})") from None

    def string_array(self, count: int, what: str) -> list[str]:
        # The hot loop of metadata parsing (128k tokens, 280k merges): keep it flat.
        buf, size, pos = self.buf, self.size, self.pos
        unpack = struct.Struct("<Q").unpack_from
        out = [None] * count
        i = 0
        try:
            for i in range(count):
                if size - pos < 8:
                    raise GGUFError(pos, f"truncated {what}[{i}] length")
                (n,) = unpack(buf, pos)
                pos += 8
                if n > size - pos:
                    raise GGUFError(pos, f"{what}[{i}] length {n} runs past the end of the file")
                out[i] = buf[pos : pos + n].decode("utf-8")
                pos += n
        except UnicodeDecodeError as e:
            raise GGUFError(pos - 8, f"{what}[{i}] is not valid UTF-8 ({e.reason})") from None
        self.pos = pos
        return out

    def value(self, vtype_id: int, what: str, depth: int = 0):
        start = self.pos
        vtype = _VALUE_TYPES.get(vtype_id)
        if vtype is None:
            raise GGUFError(start - 4, f"unknown value type {vtype_id} for {what}")
        if vtype == GGUFValueType.STRING:
            return self.string(what)
        if vtype == GGUFValueType.ARRAY:
            return self.array(what, depth)
        value = self.scalar(_SCALAR_FORMATS[vtype], what)
        return bool(value) if vtype == GGUFValueType.BOOL else value

    def array(self, what: str, depth: int):
        if depth >= MAX_ARRAY_NESTING:
            raise GGUFError(self.pos, f"{what}: arrays nested deeper than {MAX_ARRAY_NESTING}")
        etype_id = self.u32(f"{what} element type")
        count_pos = self.pos
        count = self.u64(f"{what} element count")
        etype = _VALUE_TYPES.get(etype_id)
        if etype is None:
            raise GGUFError(count_pos - 4, f"unknown array element type {etype_id} for {what}")
        # Each element takes at least one byte (eight for a string or array header):
        # a count the remaining bytes cannot hold is refused before allocating anything.
        min_size = _SCALAR_DTYPES[etype].itemsize if etype in _SCALAR_DTYPES else (
            8 if etype == GGUFValueType.STRING else 12)
        if count > (self.size - self.pos) // min_size:
            raise GGUFError(count_pos, f"{what}: {count} elements run past the end of the file")
        if etype == GGUFValueType.STRING:
            return self.string_array(count, what)
        if etype == GGUFValueType.ARRAY:
            return [self.array(f"{what}[{i}]", depth + 1) for i in range(count)]
        dtype = _SCALAR_DTYPES[etype]
        values = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * dtype.itemsize
        return values.astype(bool).tolist() if etype == GGUFValueType.BOOL else values.tolist()


class GGUFFile:
    """A parsed GGUF file: metadata, tensor infos and zero-copy views of tensor data."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        with open(self.path, "rb") as f:
            self.file_size = os.fstat(f.fileno()).st_size
            if self.file_size < 4:
                raise GGUFError(0, f"truncated file: {self.file_size} bytes, not a GGUF file")
            self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.data = np.frombuffer(self._mmap, dtype=np.uint8)
        cur = _Cursor(self._mmap, self.file_size)
        self._parse_header(cur)
        self.metadata = self._parse_metadata(cur)
        self.alignment = self._parse_alignment()
        infos = self._parse_tensor_infos(cur)
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        self.tensors = self._place_tensors(infos)

    # -- parsing --------------------------------------------------------------------
    def _parse_header(self, cur: _Cursor) -> None:
        magic = bytes(self._mmap[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(0, f"bad magic {magic!r}, expected {GGUF_MAGIC!r}: not a GGUF file")
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in SUPPORTED_VERSIONS:
            raise GGUFError(4, f"unsupported GGUF version {self.version} (supported: 2, 3)")
        self.tensor_count = cur.u64("tensor count")
        self.kv_count = cur.u64("metadata count")
        # A key/value pair takes at least 12 bytes, a tensor info at least 24.
        if self.kv_count > cur.size // 12:
            raise GGUFError(16, f"metadata count {self.kv_count} exceeds what the file can hold")
        if self.tensor_count > cur.size // 24:
            raise GGUFError(8, f"tensor count {self.tensor_count} exceeds what the file can hold")

    def _parse_metadata(self, cur: _Cursor) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        self.metadata_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]] = {}  # (type, array element type)
        for i in range(self.kv_count):
            key_pos = cur.pos
            key = cur.string(f"metadata key #{i}")
            label = key if key.isprintable() and len(key) <= 80 else quoted(key)
            if key in metadata:
                raise GGUFError(key_pos, f"duplicate metadata key {quoted(key)}")
            vtype = cur.u32(f"type of {quoted(key)}")
            value_pos = cur.pos
            metadata[key] = cur.value(vtype, label)
            element = struct.unpack_from("<I", self._mmap, value_pos)[0] if vtype == GGUFValueType.ARRAY else None
            self.metadata_types[key] = (_VALUE_TYPES[vtype], None if element is None else _VALUE_TYPES[element])
        return metadata

    def _parse_alignment(self) -> int:
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFError(0, f"general.alignment {alignment!r} is not a power of two")
        return alignment

    def _parse_tensor_infos(self, cur: _Cursor) -> list[tuple[int, str, tuple, GGMLQuantizationType, int]]:
        infos = []
        for i in range(self.tensor_count):
            info_pos = cur.pos
            name = cur.string(f"tensor #{i} name")
            n_dims = cur.u32(f"tensor {quoted(name)} dimension count")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(cur.pos - 4, f"tensor {quoted(name)} has {n_dims} dimensions (1..{MAX_DIMS})")
            shape = tuple(cur.u64(f"tensor {quoted(name)} dimension") for _ in range(n_dims))
            type_id = cur.u32(f"tensor {quoted(name)} type")
            qtype = _TENSOR_TYPES.get(type_id)
            if qtype is None:
                raise GGUFError(cur.pos - 4, f"tensor {quoted(name)} has unknown type {type_id}")
            offset = cur.u64(f"tensor {quoted(name)} offset")
            infos.append((info_pos, name, shape, qtype, offset))
        return infos

    def _place_tensors(self, infos) -> dict[str, TensorInfo]:
        tensors: dict[str, TensorInfo] = {}
        for info_pos, name, shape, qtype, rel_offset in infos:
            if name in tensors:
                raise GGUFError(info_pos, f"duplicate tensor name {quoted(name)}")
            nbytes = _tensor_nbytes(info_pos, name, shape, qtype)
            if rel_offset % self.alignment:
                raise GGUFError(info_pos, f"tensor {quoted(name)} offset {rel_offset} is not aligned to {self.alignment}")
            offset = self.data_offset + rel_offset
            if offset + nbytes > self.file_size:
                raise GGUFError(
                    info_pos,
                    f"tensor {quoted(name)} data [{offset}, {offset + nbytes}) lies outside the file "
                    f"({self.file_size} bytes): truncated tensor data",
                )
            tensors[name] = TensorInfo(name, shape, qtype, offset, nbytes)
        _check_no_overlap(tensors.values())
        return tensors

    # -- access ---------------------------------------------------------------------
    def tensor_data(self, name: str) -> np.ndarray:
        """The tensor's bytes as a zero-copy uint8 view of the mapped file."""
        t = self.tensors[name]
        return self.data[t.offset : t.offset + t.nbytes]

    def release(self, name: str) -> None:
        """Drop the tensor's pages from this process's memory (not from the page cache): a
        pass over a whole file, one tensor at a time, then keeps one tensor resident."""
        t = self.tensors[name]
        drop_pages(self._mmap, t.offset, t.nbytes)

    def close(self) -> None:
        self.data = None
        try:
            self._mmap.close()
        except BufferError:
            pass  # views still alive elsewhere: the map closes when they go

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def drop_pages(mapping: mmap.mmap, offset: int, nbytes: int) -> None:
    """Give back the pages of mapping[offset : offset + nbytes] (MADV_DONTNEED, where the OS has it)."""
    start = offset - offset % mmap.PAGESIZE
    if nbytes and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED, start, offset + nbytes - start)


def _tensor_nbytes(info_pos: int, name: str, shape: tuple, qtype: GGMLQuantizationType) -> int:
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_elements = 1
    for d in shape:
        n_elements *= d  # Python ints cannot overflow; the bound below catches absurd products
    if n_elements >= 2**62:
        raise GGUFError(info_pos, f"tensor {quoted(name)} shape {list(shape)} overflows")
    if shape[0] % block_size:
        raise GGUFError(
            info_pos,
            f"tensor {quoted(name)} row length {shape[0]} is not a multiple of the {qtype.name} block size {block_size}",
        )
    return n_elements // block_size * type_size


def _check_no_overlap(tensors) -> None:
    ordered = sorted(tensors, key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise GGUFError(b.offset, f"tensor {quoted(b.name)} overlaps tensor {quoted(a.name)}")
