"""`nanosmol serve` as clients use it: a real server process, the official openai client, raw HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import openai
import pytest

import nanosmol
from conftest import MICRO
from serving import REPO, ServerProcess, open_stream, read_events, request, send

# At temperature 0 this 135M model's first answer token is a near-tie that int8 activations flip
# between hosts ("The capital of France is Paris." or "Le Grand Château, ... is the capital of
# France."): the tests ask for the topic and a short answer, not for Paris.
FRANCE = [{"role": "user", "content": "Which city is the capital of France?"}]
# A template whose generation prompt opens the thought (SmolLM3's opens none; a random-weight
# model would never write <think> itself), with SmolLM3's switch: enable_thinking=false closes it.
THINKING_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is false %}<think>\n\n</think>\n{% else %}<think>\n{% endif %}{% endif %}"
)
KEY = "test-key-123"
# The random-weight micro model writes nothing but newlines unless they are penalized.
RANDOM_MODEL_SAMPLING = {"min_p": 0.0, "repeat_penalty": 2.0}


@pytest.fixture(scope="module")
def smollm2(default_model_path, tmp_path_factory):
    server = ServerProcess(["-m", str(default_model_path), "-c", "1024", "--max-queue", "1"],
                           tmp_path_factory.mktemp("smollm2") / "server.log")
    yield server
    server.stop()
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def smollm3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smollm3")
    template = folder / "template.jinja"
    template.write_text(THINKING_TEMPLATE)
    server = ServerProcess(["-m", str(MICRO / "micro-smollm3-Q8_0.gguf"), "-c", "512", "--think-budget", "6",
                            "--chat-template-file", str(template), "--cors", "http://app.example"], folder / "server.log",
                           env={"NANOSMOL_API_KEY": KEY})
    yield server
    server.stop()
    assert "Traceback" not in server.log()


@pytest.fixture(scope="module")
def model(default_model_path):
    return nanosmol.load(default_model_path, n_ctx=1024)


def client(server: ServerProcess, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def chat(server, **kwargs):
    return client(server).chat.completions.create(model="SmolLM2-135M-Instruct.Q4_1", **kwargs)


# -- the OpenAI API ---------------------------------------------------------------------------
# Room for the whole greedy answer, which ends on its own: this 135M model's first answer token
# is a near-tie that summation order decides (as on another CPU), and its answers have run 7
# and 42 tokens.
WHOLE_ANSWER = 80


def test_chat_answers_with_true_usage_and_timings(smollm2, model):
    reply = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=WHOLE_ANSWER)
    assert "France" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    prompt = len(model.tokenize(model.chat_prompt(FRANCE), special=True))
    answer = model.tokenize(reply.choices[0].message.content + "<|im_end|>", special=True)
    assert reply.usage.prompt_tokens == prompt
    assert reply.usage.completion_tokens == len(answer) - 1  # the end-of-turn token is not counted
    timings = reply.model_extra["timings"]
    assert timings["predicted_n"] == reply.usage.completion_tokens and timings["predicted_per_second"] > 0
    assert timings["prompt_n"] + timings["cache_n"] == prompt


def test_streamed_answer_equals_the_whole_one_and_reports_cached_tokens(smollm2):
    whole = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=WHOLE_ANSWER).choices[0].message.content
    chunks = list(chat(smollm2, messages=FRANCE, temperature=0, max_tokens=WHOLE_ANSWER, stream=True,
                       stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole  # the second request hit the cache: same greedy answer
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.completion_tokens > 0
    assert 0 < usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens


def test_continuing_conversation_reuses_the_cache_and_answers_as_a_fresh_one(smollm2):
    first = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=30).choices[0].message.content
    turn = FRANCE + [{"role": "assistant", "content": first}, {"role": "user", "content": "And of Italy?"}]
    hit = chat(smollm2, messages=turn, temperature=0, max_tokens=30)
    assert hit.usage.prompt_tokens_details.cached_tokens >= 30
    chat(smollm2, messages=[{"role": "user", "content": "Something else entirely."}], temperature=0, max_tokens=2)
    miss = chat(smollm2, messages=turn, temperature=0, max_tokens=30)
    assert miss.usage.prompt_tokens_details.cached_tokens < 30  # the default system prompt, no more
    assert hit.choices[0].message.content == miss.choices[0].message.content


def test_stop_strings_end_the_answer(smollm2):
    whole = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=30).choices[0].message.content
    stop = whole[whole.index("of") :][:5]
    reply = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=30, stop=[stop, "zzz"])
    assert reply.choices[0].message.content == whole[: whole.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    streamed = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=30, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole[: whole.index(stop)]


def test_max_tokens_ends_with_length(smollm2):
    reply = chat(smollm2, messages=[{"role": "user", "content": "Write a long story."}], max_tokens=5, seed=1)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5


def test_seed_and_sampling_settings(smollm2):
    ask = dict(messages=[{"role": "user", "content": "Write a poem."}], max_tokens=12, temperature=1.2,
               top_p=0.9, seed=7, extra_body={"top_k": 50, "min_p": 0.01, "repeat_penalty": 1.1})
    a, b = chat(smollm2, **ask), chat(smollm2, **ask)
    assert a.choices[0].message.content == b.choices[0].message.content
    others = {chat(smollm2, **{**ask, "seed": s}).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a.choices[0].message.content}) > 1


def test_presence_and_frequency_penalties_change_greedy_output_as_the_api_does(smollm2, model):
    """Greedy, this model continues "1, 1, ..." with more of the same; penalized, it must not."""
    ask = dict(model="SmolLM2-135M-Instruct.Q4_1", prompt="1, 1, 1, 1, 1, 1, 1, 1,", max_tokens=16, temperature=0)
    completions = client(smollm2).completions
    plain = completions.create(**ask).choices[0].text
    assert plain.startswith(" 1, 1, 1, 1,")
    penalized = completions.create(**ask, frequency_penalty=2.0).choices[0].text
    api = "".join(model.generate(ask["prompt"], max_tokens=16, temperature=0, frequency_penalty=2.0, special=True))
    assert penalized == api != plain

    penalties = dict(presence_penalty=1.5, frequency_penalty=0.5)
    streamed = chat(smollm2, messages=FRANCE, temperature=0, max_tokens=30, stream=True, **penalties)
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    api = "".join(p.text for p in model.chat(FRANCE, max_tokens=30, temperature=0, **penalties))
    assert text and text == api.lstrip()  # the chat endpoint takes them too, streamed, as the API does


def test_completions_streamed_and_not(smollm2):
    c = client(smollm2).completions
    reply = c.create(model="SmolLM2-135M-Instruct.Q4_1", prompt="The capital of France is", max_tokens=3,
                     temperature=0)
    assert reply.choices[0].text.startswith(" Paris") and reply.usage.completion_tokens == 3
    assert reply.choices[0].finish_reason == "length"
    chunks = list(c.create(model="SmolLM2-135M-Instruct.Q4_1", prompt="The capital of France is", max_tokens=3,
                           temperature=0, stream=True, stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == reply.choices[0].text
    assert chunks[-1].usage.completion_tokens == 3


def test_models_and_health(smollm2):
    models = client(smollm2).models.list()
    assert [m.id for m in models.data] == ["SmolLM2-135M-Instruct.Q4_1"]
    assert smollm2.health()["status"] == "ok"


def sleeps_outside_the_event_loop(pid: int) -> int:
    """How often the server's threads but its main one (the event loop) slept in the kernel so
    far: voluntary context switches, which a spinning thread does not make, however loaded the
    machine is."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        if int(tid) != pid:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                total += sum(int(line.split(":")[1]) for line in status if line.startswith("voluntary_ctxt"))
    return total


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts context switches in Linux's /proc")
def test_decode_threads_do_not_sleep_between_parallel_regions(smollm2):
    """The server decodes as `nanosmol bench` does: one team of OpenMP threads, which spin.

    With a second team (the model loaded on one thread, generating on another), GNU OpenMP
    stops spinning and every parallel region sleeps and wakes in the kernel: ~360 times a
    token on this model, which cost the server up to half of bench's decode speed.
    """
    pid = smollm2.proc.pid
    before = sleeps_outside_the_event_loop(pid)
    reply = chat(smollm2, messages=[{"role": "user", "content": "Write a long story about a storm."}],
                 max_tokens=96, temperature=0)
    per_token = (sleeps_outside_the_event_loop(pid) - before) / reply.usage.completion_tokens
    assert reply.usage.completion_tokens > 48 and per_token < 30


