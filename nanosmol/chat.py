"""Chat templates: the file's own Jinja template, rendered in a sandbox (it is untrusted input)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence

from jinja2 import TemplateError
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


def _raise_exception(message: str):
    raise ChatTemplateError(f"chat template error: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    # The settings Hugging Face renders chat templates with, so the text comes out the same.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def render_chat(template: str | None, messages: Sequence[dict[str, Any]], add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", **extra: Any) -> str:
    """Render messages with the template (ChatML when None)."""
    try:
        compiled = _environment().from_string(template or CHATML_TEMPLATE)
        return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except ChatTemplateError:
        raise
    except (TemplateError, TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        raise ChatTemplateError(f"chat template failed to render: {e}") from None


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
