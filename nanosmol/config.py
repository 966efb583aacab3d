"""Model hyperparameters read from GGUF metadata, and the tensors each architecture needs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

SUPPORTED_ARCHITECTURES = ("llama", "smollm3")
MAX_LAYERS = 4096  # SmolLM3-3B has 36
DEFAULT_NOPE_INTERVAL = 4  # SmolLM3: every 4th layer skips RoPE (llama.cpp hard-codes it too)


class ConfigError(ValueError):
    """The file describes a model this engine cannot run."""


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    vocab_size: int
    n_ctx_train: int
    rope_theta: float
    rms_eps: float
    tied_embeddings: bool
    nope_layers: tuple[int, ...]  # layers that skip RoPE
    rope_freq_scale: float = 1.0  # linear RoPE scaling: positions are multiplied by this

    @property
    def gqa_ratio(self) -> int:
        return self.n_head // self.n_head_kv

    @classmethod
    def from_gguf(cls, metadata: Mapping[str, Any], tensor_names) -> "ModelConfig":
        arch = metadata.get("general.architecture")
        if arch not in SUPPORTED_ARCHITECTURES:
            raise ConfigError(
                f"architecture {_short(arch)} is not supported (supported: {', '.join(SUPPORTED_ARCHITECTURES)})"
            )

        def get(key: str, default=None, kind=int):
            value = metadata.get(f"{arch}.{key}", default)
            if value is None:
                raise ConfigError(f"metadata key {arch}.{key} is missing")
            if isinstance(value, list):
                value = value[0] if value else default  # per-layer arrays: all layers alike here
            number_types = (int,) if kind is int else (int, float)
            if not isinstance(value, number_types) or isinstance(value, bool) or not 0 < value < 2**40:
                raise ConfigError(f"metadata key {arch}.{key} = {_short(value)} is not a positive {kind.__name__}")
            return kind(value)

        n_layer = get("block_count")
        if n_layer > MAX_LAYERS:  # the per-layer lists built below must stay small
            raise ConfigError(f"metadata key {arch}.block_count = {n_layer} is more than {MAX_LAYERS} layers")
        n_embd = get("embedding_length")
        n_head = get("attention.head_count")
        n_head_kv = get("attention.head_count_kv", n_head)
        head_dim = get("attention.key_length", n_embd // n_head)
        if n_head % n_head_kv:
            raise ConfigError(f"{n_head} heads cannot be grouped over {n_head_kv} KV heads")
        if head_dim % 2:
            raise ConfigError(f"head dimension {head_dim} is odd: RoPE needs pairs")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if f"{arch}.vocab_size" in metadata:
            vocab_size = get("vocab_size")
        elif isinstance(tokens, list) and tokens:
            vocab_size = len(tokens)
        else:
            raise ConfigError("vocabulary size unknown: no vocab_size key and no token list")
        if isinstance(tokens, list) and tokens and len(tokens) != vocab_size:
            raise ConfigError(f"{arch}.vocab_size = {vocab_size}, but tokenizer.ggml.tokens holds {len(tokens)} tokens")
        return cls(
            arch=arch,
            n_layer=n_layer,
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            n_ff=get("feed_forward_length"),
            vocab_size=vocab_size,
            n_ctx_train=get("context_length", 2048),
            rope_theta=get("rope.freq_base", 10000.0, float),
            rms_eps=get("attention.layer_norm_rms_epsilon", 1e-5, float),
            tied_embeddings="output.weight" not in tensor_names,
            nope_layers=nope_layers(arch, n_layer, metadata),
            rope_freq_scale=rope_freq_scale(arch, metadata),
        )

    def required_tensors(self) -> dict[str, tuple[int, ...]]:
        """Every tensor the forward pass reads, with its GGUF shape (fastest dim first)."""
        d, kv, ff = self.n_embd, self.n_head_kv * self.head_dim, self.n_ff
        q = self.n_head * self.head_dim
        shapes = {"token_embd.weight": (d, self.vocab_size), "output_norm.weight": (d,)}
        if not self.tied_embeddings:
            shapes["output.weight"] = (d, self.vocab_size)
        for i in range(self.n_layer):
            shapes.update({
                f"blk.{i}.attn_norm.weight": (d,),
                f"blk.{i}.attn_q.weight": (d, q),
                f"blk.{i}.attn_k.weight": (d, kv),
                f"blk.{i}.attn_v.weight": (d, kv),
                f"blk.{i}.attn_output.weight": (q, d),
                f"blk.{i}.ffn_norm.weight": (d,),
                f"blk.{i}.ffn_gate.weight": (d, ff),
                f"blk.{i}.ffn_up.weight": (d, ff),
                f"blk.{i}.ffn_down.weight": (ff, d),
            })
        return shapes


def tensor_problems(config: ModelConfig, tensors) -> list[str]:
    """What keeps the file's tensors (name -> info with .shape) from matching the architecture."""
    problems = []
    for name, shape in config.required_tensors().items():
        info = tensors.get(name)
        if info is None:
            problems.append(f"missing tensor {name}")
        elif tuple(info.shape) != shape:
            problems.append(f"tensor {name} has shape {list(info.shape)}, expected {list(shape)}")
    return problems


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def nope_layers(arch: str, n_layer: int, metadata: Mapping[str, Any]) -> tuple[int, ...]:
    """Layers that skip RoPE. An explicit list or interval in the file wins over the default.

    `{arch}.no_rope_layers` follows the Hugging Face config: one flag per layer, 0 = NoPE.
    `{arch}.no_rope_layer_interval` (or llama.cpp's `no_rope_layer_step`): layer il skips
    RoPE when (il + 1) % interval == 0.
    """
    flags = metadata.get(f"{arch}.no_rope_layers")
    if flags is not None:
        if not isinstance(flags, list) or len(flags) != n_layer:
            raise ConfigError(f"{arch}.no_rope_layers must hold one flag for each of {n_layer} layers")
        return tuple(il for il, uses_rope in enumerate(flags) if not uses_rope)
    interval = metadata.get(f"{arch}.no_rope_layer_interval", metadata.get(f"{arch}.no_rope_layer_step"))
    if interval is None:
        interval = DEFAULT_NOPE_INTERVAL if arch == "smollm3" else 0
    if not isinstance(interval, int) or interval < 0:
        raise ConfigError(f"NoPE layer interval {_short(interval)} is not a non-negative integer")
    if interval == 0:
        return ()
    return tuple(il for il in range(n_layer) if (il + 1) % interval == 0)


def rope_freq_scale(arch: str, metadata: Mapping[str, Any]) -> float:
    """llama.cpp's RoPE scaling keys: "linear" divides positions by the factor; "none" or none
    leaves them. Other kinds (YaRN, ...) would give wrong logits: refused."""
    kind = metadata.get(f"{arch}.rope.scaling.type", "none")
    if kind == "none":
        return 1.0
    factor = metadata.get(f"{arch}.rope.scaling.factor")
    if kind != "linear":
        raise ConfigError(f"RoPE scaling {_short(kind)} is not supported (supported: none, linear)")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 < factor < 2**20:
        raise ConfigError(f"RoPE scaling factor {_short(factor)} is not a positive number")
    return 1.0 / factor
