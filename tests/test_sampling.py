"""Sampling penalties: OpenAI's presence/frequency penalties and llama.cpp's repeat penalty."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nanosmol
from conftest import MICRO
from nanosmol.generate import GenerationStats, generate_tokens
from hypothesis import assume

from nanosmol.sampling import (Sampler, SamplingParams, apply_openai_penalties, apply_repeat_penalty, draw,
                               kept_by_top_p_and_min_p, top_k_ids)

VOCAB = 50
penalty = st.floats(-2, 2, allow_nan=False)
tokens = st.lists(st.integers(0, VOCAB - 1), max_size=40)
logit_arrays = st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=VOCAB, max_size=VOCAB).map(
    lambda values: np.array(values, np.float32))


def openai_reference(logits: np.ndarray, generated: list[int], presence: float, frequency: float) -> np.ndarray:
    """OpenAI's formula written out token by token, in float64."""
    out = logits.astype(np.float64)
    for token, count in Counter(generated).items():
        out[token] -= presence * (count > 0) + frequency * count
    return out


def llama_cpp_reference(logits: np.ndarray, recent: list[int], repeat: float) -> np.ndarray:
    """llama.cpp's repeat penalty (llama_sampler_penalties), token by token, in float64."""
    out = logits.astype(np.float64)
    for token in set(recent):
        out[token] = out[token] * repeat if out[token] <= 0 else out[token] / repeat
    return out


@settings(max_examples=300, deadline=None)
@given(logit_arrays, tokens, penalty, penalty)
def test_openai_penalties_match_the_formula(logits, generated, presence, frequency):
    got = apply_openai_penalties(logits, generated, presence, frequency)
    np.testing.assert_allclose(got, openai_reference(logits, generated, presence, frequency), rtol=1e-6, atol=1e-4)
    untouched = np.setdiff1d(np.arange(VOCAB), generated)
    assert np.array_equal(got[untouched], logits[untouched])


@settings(max_examples=300, deadline=None)
@given(logit_arrays, tokens, st.floats(0.1, 3.0), st.integers(0, 64))
def test_repeat_penalty_matches_llama_cpp(logits, history, repeat, last_n):
    recent = history[-last_n:] if last_n > 0 else []
    got = apply_repeat_penalty(logits, recent, repeat)
    np.testing.assert_allclose(got, llama_cpp_reference(logits, recent, repeat), rtol=1e-6, atol=1e-6)


@settings(max_examples=200, deadline=None)
@given(logit_arrays, tokens, tokens, st.floats(0.5, 2.0), penalty, penalty)
def test_greedy_choice_applies_every_penalty_in_llama_cpps_order(logits, prompt, generated, repeat, presence,
                                                                  frequency):
    """Repeat penalty over the last repeat_last_n tokens of prompt and answer, then OpenAI's over the answer."""
    history = prompt + generated
    sampler = Sampler(SamplingParams(temperature=0, repeat_penalty=repeat, repeat_last_n=16,
                                     presence_penalty=presence, frequency_penalty=frequency))
    expected = openai_reference(llama_cpp_reference(logits, history[-16:], repeat), generated, presence, frequency)
    choice = sampler(logits, history, generated)
    assert expected[choice] >= expected.max() - 1e-4  # the best, up to float32 rounding of a near-tie


@settings(max_examples=300, deadline=None)
@given(st.one_of(logit_arrays, st.lists(st.integers(-3, 3), min_size=1, max_size=300).map(
    lambda values: np.array(values, np.float32))), st.integers(1, 400))
def test_top_k_ids_are_the_k_largest_best_first(logits, k):
    """Against a full sort (small integer logits: many ties)."""
    k = min(k, len(logits))
    ids = top_k_ids(logits, k)
    assert len(set(ids.tolist())) == len(ids) == k
    assert np.array_equal(logits[ids], np.sort(logits)[::-1][:k])


def chain_reference(logits, top_k, top_p, min_p, temperature):
    """llama.cpp's top-k, top-p, min-p and temperature in plain numpy: the candidates best
    first, their probabilities, and how far each cut was from tipping (for assume)."""
    ids = np.argsort(-logits.astype(np.float64), kind="stable")[: top_k if 0 < top_k < len(logits) else None]
    kept = logits[ids].astype(np.float64)
    probs = np.exp(kept - kept[0]) / np.exp(kept - kept[0]).sum()
    margins = [1.0]
    if top_p < 1.0:
        margins.append(np.abs(np.cumsum(probs) - top_p).min())
        n = int(np.searchsorted(np.cumsum(probs), top_p)) + 1
        ids, kept, probs = ids[:n], kept[:n], probs[:n]
    if min_p > 0.0:
        margins.append(np.abs(probs / probs[0] - min_p).min())
        n = max(1, int(np.count_nonzero(probs >= min_p * probs[0])))
        ids, kept = ids[:n], kept[:n]
    final = np.exp((kept - kept[0]) / temperature)
    return ids, final / final.sum(), min(margins)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=1, max_size=120).map(
    lambda values: np.array(values, np.float32)), st.integers(0, 60), st.floats(0.05, 1.0), st.floats(0.0, 0.5),
    st.floats(0.1, 2.0), st.floats(0.0, 1.0, exclude_max=True))
