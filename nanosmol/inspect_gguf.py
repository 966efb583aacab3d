"""`nanosmol inspect-gguf`: what a GGUF file holds, whether this engine can run it, and at what memory cost."""

from __future__ import annotations

from collections import Counter
from typing import Any

from nanosmol.chat import ChatTemplateError, render_chat
from nanosmol.checkpoint import load_tokenizer
from nanosmol.config import ConfigError, ModelConfig, tensor_problems
from nanosmol.finite import nonfinite_problem, nonfinite_tensors
from nanosmol.gguf_file import GGUFFile
from nanosmol.kv.types import CacheTypes
from nanosmol.memory import memory_estimate
from nanosmol.quants import SUPPORTED_TYPES
from nanosmol.tokenizer import TokenizerError

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
SPECIAL_TOKEN_KEYS = ("bos", "eos", "eot", "eom", "padding", "unknown", "sep", "cls", "mask")
SAMPLE_CONVERSATION = [{"role": "user", "content": "hello"}]  # what the verdict renders the chat template with


def build_report(gguf: GGUFFile, ctx: int | None = None, with_tensors: bool = False,
                 cache_types: CacheTypes = CacheTypes()) -> dict[str, Any]:
    """Everything `inspect-gguf` shows, as one JSON-ready dict."""
    meta = gguf.metadata
    tensors = list(gguf.tensors.values())
    parameter_count = sum(t.n_elements for t in tensors)
    tensor_bytes = sum(t.nbytes for t in tensors)
    config, config_error = _config(gguf)
    report: dict[str, Any] = {
        "file": gguf.path,
        "gguf_version": gguf.version,
        "architecture": meta.get("general.architecture"),
        "name": meta.get("general.name"),
        "file_size": gguf.file_size,
        "tensor_count": len(tensors),
        "parameter_count": parameter_count,
        "bits_per_weight": round(tensor_bytes * 8 / parameter_count, 3) if parameter_count else None,
        "quant_mix": _quant_mix(tensors, gguf.file_size),
        "hyperparameters": _hyperparameters(config) if config else None,
        "nope_layers": list(config.nope_layers) if config else [],
        "tokenizer": _tokenizer(meta),
        "validation": _validate(gguf, config, config_error),
    }
    if ctx is not None and config is not None:
        report["memory"] = memory_estimate(config, tensor_bytes, ctx, cache_types)
    if with_tensors:
        report["tensors"] = [
            {"name": t.name, "type": t.type.name, "shape": list(t.shape), "bytes": t.nbytes, "offset": t.offset}
            for t in tensors
        ]
    return report


def _config(gguf: GGUFFile) -> tuple[ModelConfig | None, str | None]:
    try:
        return ModelConfig.from_gguf(gguf.metadata, gguf.tensors), None
    except ConfigError as e:
        return None, str(e)


def _quant_mix(tensors, file_size: int) -> dict[str, dict[str, Any]]:
    counts, sizes = Counter(), Counter()
    for t in tensors:
        counts[t.type.name] += 1
        sizes[t.type.name] += t.nbytes
    return {
        name: {"tensors": counts[name], "bytes": sizes[name], "share": round(sizes[name] / file_size, 4)}
        for name in sorted(counts, key=lambda n: -sizes[n])
    }


def _hyperparameters(c: ModelConfig) -> dict[str, Any]:
    return {
        "layers": c.n_layer,
        "width": c.n_embd,
        "heads": c.n_head,
        "kv_heads": c.n_head_kv,
        "gqa_ratio": c.gqa_ratio,
        "head_dim": c.head_dim,
        "ffn_width": c.n_ff,
        "vocab_size": c.vocab_size,
        "context_length": c.n_ctx_train,
        "rope_theta": c.rope_theta,
        "rms_eps": c.rms_eps,
        "tied_embeddings": c.tied_embeddings,
    }


def _list(meta: dict[str, Any], key: str) -> list:
    """A metadata array, or [] when the key holds something else: the report describes any file."""
    value = meta.get(key)
    return value if isinstance(value, list) else []


