"""Chat templates in the sandbox, thinking mode and budget, KV reuse across turns, `nanosmol chat`."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

import nanosmol
from conftest import MICRO, SMOLLM3_TEMPLATE
from nanosmol.chat import ChatSession, ChatTemplateError, ThinkingSplitter, render_chat

SMOLLM3_HEADER = (
    "<|im_start|>system\n## Metadata\n\nKnowledge Cutoff Date: June 2025\nReasoning Mode: {mode}\n\n"
    "## Custom Instructions\n\n{instructions}<|im_end|>\n"
)


def smollm3(messages, **kwargs):
    return render_chat(SMOLLM3_TEMPLATE.read_text(), messages, **kwargs)


def test_smollm3_template_without_thinking():
    text = smollm3([{"role": "user", "content": "Hi"}], enable_thinking=False)
    header = SMOLLM3_HEADER.format(mode="/no_think",
                                   instructions="You are a helpful AI assistant named SmolLM, trained by Hugging Face.\n\n")
    assert text == header + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n"


def test_smollm3_template_with_thinking_and_history():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]
    text = smollm3(messages, enable_thinking=True)
    header = SMOLLM3_HEADER.format(mode="/think", instructions="Be brief.\n\n")
    assert text == header + ("<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n"
                             "<|im_start|>user\n3+3?<|im_end|>\n<|im_start|>assistant\n")


def test_smollm3_template_defaults_to_thinking():
    text = smollm3([{"role": "user", "content": "Hi"}])
    assert "Reasoning Mode: /think" in text and text.endswith("<|im_start|>assistant\n")


def test_chatml_fallback():
    text = render_chat(None, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_template_that_raises():
    template = "{% if messages|length > 1 %}{{ raise_exception('only one message') }}{% endif %}ok"
    assert render_chat(template, [{"role": "user", "content": "a"}]) == "ok"
    with pytest.raises(ChatTemplateError, match="only one message"):
        render_chat(template, [{"role": "user", "content": "a"}] * 2)


@pytest.mark.parametrize("template", [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ messages.__class__.__init__.__globals__ }}",
    "{% set x = messages.append(1) %}{{ x }}",  # immutable sandbox: no mutation either
])
def test_sandbox_stops_reaching_python_internals(template):
    with pytest.raises(ChatTemplateError):
        render_chat(template, [{"role": "user", "content": "a"}])


def test_helpers_templates_call():
    assert render_chat("{{ strftime_now('%Y') | length }}", []) == "4"


def test_thinking_splitter_handles_split_tags():
    splitter = ThinkingSplitter()
    pieces = []
    for chunk in ["<thi", "nk>\nstep 1", "</thi", "nk>\nanswer"]:
        pieces += splitter.feed(chunk)
    pieces += splitter.flush()
    thinking = "".join(p.text for p in pieces if p.kind == "thinking")
    answer = "".join(p.text for p in pieces if p.kind == "answer")
    assert (thinking, answer) == ("\nstep 1", "\nanswer")


@pytest.fixture
def micro():
    model = nanosmol.load(MICRO / "micro-smollm3-Q8_0.gguf", n_ctx=512)
    # A template whose generation prompt opens the thought, as reasoning templates do.
    model.chat_template = render_template_opening_thought()
    return model


def render_template_opening_thought():
    return ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}")


@pytest.mark.parametrize("budget", [1, 5, 12])
def test_think_budget_closes_the_thought(micro, budget):
    pieces = list(micro.chat([{"role": "user", "content": "hi"}], think_budget=budget, max_tokens=40,
                             temperature=0.8, seed=1, min_p=0.0))
    thinking = [p for p in pieces if p.kind == "thinking"]
    assert thinking, "the prompt opened a thought, so the first tokens are thinking"
    tokens = micro.last_stats.tokens
    close = micro.tokenize("\n</think>\n", special=True)
    starts = [k for k in range(len(tokens)) if tokens[k : k + len(close)] == close]
    assert starts and starts[0] <= budget  # at most `budget` thinking tokens, then </think>
    assert "</think>" in micro.tokenizer.decode(tokens)
    assert "".join(p.text for p in pieces if p.kind == "answer")  # and the model goes on to answer


def test_kv_cache_is_reused_across_turns(micro):
    micro.chat_template = None  # ChatML
    session = ChatSession(micro, system="sys", max_tokens=6, temperature=0.0)
    list(session.reply("first question"))
    first_prompt = micro.last_stats.prompt_tokens
    list(session.reply("second"))
    second_prompt = micro.last_stats.prompt_tokens
    full = len(micro.tokenize(micro.chat_prompt(session.messages[:-1]), special=True))
    # Reused in whole blocks of 32 (see Model._reuse_cache): all but the last block and the new turn.
    assert micro.last_stats.cached_tokens >= 32 and second_prompt + micro.last_stats.cached_tokens == full
    assert second_prompt < first_prompt + 12
    # Same answer as a model that prefills the whole conversation from scratch.
    fresh = nanosmol.load(MICRO / "micro-smollm3-Q8_0.gguf", n_ctx=512)
    answer = "".join(p.text for p in fresh.chat(session.messages[:-1], max_tokens=6, temperature=0.0))
    assert answer.strip() == session.messages[-1]["content"]


def test_context_overflow_drops_oldest_turns(micro):
    micro.chat_template = None
    model = nanosmol.load(MICRO / "micro-smollm3-Q8_0.gguf", n_ctx=64)
    session = ChatSession(model, system="S", max_tokens=8, temperature=0.0)
    for i in range(6):
        list(session.reply(f"question number {i}"))
    assert session.messages[0] == {"role": "system", "content": "S"}
    assert any("dropped" in note for note in session.notes)
    assert len(model.tokenize(model.chat_prompt(session.messages), special=True)) <= 64


def test_scripted_chat_through_a_pipe(default_model_path):
    script = "Which city is the capital of France?\n/stats\nAnd what about Italy?\n/stats\n/exit\n"
    proc = subprocess.run(
        [sys.executable, "-m", "nanosmol", "chat", "-m", str(default_model_path), "--temp", "0", "-n", "80"],
        input=script, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Not "Paris" in the answer: at temperature 0 this 135M model's first answer token is a
    # near-tie that int8 activations (as in llama.cpp) or another prefill chunking flip. What
    # it knows is asserted on plain completions in test_default_model.py.
    # The pipe answers each turn in the context of the last, exactly as the API's session does.
    # -n 80 leaves room for each answer to end on its own, which the stats' arithmetic assumes.
    session = ChatSession(nanosmol.load(default_model_path), max_tokens=80, temperature=0.0)
    for question in ("Which city is the capital of France?", "And what about Italy?"):
        answer = "".join(piece.text for piece in session.reply(question)).strip()
        assert answer and answer in proc.stdout
    stats = [l for l in lines if l.startswith("(context")]
    number_after = lambda line, word: int(line.split(word + " ")[1].split()[0].split("/")[0])
    prefilled = [number_after(l, "prefilled") for l in stats]
    prompt_tokens = [number_after(l, "context") - number_after(l, "generated") for l in stats]
    assert len(stats) == 2 and prefilled[0] == prompt_tokens[0]
    # The second turn reuses the cache: it prefills the new turn and the last reuse block.
    assert prompt_tokens[1] - prefilled[1] >= 32


def test_chat_stop_string_ends_the_answer(micro):
    micro.chat_template = None
    question = [{"role": "user", "content": "say something"}]
    full = "".join(p.text for p in micro.chat(question, max_tokens=24, temperature=0.0))
    assert len(full) > 8, full
    stop = full[4:7]
    cut = "".join(p.text for p in micro.chat(question, max_tokens=24, temperature=0.0, stop=[stop]))
    assert cut == full[: full.index(stop)]
    assert micro.last_stats.stop_reason == "stop"


def test_should_stop_ends_the_generation_within_a_step(micro):
    micro.chat_template = None
    seen = []
    pieces = micro.chat([{"role": "user", "content": "go"}], max_tokens=200, temperature=0.8, seed=3, min_p=0.0,
                        should_stop=lambda: len(seen) >= 3)
    for piece in pieces:
        seen.append(piece)
    assert micro.last_stats.stop_reason == "cancelled"
    assert micro.last_stats.generated_tokens <= 4


def test_sampled_answer_does_not_depend_on_a_cache_hit(default_model_path):
    # Decode multiplies int8-quantized activations: a 1e-5 difference in the cached keys
    # (another prefill batch size) moved logits by ~0.6 and changed what was sampled.
    model = nanosmol.load(default_model_path, n_ctx=1024)
    sampling = dict(max_tokens=30, temperature=1.2, top_p=0.9, top_k=50, min_p=0.01, repeat_penalty=1.1, seed=7)
    messages = [{"role": "system", "content": "You write short poems about the sea, the wind, the waves, "
                                              "the boats and the people who sail them, in plain words."},
                {"role": "user", "content": "Write a poem."}]
    first = "".join(p.text for p in model.chat(messages, **sampling)).strip()
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": "Another, please."}]
    continued = "".join(p.text for p in model.chat(messages, **sampling))
    cached = model.last_stats.cached_tokens
    assert cached >= 32 and model.last_stats.prompt_tokens + cached == len(
        model.tokenize(model.chat_prompt(messages), special=True))
    again = "".join(p.text for p in model.chat(messages, **sampling))
    assert model.last_stats.prompt_tokens <= 32  # the same prompt: all reused but its last block
    model.reset()
    fresh = "".join(p.text for p in model.chat(messages, **sampling))
    assert model.last_stats.cached_tokens == 0
    assert continued == again == fresh


def test_greedy_answer_to_a_repeated_question_is_the_same(default_model_path):
    # Feeding the last two prompt tokens alone (in another batch than a fresh prefill) once
    # changed the answer.
    model = nanosmol.load(default_model_path, n_ctx=512)
    question = [{"role": "user", "content": "Which city is the capital of France?"}]
    answers = ["".join(p.text for p in model.chat(question, max_tokens=12, temperature=0.0)) for _ in range(2)]
    assert model.last_stats.cached_tokens > 0
    assert answers[0] == answers[1] and answers[0].strip()


def test_threads_setting_holds_on_other_threads():
    import threading

    import numba

    model = nanosmol.load(MICRO / "micro-llama-Q8_0.gguf", n_ctx=64, n_threads=1)
    seen = []

    def generate():
        seen.append(numba.get_num_threads())  # Numba's default on a new thread: all of them
        list(model.generate("ab", max_tokens=2, temperature=0.0))
        seen.append(numba.get_num_threads())

    worker = threading.Thread(target=generate)
    worker.start()
    worker.join()
    assert seen == [numba.config.NUMBA_NUM_THREADS, 1]
HOSTILE = [
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion"),
    ("{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}", "too long"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "too long"),
    ("{% for i in range(100000) %}{{ 'xxxxxxxx' * 100000 }}{% endfor %}", "renders more than"),
    ("{{ 'x' * 10000000000 }}", "repeats a value"),
    ("{{ 2 ** 100000000 }}", "power"),
    ("{{ '%0999999999d' % 1 }}", "width"),
    ("{{ '{:>9999999999}'.format(1) }}", "width"),
    ("{{ '%099999999d'|format(3) }}", "width"),
    ("{{ 'a'.ljust(9999999999) }}", "beyond"),
    ("{{ 'a'|center(9999999999) }}", "beyond"),
    ("{% set s = namespace(t='ab') %}{% for i in range(64) %}{% set s.t = s.t + s.t %}{% endfor %}", "builds a value"),
    ("{{ 1 / 0 }}", "division by zero"),
    ("{% if %}", "does not compile"),
    ("{{ messages[0]['content'] ", "does not compile"),
]


@pytest.mark.parametrize("template, message", HOSTILE)
def test_hostile_template_fails_fast_and_small(template, message):
    """A template that recurses, loops, or builds huge values ends in a ChatTemplateError, quickly."""
    start = time.perf_counter()
    with pytest.raises(ChatTemplateError, match=message):
        render_chat(template, [{"role": "user", "content": "a"}])
    assert time.perf_counter() - start < 10


def test_template_that_is_not_a_string():
    with pytest.raises(ChatTemplateError, match="not a string"):
        render_chat(7, [{"role": "user", "content": "a"}])


def test_budget_leaves_room_for_long_conversations():
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(400)]
    assert smollm3(messages).count("<|im_start|>") == 402  # system + 400 turns + the generation prompt


def test_run_with_a_looping_template_is_one_line(tmp_path):
    from gguf_fuzz import encode, seed

    path = tmp_path / "looping.gguf"
    path.write_bytes(encode(seed("micro-llama-Q8_0.gguf", HOSTILE[2][0])))
    proc = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(path), "-n", "2", "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if not l.startswith("nanosmol: compiling")]
    assert lines == [f"error: {path}: chat template runs too long (more than 250,000 steps)"]
    raw = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(path), "--raw", "-n", "2", "hi"],
                         capture_output=True, text=True, timeout=120)
    assert raw.returncode == 0, raw.stderr
