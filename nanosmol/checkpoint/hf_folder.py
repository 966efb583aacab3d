"""A Hugging Face checkpoint folder presented as a GGUF file: the same metadata keys, tensor
names, layouts and raw bytes, so the model loads it through the GGUF path unchanged.

Folder: config.json, model.safetensors (or shards with model.safetensors.index.json),
tokenizer.json, tokenizer_config.json (and perhaps chat_template.jinja). Weights stay in
their F32/F16/BF16 bytes in the mapped shards. One transformation happens, once, at load:
Q and K rows are permuted from Hugging Face's rotate-half layout to GGUF's adjacent pairs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType as T

from nanosmol.checkpoint.hf_config import gguf_metadata
from nanosmol.checkpoint.safetensors_shards import (INDEX_FILE, CheckpointError, StoredTensor, read_json, read_tensors,
                                                     shard_names)
from nanosmol.config import MAX_LAYERS
from nanosmol.gguf_file import TensorInfo
from nanosmol.tokenizer import Tokenizer

DTYPES = {"F32": T.F32, "F16": T.F16, "BF16": T.BF16}

# Hugging Face name (after "model.layers.{i}.") -> GGUF name (after "blk.{i}.").
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def is_hf_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def gguf_names(n_layer: int, tied: bool) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face tensor name, for every tensor the model reads."""
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight"}
    if not tied:
        names["output.weight"] = "lm_head.weight"
    for i in range(n_layer):
        names.update({f"blk.{i}.{g}": f"model.layers.{i}.{h}" for h, g in LAYER_TENSORS.items()})
    return names


