"""The tokenizer, rebuilt from the GGUF vocabulary with Hugging Face `tokenizers`.

Byte-level BPE with llama.cpp's pre-tokenizer for each `tokenizer.ggml.pre` value, so the
token ids match llama.cpp's. Decoding maps tokens back to raw bytes; the stream decoder
never emits half a UTF-8 character.
"""

from __future__ import annotations

import codecs
import operator
from functools import lru_cache
from typing import Any, Mapping, Sequence

from tokenizers import AddedToken, Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer regexes (llama-vocab.cpp).
GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

MAX_VOCAB = 1 << 22  # token ids a tokenizer.json may use (SmolLM3 has 128,256)

# Texts llama.cpp treats as end-of-generation when the vocabulary has them as special tokens.
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>", "<EOT>",
    "_<EOT>", "<|end_of_text|>", "<|return|>", "<|call|>",
})


def _split(regex: str):
    return pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False)


def _byte_level():
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


# pre type -> (pre-tokenizer, ignore_merges, default add_bos)
def _pre_tokenizer(pre: str):
    if pre == "llama-bpe" or pre == "llama3" or pre == "llama-v3":
        return pre_tokenizers.Sequence([_split(LLAMA3_REGEX), _byte_level()]), True, True
    if pre == "smollm":
        # Every digit on its own, then the GPT-2 split.
        digits = pre_tokenizers.Digits(individual_digits=True)
        return pre_tokenizers.Sequence([digits, _split(GPT2_REGEX), _byte_level()]), False, False
    if pre in ("gpt-2", "gpt2", "default"):  # llama.cpp's converter writes "gpt-2"
        return pre_tokenizers.Sequence([_split(GPT2_REGEX), _byte_level()]), False, False
    raise TokenizerError(f"tokenizer pre-type {pre!r} (tokenizer.ggml.pre) is not supported "
                         "(supported: smollm, llama-bpe, gpt-2)")


@lru_cache(maxsize=1)
def _unicode_to_byte() -> dict[str, int]:
    """GPT-2's byte-level alphabet, inverted: the printable character standing for each byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


class TokenizerError(ValueError):
    """The file's vocabulary, merges or token types cannot make a tokenizer."""


def _check_list(values, kind: type, key: str) -> None:
    """A downloaded file is untrusted: refuse metadata of the wrong shape with a clear message."""
    if not isinstance(values, list) or not set(map(type, values)) <= {kind}:  # exact types (no bool), at C speed
        raise TokenizerError(f"metadata {key} must be a list of {kind.__name__}")


