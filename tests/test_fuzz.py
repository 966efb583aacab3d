"""Mutation fuzzing: every entry point a GGUF file reaches, on files nobody wrote by hand.

Each example is a case number of tests/gguf_fuzz.py: a seed micro model, one to three
mutations. The property: the file runs, or parser, inspector and `run` all end in one
line naming the problem (exit 2); no traceback, no hang, allocation bounded by the file's
size, and inspect-gguf's verdict matches what `run` does. CI runs a short sample
(NANOSMOL_FUZZ_EXAMPLES, default 60); `tools/fuzz_gguf.py 20000` is the long run.
"""

from __future__ import annotations

import os
import signal
import tracemalloc
from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gguf_fuzz import drive, make_case

EXAMPLES = int(os.environ.get("NANOSMOL_FUZZ_EXAMPLES", "60"))
CASE_SECONDS = 60  # a case taking longer is a hang
MEMORY_PER_FILE_BYTE, MEMORY_SLACK = 16, 64 << 20


@pytest.fixture(scope="module")
def case_path(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz") / "case.gguf")


def drive_case(case: int, path: str) -> tuple[str, str]:
    raw, steps = make_case(case)
    with open(path, "wb") as f:
        f.write(raw)

    def hang(*_):
        raise TimeoutError(f"case {case} ({steps}) still running after {CASE_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(CASE_SECONDS)
    tracemalloc.start()
    try:
        outcome, error = drive(path)
    except AssertionError as e:
        raise AssertionError(f"case {case} ({steps}): {e}") from None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert peak < MEMORY_PER_FILE_BYTE * len(raw) + MEMORY_SLACK, f"case {case}: {peak} bytes for {len(raw)}"
    return outcome, error


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
@given(case=st.integers(0, 2**32 - 1))
def test_mutated_files_run_or_fail_in_one_line(case_path, case):
    event(drive_case(case, case_path)[0])


def test_mutations_reach_every_outcome(case_path):
    """The harness is no use if every mutation dies in the parser: a fixed sample reaches past it."""
    results = [drive_case(case, case_path) for case in range(40)]
    outcomes = Counter(outcome for outcome, _ in results)
    assert {"parse error", "refused", "runs"} <= set(outcomes) and outcomes["parse error"] < 30, results
