"""The long fuzz run: N mutated GGUF files through every entry point (tests/gguf_fuzz.py).

    PYTHONPATH=. python tools/fuzz_gguf.py 20000 --jobs 2     # cases 0..19999, two worker processes
    PYTHONPATH=. python tools/fuzz_gguf.py --case 1234        # replay one case, with its traceback

Each worker process takes case numbers one at a time; a case that takes longer than
--timeout seconds is a hang: the worker is killed and a fresh one takes the next case; a
worker that dies in a case (a segfault in a kernel, say) is a crash, and replaced too.
A case may raise the worker's peak RSS by at most --memory-factor times the file size
plus a constant (the CI test bounds tracemalloc's count the same way). Prints the count of each
outcome, every violation with its case number, and the distinct error messages.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing as mp
import os
import re
import sys
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MEMORY_SLACK = 64 << 20  # bytes any case may use beyond the per-file-byte bound


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(case: int, path: str, memory_factor: float) -> tuple[str, str, str]:
    """One case. Memory: the process's peak RSS may not grow past the bound in this case.

    Peak RSS only grows, so a case that allocates beyond the bound raises it there; unlike
    tracemalloc it also sees native allocations (tokenizers, jinja's compiled code) and
    costs nothing, so every case of a long run is measured.
    """
    from gguf_fuzz import PropertyViolation, drive, make_case

    raw, steps = make_case(case)
    with open(path, "wb") as f:
        f.write(raw)
    before = peak_rss()
    error = ""
    try:
        outcome, error = drive(path)
        detail = steps
    except PropertyViolation as e:
        outcome, detail = "VIOLATION", f"{steps}\n{e}"
    grown = peak_rss() - before
    if grown > memory_factor * len(raw) + MEMORY_SLACK:
        outcome, detail = "VIOLATION", f"{steps}\npeak RSS grew {grown} bytes for a {len(raw)}-byte file"
    return outcome, detail, error


def worker(conn, memory_factor: float) -> None:
    from gguf_fuzz import SEED_FILES, drive, encode, seed

    path = os.path.join(tempfile.mkdtemp(prefix="nanosmol-fuzz-"), "case.gguf")
    with open(path, "wb") as f:  # warm up (imports, kernels, first allocations) before measuring cases
        f.write(encode(seed(SEED_FILES[0])))
    drive(path)
    while True:
        case = conn.recv()
        if case is None:
            return
        conn.send((case, *run_case(case, path, memory_factor)))
        gc.collect()  # reference cycles from the CLI's exceptions keep the last files' maps (and fds) open


class Worker:
    def __init__(self, memory_factor: float):
        self.conn, child = mp.Pipe()
        self.process = mp.Process(target=worker, args=(child, memory_factor), daemon=True)
        self.process.start()
        self.case, self.started = None, 0.0

    def give(self, case: int) -> None:
        self.case, self.started = case, time.monotonic()
        self.conn.send(case)

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            self.conn.send(None)
        self.process.join()


def normalized(message: str) -> str:
    """An error line with its numbers and quoted values blanked, to group alike messages."""
    message = re.sub(r"^error: [^:]*: ", "", message)
    return re.sub(r"'[^']*'|\d+", "#", message)[:150]


def fuzz(start: int, count: int, jobs: int, timeout: float, memory_factor: float) -> int:
    outcomes, messages, violations = Counter(), Counter(), []
    workers = [Worker(memory_factor) for _ in range(jobs)]
    todo = list(range(start, start + count))[::-1]
    began, done = time.monotonic(), 0
    for w in workers:
        if todo:
            w.give(todo.pop())
    while any(w.case is not None for w in workers):
        for i, w in enumerate(workers):
            if w.case is None:
                continue
            if w.conn.poll(0.05):
                try:
                    case, outcome, detail, error = w.conn.recv()
                except (EOFError, OSError):  # the worker died mid-case (a crash, or killed from outside)
                    w.process.join()
                    case, outcome, detail, error = w.case, "CRASH", f"worker died, exit code {w.process.exitcode}", None
                    workers[i] = Worker(memory_factor)
                outcomes[outcome] += 1
                if error:
                    messages[normalized(error)] += 1
                if outcome in ("VIOLATION", "CRASH"):
                    violations.append((case, detail))
                    print(f"case {case}: {detail}", file=sys.stderr)  # now, not only at the end
                w = workers[i]
                w.case = None
            elif time.monotonic() - w.started > timeout:
                outcomes["HANG"] += 1
                violations.append((w.case, f"no answer after {timeout:.0f} s"))
                print(f"case {w.case}: no answer after {timeout:.0f} s", file=sys.stderr)
                w.stop(kill=True)
                workers[i] = w = Worker(memory_factor)
            else:
                continue
            done += 1
            if done % 500 == 0:
                print(f"{done}/{count} in {time.monotonic() - began:.0f} s: {dict(outcomes)}", file=sys.stderr)
            if todo:
                w.give(todo.pop())
    for w in workers:
        w.stop()
    print(f"\n{count} cases ({start}..{start + count - 1}) in {time.monotonic() - began:.0f} s")
    for outcome, n in outcomes.most_common():
        print(f"  {outcome:<12} {n}")
    print(f"\nerror messages ({len(messages)} kinds):")
    for message, n in messages.most_common():
        print(f"  {n:6}  {message}")
    for case, detail in violations:
        print(f"\ncase {case}: {detail}")
    return 1 if violations else 0


def replay(case: int) -> int:
    from gguf_fuzz import drive, make_case

    raw, steps = make_case(case)
    path = os.path.join(tempfile.mkdtemp(prefix="nanosmol-fuzz-"), f"case-{case}.gguf")
    Path(path).write_bytes(raw)
    print(f"case {case}: {steps}\nfile: {path}")
    print(drive(path))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("count", type=int, nargs="?", default=1000)
    parser.add_argument("--start", type=int, default=0, help="first case number")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a case counts as a hang")
    parser.add_argument("--memory-factor", type=float, default=16.0,
                        help="allowed peak-RSS growth per byte of the file")
    parser.add_argument("--case", type=int, help="replay this one case in this process")
    args = parser.parse_args()
    if args.case is not None:
        return replay(args.case)
    return fuzz(args.start, args.count, args.jobs, args.timeout, args.memory_factor)


if __name__ == "__main__":
    sys.exit(main())
