"""The `nanosmol` command line."""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time

import click

from nanosmol.gguf_file import GGUFError


def fail(path: str, message: str, status: int = 2):
    """One line on stderr, no traceback; line breaks from the file's own strings are escaped."""
    line = f"error: {path}: {message}"
    click.echo("".join(c if c.isprintable() else repr(c)[1:-1] for c in line), err=True)
    sys.exit(status)


def open_source(path: str):
    """A GGUF file or a Hugging Face folder (nanosmol.checkpoint), or one line and exit 2."""
    from nanosmol.checkpoint import open_checkpoint

    try:
        return open_checkpoint(path)
    except ValueError as e:  # GGUFError, CheckpointError, TokenizerError
        fail(path, str(e))
    except OSError as e:
        fail(path, e.strerror or str(e))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="nanosmol")
def main():
    """Run SmolLM2 and SmolLM3 GGUF models on a CPU."""
    # At exit Python garbage-collects every object it tracks, Numba's compiled code among them:
    # 0.2-0.3 s after the last token. Frozen, they go with the process. Every command closes
    # what it writes (the converters' writer.close()); stdout and stderr are flushed either way.
    atexit.register(gc.freeze)


def cache_type_options(f):
    """--cache-type-k/-v: how the KV cache stores keys and values (every command that sizes a cache)."""
    from nanosmol.kv.types import CACHE_TYPES, DEFAULT_CACHE_TYPE

    for which, what in (("v", "values"), ("k", "keys")):
        f = click.option(f"--cache-type-{which}", type=click.Choice(list(CACHE_TYPES)), default=DEFAULT_CACHE_TYPE,
                         show_default=True, help=f"KV cache type of the {what} (q8_0, q4_0: less memory).")(f)
    return f


@main.command("inspect-gguf")
@click.argument("file", type=click.Path())
@click.option("--tensors", is_flag=True, help="List every tensor: name, type, shape, bytes, offset.")
@click.option("--metadata", is_flag=True, help="Print every metadata key (long arrays shortened).")
@click.option("--template", is_flag=True, help="Print the chat template.")
@click.option("--ctx", type=click.IntRange(min=1), help="Estimate memory for running at this context.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, for scripts.")
@cache_type_options
def inspect_gguf(file, tensors, metadata, template, ctx, as_json, cache_type_k, cache_type_v):
    """Explain a GGUF file (or Hugging Face folder) and tell whether nanosmol can run it."""
    from nanosmol.inspect_gguf import build_report, format_metadata, format_report
    from nanosmol.kv.types import CacheTypes

    gguf = open_source(file)
    report = build_report(gguf, ctx=ctx, with_tensors=tensors, cache_types=CacheTypes(cache_type_k, cache_type_v))
    if as_json:
        if metadata:
            report["metadata"] = gguf.metadata
        if template:
            report["chat_template"] = gguf.metadata.get("tokenizer.chat_template")
        click.echo(json.dumps(report, indent=1, default=str))
        return
    if template:
        chat_template = gguf.metadata.get("tokenizer.chat_template")
        click.echo(chat_template if chat_template is not None else "(no chat template in this file)")
        return
    click.echo(format_report(report))
    if metadata:
        click.echo("\nmetadata")
        click.echo(format_metadata(gguf.metadata))


MODEL_HELP = ("GGUF file or Hugging Face checkpoint folder "
              "(default: SmolLM2-135M-Instruct Q4_1, fetched on first use).")


def model_options(f):
    """Options shared by the commands that load a model."""
    options = [
        click.option("-m", "--model", "model_path", type=click.Path(), help=MODEL_HELP),
        click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=8), default=4096, show_default=True,
                     help="Context size in tokens (KV cache slots)."),
        click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), help="Threads (default: one per physical core)."),
        click.option("--verbose", is_flag=True, help="Print load time and tok/s at the end."),
    ]
    for option in reversed(options):
        f = option(f)
    return cache_type_options(f)


