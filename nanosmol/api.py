"""The Python API: `nanosmol.load(...)` returns a Model that tokenizes, scores and generates."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

from nanosmol.checkpoint import load_tokenizer, open_checkpoint
from nanosmol.chat import THINK_CLOSE, ChatPiece, ChatTemplateError, ThinkingSplitter, opens_thinking, render_chat
from nanosmol.compile_progress import compile_progress
from nanosmol.config import ConfigError, ModelConfig, tensor_problems
from nanosmol.decode_compiler import DecodeCompiler, nothing_compiled_yet
from nanosmol.finite import NonFiniteWeightsError, check_finite
from nanosmol.generate import GenerationStats, StopScanner, generate_tokens, stream_text
from nanosmol.kv.types import DEFAULT_CACHE_TYPE, CacheTypes
from nanosmol.memory import available_memory, check_fits
from nanosmol.sampling import Sampler, SamplingParams


# chat() prefills in blocks at fixed positions and reuses the cache in whole blocks
# (Model._reuse_cache says why): 32 tokens over the first 512 positions, so that a short
# conversation's turns reuse most of it; 128 after, where prefill in blocks of 32 would run
# ~30% slower than in blocks of 512 on the default model (blocks of 128: ~10%).
REUSE_BLOCK, REUSE_BLOCK_FAR, FAR = 32, 128, 512
T = TypeVar("T")


def block_start(position: int) -> int:
    """The start of the reuse block that holds this position."""
    step = REUSE_BLOCK if position < FAR else REUSE_BLOCK_FAR
    return position - position % step


def block_end(position: int) -> int:
    """The end of the reuse block that holds this position (the next one's start)."""
    return block_start(position) + (REUSE_BLOCK if position < FAR else REUSE_BLOCK_FAR)


def load(path: str | os.PathLike | None = None, n_ctx: int = 4096, n_threads: int | None = None,
         cache_type_k: str = DEFAULT_CACHE_TYPE, cache_type_v: str = DEFAULT_CACHE_TYPE) -> "Model":
    """Open a GGUF file or a Hugging Face checkpoint folder (default: SmolLM2-135M-Instruct, fetched on first use).

    cache_type_k / cache_type_v: how the KV cache stores keys and values, "f32", "f16",
    "q8_0" or "q4_0" (as llama.cpp's --cache-type-k/-v). A context whose cache would not fit
    in the memory available raises ContextTooLargeError, which names one that would.
    """
    if path is None:
        from nanosmol.download import default_model_path

        path = default_model_path()
    return Model(path, n_ctx=n_ctx, n_threads=n_threads, cache_types=CacheTypes(cache_type_k, cache_type_v))


class Model:
    def __init__(self, path, n_ctx: int = 4096, n_threads: int | None = None, cache_types: CacheTypes = CacheTypes()):
        timings = {}
        start = time.perf_counter()
        self.path = Path(path)
        self.checkpoint = open_checkpoint(self.path)  # a GGUF file, or a folder shown as one
        self.config = ModelConfig.from_gguf(self.checkpoint.metadata, self.checkpoint.tensors)
        problems = tensor_problems(self.config, self.checkpoint.tensors)
        if problems:
            more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
            raise ConfigError(f"not a runnable {self.config.arch} model: {problems[0]}{more}")
        timings["parse"] = time.perf_counter() - start

        start = time.perf_counter()
        check_finite(self.checkpoint, self.config.required_tensors())
        timings["scan"] = time.perf_counter() - start

        # A cold cache: the kernels for this file's types compile here, the decode step in a second
        # process, started at the first compilation, or now on a first run after install.
        with DecodeCompiler(self.path, cache_types) as decode_compiler:
            if nothing_compiled_yet():
                decode_compiler.start()
            start = time.perf_counter()
            self.tokenizer = load_tokenizer(self.checkpoint)
            timings["tokenizer"] = time.perf_counter() - start
            weight_bytes = sum(t.nbytes for t in self.checkpoint.tensors.values())
            check_fits(self.config, weight_bytes, n_ctx, cache_types, available_memory())

            start = time.perf_counter()
            self.n_threads = set_threads(n_threads)
            from nanosmol.model import Transformer  # imports the jitted kernels

            def build() -> Transformer:
                set_threads(self.n_threads)
                transformer = Transformer(self.checkpoint, self.config, n_ctx=n_ctx, cache_types=cache_types)
                Sampler(SamplingParams())(np.zeros(self.config.vocab_size, np.float32), [])  # while decode compiles
                transformer.warm_up(before_decode=decode_compiler.wait)
                return transformer

            with compile_progress(on_first=decode_compiler.start):
                self.transformer = on_a_passing_thread(build)
            timings["weights"] = time.perf_counter() - start
        self.load_timings = timings  # seconds: metadata parse, NaN scan, tokenizer build, weights and kernels
        self.n_ctx, self.cache_types = n_ctx, cache_types
        self._cached_ids: list[int] = []  # the tokens the KV cache holds, in order
        self._n_prefilled = 0  # how many of them chat() prefilled in aligned blocks (reusable)
        self.chat_template: str | None = self.checkpoint.metadata.get("tokenizer.chat_template")  # None: ChatML
        self.last_stats = GenerationStats()  # of the last generate() or chat()

    # -- tokens ---------------------------------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return self.tokenizer.encode(text, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    def chat_prompt(self, messages: Sequence[dict], add_generation_prompt: bool = True, **extra) -> str:
        """The messages rendered with the file's chat template (ChatML when it has none)."""
        tok = self.tokenizer
        return render_chat(self.chat_template, messages, add_generation_prompt,
                           bos_token=tok.token_text(tok.bos_id), eos_token=tok.token_text(tok.eos_id), **extra)

    # -- scoring --------------------------------------------------------------------
    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """float32 logits [len(ids), vocab] for every position, from an empty cache."""
        self._check_ids(ids)
        self._on_this_thread()
        self.reset()
        logits = self.transformer.forward(np.asarray(ids, np.int64), all_logits=True)
        self._cached_ids = list(ids)
        return logits

    # -- generation -----------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], max_tokens: int = 256, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
                 repeat_last_n: int = 64, seed: int | None = None, stop: Sequence[str] = (),
                 special: bool = False, should_stop: Callable[[], bool] | None = None,
                 presence_penalty: float = 0.0, frequency_penalty: float = 0.0) -> Iterator[str]:
        """Continue the prompt as is (no chat template), streaming text pieces.

        should_stop() is asked before each forward pass: returning True (say, another thread's
        `event.is_set`) ends the generation within one step, with last_stats.stop_reason "cancelled".
        Penalties: repeat_penalty is llama.cpp's (over the last repeat_last_n tokens, prompt
        included); presence_penalty and frequency_penalty are OpenAI's (within [-2, 2], over the
        tokens this call generated). chat() takes the same sampling settings.
        """
        ids = self.tokenize(prompt, special=special) if isinstance(prompt, str) else list(prompt)
        if not ids:
            raise ValueError("the prompt is empty: give at least one token")
        self._check_ids(ids)
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed,
                                presence_penalty, frequency_penalty)
        self._on_this_thread()
        self.reset()
        self.last_stats = stats = GenerationStats()
        tokens = generate_tokens(self._feed, ids, Sampler(params), max_tokens, self.tokenizer.eog_ids, stats,
                                 should_stop=should_stop)
        return stream_text(tokens, self.tokenizer.stream_decoder(), list(stop), stats)

    def chat(self, messages: Sequence[dict], think: bool | None = None, think_budget: int | None = None,
             max_tokens: int = 1024, stop: Sequence[str] = (), should_stop: Callable[[], bool] | None = None,
             **sampling) -> Iterator[ChatPiece]:
        """Answer the conversation, streaming ChatPiece(kind, text): kind is "thinking" or "answer".

        The KV cache keeps what an earlier call already processed: only the new part of the
        conversation is prefilled (last_stats.cached_tokens says how much was reused).
        think=None leaves the template's default; think_budget ends the reasoning after that
        many tokens by inserting </think>. The answer ends where a `stop` string appears;
        should_stop() works as in generate().
        """
        prompt = self.chat_prompt(messages, **({} if think is None else {"enable_thinking": think}))
        ids = self.tokenize(prompt, special=True)
        self._check_ids(ids)
        sampler = Sampler(SamplingParams(**sampling))  # bad values raise here, before the cache changes
        self._on_this_thread()
        todo = self._reuse_cache(ids)
        self._n_prefilled = len(ids)
        self.last_stats = stats = GenerationStats(cached_tokens=len(ids) - len(todo))
        forced: list[int] = []
        tokens = generate_tokens(self._feed_aligned, todo, sampler, max_tokens, self.tokenizer.eog_ids, stats,
                                 history=list(ids), forced=forced, should_stop=should_stop)
        try:
            yield from self._chat_pieces(tokens, opens_thinking(prompt), think_budget, forced, stop, stats)
        finally:
            tokens.close()  # also when the consumer stops early: no step runs after that

    def _chat_pieces(self, tokens, thinking: bool, think_budget, forced: list[int], stop, stats):
        """Tokens to thinking and answer pieces; closes the thought at the budget; ends at a stop string."""
        decoder, splitter, scanner = self.tokenizer.stream_decoder(), ThinkingSplitter(thinking), StopScanner(stop)
        close_thought = self.tokenize("\n" + THINK_CLOSE + "\n", special=True)
        thinking_tokens = 0

        def pieces(text: str, final: bool = False):
            for piece in splitter.feed(text) + (splitter.flush() if final else []):
                if piece.kind == "thinking":  # stop strings apply to the answer
                    yield piece
                elif answer := scanner.feed(piece.text):
                    yield ChatPiece("answer", answer)
            if final and (rest := scanner.flush()):
                yield ChatPiece("answer", rest)

        for token in tokens:
            yield from pieces(decoder.push(token))
            if scanner.hit:
                stats.stop_reason = "stop"
                return
            if splitter.kind == "thinking":
                thinking_tokens += 1
                if think_budget is not None and thinking_tokens >= think_budget and not forced:
                    forced.extend(close_thought)
        yield from pieces(decoder.flush(), final=True)
        if scanner.hit:
            stats.stop_reason = "stop"

    def _on_this_thread(self) -> None:
        import numba

        if numba.get_num_threads() != self.n_threads:
            numba.set_num_threads(self.n_threads)

    # -- the KV cache -----------------------------------------------------------------
    def _feed(self, ids: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported once, below, not as warnings
            logits = self.transformer.forward(ids)
        self._cached_ids.extend(int(i) for i in ids)
        if not np.isfinite(logits).all():  # the scan at load saw finite scales: the activations overflowed
            raise NonFiniteWeightsError("the model computed NaN or Inf logits: its weights overflow float32")
        return logits

    def reset(self) -> None:
        """Forget what the KV cache holds: the next call prefills its whole prompt."""
        self.transformer.cache.reset()
        self._cached_ids = []
        self._n_prefilled = 0

    def _feed_aligned(self, ids: np.ndarray) -> np.ndarray:
        """_feed in the fixed reuse blocks: see _reuse_cache."""
        logits, position = None, len(self._cached_ids)
        while len(ids):
            n = block_end(position) - position
            logits, ids, position = self._feed(ids[:n]), ids[n:], position + n
        return logits

    def _reuse_cache(self, ids: list[int]) -> list[int]:
        """Keep the cached prefix that ids share; return the ids still to feed.

        A greedy answer must not depend on whether the cache was hit. Matrix products take
        int8-quantized activations, so a 1e-5 difference in the cache (a batch of 29 rows
        groups its tokens unlike one of 34) can move a logit by ~1% and flip a near-tie. So chat()
        prefills in blocks at fixed positions (block_start), and only whole blocks that such a
        prefill computed are reused: the rest is fed in the same blocks a fresh prefill would
        feed, and the cache comes out bit for bit the same. A continuing conversation
        therefore prefills the last answer (decoded, not prefilled) with the new turn.
        """
        cache = self.transformer.cache
        if cache.n_seen > cache.n_ctx:  # the ring has wrapped: the cache no longer holds a prefix
            self.reset()
            return ids
        limit = min(self._n_prefilled, len(ids) - 1)  # feed at least one token, for its logits
        shared = 0
        for a, b in zip(self._cached_ids[:limit], ids):
            if a != b:
                break
            shared += 1
        shared = block_start(shared)
        cache.truncate(shared)
        del self._cached_ids[shared:]
        return ids[shared:]

    @property
    def tokens_in_context(self) -> int:
        return self.transformer.cache.n_filled

    def _check_ids(self, ids: Sequence[int]) -> None:
        vocab = self.config.vocab_size
        bad = [i for i in ids if not 0 <= int(i) < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")


def on_a_passing_thread(fn: Callable[[], T]) -> T:
    """fn() on a thread of its own that ends with it; its result, or its error raised here.

    Numba's OpenMP layer starts a team of threads for every thread that runs parallel code,
    and once there are more team threads than cores, GNU OpenMP's stop spinning between
    parallel regions: each region then sleeps and wakes in the kernel (the default model:
    ~360 times a token) and decode slows down. A thread that ends takes its team with it, so
    loading here leaves none behind: the thread that generates (the caller's own, or a
    server's worker) starts the only one, as in `nanosmol bench`.
    """
    outcome: list = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as e:  # handed to the caller, as if fn had run there
            outcome.append((False, e))

    thread = threading.Thread(target=run, name="nanosmol-load", daemon=True)  # daemon: Ctrl-C need not wait
    thread.start()
    thread.join()
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def set_threads(n_threads: int | None) -> int:
    """Threads for nanosmol's kernels, on the calling thread; None: one per physical core.

    Numba keeps the count per thread: a Model used from another thread (a server's worker)
    sets it again there (Model._on_this_thread), or that thread would use Numba's default.
    """
    import numba

    from nanosmol.workers import physical_cores

    n = physical_cores() if n_threads is None else n_threads
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"threads must be within 1..{numba.config.NUMBA_NUM_THREADS}")
    numba.set_num_threads(n)
    return n
