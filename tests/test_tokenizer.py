"""The tokenizer against llama.cpp's own token ids, recorded by tools/make_tokenizer_cases.py."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import MICRO, VOCAB_LLAMA_BPE
from nanosmol.gguf_file import GGUFFile
from nanosmol.tokenizer import Tokenizer, TokenizerError, _unicode_to_byte

CASES = json.loads((Path(__file__).parent / "data" / "tokenizer_cases.json").read_text())


@lru_cache(maxsize=None)
def tokenizer_from(path: str) -> Tokenizer:
    return Tokenizer.from_metadata(GGUFFile(path).metadata)


@pytest.fixture(scope="module")
def smollm2(default_model_path):
    return tokenizer_from(str(default_model_path))


@pytest.fixture(scope="module")
def llama_bpe():
    return tokenizer_from(str(VOCAB_LLAMA_BPE))


def mismatches(tok: Tokenizer, cases: list[dict]) -> list[dict]:
    return [c for c in cases if tok.encode(c["text"], special=c["special"]) != c["ids"]]


def test_smollm2_ids_match_llama_cpp(smollm2):
    assert len(CASES["smollm2"]) > 400
    assert mismatches(smollm2, CASES["smollm2"]) == []


def test_llama_bpe_ids_match_llama_cpp(llama_bpe):
    assert len(CASES["llama-bpe"]) > 400
    assert mismatches(llama_bpe, CASES["llama-bpe"]) == []


def test_bos_follows_the_file(smollm2, llama_bpe):
    assert not smollm2.add_bos and smollm2.encode("hi")[0] != smollm2.bos_id
    assert llama_bpe.add_bos and llama_bpe.encode("hi")[0] == 128000


def test_end_of_generation_tokens(smollm2, llama_bpe):
    assert smollm2.tokens[smollm2.eos_id] == "<|im_end|>" and smollm2.eos_id in smollm2.eog_ids
    assert {llama_bpe.tokens[i] for i in llama_bpe.eog_ids} >= {"<|end_of_text|>", "<|eot_id|>"}


def test_special_text_is_plain_unless_asked(smollm2):
    im_start = smollm2.tokens.index("<|im_start|>")
    assert smollm2.encode("<|im_start|>user", special=True)[0] == im_start
    assert im_start not in smollm2.encode("<|im_start|>user", special=False)


def representable_bytes(tok: Tokenizer) -> set[int]:
    vocab = set(tok.tokens)
    return {b for c, b in _unicode_to_byte().items() if c in vocab}


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.characters(max_codepoint=0x3FFFF, exclude_categories=("Cs",)), max_size=60))
def test_round_trip_and_streaming(smollm2, text):
    # SmolLM2's vocabulary lacks a few byte tokens (0x04, 0xf1, ...); llama.cpp drops those bytes too.
    assume(set(text.encode()) <= representable_bytes(smollm2))
    ids = smollm2.encode(text)
    assert smollm2.decode(ids) == text
    stream = smollm2.stream_decoder()
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text  # never half a character


def test_round_trip_real_texts(smollm2, llama_bpe):
    for case in CASES["smollm2"]:
        assert smollm2.decode(smollm2.encode(case["text"])) == case["text"]
    for case in CASES["llama-bpe"]:
        assert llama_bpe.decode(llama_bpe.encode(case["text"], add_bos=False)) == case["text"]


def test_micro_fixture_vocabulary_builds():
    tok = tokenizer_from(str(MICRO / "micro-smollm3-Q8_0.gguf"))
    assert tok.vocab_size == 267
    assert tok.decode(tok.encode("Hello, world")) == "Hello, world"


def test_unsupported_tokenizer_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(ValueError, match="pre-type 'qwen2'"):
        Tokenizer.from_metadata({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2",
                                 "tokenizer.ggml.tokens": ["a"]})


@pytest.mark.parametrize("key, value", [
    ("tokenizer.ggml.tokens", [1, 2, 3]),
    ("tokenizer.ggml.merges", [7]),
    ("tokenizer.ggml.token_type", ["x", "y"]),
])
def test_hostile_tokenizer_metadata_is_a_value_error(key, value):
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": ["a", "b"]}
    metadata[key] = value
    with pytest.raises(ValueError, match=key):
        Tokenizer.from_metadata(metadata)


@pytest.mark.parametrize("merges, message", [
    (["Ġ a"], r"merges\[0\] = .Ġ a. names .Ġa., which is not in tokenizer.ggml.tokens"),  # the reproducer
    (["ab"], r"tokenizer.ggml.merges\[0\] = 'ab' is not two tokens"),  # failed to extract enum PyMerges
    (["a "], r"tokenizer.ggml.merges\[0\] = 'a ' is not two tokens"),
])
def test_merges_that_do_not_fit_the_vocabulary_name_the_key(merges, message):
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2",
                "tokenizer.ggml.tokens": ["a", "b", "ab", "Ġ"], "tokenizer.ggml.merges": merges}
    with pytest.raises(TokenizerError, match=message):
        Tokenizer.from_metadata(metadata)


def test_token_types_must_cover_the_vocabulary():
    metadata = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b"], "tokenizer.ggml.token_type": [1]}
    with pytest.raises(TokenizerError, match="token_type holds 1 types for 2 tokens"):
        Tokenizer.from_metadata(metadata)
