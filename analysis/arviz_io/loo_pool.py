"""PSIS-LOO of the report's engines in worker processes, at once and beside the rest of the report.

ArviZ's PSIS fits a generalized Pareto tail to each observation's importance ratios in a Python loop: at
50,000 rows and 1,000 draws ``az.loo`` took 17-18 s per engine on ArviZ 0.23 and 27-35 s on ArviZ 1.3 (this
project's 2-core machine), one engine after the other, on one core. :func:`submit` starts one worker process
per engine: its log_likelihood group (its float64 bytes streamed over a pipe, no pickled copy of the matrix) and its
posterior (ArviZ's relative efficiency ``reff`` reads the posterior's ESS) go in, ArviZ's own result object
comes back pickled, so the engines' LOO run at once while the report writes its other files. The numbers are
the in-process ones (tested). Below ``MIN_VALUES`` pointwise values a worker's start-up (its imports, ~2 s) would
cost more than it saves: computed here. A worker that cannot start or fails: computed here, the same numbers.

Plain ``python -c`` workers started and spoken to as :mod:`analysis.render_pool`'s (:mod:`analysis.worker_pipe`).
"""

from __future__ import annotations

import pickle
import sys
import threading

import numpy as np
import xarray as xr

from analysis.worker_pipe import receive, send
from analysis.worker_pipe import start as start_worker

from ._stack import assemble, group
from .stats import loo_result

__all__ = ["MIN_VALUES", "submit", "PendingLoo", "loo_of_groups"]

MIN_VALUES = 2_000_000


def loo_of_groups(posterior: xr.Dataset, log_likelihood: xr.Dataset):
    """:func:`stats.loo_result` of the InferenceData made of these two groups (what LOO reads)."""
    return loo_result(assemble({"posterior": posterior, "log_likelihood": log_likelihood}))


def serve() -> None:
    """The worker: a length-prefixed pickle of (posterior Dataset, log_likelihood coords, attrs and shape), then
    the pointwise matrix's float64 bytes, on stdin; a message ``pickle((ok, result or error text))`` on stdout."""
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    try:
        posterior, coords, attrs, shape = pickle.loads(receive(stdin))
        values = np.empty(shape, np.float64)
        view, done = memoryview(values).cast("B"), 0
        while done < values.nbytes:  # the raw float64 bytes, read in place (no second copy)
            read = stdin.readinto(view[done:])
            if not read:
                raise EOFError("LOO worker pipe closed")
            done += read
        log_likelihood = xr.Dataset({"x": (("chain", "draw", "obs"), values)}, coords=coords, attrs=attrs)
        answer = (True, loo_of_groups(posterior, log_likelihood))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which computes it itself
        answer = (False, f"{type(exc).__name__}: {exc}")
    send(stdout, pickle.dumps(answer))


class PendingLoo:
    """One engine's LOO: ``result()`` waits for the worker (or computes it here)."""

    def __init__(self, posterior: xr.Dataset, log_likelihood: xr.Dataset, worker: bool):
        self._groups = (posterior, log_likelihood)
        self._answer = None
        self._thread = None
        self.in_worker = worker
        self.worker_error = None  # after result(): why the worker's answer was not used, if it was not
        if worker:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _run(self) -> None:
        posterior, log_likelihood = self._groups
        try:
            # ``with``: the pipes are closed and the process waited for on every way out (an unclosed stdout was a
            # ResourceWarning in the report's notes once the Popen was collected)
            with start_worker("analysis.arviz_io.loo_pool", JAX_PLATFORMS="cpu", XLA_FLAGS="") as process:
                values = np.ascontiguousarray(log_likelihood["x"].values, np.float64)
                send(process.stdin, pickle.dumps((posterior, {k: v.values for k, v in log_likelihood.coords.items()},
                                                  dict(log_likelihood.attrs), values.shape)))
                process.stdin.write(memoryview(values).cast("B"))
                process.stdin.close()
                answer = pickle.loads(receive(process.stdout))
            self._answer = answer
        except Exception as exc:  # noqa: BLE001 - computed here instead
            self._answer = (False, f"{type(exc).__name__}: {exc}")

    def result(self):
        """ArviZ's LOO result (``ELPDData``), the in-process one's numbers."""
        if self._thread is not None:
            self._thread.join()
            if self._answer is not None and self._answer[0]:
                self._groups = None  # the full matrix is no longer held
                return self._answer[1]
            self.worker_error = self._answer[1] if self._answer else "no answer"
        return loo_of_groups(*self._groups)


def submit(idata, workers: bool = True) -> PendingLoo:
    """Start the LOO of ``idata`` (its posterior and log_likelihood groups are copied out now, so the caller
    may drop draws afterwards): in a worker process when its pointwise matrix has ``MIN_VALUES`` values or more
    and ``workers`` (the report passes False on one core), else here when ``result()`` is asked."""
    posterior, log_likelihood = group(idata, "posterior"), group(idata, "log_likelihood")
    return PendingLoo(posterior, log_likelihood, workers and log_likelihood["x"].size >= MIN_VALUES)
