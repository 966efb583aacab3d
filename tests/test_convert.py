"""`nanosmol quantize`: llama-quantize's files byte for byte, logits near llama.cpp's, atomic writes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType
from gguf.quants import dequantize

import nanosmol
from conftest import MICRO, micro_index
from nanosmol.cli import main
from nanosmol.convert import MetadataEntry, QuantizeError, TensorPlan, quantize_gguf, write_gguf
from nanosmol.gguf_file import GGUFFile
from nanosmol.quants.mixes import find_mix
from nanosmol.quants.quantize import quantize_rows

QUANTIZED = [e for e in micro_index() if e["ftype"] not in ("F32", "F16", "BF16")]


@pytest.mark.parametrize("entry", QUANTIZED, ids=lambda e: e["file"])
def test_the_file_is_llama_quantizes_byte_for_byte(entry, tmp_path):
    """llama-quantize made each quantized fixture from the F32 one: metadata, tensor order,
    types and blocks, ours is the same file."""
    out = tmp_path / "ours.gguf"
    quantize_gguf(MICRO / entry["file"].replace(entry["ftype"], "F32"), out, find_mix(entry["ftype"]))
    assert out.read_bytes() == (MICRO / entry["file"]).read_bytes()


def relative_error(ours: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("entry", QUANTIZED, ids=lambda e: e["file"])
def test_nanosmol_runs_our_file_near_llama_cpps_logits(entry, tmp_path):
    """Within test_model's tolerances of llama.cpp's logits for its file of the same type."""
    out = tmp_path / "ours.gguf"
    quantize_gguf(MICRO / entry["file"].replace(entry["ftype"], "F32"), out, find_mix(entry["ftype"]))
    model = nanosmol.load(out, n_ctx=64)
    for seq, tokens in entry["seqs"].items():
        expected = np.load(MICRO / entry["file"].replace(".gguf", f".{seq}.logits.npy"))
        ours = model.logits(tokens)
        assert relative_error(ours, expected) < 0.04
        assert np.mean(ours.argmax(1) == expected.argmax(1)) >= 0.85


@pytest.mark.parametrize("source", ["micro-llama-F16.gguf", "micro-smollm3-BF16.gguf"])
def test_f16_and_bf16_sources_are_read_exactly(source, tmp_path):
    out = tmp_path / "ours.gguf"
    quantize_gguf(MICRO / source, out, find_mix("Q6_K"), pure=True)
    ours, floats = GGUFFile(out), GGUFFile(MICRO / source)
    for name, t in ours.tensors.items():
        if t.type == T.Q6_K:
            info = floats.tensors[name]
            values = dequantize(floats.tensor_data(name), info.type).reshape(info.rows, info.cols)
            assert np.array_equal(ours.tensor_data(name).reshape(info.rows, -1), quantize_rows(values, T.Q6_K)), name


def test_pure_gives_every_matrix_the_base_type(tmp_path):
    out = tmp_path / "pure.gguf"
    quantize_gguf(MICRO / "micro-smollm3-F32.gguf", out, find_mix("Q4_K_M"), pure=True)
    types = {t.type for t in GGUFFile(out).tensors.values()}
    assert types == {T.Q4_K, T.F32}


def test_a_quantized_source_is_refused_unless_requantizing_is_allowed(tmp_path):
    out = tmp_path / "re.gguf"
    with pytest.raises(QuantizeError, match="already quantized \\(Q8_0\\)"):
        quantize_gguf(MICRO / "micro-llama-Q8_0.gguf", out, find_mix("Q4_0"))
    assert not out.exists()
    quantize_gguf(MICRO / "micro-llama-Q8_0.gguf", out, find_mix("Q4_0"), allow_requantize=True)
    requantized, direct, original = GGUFFile(out), GGUFFile(MICRO / "micro-llama-Q4_0.gguf"), GGUFFile(MICRO / "micro-llama-F32.gguf")
    assert {n: t.type for n, t in requantized.tensors.items()} == {n: t.type for n, t in direct.tensors.items()}

    def error(gguf: GGUFFile) -> float:  # squared distance of all weights from the F32 ones
        return sum(float(np.sum((dequantize(gguf.tensor_data(n), t.type).reshape(-1)
                                 - original.tensor_data(n).view(np.float32)) ** 2)) for n, t in gguf.tensors.items())

    assert error(direct) < error(requantized) < 1.1 * error(direct)  # Q8_0's rounding on top, a little


def test_same_type_tensors_are_copied(tmp_path):
    out = tmp_path / "copy.gguf"
    quantize_gguf(MICRO / "micro-llama-Q8_0.gguf", out, find_mix("Q8_0"))
    source, ours = GGUFFile(MICRO / "micro-llama-Q8_0.gguf"), GGUFFile(out)
    for name in source.tensors:
        assert np.array_equal(ours.tensor_data(name), source.tensor_data(name)), name


def plans_failing_at(second: int, error: BaseException) -> list[TensorPlan]:
    def fail():
        raise error

    ok = TensorPlan("a.weight", (32, 2), T.F32, lambda: np.ones(64, np.float32))
    return [ok, TensorPlan("b.weight", (32, 2), T.F32, fail if second else ok.make)]


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()], ids=["disk", "ctrl-c"])
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    target = tmp_path / "model.gguf"
    target.write_bytes(b"the old file")
    metadata = [MetadataEntry("general.name", "x", GGUFValueType.STRING)]
    with pytest.raises(type(error)):
        write_gguf(target, "llama", metadata, plans_failing_at(1, error))
    assert os.listdir(tmp_path) == ["model.gguf"] and target.read_bytes() == b"the old file"
    write_gguf(target, "llama", metadata, plans_failing_at(0, error))
    written = GGUFFile(target)
    assert os.listdir(tmp_path) == ["model.gguf"] and list(written.tensors) == ["a.weight", "b.weight"]
    assert written.metadata == {"general.architecture": "llama", "general.name": "x"}
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def quantize_command(*args):
    return CliRunner().invoke(main, ["quantize", *map(str, args)])


def test_command_reports_each_tensor_and_writes_the_file(tmp_path):
    out = tmp_path / "q.gguf"
    result = quantize_command(MICRO / "micro-llama-F32.gguf", out, "q4_k", "-t", "1")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 40 and lines[0].startswith("[ 1/39] output.weight") and "F32 -> Q6_K" in lines[0]
    assert lines[-1].startswith(f"wrote {out}: ") and "(Q4_K_M)" in lines[-1]
    assert out.read_bytes() == (MICRO / "micro-llama-Q4_K_M.gguf").read_bytes()


@pytest.mark.parametrize("source, target, qtype, message", [
    ("micro-llama-F32.gguf", "out.gguf", "Q7_K", "error: TYPE: unknown type 'Q7_K' (types: F32, F16, BF16, Q8_0"),
    ("micro-llama-Q4_0.gguf", "out.gguf", "Q8_0", "tensor output.weight is already quantized (Q6_K): quantize from"),
    ("micro-llama-F32.gguf", "missing/out.gguf", "Q8_0", "out.gguf: its folder does not exist"),
    ("micro-llama-F32.gguf", ".", "Q8_0", "is a folder: give the file name to write"),
    ("micro-llama-F32.gguf", "micro-llama-F32.gguf", "Q8_0", "is the input file"),
    ("not-a-model.gguf", "out.gguf", "Q8_0", "bad magic"),
    ("absent.gguf", "out.gguf", "Q8_0", "absent.gguf: No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, source, target, qtype, message):
    (tmp_path / "not-a-model.gguf").write_bytes(b"ggml and something else")
    (tmp_path / "micro-llama-F32.gguf").symlink_to(MICRO / "micro-llama-F32.gguf")
    os.symlink(MICRO / "micro-llama-Q4_0.gguf", tmp_path / "micro-llama-Q4_0.gguf")
    before = sorted(os.listdir(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "quantize", source, target, qtype], cwd=tmp_path,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith("error: ") and message in proc.stderr
    assert sorted(os.listdir(tmp_path)) == before


def test_missing_tensors_are_named(tmp_path):
    from conftest import VOCAB_LLAMA_BPE

    result = quantize_command(VOCAB_LLAMA_BPE, tmp_path / "out.gguf", "Q8_0")
    assert result.exit_code == 2 and "missing tensor token_embd.weight (and 289 more problems)" in result.stderr
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("tensor", ["blk.1.ffn_up.weight", "blk.2.attn_norm.weight"])  # quantized, copied
def test_nan_in_a_weight_is_named_and_nothing_is_written(tmp_path, tensor):
    data = bytearray((MICRO / "micro-llama-F32.gguf").read_bytes())
    info = GGUFFile(MICRO / "micro-llama-F32.gguf").tensors[tensor]
    data[info.offset + 4 * 17 : info.offset + 4 * 18] = np.array([np.nan], np.float32).tobytes()
    (tmp_path / "nan.gguf").write_bytes(bytes(data))
    result = quantize_command(tmp_path / "nan.gguf", tmp_path / "out.gguf", "Q4_K_M")
    assert result.exit_code == 2 and result.stderr.strip().endswith(f"tensor {tensor} holds NaN or Inf values")
    assert os.listdir(tmp_path) == ["nan.gguf"]
