"""`nanosmol convert DIR -o OUT.gguf --type TYPE`: a Hugging Face folder as a GGUF file.

For F32, F16, BF16 and Q8_0 (the types of llama.cpp's convert_hf_to_gguf.py) the file is the
one that converter writes: its metadata keys, types and order, its tensor names, order and
bytes (Q and K rows permuted to GGUF's layout, norms in F32, other weights in the type, a
row that does not fit Q8_0's blocks in F16). For the other types (Q4_K_M, ...) it is the
file llama-quantize makes from the converter's: llama.cpp's mix, its metadata with the
quantization version and file type last, tensors in llama-quantize's order. The tensors are
planned by quantize_gguf.plan_tensors, as for `nanosmol quantize`, and written one at a time.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter, RopeScalingType, SpecialVocab
from tokenizers import Tokenizer as HFTokenizer

from nanosmol.checkpoint import CheckpointError, HFFolder
from nanosmol.checkpoint.safetensors_shards import read_json
from nanosmol.config import DEFAULT_NOPE_INTERVAL, ModelConfig, nope_layers
from nanosmol.convert.hf_vocab import gguf_vocabulary, pre_tokenizer_name
from nanosmol.convert.quantize_gguf import GGML_QUANTIZATION_VERSION, plan_tensors
from nanosmol.convert.writer import MetadataEntry, Progress, TensorPlan, write_gguf
from nanosmol.quants.mixes import MIXES, Mix, find_mix

CONVERTER_TYPES = ("F32", "F16", "BF16", "Q8_0")  # convert_hf_to_gguf.py's --outtype
LAST_KEYS = ("general.quantization_version", "general.file_type")  # where llama-quantize puts them
GRANITE_VOCAB_SIZE = 49152  # llama.cpp's converter writes add_bos_token false for this vocabulary size


class ConvertError(ValueError):
    """The folder cannot be converted as asked."""


class Converted(NamedTuple):
    mix: Mix  # the type written
    notes: list[str]  # what llama.cpp will not honour, what of the folder was left out


def convert_folder(source: str | os.PathLike, target: str | os.PathLike, type_name: str = "auto",
                   progress: Progress | None = None) -> Converted:
    """Write `target` from the folder `source` in `type_name`: a `nanosmol quantize` TYPE, or
    "auto", llama.cpp's default (BF16 from a BF16 checkpoint, else F16)."""
    folder = HFFolder(source)
    try:
        if os.path.exists(target) and any(os.path.samefile(target, f) for f in folder.files):
            raise ConvertError(f"{target} is a file of the checkpoint: write the GGUF file elsewhere")
        mix = default_mix(folder) if type_name.lower() == "auto" else find_mix(type_name)
        config, plans = plan_tensors(folder, mix, others_as=T.F32)
        if mix.name in CONVERTER_TYPES:
            order = {name: i for i, name in enumerate(converter_order(folder))}
            plans.sort(key=lambda plan: order[plan.name])
        metadata, notes = converter_metadata(folder, config, mix, plans)
        write_gguf(target, config.arch, metadata, plans, progress)
        return Converted(mix, notes)
    finally:
        folder.close()


def converter_order(folder: HFFolder) -> list[str]:
    """The converter's tensor order: shard by shard (sorted), by name within each."""
    return sorted(folder.tensors, key=lambda name: (folder.shard_of[name], folder.hf_names[name]))


def default_mix(folder: HFFolder) -> Mix:
    """The converter's --outtype auto: BF16 when its first matrix is BF16, else F16."""
    first = next(folder.tensors[n] for n in converter_order(folder) if len(folder.tensors[n].shape) == 2)
    return MIXES["BF16" if first.type == T.BF16 else "F16"]


def converter_metadata(folder: HFFolder, config: ModelConfig, mix: Mix,
                       plans: list[TensorPlan]) -> tuple[list[MetadataEntry], list[str]]:
    """The keys llama.cpp's converter writes for the folder, in its order, with its types,
    collected by gguf-py's writer from the folder's hyperparameters and tokenizer files."""
    writer = GGUFWriter(None, config.arch)
    writer.add_type(gguf.GGUFType.MODEL)
    notes = add_model_card(writer, Path(folder.path).resolve(), sum(math.prod(plan.shape) for plan in plans))
    add_hyperparameters(writer, folder.metadata, config, mix)
    notes += add_nope_layers(writer, config)
    writer.add_quantization_version(GGML_QUANTIZATION_VERSION)
    add_vocabulary(writer, folder, config)
    entries = {key: (v.value, v.type, v.sub_type) for key, v in writer.kv_data[0].items()}
    template = folder.metadata.get("tokenizer.chat_template")
    if template is not None:  # the one the folder runs with (chat_template.jinja first, as transformers)
        entries["tokenizer.chat_template"] = (template, GGUFValueType.STRING, None)
    if config.vocab_size == GRANITE_VOCAB_SIZE:  # in place if written before: the converter overwrites it
        entries["tokenizer.ggml.add_bos_token"] = (False, GGUFValueType.BOOL, None)
    if mix.name not in CONVERTER_TYPES:  # as llama-quantize rewrites them
        entries = {k: v for k, v in entries.items() if k not in LAST_KEYS} | {k: entries[k] for k in LAST_KEYS}
    return [MetadataEntry(key, *value) for key, value in entries.items()], notes


