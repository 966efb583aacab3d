"""The SmolLM2 / SmolLM3 transformer: weights from the mapped GGUF file, the forward pass, the KV cache."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Callable, NamedTuple

import numpy as np
from numba import carray, njit, types
from numba.extending import intrinsic

from nanosmol.attention import AttentionScratch, attend, attend_batch
from nanosmol.config import ModelConfig
from nanosmol.gguf_file import GGUFFile
from nanosmol.kv.cache import KVCache, store_kv
from nanosmol.kv.types import CacheTypes
from nanosmol.layers import RopeTable, rmsnorm, rope_inplace, swiglu_inplace
from nanosmol.quants import QuantMatrix, matmul_all, typed_kernels
from nanosmol.quants.intdot import QuantizedVector, quantize_vector
from nanosmol.quants.specialize import named_for
from nanosmol.quants.vecdot import PREFILL_TOKENS
from nanosmol.quants.kernels import matvec, matvec_qkv, matvec_swiglu
from nanosmol.workers import single_threaded_blas

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


ROLES = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
WQ, WK, WV, WO, GATE, UP, DOWN = range(len(ROLES))


class LayerStack(NamedTuple):
    """Every layer's weights for the compiled decode step: where each matrix is, not the arrays.

    A tuple of 30 arrays per role made Numba unbox 210 arrays on every call and index them
    through 30-way switches: a quarter of the decode step's compile time. The matrices stay
    alive in Transformer.layers; decode views them by address (layer_matrix), so each must be
    one C-contiguous block.
    """

    qtypes: np.ndarray  # [n_layer, 7]: GGML type of wq, wk, wv, wo, w_gate, w_up, w_down
    addresses: np.ndarray  # [n_layer, 7]: where each matrix's bytes start
    shapes: np.ndarray  # [n_layer, 7, 2]: its rows and bytes per row
    attn_norm: np.ndarray  # [n_layer, n_embd]
    ffn_norm: np.ndarray
    use_rope: np.ndarray  # [n_layer] bool

    @classmethod
    def of(cls, layers: list[Layer]) -> "LayerStack":
        matrices = [[getattr(layer, role) for role in ROLES] for layer in layers]
        if not all(m.raw.flags.c_contiguous for row in matrices for m in row):
            raise ValueError("decode reads each weight matrix in place: every one must be C-contiguous")
        return cls(np.array([[m.code for m in row] for row in matrices], np.int64),
                   np.array([[m.raw.ctypes.data for m in row] for row in matrices], np.int64),
                   np.array([[m.raw.shape for m in row] for row in matrices], np.int64),
                   np.stack([l.attn_norm for l in layers]), np.stack([l.ffn_norm for l in layers]),
                   np.array([l.use_rope for l in layers]))

    def role_types(self) -> tuple[tuple[int, int], ...]:
        """What decode compiles each matrix role for: the two types its layers hold (llama.cpp's
        mixes give attn_v and ffn_down more bits in some layers), the same one twice where all
        share it, (MIXED, MIXED) where they hold more."""
        kinds = [sorted({int(code) for code in codes}) for codes in self.qtypes.T]
        return tuple((k[0], k[-1]) if len(k) <= 2 else (MIXED, MIXED) for k in kinds)


@intrinsic
def _pointer(typingctx, address):
    """An int64 address as a uint8 pointer."""

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return types.CPointer(types.uint8)(types.int64), codegen


@njit(inline="always")
def layer_matrix(w, layer, role):
    """Layer's matrix of the role, [rows, row bytes], viewed where it lies (a C-contiguous array)."""
    return carray(_pointer(w.addresses[layer, role]), (w.shapes[layer, role, 0], w.shapes[layer, role, 1]))


class DecodeScratch(NamedTuple):
    """One token's activations, allocated once: decode_layers allocates nothing."""

    h: np.ndarray  # [1, n_embd]: the normed input of a sublayer
    q: np.ndarray  # [1, n_head * head_dim]
    k: np.ndarray  # [1, n_head_kv * head_dim]
    v: np.ndarray
    attn: np.ndarray  # [1, n_head * head_dim]
    out: np.ndarray  # [1, n_embd]: a sublayer's output, before the residual add
    gate: np.ndarray  # [n_ff]
    up: np.ndarray
    xq: QuantizedVector  # the input of the matrix-vector products, quantized (room for any)
    attention: AttentionScratch  # attention's buffers over the cache slots
    row: np.ndarray  # [n_embd]: one output-matrix row, dequantized

    @classmethod
    def of(cls, c: ModelConfig, n_ctx: int) -> "DecodeScratch":
        row = lambda n: np.zeros((1, n), np.float32)
        return cls(row(c.n_embd), row(c.n_head * c.head_dim), row(c.n_head_kv * c.head_dim),
                   row(c.n_head_kv * c.head_dim), row(c.n_head * c.head_dim), row(c.n_embd),
                   np.zeros(c.n_ff, np.float32), np.zeros(c.n_ff, np.float32),
                   QuantizedVector.empty(max(c.n_embd, c.n_ff, c.n_head * c.head_dim)),
                   AttentionScratch.of(1, c.n_head, c.head_dim, n_ctx), np.zeros(c.n_embd, np.float32))


