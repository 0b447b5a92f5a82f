"""Host-side readers of streamed rows: the chunks a compiled EM program asks for through
:func:`inference.rows.read_chunk` (a ``jax.pure_callback``), served from a ``.npy`` file, an array read in
place, or a user's chunk iterator.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

_READERS: dict[int, "ChunkReader"] = {}
_NEXT_TOKEN = itertools.count(1)


def read_callback(token, g):
    return _READERS[int(token)].chunk(int(g))


class ChunkReader:
    """Serves fixed-size, centred, padded chunks ``(x (c, D), w (c,))`` of a row source to the compiled
    program. ``source`` is an array-like with row slicing (numpy array, ``np.memmap``, ``np.load(...,
    mmap_mode="r")``) or a callable returning a fresh iterator of row blocks (arrays, or ``(x, w)``
    pairs) of any sizes. Thread-safe (devices read concurrently)."""

    def __init__(self, source, weights, center, chunk_size: int, dtype, window: int = 64, weight_scale: float = 1.0):
        self.source, self.weights, self.center = source, weights, np.asarray(center, dtype)
        self.weight_scale = float(weight_scale)  # multiplies weights read from (x, w) chunks (normalisation)
        self.chunk_size, self.dtype = chunk_size, dtype
        self.sliceable = not callable(source)
        self.lock = threading.Lock()
        self.cache: dict[int, tuple] = {}
        self.window = window
        self._restart()
        self.token = next(_NEXT_TOKEN)

    def _restart(self):
        self.blocks = None if self.sliceable else rechunk(self.source(), self.chunk_size)
        self.next_chunk = 0
        self.next_row = 0

    def __enter__(self):
        _READERS[self.token] = self
        return self

    def __exit__(self, *exc):
        _READERS.pop(self.token, None)
        self.cache.clear()

    def _finish(self, x, w, first_row):
        c = self.chunk_size
        out_x = np.zeros((c, x.shape[1] if x.ndim == 2 else 0), self.dtype)
        out_w = np.zeros(c, self.dtype)
        m = x.shape[0]
        out_x[:m] = x
        if self.center.any():
            out_x[:m] -= self.center
        if w is None:
            w = 1.0 if self.weights is None else self.weights[first_row : first_row + m]
        elif self.weight_scale != 1.0:
            w = np.asarray(w, np.float64) * self.weight_scale
        out_w[:m] = w
        return out_x, out_w

    def chunk(self, g: int):
        c = self.chunk_size
        if self.sliceable:
            x = np.asarray(self.source[g * c : (g + 1) * c])
            return self._finish(x.reshape(x.shape[0], -1) if x.size else np.zeros((0, self.center.size)), None, g * c)
        with self.lock:
            if g in self.cache:
                return self.cache[g]
            if g < self.next_chunk:
                self._restart()
            while self.next_chunk <= g:
                item = next(self.blocks, None)
                if item is None:
                    x, w = np.zeros((0, self.center.size), self.dtype), np.zeros(0, self.dtype)
                else:
                    x, w = item
                out = self._finish(x, w, self.next_row)
                self.next_row += x.shape[0]
                self.cache[self.next_chunk] = out
                self.cache.pop(self.next_chunk - self.window, None)
                self.next_chunk += 1
            return self.cache[g]


def rechunk(blocks, chunk_size: int):
    """Row blocks of any sizes -> blocks of exactly ``chunk_size`` rows (the last one shorter):
    yields ``(x, w_or_None)``."""
    buf_x, buf_w, have = [], [], 0
    for item in blocks:
        x, w = (item if isinstance(item, tuple) else (item, None))
        x = np.asarray(x)
        if x.ndim == 1:
            x = x[:, None]
        w = None if w is None else np.asarray(w)
        buf_x.append(x)
        buf_w.append(w)
        have += x.shape[0]
        while have >= chunk_size:
            xs = np.concatenate(buf_x)
            ws = None if any(v is None for v in buf_w) else np.concatenate(buf_w)
            yield xs[:chunk_size], (None if ws is None else ws[:chunk_size])
            buf_x, buf_w = [xs[chunk_size:]], [None if ws is None else ws[chunk_size:]]
            have -= chunk_size
    if have:
        xs = np.concatenate(buf_x)
        ws = None if any(v is None for v in buf_w) else np.concatenate(buf_w)
        yield xs, ws


class NpyRows:
    """Row slices of a C-ordered ``.npy`` file read with ``os.pread`` (no memory map: pages read stay in
    the OS page cache, not in this process's resident memory). Thread-safe; ``shape``, ``dtype``,
    ``ndim`` and ``rows[a:b]`` like an array."""

    def __init__(self, path: str):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if fortran and len(shape) > 1 and min(shape) > 1:
            raise ValueError(f"x: {path!r} is Fortran-ordered; save it C-ordered (np.ascontiguousarray) to stream it")
        if dtype.hasobject:
            raise ValueError(f"x must be numeric, got dtype {dtype} in {path!r}")
        self.path, self.shape, self.dtype, self.ndim = path, tuple(shape), dtype, len(shape)
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.fd = os.open(path, os.O_RDONLY)

    def __del__(self):
        try:
            os.close(self.fd)
        except Exception:
            pass

    def __getitem__(self, rows: slice):
        start, stop, _ = rows.indices(self.shape[0])
        count = max(0, stop - start)
        buf = os.pread(self.fd, count * self.row_bytes, self.offset + start * self.row_bytes)
        return np.frombuffer(buf, self.dtype).reshape((count,) + self.shape[1:])
