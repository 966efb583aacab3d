"""The command line: inspect-gguf on every fixture, clean one-line errors, run on a micro model."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import gguf
import pytest
from click.testing import CliRunner

from conftest import MICRO, MICRO_FILES, VOCAB_LLAMA_BPE
from nanosmol.cli import main


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("name", MICRO_FILES)
def test_inspect_json_quant_mix_matches_gguf_py(name):
    path = MICRO / name
    result = invoke("inspect-gguf", path, "--json", "--tensors", "--ctx", "512")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    expected = Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors)
    assert {k: v["tensors"] for k, v in report["quant_mix"].items()} == dict(expected)
    assert report["tensor_count"] == sum(expected.values())
    assert report["validation"] == {"runnable": True, "problems": []}
    assert report["architecture"] in ("llama", "smollm3")
    assert report["nope_layers"] == ([3, 7] if report["architecture"] == "smollm3" else [])
    h = report["hyperparameters"]
    assert (h["width"], h["heads"], h["kv_heads"], h["head_dim"]) == (256, 4, 1, 64)
    assert report["memory"]["kv_cache"] == 2 * h["layers"] * 512 * h["kv_heads"] * h["head_dim"] * 2  # f16
    assert len(report["tensors"]) == report["tensor_count"]


def test_inspect_text_report_for_smollm3():
    result = invoke("inspect-gguf", MICRO / "micro-smollm3-Q4_K_M.gguf", "--ctx", "4096")
    assert result.exit_code == 0
    for needle in ("architecture    smollm3", "NoPE layers (no RoPE) 3, 7", "GQA 4:1", "Q4_K", "Q6_K",
                   "memory at --ctx 4096", "verdict: OK"):
        assert needle in result.output


def test_inspect_vocab_file_is_not_runnable_but_explained():
    result = invoke("inspect-gguf", VOCAB_LLAMA_BPE, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["tensor_count"] == 0
    assert report["tokenizer"]["vocab_size"] == 128256
    assert report["tokenizer"]["pre"] == "llama-bpe"
    assert report["tokenizer"]["special_tokens"]["bos"] == {"id": 128000, "text": "<|begin_of_text|>"}
    assert not report["validation"]["runnable"]
    assert "missing tensor token_embd.weight" in report["validation"]["problems"]


def test_inspect_metadata_shortens_long_arrays():
    result = invoke("inspect-gguf", VOCAB_LLAMA_BPE, "--metadata")
    line = next(l for l in result.output.splitlines() if l.startswith("tokenizer.ggml.tokens = "))
    assert line.endswith("(128,256 items)") and len(line) < 200


def test_inspect_template_without_one():
    result = invoke("inspect-gguf", MICRO / "micro-llama-F32.gguf", "--template")
    assert "no chat template" in result.output


@pytest.mark.parametrize("content", [b"", b"GGUF\x03\x00\x00\x00" + b"\xff" * 16, b"not a gguf file at all"])
def test_malformed_file_one_line_exit_2(tmp_path, content):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "inspect-gguf", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ")


def test_missing_file_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "inspect-gguf", str(tmp_path / "nope.gguf")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_run_raw_on_micro_model_is_deterministic():
    args = ["run", "-m", MICRO / "micro-llama-Q8_0.gguf", "--raw", "-n", "8", "--seed", "3", "--temp", "1", "hello"]
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0 and first.stdout == second.stdout and first.stdout.strip()


def test_run_refuses_a_bad_model_in_one_line(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF")
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(bad), "hi"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr


def test_run_empty_prompt_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(MICRO / "micro-llama-Q8_0.gguf"),
                           "--raw", ""], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: prompt: the prompt is empty: give at least one token"]


def test_run_refuses_a_model_missing_tensors(tmp_path):
    # A well-formed GGUF whose tensors do not make a model: the vocab-only file.
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(VOCAB_LLAMA_BPE), "hi"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing tensor token_embd.weight" in lines[0]


def micro_with(tmp_path, key: str, value, template: str | None = None):
    """micro-llama-Q8_0 with one metadata value replaced (the fuzz harness's writer)."""
    from gguf_fuzz import encode, seed

    parts = seed("micro-llama-Q8_0.gguf", template)
    kv = next(kv for kv in parts.kvs if kv[0] == key)
    if isinstance(value, str):
        kv[1:] = [gguf.GGUFValueType.STRING, None, value]
    elif isinstance(value, int) and value >= 2**32:
        kv[1:] = [gguf.GGUFValueType.UINT64, None, value]
    else:
        kv[3] = value
    path = tmp_path / "edited.gguf"
    path.write_bytes(encode(parts))
    return path


@pytest.mark.parametrize("merges, problem", [
    (["Ġ t", "Ġ a", "Ġa b"], "tokenizer.ggml.merges[2] = 'Ġa b' names 'Ġab', which is not in tokenizer.ggml.tokens"),
    (["Ġ t", "Ġa"], "tokenizer.ggml.merges[1] = 'Ġa' is not two tokens joined by a space"),
])
def test_inspector_builds_the_tokenizer_and_agrees_with_run(tmp_path, merges, problem):
    """The issue's reproducers: inspect-gguf said "verdict: OK" where run ended in a traceback."""
    path = micro_with(tmp_path, "tokenizer.ggml.merges", merges)
    report = json.loads(invoke("inspect-gguf", "--json", path).output)
    assert report["validation"] == {"runnable": False, "problems": [problem]}
    assert "verdict: NOT RUNNABLE" in invoke("inspect-gguf", path).output
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(path), "hi"], capture_output=True, text=True)
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("nanosmol: compiling")]
    assert proc.returncode == 2 and lines == [f"error: {path}: {problem}"]