def sampling_options(f):
    options = [
        click.option("-n", "--max-tokens", type=click.IntRange(min=1), default=512, show_default=True),
        click.option("--temp", "temperature", type=float, default=0.8, show_default=True, help="0 = greedy."),
        click.option("--top-k", type=int, default=40, show_default=True, help="0 = off."),
        click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True),
        click.option("--min-p", type=click.FloatRange(0, 1), default=0.05, show_default=True),
        click.option("--repeat-penalty", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True),
        click.option("--repeat-last-n", type=click.IntRange(min=0), default=64, show_default=True),
        click.option("--presence-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                     help="OpenAI's: lower each token the answer already holds."),
        click.option("--frequency-penalty", type=click.FloatRange(-2, 2), default=0.0, show_default=True,
                     help="OpenAI's: lower each token by how often the answer holds it."),
        click.option("--seed", type=int, help="Same seed, same text."),
        click.option("--stop", multiple=True, help="Stop when this text appears (repeatable)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def load_model(model_path, n_ctx, n_threads, cache_type_k, cache_type_v):
    from nanosmol.api import load
    from nanosmol.config import ConfigError
    from nanosmol.download import DownloadError
    from nanosmol.quants import UnsupportedTypeError

    label = model_path or "default model"
    try:
        return load(model_path, n_ctx=n_ctx, n_threads=n_threads, cache_type_k=cache_type_k, cache_type_v=cache_type_v)
    except (GGUFError, ConfigError, UnsupportedTypeError, DownloadError, ValueError) as e:
        fail(label, str(e))
    except OSError as e:
        fail(label, e.strerror or str(e))


@main.command()
@click.argument("prompt")
@model_options
@sampling_options
@click.option("--raw", is_flag=True, help="Feed the prompt as is, without the chat template.")
def run(prompt, model_path, n_ctx, n_threads, verbose, cache_type_k, cache_type_v, max_tokens, temperature, top_k,
        top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed, stop, raw):
    """Generate text from PROMPT, streaming it to stdout."""
    from nanosmol.chat import ChatTemplateError
    from nanosmol.finite import NonFiniteWeightsError

    model = load_model(model_path, n_ctx, n_threads, cache_type_k, cache_type_v)
    try:
        text = prompt if raw else model.chat_prompt([{"role": "user", "content": prompt}])
    except ChatTemplateError as e:
        fail(str(model.path), str(e))
    try:
        pieces = model.generate(text, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                                min_p=min_p, repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n,
                                presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
                                seed=seed, stop=stop, special=not raw)
    except ValueError as e:  # an empty prompt, bad sampling values
        fail("prompt", str(e))
    try:
        stream_to_stdout(pieces)
    except NonFiniteWeightsError as e:
        fail(str(model.path), str(e))
    if verbose:
        print_stats(model)


def stream_to_stdout(pieces) -> None:
    """Print pieces as they come; Ctrl-C ends the stream cleanly."""
    try:
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write("\n")
        click.echo("(interrupted)", err=True)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_load_time(model) -> None:
    t = model.load_timings
    click.echo(f"load {sum(t.values()) * 1000:.0f} ms ({', '.join(f'{k} {v * 1000:.0f} ms' for k, v in t.items())})",
               err=True)


def print_stats(model) -> None:
    s = model.last_stats
    print_load_time(model)
    click.echo(
        f"prefill {s.prompt_tokens} tokens in {s.prefill_seconds * 1000:.0f} ms ({s.prefill_tps:.1f} tok/s)\n"
        f"decode {s.decode_steps} tokens in {s.decode_seconds * 1000:.0f} ms ({s.decode_tps:.1f} tok/s), "
        f"stop: {s.stop_reason}",
        err=True,
    )


@main.command()
@click.argument("textfile", type=click.File("r", encoding="utf-8", errors="replace"))
@model_options
def perplexity(textfile, model_path, n_ctx, n_threads, verbose, cache_type_k, cache_type_v):
    """Perplexity of the model on TEXTFILE (windows of --ctx tokens, second half scored)."""
    from nanosmol.perplexity import perplexity_windows

    text = textfile.read()
    model = load_model(model_path, n_ctx, n_threads, cache_type_k, cache_type_v)
    if verbose:
        print_load_time(model)
    try:
        ppl = None
        for w, n, ppl in perplexity_windows(model, text, n_ctx):
            click.echo(f"[{w + 1}/{n}] {ppl:.4f}", err=True)
    except ValueError as e:
        fail(textfile.name, str(e))
    except KeyboardInterrupt:
        click.echo("(interrupted)", err=True)
    if ppl is not None:
        click.echo(f"perplexity: {ppl:.4f}")


def int_list(ctx, param, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if any(n < 0 for n in numbers):
        raise click.BadParameter("values must not be negative")
    return [n for n in numbers if n > 0]


@main.command()
@click.option("-m", "--model", "model_path", type=click.Path(), help=MODEL_HELP)
@click.option("-p", "--prompt-lengths", default="64,512", show_default=True, callback=int_list,
              help="Prefill tests: prompt lengths, comma-separated (0 = none).")
@click.option("-n", "--gen-lengths", default="32", show_default=True, callback=int_list,
              help="Decode tests: generated tokens, comma-separated (0 = none).")
@click.option("-t", "--threads", default="2", show_default=True, callback=int_list, help="Thread counts, comma-separated.")
@click.option("-r", "--repetitions", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=8), default=4096, show_default=True,
              help="Context size (raised to fit the depth and the longest test).")
@click.option("-d", "--depth", type=click.IntRange(min=0), default=0, show_default=True,
              help="Tokens already in the KV cache when each test starts (filled quickly, as llama-bench's -d).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of records.")
@cache_type_options
def bench(model_path, prompt_lengths, gen_lengths, threads, repetitions, n_ctx, depth, as_json, cache_type_k,
          cache_type_v):
    """Measure prefill and decode speed (tok/s), load time and peak RSS."""
    from nanosmol.bench import format_table, peak_rss_bytes, run_bench

    if not threads:
        raise click.BadParameter("give at least one thread count", param_hint="-t")
    start = time.perf_counter()
    longest = max(prompt_lengths + [n + 1 for n in gen_lengths], default=0)
    model = load_model(model_path, max(n_ctx, depth + longest + 8), None, cache_type_k, cache_type_v)
    load_seconds = time.perf_counter() - start
    log = None if as_json else (lambda r: click.echo(f"  {r.test} t={r.threads}: {r.tokens_per_second:.2f} tok/s", err=True))
    try:
        records = list(run_bench(model, prompt_lengths, gen_lengths, threads, repetitions, log, depth))
    except ValueError as e:
        fail(str(model.path), str(e))
    if as_json:
        click.echo(json.dumps([r.as_dict() | {"load_seconds": load_seconds, "peak_rss": peak_rss_bytes()}
                               for r in records], indent=1))
    else:
        click.echo(format_table(records))
        click.echo(f"\nload {load_seconds * 1000:.0f} ms, peak RSS {peak_rss_bytes() / 2**20:.0f} MiB")


CHAT_HELP = """commands: /reset (forget the conversation), /system TEXT, /think on|off, /stats, /exit"""


@main.command()
@model_options
@sampling_options
@click.option("--system", help="System prompt.")
@click.option("--think/--no-think", default=None, help="SmolLM3 reasoning mode (default: the template's).")
@click.option("--hide-thinking", is_flag=True, help="Show only the answer, not the reasoning.")
@click.option("--think-budget", type=click.IntRange(min=0), help="End the reasoning after N tokens.")
def chat(model_path, n_ctx, n_threads, verbose, cache_type_k, cache_type_v, max_tokens, temperature, top_k, top_p,
         min_p, repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed, stop, system, think,
         hide_thinking, think_budget):
    """Talk with the model. Reads user turns line by line from a pipe, too."""
    from nanosmol.chat import ChatSession, ChatTemplateError
    from nanosmol.finite import NonFiniteWeightsError

    model = load_model(model_path, n_ctx, n_threads, cache_type_k, cache_type_v)
    if verbose:
        print_load_time(model)
    session = ChatSession(model, system=system, think=think, think_budget=think_budget, max_tokens=max_tokens,
                          temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                          repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed,
                          presence_penalty=presence_penalty, frequency_penalty=frequency_penalty)
    interactive = sys.stdin.isatty()
    styled = sys.stdout.isatty()
    if interactive:
        click.echo(click.style(f"nanosmol chat with {model.path.name}. {CHAT_HELP}. Ctrl-C stops an answer, "
                               "Ctrl-D ends.", dim=True))
    while True:
        try:
            line = input("> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        except KeyboardInterrupt:
            click.echo()
            continue
        if not interactive and line == "":
            break  # end of the piped input
        line = line.rstrip("\n")
        if not line.strip():
            continue
        if line.startswith("/"):
            if not run_chat_command(line, session, model):
                break
            continue
        try:
            print_reply(session.reply(line), styled, hide_thinking)
        except KeyboardInterrupt:
            click.echo(click.style("\n(stopped)", dim=styled))
        except (ChatTemplateError, NonFiniteWeightsError) as e:
            fail(str(model.path), str(e))
        for note in session.notes:
            click.echo(click.style(f"({note})", dim=styled), err=True)
        session.notes.clear()


def run_chat_command(line: str, session, model) -> bool:
    """Carry out a /command; False ends the session."""
    command, _, arg = line.partition(" ")
    if command in ("/exit", "/quit"):
        return False
    if command == "/reset":
        session.reset()
        click.echo("(conversation reset)")
    elif command == "/system":
        session.system = arg.strip() or None
        click.echo("(system prompt set)" if session.system else "(system prompt cleared)")
    elif command == "/think" and arg.strip() in ("on", "off"):
        session.think = arg.strip() == "on"
        click.echo(f"(thinking {arg.strip()})")
    elif command == "/stats":
        s = model.last_stats
        click.echo(f"(context {model.tokens_in_context}/{model.n_ctx} tokens; last turn: prefilled "
                   f"{s.prompt_tokens} tokens at {s.prefill_tps:.1f} tok/s, generated {s.generated_tokens} "
                   f"at {s.decode_tps:.1f} tok/s)")
    else:
        click.echo(f"(unknown command {line!r}; {CHAT_HELP})")
    return True


def print_reply(pieces, styled: bool, hide_thinking: bool) -> None:
    last_kind = None
    for piece in pieces:
        if piece.kind == "thinking":
            if hide_thinking:
                continue
            text = click.style(piece.text, dim=True) if styled else piece.text
        else:
            text = piece.text
            if last_kind == "thinking" and not hide_thinking:
                text = "\n" + text.lstrip("\n")  # keep the answer apart from the reasoning
            elif last_kind is None:
                text = text.lstrip("\n")
        sys.stdout.write(text)
        sys.stdout.flush()
        last_kind = piece.kind
    sys.stdout.write("\n")
    sys.stdout.flush()


@main.command()
@click.argument("source", type=click.Path(dir_okay=False))
@click.argument("target", type=click.Path())
@click.argument("type_name", metavar="TYPE")
@click.option("--pure", is_flag=True, help="Every weight matrix in TYPE's base type: no mix (llama-quantize --pure).")
@click.option("--allow-requantize", is_flag=True, help="Accept a SOURCE that is already quantized (loses more).")
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), help="Threads (default: one per physical core).")
def quantize(source, target, type_name, pure, allow_requantize, n_threads):
    """Quantize the GGUF file SOURCE (F32, F16 or BF16) into TARGET as llama-quantize does.

    TYPE: Q4_K_M, Q5_K_M, Q3_K_M (or Q4_K, Q5_K, Q3_K), Q2_K, Q6_K, Q8_0, Q4_0, Q4_1, Q5_0,
    Q5_1, F16, BF16 or F32. Each tensor's line goes to stderr as it is written."""
    from nanosmol.api import set_threads
    from nanosmol.config import ConfigError
    from nanosmol.convert import QuantizeError, progress_line, quantize_gguf

    mix = type_or_fail(type_name)
    check_target(target)
    if os.path.exists(source) and os.path.exists(target) and os.path.samefile(source, target):
        fail(target, "is the input file: write to another file")
    set_threads(n_threads)
    start = time.perf_counter()
    try:
        quantize_gguf(source, target, mix, pure, allow_requantize,
                      progress=lambda *done: click.echo(progress_line(*done), err=True))
    except (GGUFError, ConfigError, QuantizeError) as e:
        fail(source, str(e))
    except ValueError as e:  # NaN or Inf weights, unsupported metadata
        fail(source, str(e))
    except OSError as e:  # reading the source, or writing the target (its temporary file)
        fail(source if e.filename == source else target, e.strerror or str(e))
    except KeyboardInterrupt:
        fail(target, "interrupted: nothing written")
    click.echo(f"wrote {target}: {os.path.getsize(target) / 2**20:.2f} MiB ({mix.name}) from "
               f"{os.path.getsize(source) / 2**20:.2f} MiB in {time.perf_counter() - start:.1f} s", err=True)


def type_or_fail(type_name: str):
    """The mix named TYPE, or one line and exit 2."""
    from nanosmol.quants.mixes import find_mix

    try:
        return find_mix(type_name)
    except ValueError as e:
        fail("TYPE", str(e))


def check_target(target: str) -> None:
    """A file can be written at `target`, or one line and exit 2 (before any work is done)."""
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.isdir(target):
        fail(target, "is a folder: give the file name to write")
    if not os.path.isdir(folder):
        fail(target, "its folder does not exist")
    if not os.access(folder, os.W_OK):
        fail(target, "its folder is not writable")


@main.command()
@click.argument("folder", type=click.Path())
@click.option("-o", "--output", "target", type=click.Path(), required=True, help="The GGUF file to write.")
@click.option("--type", "type_name", default="auto", show_default=True,
              help="auto (as llama.cpp's converter: BF16 from a BF16 checkpoint, F16 from F16 or F32), F32, F16, "
                   "BF16, Q8_0, or any TYPE of nanosmol quantize (Q4_K_M, Q6_K, ...).")
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), help="Threads (default: one per physical core).")
def convert(folder, target, type_name, n_threads):
    """Convert the Hugging Face checkpoint FOLDER into a GGUF file that llama.cpp and nanosmol run.

    F32, F16, BF16 and Q8_0 give the file llama.cpp's convert_hf_to_gguf.py writes; the other
    types the file llama-quantize makes from it. Each tensor's line goes to stderr as it is
    written; an error or Ctrl-C leaves no file."""
    from nanosmol.api import set_threads
    from nanosmol.convert import convert_folder, progress_line

    if type_name.lower() != "auto":
        type_or_fail(type_name)
    if not os.path.isdir(folder):
        fail(folder, "is not a folder: convert reads a Hugging Face checkpoint folder (a GGUF file: nanosmol quantize)"
             if os.path.exists(folder) else "No such file or directory")
    check_target(target)
    set_threads(n_threads)
    start = time.perf_counter()
    try:
        mix, notes = convert_folder(folder, target, type_name,
                                    progress=lambda *done: click.echo(progress_line(*done), err=True))
    except ValueError as e:  # CheckpointError, TokenizerError, ConfigError, QuantizeError, ConvertError, NaN weights
        fail(folder, str(e))
    except OSError as e:  # reading the folder, or writing the target (or its temporary file beside it)
        name = os.path.basename(str(e.filename or target))
        writing = name == os.path.basename(target) or name.startswith(f".{os.path.basename(target)}.")
        fail(target if writing else folder, e.strerror or str(e))
    except KeyboardInterrupt:
        fail(target, "interrupted: nothing written")
    for note in notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"wrote {target}: {os.path.getsize(target) / 2**20:.2f} MiB ({mix.name}) in "
               f"{time.perf_counter() - start:.1f} s", err=True)