RESCORED = 16  # decode's best candidates whose logits are recomputed from the float activation


def rescore_top(output: QuantMatrix, x: np.ndarray, logits: np.ndarray, scratch: np.ndarray) -> None:
    """Recompute the top RESCORED logits of one token exactly (weights . float x), in place.

    Decode's int8 activations move logits by ~1% of their range, enough to flip a near-tie
    at the top, which greedy decoding turns into different text (the default model answers
    "What is the capital of France?" with "Paris" only in float). It costs microseconds.
    """
    typed_kernels.rescore_top(output.code)(output.raw, x, logits, min(RESCORED, len(logits)), scratch)


def project(w: QuantMatrix, x: np.ndarray, xq: QuantizedVector) -> np.ndarray:
    """x @ W.T: one token through the matvec kernel (x quantized into xq), a batch through matmul."""
    if x.shape[0] == 1:
        return w.matvec(x[0], xq=xq)[None, :]
    return w.matmul(x)


class Transformer:
    def __init__(self, gguf: GGUFFile, config: ModelConfig, n_ctx: int, n_keep: int = 4,
                 cache_types: CacheTypes = CacheTypes()):
        """gguf: a GGUFFile or a source shown as one (nanosmol.checkpoint): .tensors, .tensor_data(name)."""
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
        self.stack = LayerStack.of(self.layers)
        self.scratch = DecodeScratch.of(c, n_ctx)
        self.cache = KVCache(c.n_layer, n_ctx, c.n_head_kv, c.head_dim, n_keep=min(n_keep, n_ctx - 1),
                             types=cache_types)
        self.decode_layers = decoder(self.stack.role_types(), (self.cache.k_type, self.cache.v_type))
        self.rope = RopeTable(c.head_dim, c.rope_theta, n_ctx, c.rope_freq_scale)

    def warm_up(self, before_decode: Callable[[], None] = lambda: None) -> None:
        """A short prefill and one decode step from an empty cache, then empty it again: the
        kernels this file needs are compiled (or loaded from Numba's cache) now, not inside
        the first generation (milliseconds on the default model once cached). before_decode
        runs between the two (e.g. waits for another process compiling the decode step)."""
        prompt = min(PREFILL_TOKENS + 1, self.cache.ring_size - 1)  # 8 tokens and a tail, where they fit
        with np.errstate(all="ignore"):  # its logits are thrown away: overflow is reported on real input
            if prompt > 1:
                self.forward(np.zeros(prompt, np.int64))
            before_decode()
            self.forward(np.zeros(1, np.int64))
        self.cache.reset()

    def warm_up_decode_layers(self) -> None:
        """Compile (or load) the decode step's layers alone, the largest kernel, from an empty cache."""
        c, cache = self.config, self.cache
        slots = cache.slots_for(1)
        positions = cache.advance(slots)
        with np.errstate(all="ignore"):
            self._decode_layers(np.zeros((1, c.n_embd), np.float32), slots, positions, *self.rope.lookup(positions))
        cache.reset()

    def forward(self, tokens: np.ndarray, all_logits: bool = False) -> np.ndarray:
        """Feed tokens after those already cached; logits of the last token (or of all)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        chunk = min(PREFILL_CHUNK, self.cache.ring_size)
        with single_threaded_blas():  # attention's BLAS calls on this thread too
            outputs = [self._forward_chunk(tokens[i : i + chunk], all_logits) for i in range(0, len(tokens), chunk)]
        return np.concatenate(outputs) if all_logits else outputs[-1]

    def _forward_chunk(self, tokens: np.ndarray, all_logits: bool) -> np.ndarray:
        c, cache = self.config, self.cache
        slots = cache.slots_for(len(tokens))
        positions = cache.advance(slots)
        cos, sin = self.rope.lookup(positions)
        x = self.token_embd.dequantize_rows(tokens)
        if len(tokens) == 1:
            self._decode_layers(x, slots, positions, cos, sin)
        else:
            self._prefill_layers(x, slots, positions, cos, sin)
        if not all_logits:
            x = x[-1:]
        rmsnorm(x, self.output_norm, c.rms_eps, x)
        logits = project(self.output, x, self.scratch.xq)
        if len(x) == 1:
            rescore_top(self.output, x[0], logits[0], self.scratch.row)
        return logits if all_logits else logits[0]

    def _decode_layers(self, x, slots, positions, cos, sin) -> None:
        """The layers for one token x [1, n_embd], in one compiled call (decode_layers)."""
        c, cache = self.config, self.cache
        self.decode_layers(x, self.stack, cache.k, cache.v, cache.shifts, cache.slot_pos, slots, positions,
                           cache.n_filled, cos, sin, c.rms_eps, c.n_head, c.head_dim, self.scratch)

    def _prefill_layers(self, x, slots, positions, cos, sin) -> None:
        """The layers for a batch of tokens: the weights go through BLAS tile by tile.

        The small layers run serially: on worker threads, the hand-off cost more than they
        take (RMSNorm of 64 rows: 9 us on this thread, 66 us spread over two workers).
        """
        c, cache = self.config, self.cache
        h = np.empty_like(x)
        attn = np.empty((len(x), c.n_head * c.head_dim), np.float32)
        for il, layer in enumerate(self.layers):
            rmsnorm(x, layer.attn_norm, c.rms_eps, h)
            q, k, v = matmul_all([layer.wq, layer.wk, layer.wv], h)
            if layer.use_rope:
                rope_inplace(q, c.n_head, c.head_dim, cos, sin)
                rope_inplace(k, c.n_head_kv, c.head_dim, cos, sin)
            cache.store(il, k, v, slots)
            attend_batch(q, cache.k[il], cache.v[il], cache.k_type, cache.v_type, cache.shifts.vectors[il],
                         cache.slot_pos, positions, cache.n_filled, c.n_head, c.head_dim, attn)
            x += layer.wo.matmul(attn)
            rmsnorm(x, layer.ffn_norm, c.rms_eps, h)
            gate, up = matmul_all([layer.w_gate, layer.w_up], h)
            swiglu_inplace(gate, up)
            x += layer.w_down.matmul(gate)


MIXED = -1  # a role whose layers hold more than two types (no llama.cpp mix does)
DECODE = dict(cache=True, fastmath=True, boundscheck=False)


@cache
def decoder(role_types: tuple[tuple[int, int], ...], cache_types: tuple[int, int]):
    """decode_layers compiled for the types of wq, wk, wv, wo, w_gate, w_up and w_down (a pair
    each, as LayerStack.role_types gives them) and of the cache's keys and values: each a
    constant, so that only its kernels compile. Where a role is MIXED, every matrix takes its
    layer's type at run time (`generic`)."""

    tq, tk, tv, to, tg, tu, td = role_types
    k_type, v_type = cache_types
    generic = MIXED in sum(role_types, ())

    @njit(**DECODE)
    @named_for(sum(role_types, ()) + cache_types)
    def decode_layers_of_types(x, w, k_cache, v_cache, shifts, slot_pos, slots, positions, n_filled, cos, sin, eps,
                               n_head, head_dim, s):
        decode_layers(tq, tk, tv, to, tg, tu, td, generic, x, w, k_cache, v_cache, k_type, v_type, shifts, slot_pos,
                      slots, positions, n_filled, cos, sin, eps, n_head, head_dim, s)

    return decode_layers_of_types


