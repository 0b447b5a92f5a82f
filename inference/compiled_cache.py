"""A bounded store of compiled XLA executables, shared by the engines' ahead-of-time caches.

Each compiled program holds ~400-1,000 memory mappings of JIT code (measured: 1,014 -> 3,022 mappings
after three programs). A long sweep compiling many shapes in one process otherwise reaches the
kernel's vm.max_map_count (65,530 here) and LLVM fails inside a compile ("Cannot allocate memory",
a segfault). Keeping the newest ``MAX_COMPILED`` per cache bounds that; a second fit of a recent
shape still compiles nothing.
"""

from __future__ import annotations

MAX_COMPILED = 48

__all__ = ["MAX_COMPILED", "remember_compiled"]


def remember_compiled(cache: dict, key, executable) -> None:
    """Store ``executable`` under ``key`` in ``cache``, dropping the oldest entries beyond ``MAX_COMPILED``."""
    cache[key] = executable
    while len(cache) > MAX_COMPILED:
        cache.pop(next(iter(cache)))
