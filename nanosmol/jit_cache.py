"""Numba's on-disk cache, safe for several processes compiling at once.

Numba files each compiled version of a function under a number listed in the function's
index file. Two processes that compile versions of the same function at once (two models of
different types on a cold cache, or the decode step compiled in a second process:
decode_compiler.py) both read the index, both take the first free number, and each writes the
index and its code: the index can end up naming one version's key and holding the other's
machine code, which a later run then calls with the wrong types ("NRT_adapt_ndarray_to_python:
descr is NULL", or wrong numbers). Saving under a lock on the index file, code first and index
last, makes each entry name its own code. Loading takes no lock: it reads whole files, each
replaced atomically.
"""

from __future__ import annotations

import itertools

from numba.core.caching import IndexDataCacheFile

try:
    import fcntl
except ImportError:  # Windows: no flock; Numba's own behaviour
    fcntl = None


def _save_locked(self: IndexDataCacheFile, key, data) -> None:
    with open(self._index_path + ".lock", "ab") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        overloads = self._load_index()  # as it is now, after any other process's save
        data_name = overloads.get(key)
        if data_name is None:
            taken = set(overloads.values())
            data_name = next(name for i in itertools.count(1) if (name := self._data_name(i)) not in taken)
        self._save_data(data_name, data)  # code first: an index that names it finds it
        overloads[key] = data_name
        self._save_index(overloads)


if fcntl is not None:
    IndexDataCacheFile.save = _save_locked