# Given a runtime type, a kernel compiles and dispatches every type's code, and ran 2-6x
# slower than given a constant (SmolLM2-135M's Q5_0 rows: 1.4 against 8.5 GB/s). So each
# call below passes its layer's type as one of its role's two constants, picked by a branch.


@njit(inline="always")
def layer_type(role_type, per_layer, generic):
    """The constant role_type, or the layer's type read at run time in a generic decoder.
    (`generic` is a constant that Numba prunes on; a test of role_type itself, an element
    of a tuple, it would not prune, and every call would become generic.)"""
    return per_layer if generic else role_type


@njit(inline="always", **DECODE)
def matvec_of_layer(role, generic, per_layer, w, x, xq, out):
    if per_layer == role[0]:
        matvec(layer_type(role[0], per_layer, generic), w, x, xq, out)
    else:
        matvec(layer_type(role[1], per_layer, generic), w, x, xq, out)


@njit(inline="always", **DECODE)
def qkv_of_layer(tq, tk, tv, generic, t, wq, q, wk, k, wv, v, x, xq):
    """matvec_qkv with the layer's three types as constants: q's picked here, then k's and v's."""
    if t[WQ] == tq[0]:
        kv_of_layer(layer_type(tq[0], t[WQ], generic), tk, tv, generic, t, wq, q, wk, k, wv, v, x, xq)
    else:
        kv_of_layer(layer_type(tq[1], t[WQ], generic), tk, tv, generic, t, wq, q, wk, k, wv, v, x, xq)


