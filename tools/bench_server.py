"""Decode speed through `nanosmol serve` next to `nanosmol bench`'s, interleaved in one run.

    python tools/bench_server.py [FILE ...] [--rounds 3] [--tokens 128] [-t THREADS] [-c CTX] [--temp T]

For each file (default: the default model and /work/models/3b-q4km.gguf) it starts a server
from this work tree and loads the same file here, then alternates (server first in even
rounds, bench first in odd ones): one long answer streamed by the official openai client,
and bench's tg test (`nanosmol.bench.time_decode`, what `nanosmol bench -n` times) at the
depth of the server's prompt. Each round prints decode tok/s from the server's `timings`
and as the client saw it (after the first token), bench's tg figure, and for both the
CPU-milliseconds per token (and the server's event loop's share) and the times per token a
thread went to sleep in the kernel (voluntary context switches), read from /proc (Linux).
The last hardly depends on how loaded the machine is, and tells threads that wait in the
kernel between parallel regions from threads that spin. The answer is sampled as clients
ask (--temp, default 0.8: llama.cpp's chain with top-k 40; 0: greedy).

On a loaded machine trust the ratios of neighbouring rounds, not the absolute figures (the
load average is printed as it goes): the spinning threads of both lose most of their speed
to other work. As root, a run in a session of its own at the top priority sees the cores
nearly as if idle (Linux schedules sessions, "autogroups", fairly against each other
whatever `nice` says):

    setsid -w sh -c 'echo -20 > /proc/$$/autogroup; exec nice -n -20 python tools/bench_server.py'
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import openai

from server_process import waits, cpu_seconds, start_server, thread_count

STORY = [{"role": "user", "content": "Write a very long story about a lighthouse keeper and a storm."}]
DEFAULT_FILES = [None, "/work/models/3b-q4km.gguf"]  # None: the default model


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def stream_answer(client: openai.OpenAI, model_id: str, pid: int, n: int, temperature: float) -> dict:
    """One streamed answer: decode speed as the server timed it and as the client saw it, and
    the server's CPU time and sleeps per token from its first token to its last."""
    chunks = client.chat.completions.create(model=model_id, messages=STORY, max_tokens=n, temperature=temperature,
                                            seed=1, stream=True, stream_options={"include_usage": True})
    first = last = None
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            if first is None:
                first, cpu, loop_cpu, sleeps = last, cpu_seconds(pid), cpu_seconds(pid, pid), waits(pid)
        if chunk.usage:
            usage, timings = chunk.usage, chunk.model_extra["timings"]
    cpu, loop_cpu, sleeps = cpu_seconds(pid) - cpu, cpu_seconds(pid, pid) - loop_cpu, waits(pid) - sleeps
    steps = usage.completion_tokens - 1
    return {"server": timings["predicted_per_second"], "client": steps / (last - first),
            "cpu_ms": cpu / steps * 1000, "loop_cpu_ms": loop_cpu / steps * 1000, "sleeps": sleeps / steps,
            "tokens": usage.completion_tokens, "prompt": usage.prompt_tokens, "threads": thread_count(pid)}


def bench_decode(model, n: int, depth: int) -> dict:
    """bench's tg test: n decode steps after `depth` cached tokens, on this process's main thread."""
    from nanosmol.bench import time_decode

    pid = os.getpid()
    cpu, sleeps = cpu_seconds(pid), waits(pid)
    tps = time_decode(model, n, depth)
    return {"bench": tps, "cpu_ms": (cpu_seconds(pid) - cpu) / n * 1000,
            "sleeps": (waits(pid) - sleeps) / n, "threads": thread_count(pid)}


def run_file(path: str | None, rounds: int, n: int, threads: int | None, n_ctx: int,
             temperature: float) -> list[tuple[float, float]]:
    import nanosmol
    from nanosmol.bench import fill_cache

    model = nanosmol.load(path, n_ctx=n_ctx, n_threads=threads)
    name = model.path.name
    args = ["-m", str(model.path), "-c", str(n_ctx), *(["-t", str(threads)] if threads else [])]
    server, port = start_server(args)
    ratios = []
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)
        # A first answer pages the weights in and tells the prompt's length: bench runs at that depth.
        warm = stream_answer(client, model.path.stem, server.pid, 8, temperature)
        depth = warm["prompt"]
        fill_cache(model, depth)
        bench_decode(model, 8, depth)  # bench's own warm-up
        print(f"\n{name}: {n} tokens per round, {model.n_threads} threads, temperature {temperature}, "
              f"bench at depth {depth}")
        print("| round | load avg | server timings tok/s | client tok/s | bench tg tok/s | server/bench | "
              "client/bench | CPU-ms/token server / bench | of which the server's event loop | "
              "sleeps/token server / bench |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in range(rounds):
            if r % 2 == 0:
                s, b = stream_answer(client, model.path.stem, server.pid, n, temperature), bench_decode(model, n, depth)
            else:
                b, s = bench_decode(model, n, depth), stream_answer(client, model.path.stem, server.pid, n, temperature)
            ratios.append((s["server"] / b["bench"], s["client"] / b["bench"]))
            print(f"| {r + 1} | {load_average()} | {s['server']:.1f} | {s['client']:.1f} | {b['bench']:.1f} | "
                  f"{ratios[-1][0]:.3f} | {ratios[-1][1]:.3f} | {s['cpu_ms']:.2f} / {b['cpu_ms']:.2f} | "
                  f"{s['loop_cpu_ms']:.2f} | "
                  f"{s['sleeps']:.1f} / {b['sleeps']:.1f} |", flush=True)
            if s["tokens"] < n:
                print(f"  (the answer ended after {s['tokens']} tokens)")
        print(f"median server/bench {statistics.median(x for x, _ in ratios):.3f}, "
              f"client/bench {statistics.median(y for _, y in ratios):.3f}; threads: server {s['threads']}, "
              f"bench {b['threads']}")
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
        if "Traceback" in log:
            print(log, file=sys.stderr)
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", help="GGUF files (default: the default model and 3b-q4km)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128, help="decode steps per round, both sides")
    parser.add_argument("-t", "--threads", type=int, help="default: one per physical core, as nanosmol's")
    parser.add_argument("-c", "--ctx", type=int, default=1024)
    parser.add_argument("--temp", type=float, default=0.8, help="the answer's temperature (0: greedy)")
    args = parser.parse_args()
    files = args.files or [f for f in DEFAULT_FILES if f is None or Path(f).exists()]
    print(f"load average at the start: {load_average()} ({os.cpu_count()} CPUs)")
    for path in files:
        run_file(path, args.rounds, args.tokens, args.threads, args.ctx, args.temp)
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
