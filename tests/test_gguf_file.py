"""The GGUF parser against gguf-py, and against hostile files: only GGUFError may escape."""

from __future__ import annotations

import os
import struct
import tempfile
import tracemalloc

import gguf
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import MICRO, MICRO_FILES, VOCAB_LLAMA_BPE
from nanosmol.gguf_file import GGUFError, GGUFFile

SCRATCH = tempfile.mkdtemp(prefix="nanosmol-gguf-tests-")


def write_bytes(data: bytes, name: str = "mutated.gguf") -> str:
    path = os.path.join(SCRATCH, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


# -- agreement with gguf-py on real files -------------------------------------------


@pytest.mark.parametrize("name", MICRO_FILES)
def test_fixture_matches_gguf_py(name):
    path = MICRO / name
    ours = GGUFFile(path)
    reader = gguf.GGUFReader(path)
    assert set(ours.metadata) == {k for k in reader.fields if not k.startswith("GGUF.")}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        expected = field.contents()
        if isinstance(expected, float):
            assert ours.metadata[key] == pytest.approx(expected)
        else:
            assert ours.metadata[key] == expected, key
    assert [t.name for t in reader.tensors] == list(ours.tensors)
    for t in reader.tensors:
        mine = ours.tensors[t.name]
        assert mine.type == t.tensor_type
        assert list(mine.shape) == [int(d) for d in t.shape]
        assert mine.offset == t.data_offset
        assert mine.nbytes == t.n_bytes
        assert np.array_equal(ours.tensor_data(t.name), np.asarray(t.data).view(np.uint8).reshape(-1))


def test_vocab_file_strings_match_gguf_py():
    ours = GGUFFile(VOCAB_LLAMA_BPE)
    reader = gguf.GGUFReader(VOCAB_LLAMA_BPE)
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"):
        assert ours.metadata[key] == reader.fields[key].contents()
    assert len(ours.metadata["tokenizer.ggml.tokens"]) == 128256


# -- round trip through gguf.GGUFWriter ---------------------------------------------

scalar_values = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: (v, gguf.GGUFValueType.UINT32)),
    st.integers(-(2**31), 2**31 - 1).map(lambda v: (v, gguf.GGUFValueType.INT32)),
    st.integers(-(2**63), 2**63 - 1).map(lambda v: (v, gguf.GGUFValueType.INT64)),
    st.integers(0, 255).map(lambda v: (v, gguf.GGUFValueType.UINT8)),
    st.floats(allow_nan=False, width=32).map(lambda v: (v, gguf.GGUFValueType.FLOAT32)),
    st.floats(allow_nan=False).map(lambda v: (v, gguf.GGUFValueType.FLOAT64)),
    st.booleans().map(lambda v: (v, gguf.GGUFValueType.BOOL)),
    st.text(max_size=40).map(lambda v: (v, gguf.GGUFValueType.STRING)),
)
array_values = st.one_of(
    st.lists(st.text(max_size=12), min_size=1, max_size=30).map(
        lambda v: (v, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)),
    st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=30).map(
        lambda v: (v, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32)),
    st.lists(st.floats(allow_nan=False, width=32), min_size=1, max_size=30).map(
        lambda v: (v, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)),
)
metadata_strategy = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=20).filter(
        lambda k: k not in ("general.architecture", "general.alignment")),
    st.one_of(scalar_values, array_values),
    max_size=8,
)
tensor_types = st.sampled_from([
    gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.Q8_0,
    gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K, gguf.GGMLQuantizationType.Q5_0,
])


def write_gguf(path: str, metadata: dict, tensors: list[tuple[gguf.GGMLQuantizationType, int, int]]) -> None:
    writer = gguf.GGUFWriter(path, "llama")
    for key, spec in metadata.items():
        if len(spec) == 3:
            writer.add_key_value(key, spec[0], spec[1], sub_type=spec[2])
        else:
            writer.add_key_value(key, spec[0], spec[1])
    rng = np.random.default_rng(0)
    for i, (qtype, rows, blocks) in enumerate(tensors):
        block_size, type_size = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(rows, blocks * type_size), dtype=np.uint8)
        writer.add_tensor(f"t{i}", raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    metadata=metadata_strategy,
    tensors=st.lists(st.tuples(tensor_types, st.integers(1, 4), st.integers(1, 3)), max_size=4),
)
def test_writer_round_trip(metadata, tensors):
    path = os.path.join(SCRATCH, "written.gguf")
    write_gguf(path, metadata, tensors)
    parsed = GGUFFile(path)
    assert parsed.metadata["general.architecture"] == "llama"
    for key, spec in metadata.items():
        value = parsed.metadata[key]
        if spec[1] == gguf.GGUFValueType.FLOAT32:
            assert value == np.float32(spec[0])
        elif len(spec) == 3 and spec[2] == gguf.GGUFValueType.FLOAT32:
            assert value == np.asarray(spec[0], np.float32).tolist()
        else:
            assert value == spec[0]
    assert len(parsed.tensors) == len(tensors)
    reader = gguf.GGUFReader(path)
    for t in reader.tensors:
        assert np.array_equal(parsed.tensor_data(t.name), np.asarray(t.data).view(np.uint8).reshape(-1))


# -- hostile files ------------------------------------------------------------------