def rotate_half_to_pairs(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Q or K weight rows [n_head * head_dim, row_bytes] reordered from HF's layout (RoPE pairs
    dimension j with j + head_dim/2) to GGUF's (pairs 2j with 2j+1): llama.cpp's converter
    does this permutation, and the engine's RoPE rotates adjacent pairs. A copy."""
    n, width = rows.shape
    permuted = np.ascontiguousarray(rows.reshape(n_head, 2, n // n_head // 2, width).swapaxes(1, 2).reshape(n, width))
    permuted.flags.writeable = False  # read-only as the mapped weights: the kernels compiled for GGUF fit
    return permuted


class HFFolder:
    """A checkpoint folder with GGUFFile's interface: path, metadata, tensors, tensor_data, file_size."""

    version = None  # no GGUF version: inspect-gguf shows none

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        folder = Path(path)
        if not (folder / "config.json").exists():
            raise CheckpointError("not a Hugging Face checkpoint folder: no config.json")
        config = read_json(folder / "config.json")
        self.metadata = gguf_metadata(config)
        arch = self.metadata["general.architecture"]
        # For the Q/K permutation; ModelConfig checks them before any tensor is read.
        self.n_head = positive_int(self.metadata.get(f"{arch}.attention.head_count"))
        self.n_head_kv = positive_int(self.metadata.get(f"{arch}.attention.head_count_kv", self.n_head))
        n_layer = self.metadata.get(f"{arch}.block_count")
        if not isinstance(n_layer, int) or not 0 < n_layer <= MAX_LAYERS:
            raise CheckpointError(f"config.json: num_hidden_layers = {str(n_layer)[:40]} is not a layer count")
        where = shard_names(folder)
        tie = config.get("tie_word_embeddings")  # absent: tied when there is no lm_head
        self.hf_names = gguf_names(n_layer, tie if isinstance(tie, bool) else "lm_head.weight" not in where)
        stored = read_tensors(folder, where, set(self.hf_names.values()))
        self.tensors = {name: tensor_info(name, stored[hf]) for name, hf in self.hf_names.items()}
        self._stored = {name: stored[hf] for name, hf in self.hf_names.items()}
        self.shard_of = {name: where[hf] for name, hf in self.hf_names.items()}
        self.file_size = sum((folder / shard).stat().st_size for shard in set(where.values()))
        self.tokenizer = read_tokenizer(folder, self.metadata.get(f"{arch}.vocab_size", 0))
        self.metadata.update(tokenizer_metadata(self.tokenizer))
        # Every file the checkpoint is read from (a converted file must not replace one).
        self.files = [folder / f for f in ("config.json", INDEX_FILE, "tokenizer.json", "tokenizer_config.json",
                                           "chat_template.jinja", *sorted(set(where.values())))
                      if (folder / f).exists()]
        template = chat_template(folder)
        if template is not None:
            self.metadata["tokenizer.chat_template"] = template
        self.metadata["general.name"] = folder.resolve().name
        self._permuted: dict[str, np.ndarray] = {}

    def tensor_data(self, name: str) -> np.ndarray:
        """The tensor's raw bytes [rows, row_bytes] in GGUF's layout (Q and K permuted once)."""
        info, stored = self.tensors[name], self._stored[name]
        raw = stored.data.reshape(info.rows, -1)
        kind = name.rsplit(".", 2)[-2]
        heads = self.n_head if kind == "attn_q" else self.n_head_kv if kind == "attn_k" else None
        if heads is None or info.rows % (2 * heads):  # not Q or K, or a shape the config check refuses
            return raw
        if name not in self._permuted:
            self._permuted[name] = rotate_half_to_pairs(raw, heads)
        return self._permuted[name]

    def release(self, name: str) -> None:
        """Forget the tensor's permuted copy and give back its mapped pages: a pass over the
        whole folder, one tensor at a time, then holds one tensor in memory."""
        self._permuted.pop(name, None)
        self._stored[name].release_pages()

    def close(self) -> None:
        self._stored, self._permuted = {}, {}


def positive_int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def tensor_info(name: str, stored: StoredTensor) -> TensorInfo:
    if stored.dtype not in DTYPES:
        raise CheckpointError(f"tensor {stored.name} has dtype {stored.dtype[:20]} "
                              f"(nanosmol reads {', '.join(DTYPES)})")
    if len(stored.shape) not in (1, 2):
        raise CheckpointError(f"tensor {stored.name} has shape {list(stored.shape)}: expected a matrix or a vector")
    # GGUF lists dimensions fastest first: a [rows, cols] matrix is shape (cols, rows).
    return TensorInfo(name, tuple(reversed(stored.shape)), DTYPES[stored.dtype], 0, stored.data.size)


def read_tokenizer(folder: Path, vocab_size: int) -> Tokenizer:
    path = folder / "tokenizer.json"
    if not path.exists():
        raise CheckpointError("no tokenizer.json in the folder")
    config = read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").exists() else {}
    add_bos = config.get("add_bos_token")
    return Tokenizer.from_hf(path.read_text(encoding="utf-8", errors="replace"),
                             special_token(config.get("bos_token")), special_token(config.get("eos_token")),
                             add_bos if isinstance(add_bos, bool) else None,
                             vocab_size if isinstance(vocab_size, int) and 0 < vocab_size <= 2**24 else 0)


def special_token(value: Any) -> str | None:
    """tokenizer_config.json writes a special token as its text or as {"content": text, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def chat_template(folder: Path) -> str | None:
    """chat_template.jinja if present (newer transformers), else tokenizer_config.json's
    chat_template: a string, or a list of named templates of which "default" is the one."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8", errors="replace")
    config_path = folder / "tokenizer_config.json"
    template = read_json(config_path).get("chat_template") if config_path.exists() else None
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) else None


def tokenizer_metadata(tokenizer: Tokenizer) -> dict[str, Any]:
    """What inspect-gguf shows of a tokenizer, under GGUF's keys."""
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokenizer.tokens,
            "tokenizer.ggml.token_type": tokenizer.token_types, "tokenizer.ggml.add_bos_token": tokenizer.add_bos}
    for key, value in (("bos", tokenizer.bos_id), ("eos", tokenizer.eos_id)):
        if value is not None:
            meta[f"tokenizer.ggml.{key}_token_id"] = value
    return meta
