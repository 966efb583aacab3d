"""Load test for `nanosmol serve`: concurrent clients, mixed requests, latency and memory.

    python tools/load_test.py [-m FILE] [--clients 8] [--requests 25]

Starts a server on a free port (the default model unless -m), measures one client's streamed
decode speed, then runs CLIENTS threads of REQUESTS requests each, in turn: streamed, not
streamed, streamed and cancelled halfway, malformed. Prints what was answered, errors by
status, time to first token, overall tokens/s and the server's RSS before and after.
Standard library only: it drives the server as any HTTP client would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import sys
import threading
import time
from collections import Counter

from server_process import rss_mib, start_server

TOPICS = ["the Moon", "bread", "rivers", "chess", "volcanoes", "owls", "trains", "tea", "glaciers", "music"]
MALFORMED = [
    b'{"messages": [',  # bad JSON
    b'{"messages": []}',  # no messages
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',  # wrong type
    b'{"messages": [{"role": "user", "content": "hi"}], "n": 3}',  # unsupported
    b'{"messages": [{"role": "user", "content": "hi"}], "model": "gpt-9"}',  # unknown model (404)
    b'{"messages": [{"role": "user", "content": "' + b"x" * (2 << 20) + b'"}]}',  # too large (413)
]


class Client:
    def __init__(self, port: int):
        self.port = port

    def post(self, body: bytes, timeout: float = 300):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        conn.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        return conn, conn.getresponse()


def chat_body(i: int, stream: bool, max_tokens: int = 48) -> bytes:
    return json.dumps({"messages": [{"role": "user", "content": f"Tell me about {TOPICS[i % len(TOPICS)]}."}],
                       "max_tokens": max_tokens, "stream": stream, "stream_options": {"include_usage": True},
                       "seed": i}).encode()


def events(response):
    """The JSON events of a server-sent event stream (its closing `data: [DONE]` left out)."""
    for raw in response:
        line = raw.decode().strip()
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def read_stream(response, stop_after: int | None = None):
    """(seconds to the first content, content chunks, completion tokens from usage or None)."""
    start, first, chunks, tokens = time.perf_counter(), None, 0, None
    for event in events(response):
        if event.get("choices") and event["choices"][0]["delta"].get("content"):
            first = first if first is not None else time.perf_counter() - start
            chunks += 1
            if stop_after is not None and chunks >= stop_after:
                break
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
    return first, chunks, tokens


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.answered = Counter()  # kind -> well-formed requests answered as they should be
        self.statuses = Counter()  # (kind, status) for every non-200 answer
        self.failures: list[str] = []  # well-formed requests not answered, malformed ones not a 4xx
        self.ttft: list[float] = []
        self.tokens = 0

    def add(self, **fields):
        with self.lock:
            for name, value in fields.items():
                if name == "ttft" and value is not None:
                    self.ttft.append(value)
                elif name == "tokens":
                    self.tokens += value or 0


def one_request(client: Client, kind: str, i: int, results: Results) -> None:
    try:
        if kind == "malformed":
            conn, response = client.post(MALFORMED[i // 4 % len(MALFORMED)])  # every 4th request is one
            response.read()
            with results.lock:
                results.statuses[(kind, response.status)] += 1
                if 400 <= response.status < 500:
                    results.answered[kind] += 1
                else:
                    results.failures.append(f"malformed #{i}: status {response.status}")
            return
        conn, response = client.post(chat_body(i, stream=kind != "whole", max_tokens=64 if kind == "cancel" else 48))
        if response.status != 200:
            response.read()
            with results.lock:
                results.statuses[(kind, response.status)] += 1
                results.failures.append(f"{kind} #{i}: status {response.status}")
            return
        if kind == "whole":
            body = json.loads(response.read())
            ok = body["choices"][0]["finish_reason"] in ("stop", "length")
            results.add(tokens=body["usage"]["completion_tokens"])
        elif kind == "stream":
            first, chunks, tokens = read_stream(response)
            ok = tokens is not None
            results.add(ttft=first, tokens=tokens)
        else:  # cancel: read half the answer, then hang up
            first, chunks, _ = read_stream(response, stop_after=16)
            conn.sock.shutdown(socket.SHUT_RDWR)
            ok = True
            results.add(ttft=first, tokens=chunks)
        conn.close()
        with results.lock:
            results.answered[kind] += ok
            if not ok:
                results.failures.append(f"{kind} #{i}: incomplete answer")
    except (OSError, ValueError, KeyError) as e:
        with results.lock:
            results.failures.append(f"{kind} #{i}: {type(e).__name__}: {e}")


def single_client_decode(client: Client, n: int = 128) -> tuple[float, float]:
    """One streamed answer of n tokens: client-side tok/s after the first token, and the server's."""
    body = json.dumps({"messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
                       "max_tokens": n, "temperature": 0.8, "min_p": 0.0, "seed": 1, "stream": True,
                       "stream_options": {"include_usage": True}}).encode()
    conn, response = client.post(body)
    first = last = None
    server_tps, tokens = 0.0, 0
    for event in events(response):
        if event.get("choices") and event["choices"][0]["delta"].get("content"):
            last = time.perf_counter()
            first = first or last
        if event.get("usage"):
            tokens, server_tps = event["usage"]["completion_tokens"], event["timings"]["predicted_per_second"]
    conn.close()
    return (tokens - 1) / (last - first), server_tps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", "--model", help="GGUF file (default model if omitted)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=25, help="per client")
    args = parser.parse_args()

    try:
        server, port = start_server(["--max-queue", str(args.clients)] + (["-m", args.model] if args.model else []))
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    try:
        client = Client(port)
        single_client_decode(client, 16)  # warm up
        rss_before = rss_mib(server.pid)
        client_tps, server_tps = single_client_decode(client)

        kinds = ["stream", "whole", "cancel", "malformed"]
        results = Results()
        start = time.perf_counter()

        def run(c: int):
            for r in range(args.requests):
                i = c * args.requests + r
                one_request(client, kinds[(c + r) % len(kinds)], i, results)

        threads = [threading.Thread(target=run, args=(c,)) for c in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=1800)
        wall = time.perf_counter() - start
        hung = sum(t.is_alive() for t in threads)
        time.sleep(0.5)
        rss_after = rss_mib(server.pid)
    finally:
        server.terminate()
        _, log = server.communicate(timeout=30)

    total = args.clients * args.requests
    ttft = sorted(results.ttft)
    pct = lambda q: ttft[min(len(ttft) - 1, int(q * len(ttft)))] * 1000 if ttft else float("nan")
    print(f"load test: {args.clients} clients x {args.requests} requests = {total} (stream, whole, cancelled "
          f"halfway, malformed in turn), {wall:.1f} s")
    print(f"answered as they should be: {sum(results.answered.values())}/{total}  "
          + ", ".join(f"{k} {v}" for k, v in sorted(results.answered.items())))
    print("non-200 answers by status: " + (", ".join(f"{status} ({kind}) x{n}" for (kind, status), n in
                                                   sorted(results.statuses.items())) or "none"))
    print(f"failures (well-formed not answered, malformed not 4xx, hangs): {len(results.failures) + hung}")
    for failure in results.failures[:10]:
        print("  " + failure)
    print(f"time to first token (streamed, under load): p50 {pct(0.5):.0f} ms, p95 {pct(0.95):.0f} ms")
    print(f"tokens/s overall: {results.tokens / wall:.1f} ({results.tokens} tokens in {wall:.1f} s)")
    print(f"one client, streamed, 128 tokens: {client_tps:.1f} tok/s at the client, {server_tps:.1f} tok/s decode "
          "in the server")
    print(f"server RSS: {rss_before:.1f} MiB before, {rss_after:.1f} MiB after ({rss_after - rss_before:+.1f} MiB)")
    print(f"tracebacks in the server's log: {log.count('Traceback')}")
    return 0 if not results.failures and not hung else 1


if __name__ == "__main__":
    sys.exit(main())
