"""An independent float64 numpy forward pass, the oracle for the engine's own.

It shares no code with nanosmol: gguf-py reads the file and dequantizes every weight,
and the transformer is written out plainly, nanoGPT style.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


@lru_cache(maxsize=None)
def load_weights(path: str) -> tuple[dict, dict]:
    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    weights = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]  # GGUF lists the fastest dimension first
        weights[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
    return meta, weights


def rmsnorm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, positions, base):
    """Rotate adjacent pairs (x[2j], x[2j+1]) by pos * base^(-2j/d): GGUF's permuted layout."""
    d = x.shape[-1]
    angles = positions[:, None] * base ** (-np.arange(0, d, 2) / d)  # [T, d/2]
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def reference_logits(path: str, tokens: list[int]) -> np.ndarray:
    meta, w = load_weights(path)
    arch = meta["general.architecture"]
    n_layer = meta[f"{arch}.block_count"]
    n_head = meta[f"{arch}.attention.head_count"]
    n_kv = meta[f"{arch}.attention.head_count_kv"]
    eps = meta[f"{arch}.attention.layer_norm_rms_epsilon"]
    base = meta[f"{arch}.rope.freq_base"]
    T = len(tokens)
    positions = np.arange(T, dtype=np.float64)
    x = w["token_embd.weight"][tokens]
    hd = x.shape[1] // n_head
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    for il in range(n_layer):
        p = f"blk.{il}."
        h = rmsnorm(x, w[p + "attn_norm.weight"], eps)
        q = (h @ w[p + "attn_q.weight"].T).reshape(T, n_head, hd)
        k = (h @ w[p + "attn_k.weight"].T).reshape(T, n_kv, hd)
        v = (h @ w[p + "attn_v.weight"].T).reshape(T, n_kv, hd)
        nope = arch == "smollm3" and (il + 1) % 4 == 0
        if not nope:
            q, k = rope(q, positions, base), rope(k, positions, base)
        k = np.repeat(k, n_head // n_kv, axis=1)  # grouped-query: each KV head serves a group
        v = np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", probs, v).reshape(T, n_head * hd)
        x = x + attn @ w[p + "attn_output.weight"].T
        h = rmsnorm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = h @ w[p + "ffn_gate.weight"].T, h @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = rmsnorm(x, w["output_norm.weight"], eps)
    return x @ w.get("output.weight", w["token_embd.weight"]).T