# -- many clients, one model -------------------------------------------------------------------
LONG = {"messages": [{"role": "user", "content": "Write a very long story about a dragon."}], "max_tokens": 900,
        "temperature": 1.0, "seed": 3, "min_p": 0.0, "stream": True}


def test_disconnect_stops_generation_and_health_answers_meanwhile(smollm2):
    conn, response = open_stream(smollm2, "/v1/chat/completions", LONG)
    assert response.status == 200
    assert len(read_events(response, 5)) == 5
    start = time.monotonic()
    assert smollm2.health()["queue"]["running"] == 1
    assert time.monotonic() - start < 0.5  # the event loop answers while the model generates
    conn.sock.close()  # the client goes away mid-answer
    conn.close()
    assert smollm2.wait_idle(timeout=2.0) < 1.0
    assert "cancelled" in smollm2.log().splitlines()[-1] or "cancelled" in smollm2.log()[-600:]


def test_full_queue_answers_503_with_retry_after(smollm2):
    running = open_stream(smollm2, "/v1/chat/completions", LONG)
    read_events(running[1], 2)
    waiting = send(smollm2, "/v1/chat/completions", {**LONG, "stream": False})  # --max-queue 1
    deadline = time.monotonic() + 5
    while smollm2.health()["queue"]["waiting"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    status, body, headers = request(smollm2, "POST", "/v1/chat/completions", LONG)
    assert status == 503 and int(headers["retry-after"]) >= 1
    assert body["error"]["code"] == "queue_full"
    for conn in (waiting, running[0]):  # the waiting client leaves too: its place is freed
        conn.sock.close()
        conn.close()
    smollm2.wait_idle(timeout=2.0)
    assert chat(smollm2, messages=FRANCE, max_tokens=2).choices[0].finish_reason == "length"


def test_fifo_order(smollm3):
    auth = {"Authorization": f"Bearer {KEY}"}
    long = {"messages": [{"role": "user", "content": "go"}], "max_tokens": 480, "stream": True, **RANDOM_MODEL_SAMPLING}
    running = open_stream(smollm3, CHAT, long, headers=auth)
    read_events(running[1], 1)
    done = []

    def ask(name):
        request(smollm3, "POST", CHAT, {"messages": [{"role": "user", "content": name}], "max_tokens": 4}, headers=auth)
        done.append(name)

    threads = []
    for n, name in enumerate(["first", "second", "third"], start=1):
        threads.append(threading.Thread(target=ask, args=(name,)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while smollm3.health()["queue"]["waiting"] < n and time.monotonic() < deadline:
            time.sleep(0.005)
    assert smollm3.health()["queue"]["waiting"] == 3
    running[0].sock.close()
    for t in threads:
        t.join()
    assert done == ["first", "second", "third"]


# -- errors --------------------------------------------------------------------------------------
def error_of(response) -> dict:
    status, body, _ = response
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in json.dumps(body)
    return {"status": status, **body["error"]}


CHAT = "/v1/chat/completions"


@pytest.mark.parametrize("body, param", [
    ('{"messages": [', None),  # malformed JSON
    ('[1, 2]', None),  # not an object
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
    ({"messages": FRANCE, "temperature": "hot"}, "temperature"),
    ({"messages": FRANCE, "temperature": 7}, "temperature"),
    ({"messages": FRANCE, "max_tokens": 0}, "max_tokens"),
    ({"messages": FRANCE, "max_tokens": 100000}, "max_tokens"),
    ({"messages": FRANCE, "stream": "yes"}, "stream"),
    ({"messages": FRANCE, "n": 2}, "n"),
    ({"messages": FRANCE, "presence_penalty": 2.5}, "presence_penalty"),  # outside OpenAI's [-2, 2]
    ({"messages": FRANCE, "frequency_penalty": -2.1}, "frequency_penalty"),
    ({"messages": FRANCE, "tools": [{"type": "function"}]}, "tools"),
    ({"messages": [{"role": "user", "content": "word " * 2000}]}, "messages"),  # longer than -c 1024
])
def test_bad_chat_requests_are_400(smollm2, body, param):
    error = error_of(request(smollm2, "POST", CHAT, body))
    assert error["status"] == 400 and error["param"] == param and error["type"] == "invalid_request_error"


def test_bad_completion_requests_are_400(smollm2):
    assert error_of(request(smollm2, "POST", "/v1/completions", {"prompt": ["a", "b"]}))["param"] == "prompt"
    assert error_of(request(smollm2, "POST", "/v1/completions", {"prompt": [1, 10**9]}))["param"] == "prompt"
    assert error_of(request(smollm2, "POST", "/v1/completions", {}))["status"] == 400


def test_unknown_model_and_path_are_404(smollm2):
    error = error_of(request(smollm2, "POST", CHAT, {"messages": FRANCE, "model": "gpt-9"}))
    assert error["status"] == 404 and error["code"] == "model_not_found"
    assert error_of(request(smollm2, "GET", "/v1/nothing"))["status"] == 404
    with pytest.raises(openai.NotFoundError):
        client(smollm2).chat.completions.create(model="gpt-9", messages=FRANCE)


def test_body_over_the_limit_is_413(smollm2):
    huge = json.dumps({"messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert error_of(request(smollm2, "POST", CHAT, huge))["status"] == 413


def test_server_keeps_serving_after_errors(smollm2):
    for body in ("{", "null", '{"messages": 5}'):
        request(smollm2, "POST", CHAT, body)
    assert chat(smollm2, messages=FRANCE, max_tokens=2).choices[0].finish_reason == "length"


# -- keys, reasoning: SmolLM3's architecture with --api-key -------------------------------------
def test_api_key_protects_all_but_health(smollm3):
    assert request(smollm3, "GET", "/health")[0] == 200
    for path, method in (("/v1/models", "GET"), (CHAT, "POST"), ("/v1/completions", "POST"), ("/render", "POST")):
        error = error_of(request(smollm3, method, path, {"messages": FRANCE}))
        assert error["status"] == 401 and error["code"] == "invalid_api_key"
    wrong = error_of(request(smollm3, "GET", "/v1/models", headers={"Authorization": "Bearer nope"}))
    assert wrong["status"] == 401
    with pytest.raises(openai.AuthenticationError):
        client(smollm3, "nope").models.list()
    assert client(smollm3, KEY).models.list().data[0].id == "micro-smollm3-Q8_0"


def test_reasoning_content_streamed_and_not(smollm3):
    ask = dict(model="micro-smollm3-Q8_0", messages=[{"role": "user", "content": "hi"}], max_tokens=30,
               temperature=0.8, seed=1, extra_body=RANDOM_MODEL_SAMPLING)
    reply = client(smollm3, KEY).chat.completions.create(**ask)
    reasoning = reply.choices[0].message.model_extra["reasoning_content"]
    assert reasoning and "<think>" not in reply.choices[0].message.content
    chunks = list(client(smollm3, KEY).chat.completions.create(**ask, stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    streamed = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    assert streamed == reasoning  # the same seed, the same thought
    kinds = ["r" if (d.model_extra or {}).get("reasoning_content") else "c" for d in deltas if
             d.content or (d.model_extra or {}).get("reasoning_content")]
    assert kinds[0] == "r" and "".join(kinds).lstrip("r").strip("c") == ""  # thinking, then the answer


def test_think_budget_bounds_the_thought(smollm3):
    base = dict(model="micro-smollm3-Q8_0", messages=[{"role": "user", "content": "hi"}], max_tokens=60,
                temperature=0.8, seed=2)
    budget = lambda n: client(smollm3, KEY).chat.completions.create(
        **base, extra_body={**RANDOM_MODEL_SAMPLING, "think_budget": n})
    short, longer = budget(2), budget(30)
    length = lambda r: len(r.choices[0].message.model_extra["reasoning_content"])
    assert 0 < length(short) < length(longer)


def test_enable_thinking_false_gives_no_reasoning(smollm3):
    reply = client(smollm3, KEY).chat.completions.create(
        model="micro-smollm3-Q8_0", messages=[{"role": "user", "content": "hi"}], max_tokens=20, seed=1,
        extra_body={"chat_template_kwargs": {"enable_thinking": False}, **RANDOM_MODEL_SAMPLING})
    assert "reasoning_content" not in (reply.choices[0].message.model_extra or {})
    assert reply.choices[0].message.content


def test_render_escapes_html(smollm3):
    status, body, _ = request(smollm3, "POST", "/render", {"text": "**bold** <img src=x onerror=alert(1)>"},
                              headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200
    assert body["html"] == "<p><strong>bold</strong> &lt;img src=x onerror=alert(1)&gt;</p>\n"


def test_serve_without_the_extra_says_what_to_install():
    code = "import sys; sys.modules['uvicorn'] = None; from nanosmol.cli import main; main(['serve'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: serve: the server needs the package 'uvicorn': pip install 'nanosmol[serve]'"


def test_cors_only_for_the_origin_given(smollm2, smollm3):
    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}
    _, _, headers = request(smollm3, "OPTIONS", CHAT, headers=preflight)
    assert headers.get("access-control-allow-origin") == "http://app.example"
    _, _, headers = request(smollm3, "OPTIONS", CHAT, headers={**preflight, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in headers
    _, _, headers = request(smollm2, "GET", "/health", headers={"Origin": "http://app.example"})
    assert "access-control-allow-origin" not in headers  # no --cors: no cross-origin access


def test_the_page_and_its_files_are_served(smollm2):
    status, html, headers = request(smollm2, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html") and "/static/app.js" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing from elsewhere: works offline
    assert request(smollm2, "GET", "/static/app.js")[0] == 200
