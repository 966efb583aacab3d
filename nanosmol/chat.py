"""Chat templates: the file's own Jinja template, rendered in a sandbox (it is untrusted input)."""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from jinja2 import Environment, Template, TemplateError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used when a file carries no template: ChatML, SmolLM2's own format.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The template failed to render (it raised, or tried something the sandbox forbids)."""


# A template is a program from the file: it may loop, recurse or build huge strings. These bound
# its work and its output; SmolLM3's template renders a few turns in about 2,000 steps.
MAX_TEMPLATE_STEPS = 250_000  # template lines and calls executed per render (about half a second)
MAX_RENDERED_CHARS = 4 << 20  # about a million tokens: more than any context
MAX_VALUE = MAX_RENDERED_CHARS  # the longest string or list, the largest size argument, a template may make
_HUGE_WIDTH = re.compile(r"[%:][^a-zA-Z%{}]*\d{7}")  # a format width of a million or more


def _raise_exception(message: str):
    raise ChatTemplateError(f"chat template error: {_one_line(message)}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _too_big(value: Any) -> bool:
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) > MAX_VALUE
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > MAX_VALUE
    return False


def _check_arguments(args) -> None:
    if any(_too_big(a) for a in args):
        raise ChatTemplateError(f"chat template asks for a value beyond {MAX_VALUE:,}")


def _check_format(fmt: Any) -> None:
    if isinstance(fmt, str) and _HUGE_WIDTH.search(fmt):
        raise ChatTemplateError("chat template formats with a width of a million or more")


class _Budget:
    """Counts the steps of one render; too many raise inside the template's own frame."""

    def __init__(self, steps: int):
        self.left = steps

    def tick(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise ChatTemplateError(f"chat template runs too long (more than {MAX_TEMPLATE_STEPS:,} steps)")

    def tracer(self, frame, event, arg):
        """A sys.settrace hook: every line and call of template code costs one step."""
        if frame.f_code.co_filename != "<template>":
            return None
        self.tick()
        return self._line

    def _line(self, frame, event, arg):
        self.tick()
        return self._line


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with operators and calls that refuse to build values beyond MAX_VALUE."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, budget: _Budget, **options):
        super().__init__(**options)
        self.budget = budget
        self.filters = {name: self._bounded(f) for name, f in self.filters.items()}

    def call_binop(self, context, operator, left, right):
        self.budget.tick()
        if operator == "**" and isinstance(right, int) and isinstance(left, int) and abs(right) > 64:
            raise ChatTemplateError(f"chat template computes a power beyond the exponent 64 ({right})")
        if operator == "*" and isinstance(left, int) != isinstance(right, int):
            size, times = (len(right), left) if isinstance(left, int) else (len(left), right)
            if size * times > MAX_VALUE:
                raise ChatTemplateError(f"chat template repeats a value beyond {MAX_VALUE:,} items")
        if operator == "*" and isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > 4096:
                raise ChatTemplateError("chat template multiplies numbers beyond 4096 bits")
        if operator == "%":
            _check_format(left)
        if operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
            if len(left) + len(right) > MAX_VALUE:
                raise ChatTemplateError(f"chat template builds a value beyond {MAX_VALUE:,} items")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        __self.budget.tick()
        _check_arguments([*args, *kwargs.values()])
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value):
        """str.format, as the sandbox hands it out: its format string is checked first."""
        if getattr(value, "__name__", "") in ("format", "format_map"):
            _check_format(getattr(value, "__self__", None))
        return super().wrap_str_format(value)

    def _bounded(self, f):
        @functools.wraps(f)
        def bounded(*args, **kwargs):
            self.budget.tick()
            values = [a for a in args if not isinstance(a, (Context, EvalContext, Environment))]
            _check_arguments(values + list(kwargs.values()))
            if f.__name__ == "do_format" and values:
                _check_format(values[0])
            return f(*args, **kwargs)

        return bounded


