"""The ASGI app: OpenAI's endpoints, the web page, keys, limits and errors, on Starlette.

Everything the model does goes through the generation queue (one worker thread); the event
loop only parses, checks, and streams what the worker emits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from nanosmol import ChatTemplateError
from nanosmol.server import openai_format as fmt
from nanosmol.server.errors import APIError, bad_request, not_found, server_error
from nanosmol.server.markdown import render_markdown
from nanosmol.server.queue import GenerationQueue, Job, QueueFull
from nanosmol.server.schemas import Plan, chat_plan, completion_plan, parse_json

log = logging.getLogger("nanosmol.server")
STATIC = Path(__file__).parent / "static"


@dataclass
class Settings:
    api_key: str | None = None
    cors_origin: str | None = None
    max_queue: int = 16  # requests waiting for the model (beyond the one it runs)
    think_budget: int | None = None  # default thinking budget, in tokens
    max_body_bytes: int = 1 << 20
    worker_thread: bool = True  # False: the caller runs app.state.server.queue.work_forever() itself


class Server:
    def __init__(self, model, settings: Settings):
        self.model, self.settings = model, settings
        self.model_id = Path(model.path).stem
        self.queue = GenerationQueue(settings.max_queue)

    # -- endpoints ----------------------------------------------------------------------
    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.model_id,
                             "queue": {"running": self.queue.running, "waiting": self.queue.waiting,
                                       "max_waiting": self.settings.max_queue}})

    async def models(self, request: Request) -> Response:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model_info(self, request: Request) -> Response:
        self.authorize(request)
        self.check_model(request.path_params["model"])
        return JSONResponse(self.model_card())

    async def chat_completions(self, request: Request) -> Response:
        self.authorize(request)
        plan = chat_plan(await self.read_json(request), self.settings.think_budget)
        self.check_model(plan.model)
        prompt_tokens = await run_in_threadpool(self.count_chat_prompt, plan)
        plan.max_tokens = self.fit_max_tokens(plan, prompt_tokens, "messages")
        return await self.respond(request, plan, fmt.Meta(self.model_id, "chat.completion"))

    async def completions(self, request: Request) -> Response:
        self.authorize(request)
        plan = completion_plan(await self.read_json(request))
        self.check_model(plan.model)
        prompt_tokens = await run_in_threadpool(self.count_completion_prompt, plan)
        plan.max_tokens = self.fit_max_tokens(plan, prompt_tokens, "prompt")
        return await self.respond(request, plan, fmt.Meta(self.model_id, "text_completion"))

    async def render(self, request: Request) -> Response:
        """Markdown to safe HTML for the page (raw HTML in the text comes out escaped)."""
        self.authorize(request)
        text = (await self.read_json(request)).get("text")
        if not isinstance(text, str):
            raise bad_request("text: a string is required", param="text")
        return JSONResponse({"html": render_markdown(text)})

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    # -- checks -------------------------------------------------------------------------
    def authorize(self, request: Request) -> None:
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'",
                           code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def read_json(self, request: Request) -> dict:
        """The body as a JSON object, refused with 413 past the size limit (also when chunked)."""
        limit = self.settings.max_body_bytes
        too_large = APIError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise too_large if declared.isdigit() else bad_request("bad Content-Length header")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise too_large
        return parse_json(bytes(body))

    def check_model(self, name: str | None) -> None:
        if name and name not in (self.model_id, Path(self.model.path).name):
            raise not_found(f"the model '{name}' does not exist; this server runs '{self.model_id}'",
                            code="model_not_found")

    def count_chat_prompt(self, plan: Plan) -> int:
        extra = {} if plan.think is None else {"enable_thinking": plan.think}
        try:
            prompt = self.model.chat_prompt(plan.prompt, **extra)
        except ChatTemplateError as e:
            raise bad_request(str(e), param="messages") from None
        return len(self.model.tokenize(prompt, special=True))

    def count_completion_prompt(self, plan: Plan) -> int:
        if isinstance(plan.prompt, str):
            return len(self.model.tokenize(plan.prompt, special=True))
        vocab = self.model.config.vocab_size
        if any(not 0 <= t < vocab for t in plan.prompt):
            raise bad_request(f"prompt: token ids must be within 0..{vocab - 1}", param="prompt")
        return len(plan.prompt)

    def fit_max_tokens(self, plan: Plan, prompt_tokens: int, prompt_param: str) -> int:
        """The answer's token budget: what was asked, within what the context leaves."""
        n_ctx = self.model.n_ctx
        if prompt_tokens >= n_ctx:
            raise bad_request(f"the prompt is {prompt_tokens} tokens, the context holds {n_ctx}: "
                              "shorten it or start the server with a larger -c", param=prompt_param,
                              code="context_length_exceeded")
        if plan.max_tokens is not None and plan.max_tokens > n_ctx:
            raise bad_request(f"max_tokens is {plan.max_tokens}, more than the context ({n_ctx})",
                              param="max_tokens")
        return min(plan.max_tokens or n_ctx, n_ctx - prompt_tokens)

    def model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": 0, "owned_by": "nanosmol",
                "meta": {"n_ctx": self.model.n_ctx}}

    # -- generation ---------------------------------------------------------------------
    async def respond(self, request: Request, plan: Plan, meta: fmt.Meta) -> Response:
        try:
            job = self.queue.submit(self.work(plan))
        except QueueFull:
            raise APIError(503, f"the server is busy: {self.settings.max_queue} requests are waiting; retry soon",
                           type="server_busy", code="queue_full", headers={"Retry-After": "1"}) from None
        if plan.stream:
            return StreamingResponse(self.stream(job, plan, meta), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        items = await self.collect(request, job)
        if items is None:  # the client left; nobody reads an answer
            return Response(status_code=499)
        stats = job.result
        if plan.kind == "chat":
            content, reasoning = split_pieces(items)
            return JSONResponse(fmt.chat_completion(meta, content, reasoning, stats))
        return JSONResponse(fmt.text_completion(meta, "".join(items), stats))

    def work(self, plan: Plan):
        """What the worker thread runs for this request: the model's stream, item by item."""
        model = self.model

        def run(emit, should_stop):
            if plan.kind == "chat":
                pieces = model.chat(plan.prompt, think=plan.think, think_budget=plan.think_budget,
                                    max_tokens=plan.max_tokens, stop=plan.stop, should_stop=should_stop,
                                    **plan.sampling)
                for piece in pieces:
                    emit((piece.kind, piece.text))
            else:
                for text in model.generate(plan.prompt, max_tokens=plan.max_tokens, stop=plan.stop, special=True,
                                           should_stop=should_stop, **plan.sampling):
                    emit(text)
            stats = model.last_stats
            log.info("%s: prompt %d tokens (%d cached), %d generated, prefill %.0f tok/s, decode %.1f tok/s, %s",
                     plan.kind, stats.prompt_tokens + stats.cached_tokens, stats.cached_tokens,
                     stats.generated_tokens, stats.prefill_tps, stats.decode_tps, stats.stop_reason)
            return stats

        return run

    async def collect(self, request: Request, job: Job) -> list[Any] | None:
        """Every item of a job; None (and the job cancelled) if the client disconnects first."""
        async def gather():
            return [item async for batch in job.batches() for item in batch]

        collecting = asyncio.ensure_future(gather())
        watching = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not collecting.done():  # the client left first (or the server is stopping)
                self.queue.cancel(job)
                collecting.cancel()
        if not collecting.done():
            return None
        items = collecting.result()
        if job.error is not None:
            raise server_error()
        return items

    async def stream(self, job: Job, plan: Plan, meta: fmt.Meta) -> AsyncIterator[str]:
        """Server-sent events; a client that leaves cancels the job (Starlette cancels this generator)."""
        chat = plan.kind == "chat"
        chunk = fmt.chat_chunk if chat else fmt.text_chunk
        usage = plan.include_usage
        try:
            if chat:
                yield fmt.sse(chunk(meta, {"role": "assistant", "content": ""}, with_usage=usage))
            trims = {"answer": fmt.LeadTrim(), "thinking": fmt.LeadTrim()}
            async for batch in job.batches():
                for kind, text in merge(batch if chat else [("answer", t) for t in batch]):
                    text = trims[kind](text) if chat else text
                    if text:
                        key = "content" if kind == "answer" else "reasoning_content"
                        yield fmt.sse(chunk(meta, {key: text} if chat else text, with_usage=usage))
            if job.error is not None:
                yield fmt.sse(server_error().body())
                return
            stats = job.result
            yield fmt.sse(chunk(meta, {} if chat else "", fmt.finish_reason(stats), with_usage=usage))
            if usage:
                yield fmt.sse(fmt.usage_chunk(meta, stats))
            yield fmt.sse("[DONE]")
        finally:
            self.queue.cancel(job)  # no-op once it has finished


def merge(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Consecutive pieces of one kind joined: one chunk for what piled up meanwhile."""
    merged: list[tuple[str, str]] = []
    for kind, text in items:
        if merged and merged[-1][0] == kind:
            merged[-1] = (kind, merged[-1][1] + text)
        else:
            merged.append((kind, text))
    return merged


def split_pieces(items: list[tuple[str, str]]) -> tuple[str, str]:
    """A whole chat answer: (content, reasoning_content), as the stream sends them (LeadTrim)."""
    answer = "".join(text for kind, text in items if kind == "answer")
    thinking = "".join(text for kind, text in items if kind == "thinking")
    return answer.lstrip(), thinking.lstrip()


async def wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


# -- errors -------------------------------------------------------------------------------
async def api_error(request: Request, exc: APIError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        error = not_found(f"no such endpoint: {request.method} {request.url.path}")
    elif exc.status_code == 405:
        error = APIError(405, f"method {request.method} is not allowed on {request.url.path}")
    else:
        error = APIError(exc.status_code, str(exc.detail))
    return await api_error(request, error)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return await api_error(request, server_error())


def create_app(model, settings: Settings | None = None) -> Starlette:
    """The server's ASGI app for a loaded nanosmol Model."""
    settings = settings or Settings()
    server = Server(model, settings)
    routes = [
        Route("/", server.page),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/models/{model:path}", server.model_info),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/render", server.render, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = []
    if settings.cors_origin:
        middleware.append(Middleware(CORSMiddleware, allow_origins=[settings.cors_origin],
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if settings.worker_thread:
            server.queue.start_worker_thread()
        yield
        server.queue.close()  # cancels what still runs or waits

    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={APIError: api_error, HTTPException: http_error, Exception: unexpected_error})
    app.state.server = server
    return app
