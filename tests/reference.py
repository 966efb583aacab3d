"""An independent float64 numpy forward pass, the oracle for the engine's own.

It shares no code with nanosmol: gguf-py reads the file and dequantizes every weight,
and the transformer is written out plainly, nanoGPT style. Like llama.cpp (and the engine),
it multiplies a quantized weight with its input rounded to int8 per block: 32 values for the
32-value types, 256 for the k-quants (llama.cpp's Q8_0 and Q8_K activations).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader
from gguf.quants import dequantize

FLOAT_TYPES = (T.F32, T.F16, T.BF16)
K_QUANTS = (T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K)


@lru_cache(maxsize=None)
def load_weights(path: str) -> tuple[dict, dict, dict]:
    """Metadata, every tensor as float64, and the block of int8 activations each weight meets
    (None for float weights)."""
    reader = GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    weights, activation_block = {}, {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape)]  # GGUF lists the fastest dimension first
        weights[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
        kind = T(t.tensor_type)
        activation_block[t.name] = None if kind in FLOAT_TYPES else 256 if kind in K_QUANTS else 32
    return meta, weights, activation_block


def int8_rounded(x, block: int):
    """x as q * d per block, with d = max|x| / 127 and q = round(x * 127 / max|x|) in float32
    as the quantizer's specification has it: what integer products see."""
    blocks = x.astype(np.float32).reshape(*x.shape[:-1], -1, block)
    amax = np.abs(blocks).max(-1, keepdims=True)
    inverse = np.divide(np.float32(127), amax, out=np.zeros_like(amax), where=amax > 0)
    q = np.rint(blocks * inverse)
    return (q.astype(np.float64) * (amax / np.float32(127)).astype(np.float64)).reshape(x.shape)


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
    meta, w, activation_block = load_weights(path)

    def linear(x, name):
        block = activation_block[name]
        return (x if block is None else int8_rounded(x, block)) @ w[name].T
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
        q = linear(h, p + "attn_q.weight").reshape(T, n_head, hd)
        k = linear(h, p + "attn_k.weight").reshape(T, n_kv, hd)
        v = linear(h, p + "attn_v.weight").reshape(T, n_kv, hd)
        nope = arch == "smollm3" and (il + 1) % 4 == 0
        if not nope:
            q, k = rope(q, positions, base), rope(k, positions, base)
        k = np.repeat(k, n_head // n_kv, axis=1)  # grouped-query: each KV head serves a group
        v = np.repeat(v, n_head // n_kv, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + causal
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        attn = np.einsum("hts,shd->thd", probs, v).reshape(T, n_head * hd)
        x = x + linear(attn, p + "attn_output.weight")
        h = rmsnorm(x, w[p + "ffn_norm.weight"], eps)
        gate, up = linear(h, p + "ffn_gate.weight"), linear(h, p + "ffn_up.weight")
        x = x + linear(gate / (1 + np.exp(-gate)) * up, p + "ffn_down.weight")
    x = rmsnorm(x, w["output_norm.weight"], eps)
    return linear(x, "output.weight" if "output.weight" in w else "token_embd.weight")
