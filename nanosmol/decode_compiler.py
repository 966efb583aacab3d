"""A cold start on two cores: the decode step compiles in a second process meanwhile.

Numba compiles on one thread, and a cold start is almost all compiling: prefill's kernels
and the decode step (`model.decode_layers`, half the work in one function). While this
process compiles prefill's kernels, a second one, started at the first compilation (on a
first run after install, as soon as the model's file is read), builds the same model and
compiles the decode step into Numba's cache, from where this process loads it when its turn
comes. If that process fails, this one compiles the step itself: it costs time, never a
result. On a warm cache nothing compiles and nothing starts.

    python -m nanosmol.decode_compiler PATH CACHE_TYPE_K CACHE_TYPE_V   # what the second process runs
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys

from nanosmol.kv.types import CacheTypes

SECOND_PROCESS_CTX = 64  # its context: the kernels' types do not depend on the size
# `python -m` puts its working directory first on sys.path: the second process runs from the
# folder holding this nanosmol, so it imports this one and fills the same Numba cache. Run
# from a source checkout beside an installed copy (the quick start), it imported the
# checkout's and compiled into the wrong cache: 14 kernels in 27 s instead of 10 in 15.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def usable_cores() -> int:
    """The cores this process may run on (macOS has no affinity call: all of them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class DecodeCompiler:
    """The second process, started by start() (once), waited for by wait(), killed on exit."""

    def __init__(self, path: str | os.PathLike, cache_types: CacheTypes):
        self.args = [sys.executable, "-m", __name__, os.path.abspath(path), cache_types.k, cache_types.v]
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        if self.process is None and usable_cores() > 1:  # one core: it would only take turns
            self.process = subprocess.Popen(self.args, cwd=PACKAGE_ROOT, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait(self) -> None:
        if self.process is not None:
            self.process.wait()

    def __enter__(self) -> "DecodeCompiler":
        return self

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:  # an error or Ctrl-C before wait()
            self.process.kill()
            self.process.wait()


def nothing_compiled_yet() -> bool:
    """Numba's cache holds no kernel of nanosmol's: the first run after install, when the decode
    step will compile for certain, so its process can start before the first compilation (the
    sampler's `draw`, which every model compiles first, has no index file yet)."""
    from nanosmol.sampling import draw

    return not os.path.exists(draw._cache._cache_file._index_path)


def compile_decode_step(path: str, cache_type_k: str, cache_type_v: str) -> None:
    from nanosmol.checkpoint import open_checkpoint
    from nanosmol.config import ModelConfig
    from nanosmol.model import Transformer

    checkpoint = open_checkpoint(path)
    config = ModelConfig.from_gguf(checkpoint.metadata, checkpoint.tensors)
    transformer = Transformer(checkpoint, config, n_ctx=SECOND_PROCESS_CTX,
                              cache_types=CacheTypes(cache_type_k, cache_type_v))
    transformer.warm_up_decode_layers()


def die_with_parent() -> None:
    """Linux: a SIGKILL of the parent (which skips __exit__) ends this process too."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the parent died before the call
            sys.exit(1)


if __name__ == "__main__":
    die_with_parent()
    compile_decode_step(*sys.argv[1:4])
