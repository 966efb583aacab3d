"""Running a real `nanosmol serve` process for the tests, and raw HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python -m nanosmol serve ARGS` on a free port; its log is kept for the tests to read."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        environment = {**os.environ, **(env or {})}
        # The tests may run from a work tree other than the installed one: the server runs this code.
        environment["PYTHONPATH"] = os.pathsep.join([str(REPO), environment.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "nanosmol", "serve", "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=environment)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 300) -> None:  # the first run compiles the kernels
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if request(self, "GET", "/health")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()

    def health(self) -> dict:
        return request(self, "GET", "/health")[1]

    def wait_idle(self, timeout: float = 5.0) -> float:
        """Seconds until nothing runs or waits; fails past the timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            queue = self.health()["queue"]
            if queue["running"] == 0 and queue["waiting"] == 0:
                return time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"the server is still busy after {timeout} s: {self.health()}")


def request(server: ServerProcess, method: str, path: str, body=None, headers: dict | None = None,
            timeout: float = 120) -> tuple[int, dict | str, dict]:
    """(status, JSON body or text, headers). body: a dict (sent as JSON), bytes or str (sent as is)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        if isinstance(body, dict):
            body = json.dumps(body)
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read().decode()
        try:
            data = json.loads(data)
        except json.JSONDecodeError:
            pass
        return response.status, data, {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()


def open_stream(server: ServerProcess, path: str, body: dict, headers: dict | None = None):
    """Start a streamed request; returns (connection, response) to read SSE lines from."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **(headers or {})})
    return conn, conn.getresponse()


def read_events(response, n: int) -> list[str]:
    """The next n `data:` payloads of a stream."""
    events = []
    while len(events) < n:
        line = response.fp.readline().decode()
        if not line:
            break
        if line.startswith("data: "):
            events.append(line[6:].strip())
    return events


def send(server: ServerProcess, path: str, body: dict) -> http.client.HTTPConnection:
    """Send a request without waiting for its answer (a client that waits in the queue)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    return conn
