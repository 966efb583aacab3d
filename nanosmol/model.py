"""The SmolLM2 / SmolLM3 transformer: weights from the mapped GGUF file, the forward pass, the KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanosmol.attention import KVCache, attend, store_kv
from nanosmol.config import ModelConfig
from nanosmol.gguf_file import GGUFFile
from nanosmol.layers import RopeTable, rmsnorm, rope_inplace, swiglu_inplace
from nanosmol.quants import QuantMatrix

PREFILL_CHUNK = 512  # prompt tokens per forward batch: bounds the scratch memory


@dataclass
class Layer:
    attn_norm: np.ndarray
    wq: QuantMatrix
    wk: QuantMatrix
    wv: QuantMatrix
    wo: QuantMatrix
    ffn_norm: np.ndarray
    w_gate: QuantMatrix
    w_up: QuantMatrix
    w_down: QuantMatrix
    use_rope: bool


def project(w: QuantMatrix, x: np.ndarray) -> np.ndarray:
    """x @ W.T: one token through the matvec kernel, a batch through the matmul kernel."""
    if x.shape[0] == 1:
        return w.matvec(x[0])[None, :]
    return w.matmul(x)


class Transformer:
    def __init__(self, gguf: GGUFFile, config: ModelConfig, n_ctx: int, n_keep: int = 4):
        self.config = c = config
        matrix = lambda name: _matrix(gguf, name)
        vector = lambda name: matrix(name).dequantize_rows(np.zeros(1, np.int64))[0]
        self.token_embd = matrix("token_embd.weight")
        self.output = self.token_embd if c.tied_embeddings else matrix("output.weight")
        self.output_norm = vector("output_norm.weight")
        self.layers = [
            Layer(
                attn_norm=vector(f"blk.{i}.attn_norm.weight"),
                wq=matrix(f"blk.{i}.attn_q.weight"),
                wk=matrix(f"blk.{i}.attn_k.weight"),
                wv=matrix(f"blk.{i}.attn_v.weight"),
                wo=matrix(f"blk.{i}.attn_output.weight"),
                ffn_norm=vector(f"blk.{i}.ffn_norm.weight"),
                w_gate=matrix(f"blk.{i}.ffn_gate.weight"),
                w_up=matrix(f"blk.{i}.ffn_up.weight"),
                w_down=matrix(f"blk.{i}.ffn_down.weight"),
                use_rope=i not in c.nope_layers,
            )
            for i in range(c.n_layer)
        ]
        self.cache = KVCache(c.n_layer, n_ctx, c.n_head_kv, c.head_dim, n_keep=min(n_keep, n_ctx - 1))
        self.rope = RopeTable(c.head_dim, c.rope_theta, n_ctx)

    def forward(self, tokens: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Feed tokens after those already cached; logits of the last token (or of all)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        chunk = min(PREFILL_CHUNK, self.cache.ring_size)
        outputs = [self._forward_chunk(tokens[i : i + chunk], all_logits) for i in range(0, len(tokens), chunk)]
        return np.concatenate(outputs) if all_logits else outputs[-1]

    def _forward_chunk(self, tokens: np.ndarray, all_logits: bool) -> np.ndarray:
        c, cache = self.config, self.cache
        slots = cache.slots_for(len(tokens))
        positions = cache.advance(slots)
        cos, sin = self.rope.lookup(positions)
        x = self.token_embd.dequantize_rows(tokens)
        h = np.empty_like(x)
        attn = np.empty((len(tokens), c.n_head * c.head_dim), np.float32)
        for il, layer in enumerate(self.layers):
            rmsnorm(x, layer.attn_norm, c.rms_eps, h)
            q, k, v = project(layer.wq, h), project(layer.wk, h), project(layer.wv, h)
            if layer.use_rope:
                rope_inplace(q, c.n_head, c.head_dim, cos, sin)
                rope_inplace(k, c.n_head_kv, c.head_dim, cos, sin)
            store_kv(cache.k[il], cache.v[il], k, v, slots, c.head_dim)
            attend(q, cache.k[il], cache.v[il], cache.slot_pos, positions, cache.n_filled,
                   c.n_head, c.head_dim, attn)
            x += project(layer.wo, attn)
            rmsnorm(x, layer.ffn_norm, c.rms_eps, h)
            gate = swiglu_inplace(project(layer.w_gate, h), project(layer.w_up, h))
            x += project(layer.w_down, gate)
        if not all_logits:
            x = x[-1:]
        rmsnorm(x, self.output_norm, c.rms_eps, x)
        logits = project(self.output, x)
        return logits if all_logits else logits[0]


def _matrix(gguf: GGUFFile, name: str) -> QuantMatrix:
    t = gguf.tensors[name]
    return QuantMatrix(gguf.tensor_data(name), t.type, t.rows, t.cols, name=name)
