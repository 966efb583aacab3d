"""Numba's cache written by several processes at once (nanosmol/jit_cache.py)."""

import multiprocessing as mp
import os
import subprocess
import sys

import numba
from numba.core.caching import IndexDataCacheFile

import nanosmol.jit_cache  # noqa: F401  (locks IndexDataCacheFile.save)
from conftest import MICRO

WRITERS, KEYS_EACH = 6, 8


def save_entries(cache_dir: str, writer: int, start) -> None:
    start.wait()  # every writer at once, to race for the index
    cache_file = IndexDataCacheFile(cache_dir, "kernel", "stamp")
    for k in range(KEYS_EACH):
        cache_file.save(("key", writer, k), ("code", writer, k))


def test_each_key_finds_its_own_code_when_processes_save_at_once(tmp_path):
    """Without the lock, writers take the same entry number and the index names one key's
    code under another key; with it, every key loads the code saved with it."""
    context = mp.get_context("fork")
    start = context.Barrier(WRITERS)
    writers = [context.Process(target=save_entries, args=(str(tmp_path), w, start)) for w in range(WRITERS)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(60)
        assert p.exitcode == 0
    cache_file = IndexDataCacheFile(str(tmp_path), "kernel", "stamp")
    for w in range(WRITERS):
        for k in range(KEYS_EACH):
            assert cache_file.load(("key", w, k)) == ("code", w, k)


def test_the_lock_is_installed():
    assert IndexDataCacheFile.save is nanosmol.jit_cache._save_locked
    assert numba.core.caching.IndexDataCacheFile is IndexDataCacheFile



def test_models_of_two_types_run_from_a_cache_both_filled(tmp_path):
    """An F32 model's kernels compiled in one process, a Q8_0 model's in the next (loading the
    F32 norms' entries), then the Q8_0 model again with everything from the cache: with one
    name for every type's entry the third run crashed ('NRT_adapt_ndarray_to_python: descr is
    NULL') or could run one type's code for another's; named_for keeps them apart."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    texts = []
    for name in ("micro-llama-F32", "micro-llama-Q8_0", "micro-llama-Q8_0"):
        done = subprocess.run([sys.executable, "-m", "nanosmol", "run", "-m", str(MICRO / f"{name}.gguf"), "--raw",
                               "-n", "4", "--temp", "0", "hello"], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        texts.append(done.stdout)
    assert texts[1] == texts[2]
