"""`nanosmol convert`: Hugging Face folders made from the GGUF fixtures (tests/hf_folders.py)
back into GGUF files. Oracles: llama.cpp's own files (each micro fixture was written by
llama.cpp's tools from the F32 one, so a conversion of the F32 folder must hold the same
tensors), transformers' logits on the folders (tests/data/hf_logits.npz) and llama.cpp's
token ids (tests/data/tokenizer_cases.json)."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from gguf import GGMLQuantizationType as T
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nanosmol
import nanosmol.convert
from conftest import MICRO, SMOLLM3_TEMPLATE, VOCAB_LLAMA_BPE, micro_index
from hf_folders import CHATML, ORACLE_CASES, write_hf_folder, write_random_folder
from nanosmol.checkpoint import load_tokenizer, open_checkpoint
from nanosmol.cli import main
from nanosmol.convert import convert_folder
from nanosmol.convert.hf_vocab import pre_tokenizer_steps
from nanosmol.gguf_file import GGUFFile

DATA = Path(__file__).parent / "data"
SEQS = {entry["file"]: entry["seqs"] for entry in micro_index()}

# The keys llama.cpp's convert_hf_to_gguf.py writes for these folders, in its order (for
# SmolLM2-135M the converter's own file is byte for byte ours: tools/check_with_llama.py).
CONVERTER_KEYS = {
    "llama": ["general.architecture", "general.type", "general.name", "general.size_label", "llama.block_count",
              "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
              "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.freq_base",
              "llama.attention.layer_norm_rms_epsilon", "llama.attention.key_length", "llama.attention.value_length",
              "general.file_type", "llama.vocab_size", "llama.rope.dimension_count", "general.quantization_version",
              "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
              "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"],
    # transformers' SmolLM3Config has no head_dim unless config.json sets one: no key_length.
    "smollm3": ["general.architecture", "general.type", "general.name", "general.size_label", "smollm3.block_count",
                "smollm3.context_length", "smollm3.embedding_length", "smollm3.feed_forward_length",
                "smollm3.attention.head_count", "smollm3.attention.head_count_kv", "smollm3.rope.freq_base",
                "smollm3.attention.layer_norm_rms_epsilon", "general.file_type", "smollm3.vocab_size",
                "smollm3.rope.dimension_count", "general.quantization_version", "tokenizer.ggml.model",
                "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges",
                "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
                "tokenizer.chat_template"],
}


@functools.lru_cache(maxsize=None)
def load(path: Path) -> nanosmol.Model:
    return nanosmol.load(path, n_ctx=128, cache_type_k="f32", cache_type_v="f32")


def relative_error(ours: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def converted(folder: Path, tmp_path: Path, type_name: str = "auto") -> Path:
    out = tmp_path / f"{folder.name}-{type_name}.gguf"
    convert_folder(folder, out, type_name)
    return out


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_f32_conversion_gives_the_folders_and_transformers_logits(case, folder_of, tmp_path):
    gguf, config = ORACLE_CASES[case]
    folder = folder_of(gguf, config=json.dumps(config))
    model, on_folder = load(converted(folder, tmp_path, "F32")), load(folder)
    recorded = np.load(DATA / "hf_logits.npz")
    for seq, tokens in SEQS[gguf].items():
        logits = model.logits(tokens)
        assert relative_error(logits, on_folder.logits(tokens)) < 1e-6
        assert relative_error(logits, recorded[f"{case}.{seq}"]) < 1e-3
    assert model.config == on_folder.config  # NoPE list and RoPE scaling included


@pytest.mark.parametrize("entry", micro_index(), ids=lambda e: e["file"])
def test_every_type_holds_llama_cpps_tensors(entry, folder_of, tmp_path):
    """The fixture of each type was made by llama.cpp from the F32 one, which the folder holds."""
    folder = folder_of(entry["file"].replace(entry["ftype"], "F32"))
    ours, theirs = GGUFFile(converted(folder, tmp_path, entry["ftype"])), GGUFFile(MICRO / entry["file"])
    assert sorted(ours.tensors) == sorted(theirs.tensors)
    for name, info in theirs.tensors.items():
        assert ours.tensors[name].type == info.type, name
        assert np.array_equal(ours.tensor_data(name), theirs.tensor_data(name)), name


@pytest.mark.parametrize("arch", ["llama", "smollm3"])
@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_K_M"])
def test_quantized_conversion_runs_near_llama_cpps_logits(arch, type_name, folder_of, tmp_path):
    model = nanosmol.load(converted(folder_of(f"micro-{arch}-F32.gguf"), tmp_path, type_name), n_ctx=64)
    fixture = f"micro-{arch}-{type_name}.gguf"
    for seq, tokens in SEQS[fixture].items():
        expected = np.load(MICRO / fixture.replace(".gguf", f".{seq}.logits.npy"))
        ours = model.logits(tokens)
        assert relative_error(ours, expected) < 0.04  # test_model.py's bound for llama.cpp
        assert np.mean(ours.argmax(1) == expected.argmax(1)) >= 0.85


@pytest.mark.parametrize("arch", ["llama", "smollm3"])
def test_metadata_keys_are_llama_cpps(arch, folder_of, tmp_path):
    folder = folder_of(f"micro-{arch}-BF16.gguf")
    gguf = GGUFFile(converted(folder, tmp_path, "BF16"))
    assert list(gguf.metadata) == CONVERTER_KEYS[arch]
    assert gguf.metadata["general.file_type"] == 32 and gguf.metadata["general.quantization_version"] == 2
    original = GGUFFile(MICRO / f"micro-{arch}-BF16.gguf").metadata  # what llama.cpp's tools wrote for the model
    assert {k: gguf.metadata[k] for k in original if k != "general.name"} == {
        k: v for k, v in original.items() if k != "general.name"}
    # A type llama-quantize makes: its file's order, the quantization version and file type last.
    quantized = GGUFFile(converted(folder, tmp_path, "Q4_K_M")).metadata
    assert list(quantized)[-2:] == ["general.quantization_version", "general.file_type"]
    assert sorted(quantized) == sorted(CONVERTER_KEYS[arch]) and quantized["general.file_type"] == 15


@pytest.mark.parametrize("gguf, expected", [("micro-llama-BF16.gguf", T.BF16), ("micro-llama-F16.gguf", T.F16),
                                            ("micro-smollm3-F32.gguf", T.F16)])
def test_default_type_is_llama_cpps_auto(gguf, expected, folder_of, tmp_path):
    written = GGUFFile(converted(folder_of(gguf), tmp_path))
    assert {t.type for t in written.tensors.values()} == {expected, T.F32}
    assert all(t.type == T.F32 for n, t in written.tensors.items() if n.endswith("norm.weight"))


@pytest.mark.parametrize("name, vocab, arch, pre", [("smollm2", None, "llama", "smollm"),
                                                    ("llama-bpe", VOCAB_LLAMA_BPE, "smollm3", "llama-bpe")])
def test_real_vocabularies_tokenize_as_the_folder_and_llama_cpp(name, vocab, arch, pre, default_model_path, tmp_path):
    """A one-layer model with SmolLM2's (or SmolLM3's) vocabulary: the converted file's
    tokenizer gives llama.cpp's ids, as the folder's tokenizer.json does."""
    folder = write_random_folder(vocab or default_model_path, tmp_path / name, arch)
    gguf = open_checkpoint(converted(folder, tmp_path, "BF16"))
    assert gguf.metadata["tokenizer.ggml.pre"] == pre  # found by llama.cpp's hash of its test text
    ours, folders = load_tokenizer(gguf), load_tokenizer(open_checkpoint(folder))
    cases = json.loads((DATA / "tokenizer_cases.json").read_text())[name]
    for case in cases:
        assert ours.encode(case["text"], special=case["special"]) == case["ids"], case
        assert folders.encode(case["text"], special=case["special"]) == case["ids"], case
    assert (ours.bos_id, ours.eos_id, ours.add_bos, ours.eog_ids) == (
        folders.bos_id, folders.eos_id, folders.add_bos, folders.eog_ids)
    # This folder's norms are BF16, as transformers saves them: written in F32 (llama.cpp refuses BF16 norms).
    norms = [n for n in gguf.tensors if n.endswith("norm.weight")]
    bf16 = open_checkpoint(folder)
    for name in norms:
        assert gguf.tensors[name].type == T.F32 and bf16.tensors[name].type == T.BF16
        widened = (bf16.tensor_data(name).reshape(-1).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(gguf.tensor_data(name).view(np.float32), widened)


def test_pre_tokenizer_steps_of_real_tokenizer_files():
    """SmolLM2's tokenizer.json splits digits, then GPT-2's byte-level regex; Llama 3's its own regex."""
    smollm2 = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    from nanosmol.convert.hf_vocab import NAMES_BY_STEPS

    assert NAMES_BY_STEPS[pre_tokenizer_steps(smollm2)] == "smollm"
    assert NAMES_BY_STEPS[pre_tokenizer_steps({"type": "ByteLevel", "use_regex": True})] == "gpt-2"
    assert pre_tokenizer_steps({"type": "Whitespace"}) not in NAMES_BY_STEPS