def _environment(budget: _Budget) -> ImmutableSandboxedEnvironment:
    # The settings Hugging Face renders chat templates with, so the text comes out the same.
    env = _BoundedSandbox(budget, trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def compile_template(template: str | None) -> Template:
    """The template compiled in a fresh bounded sandbox (ChatML when None)."""
    if template is not None and not isinstance(template, str):
        raise ChatTemplateError(f"tokenizer.chat_template is a {type(template).__name__}, not a string")
    try:
        return _environment(_Budget(MAX_TEMPLATE_STEPS)).from_string(template or CHATML_TEMPLATE)
    except TemplateError as e:
        raise ChatTemplateError(f"tokenizer.chat_template does not compile: {_one_line(e)}") from None
    except (RecursionError, MemoryError, ValueError, TypeError, OverflowError) as e:  # a pathological source
        raise ChatTemplateError(f"tokenizer.chat_template does not compile: {type(e).__name__}") from None


def render_chat(template: str | None, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", **extra: Any) -> str:
    """Render messages with the template (ChatML when None), within bounded steps and output."""
    compiled = compile_template(template)
    budget = compiled.environment.budget
    budget.left = MAX_TEMPLATE_STEPS
    previous = sys.gettrace()
    sys.settrace(budget.tracer)
    try:
        out, size = [], 0
        for piece in compiled.generate(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                       bos_token=bos_token, eos_token=eos_token, **extra):
            size += len(piece)
            if size > MAX_RENDERED_CHARS:
                raise ChatTemplateError(f"chat template renders more than {MAX_RENDERED_CHARS:,} characters")
            out.append(piece)
        return "".join(out)
    except ChatTemplateError:
        raise
    except Exception as e:  # the template is a program from the file: whatever it raises is its failure
        raise ChatTemplateError(f"chat template failed to render: {_one_line(e)}") from None
    finally:
        sys.settrace(previous)


def _one_line(e: BaseException | str) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 200 else text[:200] + "..."


THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class ChatPiece:
    kind: str  # "thinking" or "answer"
    text: str


class ThinkingSplitter:
    """Splits streamed text into thinking (inside <think>...</think>) and answer pieces.

    Tags may arrive split across pieces, so text that could begin a tag is held back.
    """

    def __init__(self, thinking: bool = False):
        self.kind = "thinking" if thinking else "answer"
        self.pending = ""

    def feed(self, text: str) -> list[ChatPiece]:
        self.pending += text
        pieces = []
        while True:
            tag = THINK_CLOSE if self.kind == "thinking" else THINK_OPEN
            i = self.pending.find(tag)
            if i < 0:
                break
            if self.pending[:i]:
                pieces.append(ChatPiece(self.kind, self.pending[:i]))
            self.pending = self.pending[i + len(tag):]
            self.kind = "answer" if self.kind == "thinking" else "thinking"
        keep = _partial_tag_length(self.pending, tag)
        ready, self.pending = self.pending[: len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        if ready:
            pieces.append(ChatPiece(self.kind, ready))
        return pieces

    def flush(self) -> list[ChatPiece]:
        rest, self.pending = self.pending, ""
        return [ChatPiece(self.kind, rest)] if rest else []


def opens_thinking(prompt: str) -> bool:
    """Does the prompt leave a thought open (a template that starts the reasoning itself)?"""
    return prompt.rfind(THINK_OPEN) > prompt.rfind(THINK_CLOSE)


def _partial_tag_length(text: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class ChatSession:
    """A multi-turn conversation with a model: history, system prompt, thinking, context limits."""

    def __init__(self, model, system: str | None = None, think: bool | None = None,
                 think_budget: int | None = None, max_tokens: int = 1024, **sampling):
        self.model = model
        self.system = system
        self.think, self.think_budget = think, think_budget
        self.max_tokens, self.sampling = max_tokens, sampling
        self.turns: list[dict[str, str]] = []
        self.notes: list[str] = []  # things to tell the user once (e.g. dropped turns)

    @property
    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.turns

    def reset(self) -> None:
        self.turns = []

    def reply(self, user_text: str):
        """Stream the answer to one user turn; the (possibly partial) answer joins the history."""
        self.turns.append({"role": "user", "content": user_text})
        self._fit_context()
        answer = []
        try:
            for piece in self.model.chat(self.messages, think=self.think, think_budget=self.think_budget,
                                         max_tokens=self.max_tokens, **self.sampling):
                if piece.kind == "answer":
                    answer.append(piece.text)
                yield piece
        finally:  # also on Ctrl-C: what was said stays said
            self.turns.append({"role": "assistant", "content": "".join(answer).strip()})

    def _fit_context(self) -> None:
        """Drop the oldest turns (never the system prompt) until the prompt leaves room to answer."""
        budget = self.model.n_ctx - min(self.max_tokens, self.model.n_ctx // 2)
        dropped = 0
        while len(self.turns) > 1 and self._prompt_tokens() > budget:
            del self.turns[:2]  # a user turn and its answer
            dropped += 1
        if dropped:
            self.notes.append(f"context full: dropped the {dropped} oldest exchange(s), kept the system prompt")

    def _prompt_tokens(self) -> int:
        extra = {} if self.think is None else {"enable_thinking": self.think}
        return len(self.model.tokenize(self.model.chat_prompt(self.messages, **extra), special=True))
