"""Hugging Face checkpoint folders made from the GGUF fixtures, by inverting llama.cpp's
conversion: tensors renamed, Q and K rows un-permuted to the rotate-half layout, config.json
and the tokenizer files written. Bytes are copied as they are (F32, F16 or BF16), so the
folder holds exactly the fixture's weights and must give llama.cpp's logits for it.

Shared by the tests (folders in tmp_path) and tools/make_hf_fixtures.py (transformers' logits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize
from safetensors import TensorSpec, serialize_file
from tokenizers import processors

from nanosmol.gguf_file import GGUFFile
from nanosmol.tokenizer import Tokenizer

SAFETENSORS_DTYPES = {T.F32: "float32", T.F16: "float16", T.BF16: "bfloat16"}
MODEL_CLASSES = {"llama": ("LlamaForCausalLM", "llama"), "smollm3": ("SmolLM3ForCausalLM", "smollm3")}
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

# Folders with transformers' logits in tests/data/hf_logits.npz (tools/make_hf_fixtures.py):
# case -> (GGUF fixture, config.json entries that differ from the fixture's). The last two
# leave llama.cpp's conventions (NoPE layers 1 and 4, not every 4th; linear RoPE scaling), so
# only transformers can judge them.
ORACLE_CASES = {
    "llama-F32": ("micro-llama-F32.gguf", {}),
    "smollm3-BF16": ("micro-smollm3-BF16.gguf", {}),
    "smollm3-F32-nope-1-4": ("micro-smollm3-F32.gguf", {"no_rope_layers": [1, 0, 1, 1, 0, 1, 1, 1]}),
    "llama-F32-linear-rope-4": ("micro-llama-F32.gguf", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
}

LAYER_TENSORS = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name.startswith("blk."):
        _, layer, kind, _ = gguf_name.split(".")
        return f"model.layers.{layer}.{LAYER_TENSORS[kind]}.weight"
    return {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
            "output.weight": "lm_head.weight"}[gguf_name]


def pairs_to_rotate_half(rows: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of llama.cpp's permute() of Q and K rows, written out independently:
    within each head, GGUF row 2j + i holds HF row i * head_dim/2 + j."""
    n, width = rows.shape
    head_dim = n // n_head
    out = np.empty_like(rows)
    for h in range(n_head):
        for j in range(head_dim // 2):
            for i in (0, 1):
                out[h * head_dim + i * head_dim // 2 + j] = rows[h * head_dim + 2 * j + i]
    return out


def hf_config(meta: dict, arch: str, tied: bool) -> dict:
    get = lambda key, default=None: meta.get(f"{arch}.{key}", default)
    model_class, model_type = MODEL_CLASSES[arch]
    n_layer = get("block_count")
    config = {
        "architectures": [model_class], "model_type": model_type,
        "hidden_size": get("embedding_length"), "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": n_layer, "num_attention_heads": get("attention.head_count"),
        "num_key_value_heads": get("attention.head_count_kv"), "max_position_embeddings": get("context_length"),
        "rope_theta": get("rope.freq_base"), "rms_norm_eps": get("attention.layer_norm_rms_epsilon"),
        "vocab_size": get("vocab_size"), "tie_word_embeddings": tied, "hidden_act": "silu",
        "attention_bias": False, "mlp_bias": False, "rope_scaling": None,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"), "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": None,
        "torch_dtype": "float32",
    }
    if arch == "smollm3":
        flags = [int((il + 1) % 4 != 0) for il in range(n_layer)]  # llama.cpp's convention
        config.update({"no_rope_layers": flags, "no_rope_layer_interval": 4, "use_sliding_window": False,
                       "sliding_window": None, "layer_types": ["full_attention"] * n_layer})
    return config


def write_hf_folder(gguf_path: str | Path, folder: str | Path, shards: int = 1, config: dict | None = None,
                    chat_template: str | None = CHATML) -> Path:
    """The GGUF file as a Hugging Face folder (float tensors copied, quantized ones dequantized
    to BF16); shards > 1 writes an index, config holds config.json entries to change."""
    gguf, folder = GGUFFile(gguf_path), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = gguf.metadata
    arch = meta["general.architecture"]
    n_head, n_head_kv = meta[f"{arch}.attention.head_count"], meta[f"{arch}.attention.head_count_kv"]
    tensors = {}
    for name, info in gguf.tensors.items():
        rows, qtype = gguf.tensor_data(name).reshape(info.rows, -1), info.type
        if qtype not in SAFETENSORS_DTYPES:  # a quantized tensor: its values, in BF16
            rows, qtype = bfloat16_bytes(dequantize(rows, qtype)), T.BF16
        if ".attn_q." in name or ".attn_k." in name:
            rows = pairs_to_rotate_half(rows, n_head if ".attn_q." in name else n_head_kv)
        shape = [info.cols] if len(info.shape) == 1 else [info.rows, info.cols]
        tensors[hf_name(name)] = (SAFETENSORS_DTYPES[qtype], shape, np.ascontiguousarray(rows))
    write_shards(tensors, folder, shards)
    tied = "output.weight" not in gguf.tensors
    (folder / "config.json").write_text(json.dumps(hf_config(meta, arch, tied) | (config or {}), indent=1))
    write_tokenizer_files(meta, folder, chat_template)
    return folder


def write_tokenizer_files(meta: dict, folder: Path, chat_template: str | None) -> None:
    """tokenizer.json (the GGUF vocabulary as a tokenizers BPE; one that adds BOS does it in a
    post-processor, as Llama 3's tokenizer.json) and tokenizer_config.json."""
    tokenizer = Tokenizer.from_metadata(meta)
    if tokenizer.add_bos:
        bos = tokenizer.token_text(tokenizer.bos_id)
        tokenizer._hf.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tokenizer.bos_id)])
    (folder / "tokenizer.json").write_text(tokenizer._hf.to_str())
    tokenizer_config = {"bos_token": tokenizer.token_text(tokenizer.bos_id),
                        "eos_token": tokenizer.token_text(tokenizer.eos_id), "add_bos_token": tokenizer.add_bos}
    if chat_template is not None:
        tokenizer_config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=1))


