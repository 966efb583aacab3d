"""A Hugging Face tokenizer.json as the GGUF vocabulary llama.cpp's converter writes for it.

llama.cpp runs byte-level BPE ("gpt2") from three lists (tokens, their types, merges) and
the name of a pre-tokenizer it implements in C++ (`tokenizer.ggml.pre`). Its converter
(convert_hf_to_gguf.py) finds that name by encoding one test text with the folder's
tokenizer and looking up a hash of the token ids; the same rule is followed here for the
pre-tokenizers nanosmol implements. A folder whose hash is not listed (a vocabulary of one's
own, as in the tests) is named from the steps of its pre-tokenizer, and then only if
llama.cpp's pre-tokenizer of that name, with the folder's vocabulary and merges, gives the
folder's tokens on the test texts.
"""

from __future__ import annotations

import json
from hashlib import sha256
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from nanosmol.checkpoint import CheckpointError
from nanosmol.tokenizer import (GPT2_REGEX, LLAMA3_REGEX, TOKEN_CONTROL, TOKEN_NORMAL, TOKEN_UNUSED, TOKEN_USER_DEFINED,
                                Tokenizer, TokenizerError)

# The text llama.cpp's converter encodes to recognise a pre-tokenizer (its `chktxt`).
CHECK_TEXT = (
    '\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 '
    '3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ '
    '------======= нещо на Български \'\'\'\'\'\'```````""""......!!!!!!?????? I\'ve been \'told he\'s there, '
    '\'RE you sure? \'M not sure I\'ll make it, \'D you like some tea? We\'Ve a\'lL'
)
# sha256 of str(token ids of CHECK_TEXT, special tokens added) -> name, from llama.cpp's
# converter, for the pre-tokenizers nanosmol implements.
KNOWN_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # HuggingFaceTB/SmolLM-135M
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # meta-llama/Meta-Llama-3-8B
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",  # evilfreelancer/ruGPT3XL
}
# The regex of transformers' ByteLevel pre-tokenizer (use_regex): GPT-2's, with a last `\s+`.
BYTE_LEVEL_REGEX = GPT2_REGEX + r"|\s+"
# Pre-tokenizer steps (see pre_tokenizer_steps) -> llama.cpp's name.
NAMES_BY_STEPS = {
    ("digits", GPT2_REGEX): "smollm", ("digits", BYTE_LEVEL_REGEX): "smollm",
    (LLAMA3_REGEX,): "llama-bpe",
    (GPT2_REGEX,): "gpt-2", (BYTE_LEVEL_REGEX,): "gpt-2",
}
PROBE_TEXTS = (CHECK_TEXT, "Hello world", " 12345 numbers, 3.14159", "naïve café 🙂", "  spaces\n\n\ttabs ",
               "I'M HERE, they'RE there: don't")
# Added tokens llama.cpp's converter marks CONTROL although the tokenizer does not call them special.
LOOKS_SPECIAL = ("<pad>", "<mask>", "<2mass>", "[@BOS@]")


def gguf_vocabulary(hf: HFTokenizer, vocab_size: int) -> tuple[list[str], list[int]]:
    """tokenizer.ggml.tokens and token_type as llama.cpp's converter makes them: one entry per
    embedding row (ids the tokenizer does not use are "[PAD{id}]", UNUSED); added tokens are
    CONTROL when special (or looking special), USER_DEFINED otherwise."""
    vocab = hf.get_vocab(with_added_tokens=True)
    largest = max(vocab.values(), default=-1)
    if largest >= vocab_size:
        raise CheckpointError(f"tokenizer.json has token id {largest}, beyond config.json's vocab_size {vocab_size}")
    tokens, types = [f"[PAD{i}]" for i in range(vocab_size)], [TOKEN_UNUSED] * vocab_size
    for text, i in vocab.items():
        tokens[i], types[i] = text, TOKEN_NORMAL
    for i, added in hf.get_added_tokens_decoder().items():
        if added.special or looks_special(added.content):
            types[i] = TOKEN_CONTROL
        else:  # llama.cpp takes user-defined tokens as written, SentencePiece's "▁" as a space
            tokens[i], types[i] = added.content.replace("\u2581", " "), TOKEN_USER_DEFINED
    return tokens, types


def looks_special(text: str) -> bool:
    return (text in LOOKS_SPECIAL or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>")) or (text.startswith("<unused") and text.endswith(">")))


def check_hash(hf: HFTokenizer) -> str:
    """llama.cpp's chkhsh: the tokenizer's ids for CHECK_TEXT, as transformers encodes it."""
    return sha256(str(hf.encode(CHECK_TEXT, add_special_tokens=True).ids).encode()).hexdigest()


def pre_tokenizer_name(hf: HFTokenizer, vocabulary: dict[str, Any]) -> str:
    """tokenizer.ggml.pre for the tokenizer; vocabulary: the tokenizer.ggml.* metadata written
    for it (tokens, token types, merges), to check a name found from the steps."""
    name = KNOWN_HASHES.get(check_hash(hf))
    if name is not None:
        return name
    steps = pre_tokenizer_steps(json.loads(hf.to_str()).get("pre_tokenizer"))
    name = NAMES_BY_STEPS.get(steps)
    if name is None:
        raise CheckpointError("tokenizer.json's pre-tokenizer is none that nanosmol and llama.cpp share "
                              "(SmolLM's, Llama 3's or GPT-2's)")
    try:
        rebuilt = Tokenizer.from_metadata(vocabulary | {"tokenizer.ggml.pre": name})
    except TokenizerError as e:
        raise CheckpointError(f"tokenizer.json: {e}") from None
    for text in PROBE_TEXTS:
        if rebuilt.encode(text, add_bos=False) != hf.encode(text, add_special_tokens=False).ids:
            raise CheckpointError(f"tokenizer.json reads like llama.cpp's {name!r} pre-tokenizer, but tokenizes "
                                  f"{text[:20]!r} otherwise")
    return name


def pre_tokenizer_steps(pre: Any) -> tuple:
    """The splitting a tokenizer.json pre-tokenizer does, as a tuple: "digits" (each digit
    on its own) and the regexes it splits on, in order; None for a step of another kind."""
    if not isinstance(pre, dict):
        return (None,)
    kind = pre.get("type")
    if kind == "Sequence" and isinstance(pre.get("pretokenizers"), list):
        return tuple(step for p in pre["pretokenizers"] for step in pre_tokenizer_steps(p))
    if kind == "Digits":
        return ("digits",) if pre.get("individual_digits") else (None,)
    if kind == "ByteLevel":
        return (BYTE_LEVEL_REGEX,) if pre.get("use_regex", True) else ()
    pattern = pre.get("pattern")
    if (kind == "Split" and isinstance(pattern, dict) and "Regex" in pattern and pre.get("behavior") == "Isolated"
            and not pre.get("invert")):
        return (pattern["Regex"],)
    return (None,)
