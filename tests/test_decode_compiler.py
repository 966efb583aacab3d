"""The cold start's second process (nanosmol/decode_compiler.py) never outlives its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

# A parent that starts a child calling die_with_parent() (then sleeping), prints its pid, waits.
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "from nanosmol.decode_compiler import die_with_parent; import time; die_with_parent(); print('ready', flush=True); time.sleep(60)"],
    stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "ready"
print(child.pid, flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is as good as gone
        return f.read().split(")")[-1].split()[0] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_second_process_dies_when_its_parent_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.send_signal(signal.SIGKILL)  # no __exit__, no cleanup: only the kernel can tell the child
    parent.wait()
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)


def test_an_empty_cache_is_told_from_one_that_holds_kernels(tmp_path):
    """nothing_compiled_yet() starts the second process early on a first run only."""
    check = ("from nanosmol.decode_compiler import nothing_compiled_yet; a = nothing_compiled_yet(); "
             "from nanosmol.sampling import draw; import numpy as np; draw(np.zeros(4, np.float32), 0, 1.0, 0.0, 1.0, 0.5); "
             "print(a, nothing_compiled_yet())")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    run = lambda: subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, check=True)
    assert run().stdout.split() == ["True", "False"]  # empty, then draw compiled into it
    assert run().stdout.split() == ["False", "False"]


def test_the_second_process_imports_this_nanosmol(tmp_path, monkeypatch):
    """Started from a folder holding another nanosmol (a checkout beside the installed copy), the
    second process still imports this one: here it fails on the missing file (exit 1), where
    the decoy package would exit 3."""
    from nanosmol import decode_compiler
    from nanosmol.kv.types import CacheTypes

    (tmp_path / "nanosmol").mkdir()
    (tmp_path / "nanosmol" / "__init__.py").write_text("raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(decode_compiler, "usable_cores", lambda: 2)
    compiler = decode_compiler.DecodeCompiler("missing.gguf", CacheTypes())
    compiler.start()
    compiler.wait()
    assert compiler.process.returncode == 1