@main.command()
@click.option("-m", "--model", "model_path", type=click.Path(), help=MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("-c", "--ctx", "n_ctx", type=click.IntRange(min=8), default=4096, show_default=True,
              help="Context size in tokens (KV cache slots).")
@click.option("-t", "--threads", "n_threads", type=click.IntRange(min=1), help="Threads (default: one per physical core).")
@click.option("--api-key", envvar="NANOSMOL_API_KEY", help="Require 'Authorization: Bearer KEY' (env NANOSMOL_API_KEY).")
@click.option("--cors", "cors_origin", metavar="ORIGIN", help="Allow this browser origin to call the API (CORS).")
@click.option("--max-queue", type=click.IntRange(min=0), default=16, show_default=True,
              help="Requests that may wait for the model; beyond that the answer is 503 with Retry-After.")
@click.option("--think-budget", type=click.IntRange(min=0), help="Default bound on SmolLM3's thinking, in tokens.")
@click.option("--chat-template-file", type=click.File("r", encoding="utf-8"),
              help="Use this Jinja chat template instead of the file's.")
@cache_type_options
def serve(model_path, host, port, n_ctx, n_threads, api_key, cors_origin, max_queue, think_budget, chat_template_file,
          cache_type_k, cache_type_v):
    """Serve the model over HTTP: OpenAI's API (/v1/...) and a web chat at /."""
    from nanosmol.server import missing_dependency

    missing = missing_dependency()
    if missing:
        fail("serve", f"the server needs the package '{missing}': pip install 'nanosmol[serve]'")
    model = load_model(model_path, n_ctx, n_threads, cache_type_k, cache_type_v)
    if chat_template_file is not None:
        model.chat_template = chat_template_file.read()
    from nanosmol.server import serve as run_server

    click.echo(f"nanosmol serve: {model.path.name} on http://{host}:{port}/ (API at /v1)", err=True)
    run_server(model, host=host, port=port, api_key=api_key or None, cors_origin=cors_origin, max_queue=max_queue,
               think_budget=think_budget)
