"""Progress lines of the report and the sweeps: one job, ``Progress``.

Imports: the standard library only (no JAX: the command line creates one before JAX starts).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    """Timestamped progress messages: ``progress("fitting em")``.

    Parameters
    ----------
    sink : True prints ``[<label> <seconds since start>s] <message>`` on stderr; a callable receives
        each message; anything else (False, None) is silent.
    label : the prefix of the printed lines, e.g. ``"gmm-report"`` or ``"gmm-report sweep"``.
    """

    def __init__(self, sink, label: str = "gmm-report"):
        self.sink = sink
        self.label = label
        self.start = time.perf_counter()

    def __call__(self, message: str) -> None:
        if self.sink is True:
            print(f"[{self.label} {time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)
        elif callable(self.sink):
            self.sink(message)