def test_chat_template_survives(tmp_path):
    folder = write_hf_folder(MICRO / "micro-smollm3-F16.gguf", tmp_path / "m")
    assert GGUFFile(converted(folder, tmp_path)).metadata["tokenizer.chat_template"] == CHATML
    (folder / "chat_template.jinja").write_text(SMOLLM3_TEMPLATE.read_text())  # what the folder runs with wins
    model = nanosmol.load(converted(folder, tmp_path, "Q8_0"), n_ctx=64)
    assert model.chat_template == SMOLLM3_TEMPLATE.read_text()
    messages = [{"role": "user", "content": "Hi"}]
    assert model.chat_prompt(messages) == nanosmol.load(folder, n_ctx=64).chat_prompt(messages)


def test_transformers_5_config_converts_and_runs_as_written(folder_of, tmp_path):
    """transformers 5 writes rope_theta and the RoPE scaling as `rope_parameters`."""
    gguf, config = ORACLE_CASES["llama-F32-linear-rope-4"]
    folder = folder_of(gguf, config=json.dumps({"rope_theta": None, "rope_scaling": None, "rope_parameters": {
        "rope_type": "linear", "factor": 4.0, "rope_theta": 100000.0}}))
    written = GGUFFile(converted(folder, tmp_path, "F32")).metadata
    assert (written["llama.rope.freq_base"], written["llama.rope.scaling.type"], written["llama.rope.scaling.factor"]
            ) == (100000.0, "linear", 4.0)
    tokens = SEQS[gguf]["a"]
    assert relative_error(load(folder).logits(tokens), np.load(DATA / "hf_logits.npz")["llama-F32-linear-rope-4.a"]) < 1e-3


