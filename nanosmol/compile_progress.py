"""One line on stderr while Numba compiles the kernels a model needs (a cold cache: the first run).

Numba announces each compilation as an event; the kernels Python calls are the outermost ones
(what they call compiles inside them). On a terminal the line names the kernel being compiled
and ends with the total time; elsewhere (a pipe, a log) it is written once and completed at the end.
When everything comes from the cache nothing is written.
"""

from __future__ import annotations

import re
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TextIO

from numba.core import event

HEADER = "nanosmol: compiling kernels for this model's types, first run only"


class _Progress(event.Listener):
    def __init__(self, stream: TextIO, on_first: Callable[[], None]):
        self.stream, self.live, self.on_first = stream, stream.isatty(), on_first
        self.depth, self.kernels, self.start = 0, 0, None

    def on_start(self, ev: event.Event) -> None:
        self.depth += 1
        if self.depth > 1:
            return
        self.kernels += 1
        if self.start is None:
            self.start = time.perf_counter()
            if not self.live:
                self._write(HEADER + "...")
            self.on_first()
        if self.live:
            name = getattr(ev.data["dispatcher"], "__name__", "kernel")
            name = re.sub(r"_of_types?(_[0-9m_]+)?$", "", name)  # matvec_of_type_12: matvec
            self._write(f"\r\033[K{HEADER}: {name} ({self.kernels})")

    def on_end(self, ev: event.Event) -> None:
        self.depth -= 1

    def finish(self, completed: bool = True) -> None:
        if self.start is not None and not completed:  # interrupted: end the line for the error after it
            self._write("\n")
        elif self.start is not None:
            kernels = f"{self.kernels} kernel{'s' if self.kernels > 1 else ''}"
            done = f" done: {kernels} in {time.perf_counter() - self.start:.0f} s\n"
            self._write(f"\r\033[K{HEADER}:{done}" if self.live else done)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


@contextmanager
def compile_progress(stream: TextIO | None = None, on_first: Callable[[], None] = lambda: None) -> Iterator[None]:
    """Show what Numba compiles inside the block, on one line of `stream` (default stderr);
    on_first runs when the first kernel starts compiling (a cold cache)."""
    progress = _Progress(stream or sys.stderr, on_first)
    try:
        with event.install_listener("numba:compile", progress):
            yield
    except BaseException:
        progress.finish(completed=False)
        raise
    progress.finish()