def test_draw_picks_where_u_falls_in_the_chains_distribution(logits, top_k, top_p, min_p, temperature, u):
    ids, probs, margin = chain_reference(logits, top_k, top_p, min_p, temperature)
    cdf = np.cumsum(probs)
    assume(margin > 1e-9 and np.abs(cdf - u).min() > 1e-9)  # not on an edge, where rounding decides
    expected = ids[min(int(np.searchsorted(cdf, u, side="right")), len(ids) - 1)]
    assert draw(logits, top_k, top_p, min_p, temperature, u) == expected
    candidates = top_k_ids(logits, top_k if 0 < top_k < len(logits) else len(logits))
    assert kept_by_top_p_and_min_p(logits, candidates, top_p, min_p) == len(ids)


def test_the_penalties_do_not_touch_the_callers_logits():
    logits = np.arange(VOCAB, dtype=np.float32)
    before = logits.copy()
    apply_openai_penalties(logits, [3, 3, 4], 1.0, 1.0)
    apply_repeat_penalty(logits, [3, 4], 1.5)
    assert np.array_equal(logits, before)


@pytest.mark.parametrize("name", ["presence_penalty", "frequency_penalty"])
@pytest.mark.parametrize("value", [-2.01, 2.5, float("nan")])
def test_penalties_outside_openais_range_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        SamplingParams(**{name: value})


def fixed_logits(leader: int, runner_up: int, gap: float):
    """A forward pass whose logits never change: `leader` ahead of `runner_up` by `gap`, the rest far behind."""
    logits = np.full(VOCAB, -10.0, np.float32)
    logits[leader], logits[runner_up] = 1.0 + gap, 1.0
    return lambda ids: logits


def greedy_run(forward, prompt: list[int], n: int, **penalties) -> list[int]:
    sampler = Sampler(SamplingParams(temperature=0, **penalties))
    return list(generate_tokens(forward, prompt, sampler, n, eog_ids=[], stats=GenerationStats()))


def test_a_strong_frequency_penalty_never_repeats_a_token_twice_in_a_row():
    forward = fixed_logits(leader=7, runner_up=9, gap=1.5)
    assert greedy_run(forward, [1, 2], 10) == [7] * 10
    answer = greedy_run(forward, [1, 2], 10, frequency_penalty=2.0)
    assert answer == [7, 9] * 5  # each choice costs it 2, more than the 1.5 it led by
    assert all(a != b for a, b in zip(answer, answer[1:]))


def test_openai_penalties_count_the_answer_not_the_prompt():
    """The prompt is full of the leader: OpenAI's penalties ignore it, llama.cpp's repeat penalty does not."""
    forward = fixed_logits(leader=7, runner_up=9, gap=1.5)
    assert greedy_run(forward, [7] * 20, 4, presence_penalty=2.0) == [7, 9, 7, 7]
    assert greedy_run(forward, [7] * 20, 3, repeat_penalty=5.0) == [9, 7, 7]


def test_negative_penalties_favour_repeats():
    forward = fixed_logits(leader=7, runner_up=9, gap=1.5)
    # The repeat penalty makes 7 lose its lead once seen; a negative presence penalty wins it back.
    assert greedy_run(forward, [0], 4, repeat_penalty=3.0) == [7, 9, 7, 7]
    assert greedy_run(forward, [0], 4, repeat_penalty=3.0, presence_penalty=-2.0) == [7, 7, 7, 7]


def test_the_python_api_and_the_cli_take_the_penalties():
    """This random-weight model repeats one token forever at temperature 0: a penalty must break that."""
    model = nanosmol.load(MICRO / "micro-smollm3-Q8_0.gguf", n_ctx=256)
    list(model.generate([1, 2, 3], max_tokens=30, temperature=0))
    assert len(set(model.last_stats.tokens)) == 1
    list(model.generate([1, 2, 3], max_tokens=30, temperature=0, frequency_penalty=2.0))
    assert len(set(model.last_stats.tokens)) > 1
    go = [{"role": "user", "content": "go"}]
    list(model.chat(go, max_tokens=30, temperature=0))
    assert len(set(model.last_stats.tokens)) == 1
    list(model.chat(go, max_tokens=30, temperature=0, frequency_penalty=2.0, presence_penalty=2.0))
    assert len(set(model.last_stats.tokens)) > 1
    with pytest.raises(ValueError, match="presence_penalty"):
        list(model.chat(go, presence_penalty=3.0))

    run = [sys.executable, "-m", "nanosmol", "run", "-m", str(MICRO / "micro-smollm3-Q8_0.gguf"), "-c", "256",
           "--temp", "0", "-n", "60", "--raw", "go"]
    plain = subprocess.run(run, capture_output=True, text=True, check=True).stdout
    penalized = subprocess.run(run + ["--frequency-penalty", "2"], capture_output=True, text=True, check=True).stdout
    assert len(set(plain.strip("\n"))) <= 1 and len(set(penalized.strip("\n"))) > 1
    bad = subprocess.run(run + ["--presence-penalty", "2.5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "presence-penalty" in bad.stderr and "Traceback" not in bad.stderr