def test_command_writes_the_file_and_inspect_says_ok(folder_of, tmp_path):
    out = tmp_path / "q.gguf"
    result = invoke("convert", folder_of("micro-smollm3-F32.gguf", config=json.dumps(
        {"no_rope_layers": [1, 0, 1, 1, 0, 1, 1, 1]})), "-o", out, "--type", "q4_k_m", "-t", "1")
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 74 + 2 and lines[0].startswith("[ 1/74] output_norm.weight") and "F32 -> Q6_K" in lines[1]
    assert lines[-2].startswith("note: config.json has layers [1, 4] skip RoPE: written as smollm3.no_rope_layers")
    assert lines[-1].startswith(f"wrote {out}: ") and "(Q4_K_M)" in lines[-1]
    report = json.loads(invoke("inspect-gguf", out, "--json").stdout)
    assert report["validation"] == {"runnable": True, "problems": []} and report["nope_layers"] == [1, 4]
    assert "verdict: OK" in invoke("inspect-gguf", out).stdout


def edit_json(path: Path, **entries):
    path.write_text(json.dumps(json.loads(path.read_text()) | entries))


def f64_tensor(folder: Path):
    from safetensors.numpy import load_file, save_file

    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]["model.norm.weight"]
    save_file(load_file(shard) | {"model.norm.weight": np.ones(256)}, shard)


BAD = {  # problem -> (change to the folder, target, TYPE, message)
    "architecture": (lambda f: edit_json(f / "config.json", architectures=["MistralForCausalLM"]), "out.gguf", "f16",
                     "architecture MistralForCausalLM is not supported"),
    "missing shard": (lambda f: (f / "model-00002-of-00002.safetensors").unlink(), "out.gguf", "f16",
                      "shard model-00002-of-00002.safetensors is missing"),
    "corrupt shard": (lambda f: (f / "model-00001-of-00002.safetensors").write_bytes(b"\x08" + bytes(20)), "out.gguf",
                      "q8_0", "shard model-00001-of-00002.safetensors is not a valid safetensors file"),
    "dtype": (f64_tensor, "out.gguf", "f16", "has dtype F64"),
    "tokenizer": (lambda f: (f / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}'), "out.gguf", "f16",
                  "tokenizer.json cannot be read"),
    "pre-tokenizer": (lambda f: edit_json(f / "tokenizer.json", pre_tokenizer={"type": "Whitespace"}), "out.gguf", "f16",
                      "tokenizer.json's pre-tokenizer is none that nanosmol and llama.cpp share"),
    "type": (lambda f: None, "out.gguf", "q7_k", "error: TYPE: unknown type 'q7_k'"),
    "no folder": (lambda f: None, "missing/out.gguf", "f16", "out.gguf: its folder does not exist"),
    "target folder": (lambda f: None, ".", "f16", "is a folder: give the file name to write"),
    "not writable": (lambda f: None, "/sys/out.gguf", "f16", "error: /sys/out.gguf: "),
    "input file": (lambda f: None, "m/config.json", "f16", "is a file of the checkpoint: write the GGUF file elsewhere"),
}


