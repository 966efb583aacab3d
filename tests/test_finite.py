"""NaN and Inf weights: the scan of block scales at load, against gguf-py's dequantization."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

import nanosmol
from conftest import MICRO
from nanosmol.cli import main
from nanosmol.finite import SCALE_FIELDS, NonFiniteWeightsError, has_nonfinite, nonfinite_tensors
from nanosmol.gguf_file import GGUFFile

# A micro file holding each type, and a tensor of that type in it.
FILES = ["micro-llama-F32.gguf", "micro-llama-F16.gguf", "micro-llama-BF16.gguf", "micro-llama-Q8_0.gguf",
         "micro-llama-Q4_0.gguf", "micro-llama-Q4_1.gguf", "micro-llama-Q5_0.gguf", "micro-llama-Q5_1.gguf",
         "micro-llama-Q2_K.gguf", "micro-llama-Q3_K_M.gguf", "micro-llama-Q4_K_M.gguf", "micro-llama-Q5_K_M.gguf",
         "micro-llama-Q6_K.gguf"]


def tensors_by_type() -> dict[T, tuple[str, str]]:
    found = {}
    for name in FILES:
        for t in GGUFFile(MICRO / name).tensors.values():
            found.setdefault(t.type, (name, t.name))
    return found


TYPES = tensors_by_type()


def poisoned(tmp_path, file: str, tensor: str, field: int, value: float, block: int = 3):
    """A copy of the file with one fp16 scale field (or float value) of one block set to value."""
    g = GGUFFile(MICRO / file)
    t = g.tensors[tensor]
    raw = bytearray((MICRO / file).read_bytes())
    if t.type == T.F32:
        patch = np.float32(value).tobytes()
        pos = t.offset + 4 * block
    elif t.type == T.BF16:
        patch = np.float32(value).tobytes()[2:]
        pos = t.offset + 2 * block
    elif t.type == T.F16:
        patch, pos = np.float16(value).tobytes(), t.offset + 2 * block
    else:
        from gguf import GGML_QUANT_SIZES

        patch = np.float16(value).tobytes()
        pos = t.offset + block * GGML_QUANT_SIZES[t.type][1] + field
    raw[pos : pos + len(patch)] = patch
    path = tmp_path / f"poisoned-{t.type.name}.gguf"
    path.write_bytes(bytes(raw))
    return path


def test_every_supported_type_is_covered():
    assert set(TYPES) == set(SCALE_FIELDS) | {T.F32, T.F16, T.BF16}


@pytest.mark.parametrize("qtype", sorted(TYPES, key=lambda t: t.value), ids=lambda t: t.name)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_scan_sees_what_dequantization_sees(tmp_path, qtype, value):
    """Each scale field the scan reads is one whose NaN/Inf poisons the block (per gguf-py)."""
    file, tensor = TYPES[qtype]
    assert not has_nonfinite(GGUFFile(MICRO / file).tensor_data(tensor), qtype)
    for field in SCALE_FIELDS.get(qtype, (0,)):
        g = GGUFFile(poisoned(tmp_path, file, tensor, field, value))
        raw = g.tensor_data(tensor)
        assert has_nonfinite(raw, qtype)
        with np.errstate(invalid="ignore"):
            assert not np.isfinite(dequantize(np.array(raw), qtype)).all()
        assert nonfinite_tensors(g) == [tensor]


def test_load_names_the_tensor_and_inspector_agrees(tmp_path):
    file, tensor = TYPES[T.Q4_K]
    path = poisoned(tmp_path, file, tensor, 0, np.nan)
    with pytest.raises(NonFiniteWeightsError, match=f"tensor {tensor} holds NaN or Inf"):
        nanosmol.load(path, n_ctx=32)
    report = json.loads(CliRunner().invoke(main, ["inspect-gguf", "--json", str(path)]).stdout)
    assert report["validation"]["problems"] == [f"tensor {tensor} holds NaN or Inf values in its block scales"]
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(path), "-n", "2", "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("nanosmol: compiling")]
    assert lines == [f"error: {path}: tensor {tensor} holds NaN or Inf values in its block scales"]


def test_overflowing_activations_end_in_one_line(tmp_path):
    """Finite weights can still overflow float32: the first logits are checked too."""
    g = GGUFFile(MICRO / "micro-llama-F32.gguf")
    norm = g.tensors["output_norm.weight"]
    raw = bytearray((MICRO / "micro-llama-F32.gguf").read_bytes())
    raw[norm.offset : norm.offset + norm.nbytes] = np.full(norm.nbytes // 4, 3e38, np.float32).tobytes()
    path = tmp_path / "overflowing.gguf"
    path.write_bytes(bytes(raw))
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(path), "--raw", "-n", "2", "--temp",
                           "0", "hi"], capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("nanosmol: compiling")]
    assert proc.returncode == 2 and lines == [f"error: {path}: the model computed NaN or Inf logits: its weights "
                                             "overflow float32"]


def test_workers_take_the_callers_numpy_error_settings():
    """Prefill's tiles run on worker threads; np.errstate is per thread (fuzz case 16938 printed
    an overflow warning from a worker although the caller had silenced them)."""
    from nanosmol.workers import parallel_map

    def overflow(_):
        return np.float32(3e38) * np.float32(10)

    with np.errstate(over="raise"):
        with pytest.raises(FloatingPointError):
            parallel_map(overflow, [0, 1])
    with np.errstate(over="ignore"):
        assert parallel_map(overflow, [0]) == [np.inf]