def test_inspector_renders_the_chat_template(tmp_path):
    path = micro_with(tmp_path, "general.name", "x", template="{{ raise_exception('no thanks') }}")
    report = json.loads(invoke("inspect-gguf", "--json", path).output)
    assert report["validation"]["problems"] == ["chat template error: no thanks (run --raw does without it)"]


def test_inspector_describes_metadata_of_the_wrong_type(tmp_path):
    path = micro_with(tmp_path, "tokenizer.ggml.token_type", [1, 2])
    text = invoke("inspect-gguf", "--metadata", path)
    assert text.exit_code == 0 and "token_type holds 2 types for 267 tokens" in text.output


def test_prompt_longer_than_the_context_runs(tmp_path):
    prompt = "the cat sat on the mat " * 40  # ~200 tokens through a 32-slot ring
    result = invoke("run", "-m", MICRO / "micro-llama-Q8_0.gguf", "-c", "32", "-n", "4", "--temp", "0", prompt)
    assert result.exit_code == 0 and result.stdout.strip()


@pytest.mark.parametrize("key, value, problem", [
    ("llama.block_count", 2**39, "llama.block_count = 549755813888 is more than 4096 layers"),  # hung in a loop
    ("llama.vocab_size", "llama", "llama.vocab_size = 'llama' is not a positive int"),  # int() raised
    ("llama.vocab_size", 266, "llama.vocab_size = 266, but tokenizer.ggml.tokens holds 267 tokens"),
])
def test_config_values_that_cannot_be_are_named(tmp_path, key, value, problem):
    path = micro_with(tmp_path, key, value)
    report = json.loads(invoke("inspect-gguf", "--json", path).output)
    assert report["validation"]["runnable"] is False and any(problem in p for p in report["validation"]["problems"])
    result = CliRunner().invoke(main, ["run", "-m", str(path), "hi"])
    assert result.exit_code == 2 and problem in result.stderr


