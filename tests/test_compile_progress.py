"""The compile progress line: one line while Numba compiles, nothing when all is cached."""

from __future__ import annotations

import io

from numba import njit

from nanosmol.compile_progress import HEADER, compile_progress


def test_one_line_while_compiling_and_silence_when_compiled():
    @njit  # not cached: compiles at its first call in every process
    def add_one(x):
        return x + 1

    stream = io.StringIO()
    with compile_progress(stream):
        assert add_one(1) == 2
    text = stream.getvalue()
    assert text.startswith(HEADER) and text.endswith("\n") and text.count("\n") == 1
    assert "done: 1 kernel in" in text

    stream = io.StringIO()
    with compile_progress(stream):
        assert add_one(2) == 3
    assert stream.getvalue() == ""
