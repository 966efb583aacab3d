"""Request schemas: what the OpenAI API sends, checked strictly, turned into generation settings.

Unknown fields are ignored (clients send many); known ones of the wrong type or out of range
are a 400 naming the field, and so are the features nanosmol does not have (n > 1, logprobs,
tools, logit_bias) rather than being silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanosmol.server.errors import bad_request


class Strict(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(Strict):
    type: Literal["text"]
    text: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(Strict):
    include_usage: bool = False


class ChatTemplateKwargs(Strict):
    enable_thinking: bool | None = None


class Common(Strict):
    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0)
    repeat_last_n: int | None = Field(None, ge=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, ge=0, lt=2**63)
    stop: Union[str, list[str], None] = Field(None, max_length=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Asked for, but not done here: only their neutral values pass.
    n: int = 1
    logprobs: Union[bool, int, None] = None
    logit_bias: dict[str, float] | None = None


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    chat_template_kwargs: ChatTemplateKwargs | None = None
    think_budget: int | None = Field(None, ge=0)
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    response_format: dict[str, Any] | None = None


class CompletionRequest(Common):
    prompt: Union[str, list[str], list[int]]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


@dataclass
class Plan:
    """A request's generation settings, ready for the model."""

    kind: str  # "chat" or "completion"
    prompt: Any  # messages (dicts) for chat; text or token ids for a completion
    max_tokens: int | None
    stop: list[str]
    sampling: dict[str, Any]
    stream: bool
    include_usage: bool
    model: str | None
    think: bool | None = None
    think_budget: int | None = None


def parse_json(body: bytes) -> dict:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad_request(f"the body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data


def validate(schema: type[Strict], data: dict) -> Strict:
    try:
        return schema.model_validate(data)
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        param = ".".join(str(p) for p in first["loc"] if not _is_type_tag(p)) or None
        raise bad_request(f"{param or 'body'}: {first['msg']}", param=param) from None


def _is_type_tag(part) -> bool:
    """Pydantic names the union member it tried ('str', 'list[...]'); a param path leaves it out."""
    return isinstance(part, str) and (part in ("str", "int", "float", "bool") or "[" in part)


def chat_plan(data: dict, default_think_budget: int | None) -> Plan:
    request = validate(ChatRequest, data)
    _refuse_unsupported(request)
    if request.top_logprobs:
        raise bad_request("top_logprobs is not supported", param="top_logprobs")
    if request.tools:
        raise bad_request("tools (function calling) are not supported", param="tools")
    if request.response_format and request.response_format.get("type", "text") != "text":
        raise bad_request("only response_format {\"type\": \"text\"} is supported", param="response_format")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in request.messages]
    kwargs = request.chat_template_kwargs
    return Plan(
        kind="chat", prompt=messages, max_tokens=request.max_completion_tokens or request.max_tokens,
        stop=_stop_list(request.stop), sampling=_sampling(request), stream=request.stream,
        include_usage=_include_usage(request), model=request.model,
        think=kwargs.enable_thinking if kwargs else None,
        think_budget=request.think_budget if request.think_budget is not None else default_think_budget,
    )


def completion_plan(data: dict) -> Plan:
    request = validate(CompletionRequest, data)
    _refuse_unsupported(request)
    for name in ("echo", "suffix", "best_of"):
        if getattr(request, name) not in (None, False, 1):
            raise bad_request(f"{name} is not supported", param=name)
    prompt = request.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        if len(prompt) != 1:
            raise bad_request("give one prompt per request (a batch of prompts is not supported)", param="prompt")
        prompt = prompt[0]
    if not prompt:
        raise bad_request("the prompt is empty", param="prompt")
    return Plan(kind="completion", prompt=prompt, max_tokens=request.max_tokens, stop=_stop_list(request.stop),
                sampling=_sampling(request), stream=request.stream, include_usage=_include_usage(request),
                model=request.model)


def _refuse_unsupported(request: Common) -> None:
    if request.n != 1:
        raise bad_request("n must be 1: one choice per request", param="n")
    if request.logprobs:
        raise bad_request("logprobs are not supported", param="logprobs")
    if request.logit_bias:
        raise bad_request("logit_bias is not supported", param="logit_bias")


def _stop_list(stop) -> list[str]:
    return [stop] if isinstance(stop, str) else list(stop or [])


def _include_usage(request: Common) -> bool:
    return bool(request.stream_options and request.stream_options.include_usage)


def _sampling(request: Common) -> dict[str, Any]:
    """The sampling settings given; the model's defaults (llama.cpp's) stand for the rest."""
    names = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed", "presence_penalty",
             "frequency_penalty")
    return {name: getattr(request, name) for name in names if getattr(request, name) is not None}