def _tokenizer(meta: dict[str, Any]) -> dict[str, Any]:
    tokens = _list(meta, "tokenizer.ggml.tokens")
    types = _list(meta, "tokenizer.ggml.token_type")

    def token_text(i):
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else None

    special = {}
    for key in SPECIAL_TOKEN_KEYS:
        token_id = meta.get(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            special[key] = {"id": token_id, "text": token_text(token_id)}
    control = [tokens[i] for i, t in enumerate(types[: len(tokens)]) if t == TOKEN_TYPE_CONTROL]
    return {
        "model": meta.get("tokenizer.ggml.model"),
        "pre": meta.get("tokenizer.ggml.pre"),
        "vocab_size": len(tokens),
        "merges": len(_list(meta, "tokenizer.ggml.merges")),
        "add_bos": meta.get("tokenizer.ggml.add_bos_token"),
        "special_tokens": special,
        "control_tokens": control,
        "user_defined_tokens": sum(1 for t in types if t == TOKEN_TYPE_USER_DEFINED),
        "chat_template": "tokenizer.chat_template" in meta,
    }


def _validate(gguf: GGUFFile, config: ModelConfig | None, config_error: str | None) -> dict[str, Any]:
    """Can this engine run the file? Lists every reason it cannot.

    It does what loading does short of the forward pass: the config, the tensors, the
    NaN scan, the tokenizer, and the chat template rendered for a sample conversation.
    """
    problems = []
    if config is None:
        problems.append(config_error)
    else:
        problems += tensor_problems(config, gguf.tensors)
        problems += [nonfinite_problem(gguf, name) for name in nonfinite_tensors(gguf, config.required_tensors())]
    # Load reads only the architecture's tensors: an extra one of an unknown type does not stop it.
    used = gguf.tensors.values() if config is None else [gguf.tensors[n] for n in config.required_tensors()
                                                            if n in gguf.tensors]
    for t in used:
        if t.type not in SUPPORTED_TYPES:
            problems.append(f"tensor {t.name} has type {t.type.name}, which this engine does not support")
    if not gguf.metadata.get("tokenizer.ggml.tokens"):
        problems.append("no tokenizer vocabulary (tokenizer.ggml.tokens)")
    else:
        problems += _tokenizer_and_template_problems(gguf)
    return {"runnable": not problems, "problems": problems}


def _tokenizer_and_template_problems(gguf: GGUFFile) -> list[str]:
    meta = gguf.metadata
    try:
        tokenizer = load_tokenizer(gguf)
    except TokenizerError as e:
        return [str(e)]
    try:
        prompt = render_chat(meta.get("tokenizer.chat_template"), SAMPLE_CONVERSATION,
                             bos_token=tokenizer.token_text(tokenizer.bos_id),
                             eos_token=tokenizer.token_text(tokenizer.eos_id))
        tokenizer.encode(prompt, special=True)
    except ChatTemplateError as e:
        return [f"{e} (run --raw does without it)"]
    except TokenizerError as e:
        return [str(e)]
    return []


# -- text rendering -------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def human_count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"file            {r['file']}",
        f"architecture    {r['architecture']}",
        f"name            {r['name']}",
        f"GGUF version    {r['gguf_version']}" if r["gguf_version"] else "format          Hugging Face checkpoint folder",
        f"file size       {human_bytes(r['file_size'])} ({r['file_size']:,} bytes)",
        f"parameters      {human_count(r['parameter_count'])} ({r['parameter_count']:,}) in {r['tensor_count']} tensors",
        f"bits per weight {r['bits_per_weight']}",
        "",
        "quant mix",
    ]
    for name, q in r["quant_mix"].items():
        lines.append(f"  {name:<8} {q['tensors']:>4} tensors  {human_bytes(q['bytes']):>12}  {q['share'] * 100:5.1f}%")
    h = r["hyperparameters"]
    if h:
        lines += [
            "",
            "hyperparameters",
            f"  layers {h['layers']}, width {h['width']}, FFN width {h['ffn_width']}, vocab {h['vocab_size']}",
            f"  heads {h['heads']}, KV heads {h['kv_heads']} (GQA {h['gqa_ratio']}:1), head dim {h['head_dim']}",
            f"  context length {h['context_length']}, RoPE theta {h['rope_theta']:g}, RMS eps {h['rms_eps']:g}",
            f"  tied embeddings {'yes' if h['tied_embeddings'] else 'no'}",
        ]
        if r["architecture"] == "smollm3" or r["nope_layers"]:
            nope = ", ".join(map(str, r["nope_layers"])) or "none"
            lines.append(f"  NoPE layers (no RoPE) {nope}")
    tok = r["tokenizer"]
    lines += [
        "",
        "tokenizer",
        f"  model {tok['model']}, pre-tokenizer {tok['pre']}, {tok['vocab_size']:,} tokens, {tok['merges']:,} merges",
        f"  add BOS {tok['add_bos']}, chat template {'yes (--template prints it)' if tok['chat_template'] else 'no'}",
    ]
    for key, t in tok["special_tokens"].items():
        lines.append(f"  {key:<8} {t['id']!s:>7}  {t['text']!r}")
    if tok["control_tokens"]:
        shown = ", ".join(map(str, tok["control_tokens"][:12]))
        more = f" (+{len(tok['control_tokens']) - 12} more)" if len(tok["control_tokens"]) > 12 else ""
        lines.append(f"  control tokens ({len(tok['control_tokens'])}): {shown}{more}")
    if "memory" in r:
        m = r["memory"]
        fits = {True: "fits", False: "does NOT fit", None: "unknown"}[m["fits"]]
        avail = human_bytes(m["available"]) if m["available"] is not None else "unknown"
        lines += [
            "",
            f"memory at --ctx {m['ctx']}",
            f"  weights (mapped) {human_bytes(m['weights']):>12}",
            f"  KV cache         {human_bytes(m['kv_cache']):>12}   K {m['cache_type_k']}, V {m['cache_type_v']}"
            f" (both f32 / f16 / q8_0 / q4_0: {' / '.join(human_bytes(b) for b in m['kv_cache_by_type'].values())})",
            f"  scratch          {human_bytes(m['scratch']):>12}",
            f"  total            {human_bytes(m['total']):>12}   {fits} in {avail} available",
        ]
    if "tensors" in r:
        lines += ["", f"{'name':<32} {'type':<6} {'shape':<18} {'bytes':>12} {'offset':>12}"]
        for t in r["tensors"]:
            shape = "x".join(map(str, t["shape"]))
            lines.append(f"{t['name']:<32} {t['type']:<6} {shape:<18} {t['bytes']:>12,} {t['offset']:>12,}")
    v = r["validation"]
    lines.append("")
    if v["runnable"]:
        lines.append("verdict: OK, every tensor present with the right shape and a supported type, "
                     "tokenizer and chat template work")
    else:
        lines.append(f"verdict: NOT RUNNABLE by nanosmol ({len(v['problems'])} problems)")
        lines += [f"  - {p}" for p in v["problems"][:20]]
        if len(v["problems"]) > 20:
            lines.append(f"  ... and {len(v['problems']) - 20} more")
    return "\n".join(lines)


def format_metadata(metadata: dict[str, Any], max_items: int = 8) -> str:
    """Every metadata key; long arrays shortened to their first items and length."""
    lines = []
    for key, value in metadata.items():
        if isinstance(value, list) and len(value) > max_items:
            head = ", ".join(repr(v) for v in value[:max_items])
            text = f"[{head}, ...] ({len(value):,} items)"
        elif isinstance(value, str) and len(value) > 120:
            text = repr(value[:120]) + f"... ({len(value):,} chars)"
        else:
            text = repr(value)
        lines.append(f"{key} = {text}")
    return "\n".join(lines)

