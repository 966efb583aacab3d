"""Record llama.cpp's token ids for varied texts: the oracle data of tests/test_tokenizer.py.

Needs llama.cpp's Python binding, which is NOT a project dependency (it compiles llama.cpp,
about 8 minutes):  pip install llama-cpp-python==0.3.36
Usage:  python tools/make_tokenizer_cases.py SMOLLM2_GGUF [--out tests/data/tokenizer_cases.json]
The llama-bpe vocabulary (SmolLM3's) is read from ../shared/fixtures/vocab.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LLAMA_BPE = REPO.parent / "shared" / "fixtures" / "vocab" / "ggml-vocab-llama-bpe.gguf"

HAND_WRITTEN = [
    "", " ", "  ", "\n", "\n\n\n", "\t", " \t\n ", "Hello world", " Hello world", "Hello World!", "HELLO",
    "The capital of France is", "I'm sure you've seen it, they'll say we'd done it and it's fine.",
    "DON'T SHOUT, WE'RE HERE", "3.14159", "1234567890", "12 345 678,90 €", "1e-10", "0x1F4 0b1010",
    "2026-11-22T13:37:00Z", "$100.00 and 50%", "a1b2c3", "version 10.2.3-rc1",
    "naïve café résumé", "Straße", "Ελληνικά", "Русский текст", "日本語のテキスト", "中文分词测试", "한국어",
    "العربية", "עברית", "हिन्दी", "ไทย", "emoji 🙂🚀🏳️‍🌈 👨‍👩‍👧", "e\u0301 combining", "zero\u200bwidth",
    "def add(a, b):\n    return a + b\n", "for (int i = 0; i < n; ++i) { x[i] += 1; }",
    "<html><body class=\"x\">text</body></html>", "{\"key\": [1, 2, 3], \"ok\": true}", "SELECT * FROM t WHERE id=1;",
    "#!/bin/bash\necho $HOME | grep -v '^#'", "    indented\n\tand tabbed", "trailing spaces   ", "   leading",
    "a  b   c    d", "line1\r\nline2\r\n", "!!!???...", "---===+++", "''\"\"``", "((nested (parens)))",
    "<|im_start|>user\nHi<|im_end|>", "<|im_start|>assistant\n", "<|begin_of_text|>Hi<|eot_id|>",
    "<|endoftext|>", "text<|im_end|>more", "<think>\nreasoning\n</think>\nanswer", "<|im_start|",
]


def generated_texts(n: int, seed: int = 0) -> list[str]:
    """Random mixtures of words, numbers, punctuation, whitespace and scripts (fixed seed)."""
    rng = random.Random(seed)
    atoms = ["the", "The", " cat", "sat", "on", "mat", "123", "4567", "3.5", "!", "?", ",", ".", "'s", "'ll",
             " ", "  ", "\n", "\n\n", "\t", "é", "ü", "日本", "🙂", "Ω", "→", "(", ")", "{", "}", "_", "-", "http://x.io",
             "<|im_start|>", "<|im_end|>", "CamelCase", "snake_case", "UPPER", "x=1", "don't", "ß", "ﬁ"]
    return ["".join(rng.choice(atoms) for _ in range(rng.randint(1, 12))) for _ in range(n)]


def cases_for(path: Path, texts: list[str]) -> list[dict]:
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    cases = []
    for text in texts:
        for special in (False, True):
            ids = llm.tokenize(text.encode(), add_bos=True, special=special)
            cases.append({"text": text, "special": special, "ids": ids})
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("smollm2", type=Path, help="the default model's GGUF (SmolLM2 vocabulary)")
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "data" / "tokenizer_cases.json")
    args = parser.parse_args()
    texts = HAND_WRITTEN + generated_texts(200)
    data = {"smollm2": cases_for(args.smollm2, texts), "llama-bpe": cases_for(LLAMA_BPE, texts)}
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=0))
    print(f"wrote {sum(len(v) for v in data.values())} cases to {args.out}")


if __name__ == "__main__":
    main()