def _merge_pairs(merges: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Each merge as a pair of tokens, split as llama.cpp does (at the first space after one character).

    Both tokens and their concatenation must be in the vocabulary: on a merge that breaks
    this, tokenizers raises a bare Exception or panics, depending on the bytes. The check
    runs at C speed (map over the lists); only a failure looks for the first bad merge.
    """
    cuts = [m.find(" ", 1) for m in merges]
    firsts = [m[:c] for m, c in zip(merges, cuts)]
    seconds = [m[c + 1 :] for m, c in zip(merges, cuts)]
    known = vocab.__contains__
    if (min(cuts, default=1) > 0 and all(seconds) and all(map(known, firsts)) and all(map(known, seconds))
            and all(map(known, map(operator.add, firsts, seconds)))):
        return list(zip(firsts, seconds))
    i, m, c, a, b = next((i, m, c, a, b) for i, (m, c, a, b) in enumerate(zip(merges, cuts, firsts, seconds))
                         if c < 0 or not b or not (known(a) and known(b) and known(a + b)))
    if c < 0 or not b:
        raise TokenizerError(f"tokenizer.ggml.merges[{i}] = {m!r} is not two tokens joined by a space")
    missing = next(token for token in (a, b, a + b) if not known(token))
    raise TokenizerError(f"tokenizer.ggml.merges[{i}] = {m!r} names {missing!r}, which is not in tokenizer.ggml.tokens")


def _build_bpe(vocab: dict[str, int], merges: list[str], ignore_merges: bool) -> HFTokenizer:
    pairs = _merge_pairs(merges, vocab)
    try:
        bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges, fuse_unk=False)
    except Exception as e:  # checked above; kept so that a new tokenizers check still names the key
        raise TokenizerError(f"tokenizer.ggml.merges do not fit tokenizer.ggml.tokens: {e}") from None
    return HFTokenizer(bpe)


class Tokenizer:
    def __init__(self, hf: HFTokenizer, tokens: list[str], token_types: list[int], bos_id, eos_id, eog_ids, add_bos):
        self._hf = hf
        self.tokens = tokens
        self.token_types = token_types
        self.vocab_size = len(tokens)
        self.bos_id, self.eos_id = bos_id, eos_id
        self.eog_ids = frozenset(eog_ids)
        self.add_bos = add_bos
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "Tokenizer":
        model = metadata.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerError(f"tokenizer model {model!r} is not supported (only byte-level BPE, 'gpt2')")
        tokens = metadata.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("the file has no tokenizer vocabulary (tokenizer.ggml.tokens)")
        _check_list(tokens, str, "tokenizer.ggml.tokens")
        types = metadata.get("tokenizer.ggml.token_type") or [TOKEN_NORMAL] * len(tokens)
        merges = metadata.get("tokenizer.ggml.merges") or []
        _check_list(merges, str, "tokenizer.ggml.merges")
        _check_list(types, int, "tokenizer.ggml.token_type")
        if len(types) != len(tokens):
            raise TokenizerError(f"tokenizer.ggml.token_type holds {len(types)} types for {len(tokens)} tokens")
        pre_tokenizer, ignore_merges, default_add_bos = _pre_tokenizer(metadata.get("tokenizer.ggml.pre", "default"))

        vocab: dict[str, int] = {}
        for i, text in enumerate(tokens):
            vocab.setdefault(text, i)
        hf = _build_bpe(vocab, merges, ignore_merges)
        hf.pre_tokenizer = pre_tokenizer
        hf.decoder = decoders.ByteLevel()
        hf.add_special_tokens([
            AddedToken(tokens[i], special=t == TOKEN_CONTROL, normalized=False)
            for i, t in enumerate(types) if t in (TOKEN_CONTROL, TOKEN_USER_DEFINED)
        ])

        def token_id(key):
            value = metadata.get(f"tokenizer.ggml.{key}_token_id")
            return value if isinstance(value, int) and 0 <= value < len(tokens) else None

        eos = token_id("eos")
        eog = {i for i in (eos, token_id("eot"), token_id("eom")) if i is not None}
        eog |= {i for i, t in enumerate(types) if t == TOKEN_CONTROL and tokens[i] in EOG_TEXTS}
        add_bos = metadata.get("tokenizer.ggml.add_bos_token", default_add_bos)
        return cls(hf, list(tokens), types, token_id("bos"), eos, eog, bool(add_bos) and token_id("bos") is not None)

    @classmethod
    def from_hf(cls, tokenizer_json: str, bos_token: str | None, eos_token: str | None,
                add_bos: bool | None = None, vocab_size: int = 0) -> "Tokenizer":
        """A Hugging Face tokenizer.json (byte-level BPE) used as is, with the bos/eos texts and
        add_bos of tokenizer_config.json (add_bos None: whatever tokenizer.json's post-processor
        does). vocab_size pads the token list to the model's embedding rows."""
        try:
            hf = HFTokenizer.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception with a serde message
            raise TokenizerError(f"tokenizer.json cannot be read: {str(e).splitlines()[0] if str(e) else e!r}") from None
        if not isinstance(hf.model, models.BPE) or not isinstance(hf.decoder, decoders.ByteLevel):
            raise TokenizerError("tokenizer.json is not a byte-level BPE tokenizer, the only kind nanosmol reads")
        vocab = hf.get_vocab(with_added_tokens=True)
        n_tokens = max(vocab_size, max(vocab.values(), default=-1) + 1)
        if n_tokens > MAX_VOCAB:  # ids are the list's indices: a hostile id must not allocate gigabytes
            raise TokenizerError(f"tokenizer.json has token ids up to {n_tokens - 1}, more than {MAX_VOCAB} tokens")
        tokens = [f"<unused{i}>" for i in range(n_tokens)]
        types = [TOKEN_UNUSED] * len(tokens)
        for text, i in vocab.items():
            tokens[i], types[i] = text, TOKEN_NORMAL
        for i, added in hf.get_added_tokens_decoder().items():
            types[i] = TOKEN_CONTROL if added.special else TOKEN_USER_DEFINED
        bos, eos = vocab.get(bos_token) if bos_token else None, vocab.get(eos_token) if eos_token else None
        if add_bos is None:
            add_bos = bos is not None and hf.encode("a", add_special_tokens=True).ids[:1] == [bos]
        eog = {eos} - {None} | {i for i, t in enumerate(types) if t == TOKEN_CONTROL and tokens[i] in EOG_TEXTS}
        return cls(hf, tokens, types, bos, eos, eog, bool(add_bos) and bos is not None)

    # -- text -> ids ----------------------------------------------------------------
    def encode(self, text: str, special: bool = False, add_bos: bool | None = None) -> list[int]:
        """Token ids of text; with special=True, control tokens written in the text are parsed."""
        self._hf.encode_special_tokens = not special  # True: treat control tokens as plain text
        ids = self._hf.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    # -- ids -> text ----------------------------------------------------------------
    def token_to_piece(self, token_id: int) -> bytes:
        """The raw bytes of one token; control and user-defined tokens as their text."""
        piece = self._pieces.get(token_id)
        if piece is None:
            text = self.tokens[token_id]
            if self.token_types[token_id] in (TOKEN_CONTROL, TOKEN_USER_DEFINED):
                piece = text.encode()
            else:
                table = _unicode_to_byte()
                piece = bytes(table[c] for c in text if c in table)
            self._pieces[token_id] = piece
        return piece

    def token_text(self, token_id: int | None) -> str:
        return "" if token_id is None else self.token_to_piece(token_id).decode("utf-8", errors="replace")

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.token_to_piece(int(i)) for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self) -> "StreamDecoder":
        return StreamDecoder(self)


class StreamDecoder:
    """Turns tokens into text as they come, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._utf8.decode(self.tokenizer.token_to_piece(token_id))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)
