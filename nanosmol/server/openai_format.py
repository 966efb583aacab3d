"""Responses in OpenAI's format: completions, stream chunks, usage, and llama-server's timings."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

FINISH_REASONS = {"eog": "stop", "stop": "stop", "length": "length"}


@dataclass
class Meta:
    """What every response and chunk of one request repeats."""

    model: str
    object: str  # "chat.completion" or "text_completion"
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self):
        prefix = "chatcmpl" if self.object.startswith("chat") else "cmpl"
        self.id = self.id or f"{prefix}-{uuid.uuid4().hex[:24]}"


def finish_reason(stats) -> str | None:
    return FINISH_REASONS.get(stats.stop_reason)


def usage(stats) -> dict:
    prompt = stats.prompt_tokens + stats.cached_tokens
    return {"prompt_tokens": prompt, "completion_tokens": stats.generated_tokens,
            "total_tokens": prompt + stats.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": stats.cached_tokens}}


def timings(stats) -> dict:
    """As llama-server reports them: prefill ("prompt") and decode ("predicted") speed."""
    prompt_ms, predicted_ms = stats.prefill_seconds * 1000, stats.decode_seconds * 1000
    return {
        "cache_n": stats.cached_tokens,
        "prompt_n": stats.prompt_tokens, "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / stats.prompt_tokens if stats.prompt_tokens else 0.0,
        "prompt_per_second": stats.prefill_tps,
        "predicted_n": stats.generated_tokens, "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / stats.decode_steps if stats.decode_steps else 0.0,
        "predicted_per_second": stats.decode_tps,
    }


def chat_completion(meta: Meta, content: str, reasoning: str, stats) -> dict:
    message = {"role": "assistant", "content": content}
    if reasoning:
        message["reasoning_content"] = reasoning
    return {"id": meta.id, "object": "chat.completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason(stats)}],
            "usage": usage(stats), "timings": timings(stats)}


def text_completion(meta: Meta, text: str, stats) -> dict:
    return {"id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason(stats)}],
            "usage": usage(stats), "timings": timings(stats)}


def chat_chunk(meta: Meta, delta: dict, finish: str | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": meta.id, "object": "chat.completion.chunk", "created": meta.created, "model": meta.model,
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if with_usage:
        chunk["usage"] = None  # as OpenAI does: every chunk has it, the last one carries it
    return chunk


def text_chunk(meta: Meta, text: str, finish: str | None = None, with_usage: bool = False) -> dict:
    chunk = {"id": meta.id, "object": "text_completion", "created": meta.created, "model": meta.model,
             "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(meta: Meta, stats) -> dict:
    obj = "chat.completion.chunk" if meta.object.startswith("chat") else "text_completion"
    return {"id": meta.id, "object": obj, "created": meta.created, "model": meta.model, "choices": [],
            "usage": usage(stats), "timings": timings(stats)}


def sse(data: dict | str) -> str:
    """One server-sent event."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


class LeadTrim:
    """Drops the whitespace a text starts with (the newlines after </think>), piece by piece."""

    def __init__(self):
        self.started = False

    def __call__(self, text: str) -> str:
        if not self.started:
            text = text.lstrip()
            self.started = bool(text)
        return text