@pytest.mark.parametrize("problem", list(BAD))
def test_bad_input_is_one_line_exit_2_and_no_file(problem, tmp_path, monkeypatch):
    change, target, type_name, message = BAD[problem]
    folder = write_hf_folder(MICRO / "micro-llama-F16.gguf", tmp_path / "m", shards=2)
    change(folder)
    monkeypatch.chdir(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = invoke("convert", "m", "-o", target, "--type", type_name)
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written, nothing replaced


def test_a_gguf_file_is_not_a_folder(tmp_path):
    result = invoke("convert", MICRO / "micro-llama-F32.gguf", "-o", tmp_path / "out.gguf")
    assert result.exit_code == 2 and "is not a folder: convert reads a Hugging Face checkpoint folder" in result.stderr
    assert os.listdir(tmp_path) == []


def test_ctrl_c_leaves_no_file(folder_of, tmp_path, monkeypatch):
    def interrupt(done, total, plan, seconds):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_folder(folder_of("micro-llama-F32.gguf"), tmp_path / "out.gguf", "Q4_0", progress=interrupt)
    monkeypatch.setattr(nanosmol.convert, "progress_line", lambda done, *rest: interrupt(done, *rest) or "")
    result = invoke("convert", folder_of("micro-llama-F32.gguf"), "-o", tmp_path / "out.gguf")
    assert result.exit_code == 2 and result.stderr.strip().endswith("out.gguf: interrupted: nothing written")
    assert os.listdir(tmp_path) == []


def test_unusable_model_card_is_left_out(tmp_path):
    folder = write_hf_folder(MICRO / "micro-llama-F16.gguf", tmp_path / "m")
    (folder / "README.md").write_text("---\nlicense: [1, 2]\nbase_model: 7\ntags: {a: b}\n---\n# A card\n")
    result = invoke("convert", folder, "-o", tmp_path / "out.gguf")
    assert result.exit_code == 0 and "note: README.md's model card" in result.stderr
    assert GGUFFile(tmp_path / "out.gguf").metadata["general.name"]


def json_containers(values):
    return st.lists(values, max_size=4) | st.dictionaries(st.text(max_size=6), values, max_size=3)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
                           json_containers, max_leaves=6)
EDITABLE = {
    "config.json": ["architectures", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim",
                    "max_position_embeddings", "rope_theta", "rms_norm_eps", "vocab_size", "tie_word_embeddings",
                    "rope_scaling", "rope_parameters", "no_rope_layers", "bos_token_id", "eos_token_id",
                    "pad_token_id"],
    "tokenizer_config.json": ["bos_token", "eos_token", "add_bos_token", "add_eos_token", "chat_template",
                              "add_prefix_space", "pad_token"],
}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_config_value_converts_or_is_one_line(tmp_path_factory, data):
    """config.json and tokenizer_config.json are untrusted: whatever a key holds, the folder
    converts to a file nanosmol opens, or the command says why in one line."""
    root = tmp_path_factory.mktemp("fuzz")
    folder = write_hf_folder(MICRO / "micro-smollm3-F16.gguf", root / "m")
    file = data.draw(st.sampled_from(sorted(EDITABLE)))
    edit_json(folder / file, **{data.draw(st.sampled_from(EDITABLE[file])): data.draw(JSON_VALUES)})
    result = invoke("convert", folder, "-o", root / "out.gguf", "--type", "q8_0")
    assert result.exit_code in (0, 2), result.stderr
    if result.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")
        assert sorted(os.listdir(root)) == ["m"]
    else:
        load_tokenizer(open_checkpoint(root / "out.gguf"))