def add_model_card(writer: GGUFWriter, folder: Path, total_params: int) -> list[str]:
    """general.name, the size label and what README.md's model card says, as the converter
    finds them (gguf-py's Metadata). The card is optional: what cannot be written is left out."""
    notes = []
    try:
        card = gguf.Metadata.load(None, folder, None, total_params)
    except Exception as e:  # noqa: BLE001  (YAML, JSON, heuristics on any text)
        card = gguf.Metadata()
        notes.append(f"README.md's model card left out: {str(e).strip()[:80]!r}")
    card.name = card.name or folder.name
    if card.size_label is None and total_params > 0:
        card.size_label = gguf.size_label(total_params, total_params, 0, 0)
    collected = GGUFWriter(None, writer.arch)
    try:
        card.set_gguf_meta_model(collected)
    except Exception as e:  # noqa: BLE001  (a field of an unexpected type)
        notes.append(f"README.md's model card left out: {str(e).strip()[:80]!r}")
        collected = GGUFWriter(None, writer.arch)
        gguf.Metadata(name=card.name, size_label=card.size_label).set_gguf_meta_model(collected)
    for key, value in collected.kv_data[0].items():
        if key == "general.architecture":
            continue
        if writable(value.value, value.type):
            writer.add_key_value(key, value.value, value.type, value.sub_type)
        else:
            notes.append(f"README.md's model card: {key} left out ({str(value.value)[:40]!r} is not a {value.type.name})")
    return notes


def writable(value: Any, vtype: GGUFValueType) -> bool:
    """Does GGUFWriter write this value as this type? (A model card's YAML holds anything.)"""
    if vtype == GGUFValueType.ARRAY:
        return (isinstance(value, list) and bool(value)
                and all(type(v) is type(value[0]) and writable(v, GGUFValueType.get_type(v)) for v in value))
    if vtype == GGUFValueType.STRING:
        return isinstance(value, str)
    if vtype == GGUFValueType.BOOL:
        return isinstance(value, bool)
    if vtype in (GGUFValueType.FLOAT32, GGUFValueType.FLOAT64):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**64


def add_hyperparameters(writer: GGUFWriter, metadata: dict[str, Any], config: ModelConfig, mix: Mix) -> None:
    """The converter's set_gguf_parameters for LlamaModel (and SmolLM3Model, its subclass)."""
    arch = config.arch
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.n_ctx_train)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(config.n_ff)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head_kv)
    if metadata.get(f"{arch}.rope.scaling.type") == "linear":
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(metadata[f"{arch}.rope.scaling.factor"])
    writer.add_rope_freq_base(config.rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_eps)
    # transformers' LlamaConfig always has a head_dim; its SmolLM3Config only if config.json sets one.
    if arch == "llama" or f"{arch}.attention.key_length" in metadata:
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    writer.add_file_type(mix.file_type)
    writer.add_vocab_size(config.vocab_size)
    writer.add_rope_dimension_count(config.head_dim)


def add_nope_layers(writer: GGUFWriter, config: ModelConfig) -> list[str]:
    """llama.cpp skips RoPE in every 4th layer of smollm3 and none of llama, whatever the
    checkpoint says. Where config.json says otherwise, nanosmol's own key keeps its list."""
    convention = nope_layers(config.arch, config.n_layer, {})
    if config.nope_layers == convention:
        return []
    writer.add_array(f"{config.arch}.no_rope_layers", [int(il not in config.nope_layers) for il in range(config.n_layer)])
    return [f"config.json has layers {list(config.nope_layers)} skip RoPE: written as {config.arch}.no_rope_layers, "
            f"which nanosmol honours and llama.cpp ignores (it uses "
            f"{'every ' + str(DEFAULT_NOPE_INTERVAL) + 'th layer' if convention else 'RoPE in every layer'})"]


def add_vocabulary(writer: GGUFWriter, folder: HFFolder, config: ModelConfig) -> None:
    """The converter's set_vocab for a byte-level BPE tokenizer.json (_set_vocab_gpt2)."""
    path = Path(folder.path)
    tokenizer_config = read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").exists() else {}
    if isinstance(tokenizer_config.get("add_prefix_space"), bool):
        writer.add_add_space_prefix(tokenizer_config["add_prefix_space"])
    hf = HFTokenizer.from_file(str(path / "tokenizer.json"))  # read as HFFolder read it, untouched since
    tokens, types = gguf_vocabulary(hf, config.vocab_size)
    try:
        with quiet_logger("gguf"):  # its warnings about unusual post-processors mean nothing to a user
            special = SpecialVocab(path, load_merges=True, n_vocab=len(tokens))
    except (ValueError, OSError) as e:  # the tokenizer files, read again by gguf-py
        raise CheckpointError(f"tokenizer files: {e}") from None
    special.chat_template = None  # converter_metadata writes the folder's own
    vocabulary = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
                  "tokenizer.ggml.merges": special.merges}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(hf, vocabulary))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special.add_to_gguf(writer, quiet=True)


@contextlib.contextmanager
def quiet_logger(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
