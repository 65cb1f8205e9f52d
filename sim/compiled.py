"""numba's ``njit`` with an on-disk cache that knows what the compiled function calls.

numba caches a compiled function next to its module and throws the cache away when *that module's* file
changes. A compiled function that calls a compiled function of another module (the env's step calls the
simulator's) carries the callee's machine code in its own cache, so an edit of the callee alone would leave
the caller running the old simulator. :func:`njit_cached` adds the files of the callees to the cache's stamp:
any change to any of them recompiles.

numba is a core dependency; with ``TRADING_RL_NO_NUMBA=1`` (or numba missing) :data:`NUMBA` is None and the
callers keep their Python functions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

NUMBA: Any = None
if not os.environ.get("TRADING_RL_NO_NUMBA"):
    try:
        import numba as NUMBA
    except ImportError:  # pragma: no cover - numba is a core dependency
        NUMBA = None

OPTIONS = {"error_model": "numpy", "nogil": True}


def source_digest(files: list[Path]) -> str:
    """sha256 over the contents of ``files`` (in order)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def njit_cached(func: Callable, depends_on: tuple[ModuleType, ...] = (), **options: Any) -> Callable:
    """``numba.njit(func)`` cached on disk, recompiled when ``func``'s file or a file of ``depends_on`` changes.

    :param func: the Python function.
    :param depends_on: modules whose compiled functions ``func`` calls (their source files join the stamp).
    :param options: njit options over :data:`OPTIONS` (``inline="always"`` for a helper).
    :return: the dispatcher (``func`` itself when numba is off).
    """
    if NUMBA is None:
        return func
    settings = {**OPTIONS, **options}
    if not depends_on:
        return NUMBA.njit(cache=True, **settings)(func)
    dispatcher = NUMBA.njit(cache=False, **settings)(func)
    try:
        from numba.core.caching import FunctionCache

        cache = FunctionCache(dispatcher.py_func)
        files = [Path(m.__file__) for m in depends_on]
        cache._cache_file._source_stamp = (cache._cache_file._source_stamp, source_digest(files))
        dispatcher._cache = cache
    except (ImportError, AttributeError, OSError, TypeError):  # pragma: no cover - another numba: compile per process
        pass
    return dispatcher


__all__ = ["NUMBA", "njit_cached", "source_digest"]
