"""A Hugging Face config.json as the GGUF metadata keys llama.cpp's converter writes for it.

The engine reads one set of hyperparameter keys (config.ModelConfig.from_gguf); a folder's
config is translated into them, so both formats meet the same checks.
"""

from __future__ import annotations

from typing import Any

from nanosmol.checkpoint.safetensors_shards import CheckpointError

ARCHITECTURES = {"LlamaForCausalLM": "llama", "SmolLM3ForCausalLM": "smollm3"}
ROPE_SCALING_TYPES = ("linear",)  # llama.cpp's "linear": positions divided by the factor

# config.json key -> GGUF key after "{arch}.", with the default of transformers' config class.
HYPERPARAMETERS = {
    "num_hidden_layers": ("block_count", None),
    "hidden_size": ("embedding_length", None),
    "intermediate_size": ("feed_forward_length", None),
    "num_attention_heads": ("attention.head_count", None),
    "num_key_value_heads": ("attention.head_count_kv", None),
    "head_dim": ("attention.key_length", None),
    "max_position_embeddings": ("context_length", 2048),
    "rope_theta": ("rope.freq_base", 10000.0),
    "rms_norm_eps": ("attention.layer_norm_rms_epsilon", 1e-6),
    "vocab_size": ("vocab_size", None),
}
# Where transformers' SmolLM3Config has other defaults than LlamaConfig.
ARCH_DEFAULTS = {"smollm3": {"max_position_embeddings": 32768, "rope_theta": 2000000.0, "num_key_value_heads": 4}}


def architecture(config: dict[str, Any]) -> str:
    """The GGUF architecture name of the config's model class."""
    names = config.get("architectures")
    name = names[0] if isinstance(names, list) and len(names) == 1 else names
    if not isinstance(name, str) or name not in ARCHITECTURES:
        raise CheckpointError(f"architecture {str(name)[:60]} is not supported (supported: {', '.join(ARCHITECTURES)})")
    return ARCHITECTURES[name]


def gguf_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """The config's hyperparameters under GGUF keys (checked by ModelConfig.from_gguf)."""
    arch = architecture(config)
    config = with_rope_parameters(config)
    for flag in ("attention_bias", "mlp_bias", "use_sliding_window"):
        if config.get(flag):
            raise CheckpointError(f"config.json sets {flag}, which nanosmol does not implement")
    meta: dict[str, Any] = {"general.architecture": arch}
    for key, (gguf_key, default) in HYPERPARAMETERS.items():
        value = config.get(key, ARCH_DEFAULTS.get(arch, {}).get(key, default))
        if value is not None:
            meta[f"{arch}.{gguf_key}"] = value
    if "no_rope_layers" in config:  # SmolLM3: one flag per layer, 0 = no RoPE, as written
        meta[f"{arch}.no_rope_layers"] = config["no_rope_layers"]
    elif "no_rope_layer_interval" in config:
        meta[f"{arch}.no_rope_layer_interval"] = config["no_rope_layer_interval"]
    meta.update(rope_scaling(arch, config.get("rope_scaling")))
    return meta


def with_rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """transformers 5 saves rope_theta and the scaling together as `rope_parameters` (per
    attention type in some models: llama.cpp's converter reads full attention's); older
    configs have `rope_theta` and `rope_scaling`. The config in the older form."""
    rope = config.get("rope_parameters")
    if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):
        rope = rope["full_attention"]
    if not isinstance(rope, dict):
        return config
    kind = rope.get("rope_type", rope.get("type", "default"))
    theta = {"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {}
    return config | theta | {"rope_scaling": None if kind == "default" else rope}


def rope_scaling(arch: str, scaling: Any) -> dict[str, Any]:
    if scaling is None:
        return {}
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, dict) else None
    if kind == "default":
        return {}
    if kind not in ROPE_SCALING_TYPES:
        raise CheckpointError(f"rope_scaling {str(scaling)[:60]} is not supported "
                              f"(supported: none, {', '.join(ROPE_SCALING_TYPES)})")
    return {f"{arch}.rope.scaling.type": kind, f"{arch}.rope.scaling.factor": scaling.get("factor")}