def test_unknown_type_in_a_tensor_the_model_does_not_read(tmp_path):
    """Fuzz case 12194: the inspector refused a file for a tensor that loading never reads."""
    from gguf_fuzz import encode, seed

    parts = seed("micro-llama-Q4_0.gguf")
    next(kv for kv in parts.kvs if kv[0] == "llama.block_count")[3] = 3  # layer 3 becomes unused
    info = next(i for i in parts.infos if i[0] == "blk.3.attn_v.weight")
    assert info[2] == gguf.GGMLQuantizationType.Q4_0
    info[2] = gguf.GGMLQuantizationType.IQ4_NL  # same block size, a type nanosmol does not support
    path = tmp_path / "extra.gguf"
    path.write_bytes(encode(parts))
    report = json.loads(invoke("inspect-gguf", "--json", path).output)
    assert report["validation"] == {"runnable": True, "problems": []}
    assert invoke("run", "-m", path, "--raw", "-n", "2", "hi").exit_code == 0


@pytest.mark.parametrize("command", ["run", "chat", "perplexity", "bench", "serve", "inspect-gguf"])
def test_every_command_that_sizes_a_cache_takes_its_types(command):
    text = invoke(command, "--help").output
    assert "--cache-type-k [f32|f16|q8_0|q4_0]" in text and "--cache-type-v [f32|f16|q8_0|q4_0]" in text


def test_run_with_quantized_cache_types():
    result = invoke("run", "-m", MICRO / "micro-llama-Q8_0.gguf", "--raw", "-n", "6", "--temp", "0", "-c", "64",
                    "--cache-type-k", "q4_0", "--cache-type-v", "q8_0", "the cat sat on the mat " * 12)
    assert result.exit_code == 0 and result.stdout.strip()


def test_inspect_reports_the_memory_of_each_cache_type():
    report = json.loads(invoke("inspect-gguf", MICRO / "micro-llama-Q8_0.gguf", "--json", "--ctx", "1024",
                               "--cache-type-k", "q8_0", "--cache-type-v", "q4_0").output)
    m, h = report["memory"], report["hyperparameters"]
    per_layer_slot = h["kv_heads"] * h["head_dim"] // 32  # blocks of 32 values
    assert m["kv_cache"] == h["layers"] * 1024 * per_layer_slot * (34 + 18)
    shifts = h["layers"] * h["kv_heads"] * (1024 // 256) * h["head_dim"] * 4  # q4_0 keys' (kv/shift.py)
    assert m["kv_cache_by_type"] == {t: h["layers"] * 1024 * per_layer_slot * 2 * b + (shifts if t == "q4_0" else 0)
                                     for t, b in (("f32", 128), ("f16", 64), ("q8_0", 34), ("q4_0", 18))}
    assert m["total"] == m["weights"] + m["kv_cache"] + m["scratch"]
    text = invoke("inspect-gguf", MICRO / "micro-llama-Q8_0.gguf", "--ctx", "1024", "--cache-type-v", "q4_0").output
    assert "K f16, V q4_0" in text


def test_run_refuses_a_context_that_cannot_fit_in_one_line():
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(MICRO / "micro-llama-Q8_0.gguf"),
                           "-c", str(2**36), "hi"], capture_output=True, text=True)
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("nanosmol: compiling")]
    assert proc.returncode == 2 and len(lines) == 1
    path = MICRO / "micro-llama-Q8_0.gguf"
    assert lines[0].startswith(f"error: {path}: --ctx {2**36} with a K f16, V f16 cache needs")
    assert "--ctx " in lines[0].split(": use ")[1]


def test_bench_at_depth_reports_its_tests_there():
    result = invoke("bench", "-m", MICRO / "micro-llama-Q8_0.gguf", "-p", "16", "-n", "4", "-t", "1", "-r", "1",
                    "-d", "300", "--cache-type-k", "q8_0", "--cache-type-v", "q4_0", "--json")
    records = json.loads(result.stdout)
    assert [r["test"] for r in records] == ["pp16 @ d300", "tg4 @ d300"]
    assert all(r["depth"] == 300 and r["cache_types"] == "K q8_0, V q4_0" and r["tokens_per_second"] > 0
               for r in records)
