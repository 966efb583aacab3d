"""Numba's cache written by several processes at once (nanosmol/jit_cache.py)."""

import multiprocessing as mp

import numba
from numba.core.caching import IndexDataCacheFile

import nanosmol.jit_cache  # noqa: F401  (locks IndexDataCacheFile.save)

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
