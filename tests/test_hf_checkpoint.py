"""Hugging Face checkpoint folders: made from the GGUF fixtures (tests/hf_folders.py), they must
give llama.cpp's logits for the fixture as the GGUF does, and transformers' logits recorded
by tools/make_hf_fixtures.py; tokenizer, chat template, sharding, the CLI and its errors."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import nanosmol
from conftest import MICRO, SMOLLM3_TEMPLATE, micro_index
from hf_folders import ORACLE_CASES, pairs_to_rotate_half, write_hf_folder
from nanosmol.checkpoint.hf_folder import rotate_half_to_pairs
from nanosmol.cli import main

SEQS = {entry["file"]: entry["seqs"] for entry in micro_index()}
FLOAT_FIXTURES = [f"micro-{arch}-{t}.gguf" for arch in ("llama", "smollm3") for t in ("F32", "F16", "BF16")]
TRANSFORMERS_LOGITS = Path(__file__).parent / "data" / "hf_logits.npz"


@functools.lru_cache(maxsize=None)
def load(path: Path) -> nanosmol.Model:
    """With an f32 KV cache, as test_model.py's fidelity tests (the default f16 moves logits ~3e-4)."""
    return nanosmol.load(path, n_ctx=128, cache_type_k="f32", cache_type_v="f32")


def relative_error(ours: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(ours - expected).max() / np.abs(expected).max())


def invoke(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


@settings(max_examples=50, deadline=None)
@given(n_head=st.integers(1, 6), half=st.integers(1, 8), width=st.integers(1, 5))
def test_qk_permutation_inverts_llama_cpp_conversion(n_head, half, width):
    rows = np.arange(n_head * 2 * half * width, dtype=np.uint32).reshape(n_head * 2 * half, width)
    assert np.array_equal(rotate_half_to_pairs(pairs_to_rotate_half(rows, n_head), n_head), rows)
    if half > 1:  # a permutation that is not the identity: the layouts differ
        assert not np.array_equal(pairs_to_rotate_half(rows, n_head), rows)


@pytest.mark.parametrize("gguf", FLOAT_FIXTURES)
def test_folder_gives_llama_cpp_logits_as_the_gguf_does(gguf, folder_of):
    folder, original = load(folder_of(gguf)), load(MICRO / gguf)
    for seq, tokens in SEQS[gguf].items():
        ours = folder.logits(tokens)
        expected = np.load(MICRO / gguf.replace(".gguf", f".{seq}.logits.npy"))
        assert relative_error(ours, expected) < 0.04  # test_model.py's bound for llama.cpp
        assert np.mean(ours.argmax(1) == expected.argmax(1)) >= 0.85
        # The same bytes through the same kernels: the folder is the GGUF, to float rounding.
        assert relative_error(ours, original.logits(tokens)) < 1e-6


@pytest.mark.parametrize("case", list(ORACLE_CASES))
def test_folder_gives_transformers_logits(case, folder_of):
    gguf, config = ORACLE_CASES[case]
    model = load(folder_of(gguf, config=json.dumps(config)))
    recorded = np.load(TRANSFORMERS_LOGITS)
    for seq, tokens in SEQS[gguf].items():
        assert relative_error(model.logits(tokens), recorded[f"{case}.{seq}"]) < 1e-3


def test_no_rope_layers_and_rope_scaling_are_honoured(folder_of):
    """The oracle cases that leave llama.cpp's conventions change the logits: a model that
    ignored the list or the scaling would fail test_folder_gives_transformers_logits."""
    recorded = np.load(TRANSFORMERS_LOGITS)
    assert relative_error(recorded["smollm3-F32-nope-1-4.a"], np.load(MICRO / "micro-smollm3-F32.a.logits.npy")) > 0.02
    assert relative_error(recorded["llama-F32-linear-rope-4.a"], recorded["llama-F32.a"]) > 0.02
    assert load(folder_of("micro-smollm3-F32.gguf", config=json.dumps(ORACLE_CASES["smollm3-F32-nope-1-4"][1]))
                ).config.nope_layers == (1, 4)


def test_sharded_checkpoint_gives_the_same_logits(folder_of):
    tokens = SEQS["micro-llama-BF16.gguf"]["a"]
    sharded = folder_of("micro-llama-BF16.gguf", shards=3)
    assert len(list(sharded.glob("model-*-of-00003.safetensors"))) == 3
    assert np.array_equal(load(sharded).logits(tokens), load(folder_of("micro-llama-BF16.gguf")).logits(tokens))


def test_tokenizer_json_gives_the_gguf_token_ids(folder_of):
    texts = ["Hello world", " 12345 numbers", "<|im_start|>user\nHi<|im_end|>", "naïve café 🙂", "  spaces\n\n"]
    for gguf in ("micro-llama-F16.gguf", "micro-smollm3-F16.gguf"):
        folder, original = load(folder_of(gguf)), load(MICRO / gguf)
        for text in texts:
            for special in (False, True):
                assert folder.tokenize(text, special) == original.tokenize(text, special)
        ids = original.tokenize("naïve café 🙂 <think>", special=True)
        assert folder.detokenize(ids) == original.detokenize(ids) == "naïve café 🙂 <think>"
        assert folder.tokenizer.eog_ids == original.tokenizer.eog_ids


def test_chat_template_from_tokenizer_config_or_chat_template_jinja(tmp_path):
    folder = write_hf_folder(MICRO / "micro-smollm3-F16.gguf", tmp_path / "m")
    messages = [{"role": "user", "content": "Hi"}]
    assert load(folder).chat_prompt(messages) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    (folder / "chat_template.jinja").write_text(SMOLLM3_TEMPLATE.read_text())  # newer transformers' file wins
    model = nanosmol.load(folder, n_ctx=64)
    thinking, plain = model.chat_prompt(messages), model.chat_prompt(messages, enable_thinking=False)
    assert "/think" in thinking and "/no_think" in plain and plain.endswith("<think>\n\n</think>\n")


def test_cli_run_on_a_folder_equals_run_on_the_gguf(folder_of):
    args = ["--raw", "-n", "8", "--temp", "0", "hello"]
    on_folder = invoke("run", "-m", folder_of("micro-smollm3-BF16.gguf"), *args)
    on_gguf = invoke("run", "-m", MICRO / "micro-smollm3-BF16.gguf", *args)
    assert on_folder.exit_code == 0 and on_folder.stdout == on_gguf.stdout and on_folder.stdout.strip()


def test_cli_inspect_a_folder(folder_of):
    result = invoke("inspect-gguf", folder_of("micro-smollm3-BF16.gguf"), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["validation"] == {"runnable": True, "problems": []}
    assert report["architecture"] == "smollm3" and report["nope_layers"] == [3, 7]
    assert {k: v["tensors"] for k, v in report["quant_mix"].items()} == {"BF16": 57, "F32": 17}


def test_perplexity_bench_and_chat_take_a_folder(tmp_path, folder_of):
    gguf = "micro-llama-BF16.gguf"
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 12)
    scores = [invoke("perplexity", "-m", path, text, "-c", "64").stdout for path in (folder_of(gguf), MICRO / gguf)]
    assert scores[0].startswith("perplexity: ") and scores[0] == scores[1]
    bench = invoke("bench", "-m", folder_of(gguf), "-p", "16", "-n", "4", "-r", "1", "-t", "1", "--json")
    assert bench.exit_code == 0 and [r["test"] for r in json.loads(bench.stdout)] == ["pp16", "tg4"]
    chats = [invoke("chat", "-m", path, "--temp", "0", "-n", "6", input="hello\nagain\n").stdout
             for path in (folder_of(gguf), MICRO / gguf)]
    assert chats[0] == chats[1] and chats[0].strip()


def broken(tmp_path, change) -> Path:
    folder = write_hf_folder(MICRO / "micro-llama-F16.gguf", tmp_path / "m", shards=2)
    change(folder)
    return folder


def edit_json(path: Path, **entries):
    path.write_text(json.dumps(json.loads(path.read_text()) | entries))


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[:-100])


