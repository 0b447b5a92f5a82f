"""A bounded store of compiled XLA executables, shared by the engines' ahead-of-time caches.

Each compiled program holds ~400-1,000 memory mappings of JIT code (measured: 1,014 -> 3,022 mappings
after three programs). A long sweep compiling many shapes in one process otherwise reaches the
kernel's vm.max_map_count (65,530 here) and LLVM fails inside a compile ("Cannot allocate memory",
a segfault). Keeping the newest ``MAX_COMPILED`` per cache bounds that; a second fit of a recent
shape still compiles nothing.

Compiling also leaves ~200 MB of freed heap that glibc keeps mapped (measured at N = 1e7, D = 8, K = 8:
1,092 MB resident after the EM compile, 895 MB after ``malloc_trim``; the fit's peak 1,310 -> 1,136 MB).
Storing an executable therefore hands that memory back (:func:`release_freed_memory`).
"""

from __future__ import annotations

import ctypes
import sys

MAX_COMPILED = 48

__all__ = ["MAX_COMPILED", "remember_compiled", "release_freed_memory"]


def release_freed_memory() -> None:
    """Return the heap memory freed so far to the OS (glibc's ``malloc_trim(0)``; nothing elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to do
        pass


def remember_compiled(cache: dict, key, executable) -> None:
    """Store ``executable`` under ``key`` in ``cache``, dropping the oldest entries beyond ``MAX_COMPILED``,
    and release the compiler's freed heap (:func:`release_freed_memory`)."""
    release_freed_memory()
    cache[key] = executable
    while len(cache) > MAX_COMPILED:
        cache.pop(next(iter(cache)))
