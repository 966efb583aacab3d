"""llama.cpp's per-tensor choices of each mix, against the files llama-quantize wrote."""

from __future__ import annotations

from collections import Counter

import pytest
from gguf import GGMLQuantizationType as T

from conftest import MICRO, micro_index
from nanosmol.config import ModelConfig
from nanosmol.gguf_file import GGUFFile
from nanosmol.quants.mixes import MIXES, find_mix, tensor_type, uses_more_bits

QUANTIZED_FIXTURES = [e for e in micro_index() if e["ftype"] not in ("F32", "F16", "BF16")]


def chosen_types(gguf: GGUFFile, mix_name: str) -> dict[str, T]:
    """What each tensor of this file would become in that mix (its own type where kept)."""
    config = ModelConfig.from_gguf(gguf.metadata, gguf.tensors.keys())
    mix = find_mix(mix_name)
    return {name: tensor_type(name, t.shape, mix, config.n_layer, config.gqa_ratio, config.tied_embeddings) or t.type
            for name, t in gguf.tensors.items()}


@pytest.mark.parametrize("entry", QUANTIZED_FIXTURES, ids=lambda e: e["file"])
def test_each_tensor_gets_the_type_llama_quantize_gave_it(entry):
    source = GGUFFile(MICRO / entry["file"].replace(entry["ftype"], "F32"))
    theirs = GGUFFile(MICRO / entry["file"])
    assert chosen_types(source, entry["ftype"]) == {name: t.type for name, t in theirs.tensors.items()}


def test_smollm2_135m_q4_k_m_mixes_as_llama_cpps_file(default_model_path):
    """llama.cpp's Q4_K_M of SmolLM2-135M (width 576, rows not a multiple of 256) holds
    Q5_0 (166 tensors), Q4_K (16), Q8_0 (15) and Q6_K (14), beside the F32 norms."""
    counts = Counter(chosen_types(GGUFFile(default_model_path), "Q4_K_M").values())
    assert counts == {T.Q5_0: 166, T.Q4_K: 16, T.Q8_0: 15, T.Q6_K: 14, T.F32: 61}


def test_float_mixes_leave_vectors_alone():
    mix = MIXES["F16"]
    assert tensor_type("blk.0.attn_norm.weight", (256,), mix, 4) is None
    assert tensor_type("blk.0.attn_q.weight", (256, 256), mix, 4) == T.F16
    assert tensor_type("blk.0.attn_q.weight", (256, 1), mix, 4) is None  # a vector with a trailing 1


def test_pure_puts_every_matrix_in_the_base_type_but_falls_back_on_short_rows():
    mix = find_mix("q4_k")
    assert mix.name == "Q4_K_M"
    assert tensor_type("output.weight", (256, 1000), mix, 4, pure=True) == T.Q4_K
    assert tensor_type("blk.3.ffn_down.weight", (512, 256), mix, 4, pure=True) == T.Q4_K
    assert tensor_type("blk.3.ffn_down.weight", (576, 256), mix, 4, pure=True) == T.Q5_0
    assert tensor_type("blk.3.ffn_down.weight", (100, 256), mix, 4, pure=True) == T.F16  # not even 32


def test_more_bits_go_to_the_ends_and_every_third_layer():
    assert [i for i in range(32) if uses_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_unknown_mix_names_the_choices():
    with pytest.raises(ValueError, match="unknown type 'Q7_K'.*Q4_K_M"):
        find_mix("Q7_K")