def f64_tensor(folder: Path):
    from safetensors.numpy import load_file, save_file

    shard = folder / json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]["model.norm.weight"]
    save_file(load_file(shard) | {"model.norm.weight": np.ones(256)}, shard)


BROKEN = {
    "architecture": (lambda f: edit_json(f / "config.json", architectures=["MistralForCausalLM"]),
                     "architecture MistralForCausalLM is not supported"),
    "missing shard": (lambda f: (f / "model-00002-of-00002.safetensors").unlink(),
                      "shard model-00002-of-00002.safetensors is missing"),
    "corrupt shard": (lambda f: truncate(f / "model-00001-of-00002.safetensors"),
                      "shard model-00001-of-00002.safetensors is not a valid safetensors file"),
    "dtype": (f64_tensor, "has dtype F64"),
    "tokenizer": (lambda f: (f / "tokenizer.json").write_text('{"model": {"type": "nonsense"}}'),
                  "tokenizer.json cannot be read"),
    "no tokenizer": (lambda f: (f / "tokenizer.json").unlink(), "no tokenizer.json"),
    "token id": (lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text().replace(
        '"</think>":266', '"</think>":2147483000')), "more than 4194304 tokens"),
    "config json": (lambda f: (f / "config.json").write_text("{not json"), "config.json is not valid JSON"),
    "no config": (lambda f: (f / "config.json").unlink(), "no config.json"),
    "hyperparameter": (lambda f: edit_json(f / "config.json", num_attention_heads="four"),
                       "attention.head_count = 'four' is not a positive int"),
    "rope scaling": (lambda f: edit_json(f / "config.json", rope_scaling={"rope_type": "yarn", "factor": 2.0}),
                     "is not supported (supported: none, linear)"),
    "shape": (lambda f: edit_json(f / "config.json", intermediate_size=256), "has shape"),
    "hostile index": (lambda f: edit_json(f / "model.safetensors.index.json",
                                          weight_map={"model.norm.weight": "../../etc/passwd"}),
                      "is not a file in the folder"),
}