@njit(inline="always", **DECODE)
def kv_of_layer(q_type, tk, tv, generic, t, wq, q, wk, k, wv, v, x, xq):
    if t[WK] == tk[0]:
        v_of_layer(q_type, layer_type(tk[0], t[WK], generic), tv, generic, t, wq, q, wk, k, wv, v, x, xq)
    else:
        v_of_layer(q_type, layer_type(tk[1], t[WK], generic), tv, generic, t, wq, q, wk, k, wv, v, x, xq)


@njit(inline="always", **DECODE)
def v_of_layer(q_type, k_type, tv, generic, t, wq, q, wk, k, wv, v, x, xq):
    if t[WV] == tv[0]:
        matvec_qkv(q_type, wq, q, k_type, wk, k, layer_type(tv[0], t[WV], generic), wv, v, x, xq)
    else:
        matvec_qkv(q_type, wq, q, k_type, wk, k, layer_type(tv[1], t[WV], generic), wv, v, x, xq)


@njit(inline="always", **DECODE)
def swiglu_of_layer(tg, tu, generic, t, w_gate, w_up, x, xq, out, up):
    """matvec_swiglu with the layer's gate and up types as constants."""
    if t[GATE] == tg[0]:
        up_of_layer(layer_type(tg[0], t[GATE], generic), tu, generic, t, w_gate, w_up, x, xq, out, up)
    else:
        up_of_layer(layer_type(tg[1], t[GATE], generic), tu, generic, t, w_gate, w_up, x, xq, out, up)


@njit(inline="always", **DECODE)
def up_of_layer(gate_type, tu, generic, t, w_gate, w_up, x, xq, out, up):
    if t[UP] == tu[0]:
        matvec_swiglu(gate_type, w_gate, layer_type(tu[0], t[UP], generic), w_up, x, xq, out, up)
    else:
        matvec_swiglu(gate_type, w_gate, layer_type(tu[1], t[UP], generic), w_up, x, xq, out, up)


@njit(inline="always", **DECODE)
def decode_layers(tq, tk, tv, to, tg, tu, td, generic, x, w, k_cache, v_cache, k_type, v_type, shifts, slot_pos,
                  slots, positions, n_filled, cos, sin, eps, n_head, head_dim, s):
    """The layers of _prefill_layers for one token x [1, n_embd], compiled whole.

    A SmolLM2-135M step has under 10 ms; dispatching its 400 small ops from Python took a
    quarter of that. Q, K, V share one parallel region, and so do gate, up and SiLU; the
    small layers run serially on the one row.
    """
    n_head_kv = k_cache.shape[1]
    for il in range(w.qtypes.shape[0]):
        t = w.qtypes[il]
        rmsnorm(x, w.attn_norm[il], eps, s.h)
        xq = quantize_vector(s.h[0], s.xq)
        qkv_of_layer(tq, tk, tv, generic, t, layer_matrix(w, il, WQ), s.q[0], layer_matrix(w, il, WK), s.k[0],
                     layer_matrix(w, il, WV), s.v[0], s.h[0], xq)
        if w.use_rope[il]:
            rope_inplace(s.q, n_head, head_dim, cos, sin)
            rope_inplace(s.k, n_head_kv, head_dim, cos, sin)
        store_kv(k_cache[il], v_cache[il], k_type, v_type, s.k, s.v, slots, head_dim, shifts, il)
        attend(s.q, k_cache[il], v_cache[il], k_type, v_type, shifts.vectors[il], slot_pos, positions, n_filled, n_head,
               head_dim, s.attn, s.attention)
        matvec_of_layer(to, generic, t[WO], layer_matrix(w, il, WO), s.attn[0], quantize_vector(s.attn[0], s.xq),
                        s.out[0])
        x += s.out
        rmsnorm(x, w.ffn_norm[il], eps, s.h)
        xq = quantize_vector(s.h[0], s.xq)
        swiglu_of_layer(tg, tu, generic, t, layer_matrix(w, il, GATE), layer_matrix(w, il, UP), s.h[0], xq, s.gate,
                        s.up)
        matvec_of_layer(td, generic, t[DOWN], layer_matrix(w, il, DOWN), s.gate, quantize_vector(s.gate, s.xq),
                        s.out[0])
        x += s.out


def _matrix(gguf: GGUFFile, name: str) -> QuantMatrix:
    t = gguf.tensors[name]
    return QuantMatrix(gguf.tensor_data(name), t.type, t.rows, t.cols, name=name)