def write_random_folder(vocab_gguf: str | Path, folder: str | Path, arch: str = "llama", seed: int = 0) -> Path:
    """A one-layer BF16 model of width 64 with random weights and the vocabulary, tokenizer
    and chat template of `vocab_gguf` (a real one: SmolLM2's, SmolLM3's)."""
    meta, folder = GGUFFile(vocab_gguf).metadata, Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_vocab, width, ff, rng = len(meta["tokenizer.ggml.tokens"]), 64, 128, np.random.default_rng(seed)
    shapes = {"token_embd.weight": [n_vocab, width], "output_norm.weight": [width]}
    shapes |= {f"blk.0.{kind}.weight": shape for kind, shape in (
        ("attn_norm", [width]), ("attn_q", [width, width]), ("attn_k", [32, width]), ("attn_v", [32, width]),
        ("attn_output", [width, width]), ("ffn_norm", [width]), ("ffn_gate", [ff, width]), ("ffn_up", [ff, width]),
        ("ffn_down", [width, ff]))}
    tensors = {}
    for name, shape in shapes.items():
        values = np.ones(shape) if len(shape) == 1 else rng.normal(0, 0.05, shape)
        tensors[hf_name(name)] = ("bfloat16", shape, bfloat16_bytes(values.reshape(shape[0], -1)))
    write_shards(tensors, folder, 1)
    model_meta = meta | {f"{arch}.{key}": value for key, value in (
        ("block_count", 1), ("embedding_length", width), ("feed_forward_length", ff), ("attention.head_count", 2),
        ("attention.head_count_kv", 1), ("context_length", 8192), ("rope.freq_base", 100000.0),
        ("attention.layer_norm_rms_epsilon", 1e-5), ("vocab_size", n_vocab))}
    (folder / "config.json").write_text(json.dumps(hf_config(model_meta, arch, tied=True), indent=1))
    write_tokenizer_files(meta, folder, meta.get("tokenizer.chat_template"))
    return folder


def bfloat16_bytes(values: np.ndarray) -> np.ndarray:
    """float32 values as BF16 bytes, rounded to nearest even (as torch rounds)."""
    bits = values.astype(np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return rounded.view(np.uint8).reshape(values.shape[0], -1)


def write_shards(tensors: dict, folder: Path, shards: int) -> None:
    """name -> (safetensors dtype, shape, raw bytes) into model.safetensors, or `shards` files and an index."""
    names = sorted(tensors)
    if shards == 1:
        files = {"model.safetensors": names}
    else:
        files = {f"model-{i + 1:05d}-of-{shards:05d}.safetensors": names[i::shards] for i in range(shards)}
    for file, members in files.items():
        specs = {n: TensorSpec(dtype=tensors[n][0], shape=tensors[n][1], data_ptr=tensors[n][2].ctypes.data,
                               data_len=tensors[n][2].nbytes) for n in members}
        serialize_file(specs, folder / file, metadata={"format": "pt"})
    if shards > 1:
        index = {"metadata": {"total_size": sum(t[2].nbytes for t in tensors.values())},
                 "weight_map": {n: file for file, members in files.items() for n in members}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))
