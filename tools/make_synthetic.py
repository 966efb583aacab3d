"""Write a random-weight GGUF of a real model's shape and quant mix: a faithful speed fixture.

Speed does not depend on weight values, so random block bytes with sane scales measure the
same as the real file. Files are generated on demand and never committed.

    python tools/make_synthetic.py smollm3-3b Q4_K_M /tmp/smollm3-3b-q4km.gguf
    python tools/make_synthetic.py smollm2-135m Q8_0 /tmp/smollm2-135m-q8.gguf --vocab MODEL.gguf
    python tools/make_synthetic.py smollm3-3b F16 /tmp/smollm3-3b-f16.gguf   # a source for nanosmol quantize

F32, F16 and BF16 files hold normal random weights (standard deviation 0.02).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType, GGUFWriter

from nanosmol.config import ModelConfig
from nanosmol.gguf_file import GGUFFile
from nanosmol.quants.blocks import block_geometry
from nanosmol.quants.synthetic import random_blocks

REPO = Path(__file__).resolve().parents[1]
LLAMA_BPE_VOCAB = REPO.parent / "shared" / "fixtures" / "vocab" / "ggml-vocab-llama-bpe.gguf"

SHAPES = {
    "smollm3-3b": dict(arch="smollm3", layers=36, width=2048, heads=16, kv_heads=4, ffn=11008,
                       rope_theta=5e6, eps=1e-6, context=65536, vocab=LLAMA_BPE_VOCAB),
    "smollm2-135m": dict(arch="llama", layers=30, width=576, heads=9, kv_heads=3, ffn=1536,
                         rope_theta=1e5, eps=1e-5, context=8192, vocab=None),  # vocab: --vocab
}
TOKENIZER_KEYS = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                  "tokenizer.ggml.add_bos_token", "tokenizer.chat_template")
FLOAT_MIXES = ("F32", "F16", "BF16")
FALLBACK = {T.Q4_K: T.Q5_0, T.Q6_K: T.Q8_0}  # llama.cpp's choice when a row is not a multiple of 256


def uses_more_bits(layer: int, n_layers: int) -> bool:
    """llama.cpp's Q4_K_M rule: these layers' attn_v and ffn_down get Q6_K."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def tensor_type(name: str, mix: str, layer: int, n_layers: int, cols: int) -> T:
    if name.endswith("norm.weight"):
        return T.F32
    if mix in FLOAT_MIXES:
        return T[mix]
    if mix == "Q8_0":
        return T.Q8_0
    qtype = T.Q4_K
    if name == "token_embd.weight" or (name.split(".")[-2] in ("attn_v", "ffn_down") and uses_more_bits(layer, n_layers)):
        qtype = T.Q6_K
    return FALLBACK[qtype] if cols % block_geometry(qtype)[0] else qtype


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("mix", choices=["Q4_K_M", "Q8_0", *FLOAT_MIXES])
    parser.add_argument("out", type=Path)
    parser.add_argument("--vocab", type=Path, help="GGUF to take the tokenizer from (default: the shape's)")
    args = parser.parse_args()
    shape = SHAPES[args.shape]
    vocab_path = args.vocab or shape["vocab"]
    if vocab_path is None:
        parser.error(f"{args.shape} needs --vocab (e.g. the default model's GGUF)")
    vocab_meta = GGUFFile(vocab_path).metadata
    arch, n_layers, width = shape["arch"], shape["layers"], shape["width"]
    n_vocab = len(vocab_meta["tokenizer.ggml.tokens"])

    writer = GGUFWriter(str(args.out), arch)
    writer.add_name(f"synthetic {args.shape} {args.mix}")
    for key, value in (("block_count", n_layers), ("embedding_length", width), ("feed_forward_length", shape["ffn"]),
                       ("attention.head_count", shape["heads"]), ("attention.head_count_kv", shape["kv_heads"]),
                       ("context_length", shape["context"]), ("vocab_size", n_vocab)):
        writer.add_uint32(f"{arch}.{key}", value)
    writer.add_float32(f"{arch}.rope.freq_base", shape["rope_theta"])
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", shape["eps"])
    for key in TOKENIZER_KEYS:
        if key in vocab_meta:
            add_metadata(writer, key, vocab_meta[key])

    metadata = {f"{arch}.block_count": n_layers, f"{arch}.embedding_length": width, "general.architecture": arch,
                f"{arch}.attention.head_count": shape["heads"], f"{arch}.attention.head_count_kv": shape["kv_heads"],
                f"{arch}.feed_forward_length": shape["ffn"], f"{arch}.vocab_size": n_vocab}
    config = ModelConfig.from_gguf(metadata, tensor_names={"token_embd.weight"})  # no output.weight: tied
    rng = np.random.default_rng(0)
    for name, gguf_shape in config.required_tensors().items():
        cols, rows = gguf_shape[0], int(np.prod(gguf_shape[1:]))
        layer = int(name.split(".")[1]) if name.startswith("blk.") else 0
        qtype = tensor_type(name, args.mix, layer, n_layers, cols)
        if name.endswith("norm.weight"):
            writer.add_tensor(name, (1 + 0.1 * rng.standard_normal(cols)).astype(np.float32))
            continue
        raw = random_blocks(qtype, rows, cols // block_geometry(qtype)[0], rng, scale=0.02)
        writer.add_tensor(name, raw, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=True)
    writer.close()
    print(f"wrote {args.out} ({args.out.stat().st_size / 2**30:.2f} GiB)")


def add_metadata(writer: GGUFWriter, key: str, value) -> None:
    if isinstance(value, list):
        sub = GGUFValueType.STRING if isinstance(value[0], str) else GGUFValueType.INT32
        writer.add_key_value(key, value, GGUFValueType.ARRAY, sub_type=sub)
    elif isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    else:
        writer.add_string(key, value)


if __name__ == "__main__":
    main()