def small_valid_file() -> bytes:
    path = os.path.join(SCRATCH, "base.gguf")
    write_gguf(
        path,
        {
            "tokenizer.ggml.tokens": (["a", "bb", "ccc", "é"], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING),
            "llama.block_count": (2, gguf.GGUFValueType.UINT32),
            "general.name": ("tiny", gguf.GGUFValueType.STRING),
            "scores": ([0.5, 1.5], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32),
        },
        [(gguf.GGMLQuantizationType.Q8_0, 2, 1), (gguf.GGMLQuantizationType.F32, 1, 1)],
    )
    with open(path, "rb") as f:
        return f.read()


BASE = small_valid_file()
FIXTURE_HEAD = (MICRO / "micro-smollm3-Q4_K_M.gguf").read_bytes()


def parse_only_gguf_error(data: bytes) -> GGUFFile | None:
    """Parse, allowing only GGUFError out; also bound the memory the parser allocates."""
    path = write_bytes(data)
    tracemalloc.start()
    try:
        return GGUFFile(path)
    except GGUFError as e:
        assert "at byte" in str(e)
        return None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # Python objects for N strings cost ~60 bytes each, at least 9 file bytes each.
        assert peak < 16 * len(data) + (1 << 20), f"parser allocated {peak} bytes for a {len(data)}-byte file"


def data_end(data: bytes) -> int:
    """Where the last tensor's bytes end: the writer pads past it to the alignment."""
    parsed = GGUFFile(write_bytes(data, "intact.gguf"))
    return max(t.offset + t.nbytes for t in parsed.tensors.values())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, data_end(BASE) - 1))
def test_truncated_small_file_raises(cut):
    with pytest.raises(GGUFError):
        GGUFFile(write_bytes(BASE[:cut]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(0, data_end(FIXTURE_HEAD) - 1))
def test_truncated_fixture_raises(cut):
    with pytest.raises(GGUFError):
        GGUFFile(write_bytes(FIXTURE_HEAD[:cut]))


def mutate(data: bytes, edits: list[tuple[int, bytes]]) -> bytes:
    out = bytearray(data)
    for pos, patch in edits:
        pos %= len(out)
        out[pos : pos + len(patch)] = patch
    return bytes(out[: len(data)])


hostile_patches = st.one_of(
    st.binary(min_size=1, max_size=4),
    st.sampled_from([0, 1, 2**31 - 1, 2**32 - 1, 2**62, 2**63 - 1, 2**64 - 1]).map(lambda v: struct.pack("<Q", v)),
    st.integers(0, 2**32 - 1).map(lambda v: struct.pack("<I", v)),
)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(BASE) - 1), hostile_patches), min_size=1, max_size=4))
def test_mutated_small_file_only_raises_gguf_error(edits):
    parse_only_gguf_error(mutate(BASE, edits))


HEADER_END = GGUFFile(MICRO / "micro-smollm3-Q4_K_M.gguf").data_offset


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, HEADER_END - 1), hostile_patches), min_size=1, max_size=3))
def test_mutated_fixture_header_only_raises_gguf_error(edits):
    parse_only_gguf_error(mutate(FIXTURE_HEAD, edits))


# -- specific defects, each with its own message ----------------------------------------


def patched_base(offset: int, fmt: str, value) -> bytes:
    out = bytearray(BASE)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated file"),
        (b"GGML" + BASE[4:], "bad magic"),
        (patched_base(4, "<I", 1), "unsupported GGUF version 1"),
        (patched_base(4, "<I", 99), "unsupported GGUF version 99"),
        (patched_base(8, "<Q", 2**60), "tensor count"),
        (patched_base(16, "<Q", 2**60), "metadata count"),
        (patched_base(24, "<Q", 2**63), "runs past the end"),  # first key's length
        (BASE[:20], "truncated"),
    ],
    ids=["empty", "magic", "version-1", "version-99", "tensor-count", "kv-count", "key-length", "header"],
)
def test_specific_defects(data, message):
    with pytest.raises(GGUFError, match=message):
        GGUFFile(write_bytes(data))


def test_unknown_tensor_type_and_outside_data():
    parsed = GGUFFile(write_bytes(BASE))
    last = max(parsed.tensors.values(), key=lambda t: t.offset)
    # Find the tensor info of `last` and corrupt its type, then its offset.
    name = last.name.encode()
    info = BASE.index(struct.pack("<Q", len(name)) + name)
    type_pos = info + 8 + len(name) + 4 + 8 * len(last.shape)
    with pytest.raises(GGUFError, match="unknown type 200"):
        GGUFFile(write_bytes(patched_base(type_pos, "<I", 200)))
    with pytest.raises(GGUFError, match="outside the file"):
        GGUFFile(write_bytes(patched_base(type_pos + 4, "<Q", 1 << 40)))
    with pytest.raises(GGUFError, match="not aligned"):
        GGUFFile(write_bytes(patched_base(type_pos + 4, "<Q", 1)))
    with pytest.raises(GGUFError, match="overlaps"):
        GGUFFile(write_bytes(patched_base(type_pos + 4, "<Q", 0)))


def test_names_from_the_file_are_quoted_on_one_line():
    """A key whose length field swallowed the next bytes (fuzz case 3082) must not break the message's line."""
    key = b"general.name"
    pos = FIXTURE_HEAD.index(struct.pack("<Q", len(key)) + key)
    bad = bytearray(FIXTURE_HEAD)
    struct.pack_into("<Q", bad, pos, len(key) + 40)  # the key now runs into the value bytes
    with pytest.raises(GGUFError) as e:
        GGUFFile(write_bytes(bytes(bad)))
    assert str(e.value).isprintable() and "'general.name" in str(e.value) and len(str(e.value)) < 200
