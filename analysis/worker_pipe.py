"""The report's worker processes (``analysis.render_pool``, ``analysis.arviz_io.loo_pool``): how one is started
and how messages cross its pipes.

A worker is a plain ``python -c "from <module> import serve; serve()"`` process with this checkout first on its
``PYTHONPATH`` (not ``multiprocessing``: its ``spawn`` re-runs the user's ``__main__``, and ``fork`` is unsafe in
a process running JAX's threads). A message is its length (8 bytes, little-endian) and then its bytes.

Imports: the standard library only.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys

__all__ = ["HEADER", "start", "send", "receive", "read_exact"]

HEADER = struct.Struct("<Q")


def start(module: str, **env) -> subprocess.Popen:
    """A worker running ``module.serve()``, its stdin and stdout piped, stderr discarded; ``env``: variables
    set for it on top of this process's."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    return subprocess.Popen([sys.executable, "-c", f"from {module} import serve; serve()"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=path, **env))


def read_exact(stream, size: int) -> bytes:
    """``size`` bytes from ``stream``; EOFError when it closes first."""
    data = bytearray()
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            raise EOFError("worker pipe closed")
        data += chunk
    return bytes(data)


def send(stream, payload: bytes) -> None:
    """One message: its length, then ``payload``; flushed."""
    stream.write(HEADER.pack(len(payload)) + payload)
    stream.flush()


def receive(stream) -> bytes:
    """One message written by :func:`send`."""
    return read_exact(stream, HEADER.unpack(read_exact(stream, HEADER.size))[0])