@pytest.mark.parametrize("problem", list(BROKEN))
def test_broken_folder_is_one_line_exit_2(tmp_path, problem):
    change, message = BROKEN[problem]
    folder = broken(tmp_path, change)
    result = invoke("run", "-m", folder, "hi")
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {folder}: ") and message in lines[0], lines


def test_inspect_lists_the_problems_of_a_folder_it_can_open(tmp_path):
    folder = broken(tmp_path, lambda f: edit_json(f / "config.json", num_attention_heads=6, num_key_value_heads=3))
    result = invoke("inspect-gguf", folder, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and not report["validation"]["runnable"]
    assert "tensor blk.0.attn_q.weight has shape [256, 256], expected [256, 252]" in report["validation"]["problems"]


def json_containers(values):
    return st.lists(values, max_size=4) | st.dictionaries(st.text(max_size=6), values, max_size=3)


JSON_SCALARS = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8)
JSON_VALUES = st.recursive(JSON_SCALARS, json_containers, max_leaves=6)
CONFIG_KEYS = ["architectures", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "head_dim", "max_position_embeddings", "rope_theta", "rms_norm_eps",
               "vocab_size", "tie_word_embeddings", "rope_scaling", "no_rope_layers", "no_rope_layer_interval"]
TOKENIZER_KEYS = ["bos_token", "eos_token", "add_bos_token", "chat_template"]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_config_value_loads_or_is_one_line(tmp_path_factory, data):
    """config.json and tokenizer_config.json are untrusted: whatever a key holds, the folder
    runs or the CLI says why in one line (an uncaught exception fails the test)."""
    folder = write_hf_folder(MICRO / "micro-smollm3-F16.gguf", tmp_path_factory.mktemp("fuzz"))
    file, keys = data.draw(st.sampled_from([("config.json", CONFIG_KEYS), ("tokenizer_config.json", TOKENIZER_KEYS)]))
    edit_json(folder / file, **{data.draw(st.sampled_from(keys)): data.draw(JSON_VALUES)})
    for args in (["inspect-gguf", folder, "--json"], ["run", "-m", folder, "-n", "2", "hi"]):
        result = invoke(*args)
        assert result.exit_code in (0, 2)
        if result.exit_code == 2:
            assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("error: ")


def test_broken_folder_in_a_real_process_has_no_traceback(tmp_path):
    folder = broken(tmp_path, lambda f: truncate(f / "model-00002-of-00002.safetensors"))
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "inspect-gguf", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"error: {folder}: shard model-00002-of-00002.safetensors is not a "
                                                "valid safetensors file: Error while deserializing header: incomplete "
                                                "metadata, file not fully covered"]


def test_absent_hyperparameters_take_transformers_defaults_and_rope_parameters_are_read():
    from nanosmol.checkpoint.hf_config import gguf_metadata

    base = {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4}
    llama = gguf_metadata(base | {"architectures": ["LlamaForCausalLM"]})
    smollm3 = gguf_metadata(base | {"architectures": ["SmolLM3ForCausalLM"]})
    assert (llama["llama.context_length"], llama["llama.rope.freq_base"], "llama.attention.head_count_kv" in llama
            ) == (2048, 10000.0, False)  # LlamaConfig's defaults (KV heads: as many as heads)
    assert (smollm3["smollm3.context_length"], smollm3["smollm3.rope.freq_base"],
            smollm3["smollm3.attention.head_count_kv"]) == (32768, 2000000.0, 4)  # SmolLM3Config's
    # transformers 5 writes `rope_parameters` (per attention type in some models).
    for rope in ({"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5},
                 {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5}}):
        meta = gguf_metadata(base | {"architectures": ["LlamaForCausalLM"], "rope_theta": 1.0, "rope_parameters": rope})
        assert (meta["llama.rope.freq_base"], meta["llama.rope.scaling.type"], meta["llama.rope.scaling.factor"]
                ) == (5e5, "linear", 2.0)
    default = gguf_metadata(base | {"architectures": ["LlamaForCausalLM"], "rope_parameters": {
        "rope_type": "default", "rope_theta": 5e5}})
    assert default["llama.rope.freq_base"] == 5e5 and "llama.rope.scaling.type" not in default
