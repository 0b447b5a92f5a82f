"""Figures rendered to PNG bytes in worker processes while the report builds the next figure.

Rendering (constrained layout, then Agg) is most of a report figure's cost: 0.15-0.8 s each at the report's
sizes, 5.1 of the default report's 8.1 s of figures (measured on the 2-core machine), while a matplotlib
``Figure`` pickles in 3-25 ms. :func:`submit` pickles the figure and hands it to a small pool of worker
processes, so the figures render on every core and beside the building of the next one.

The workers are plain ``python -c`` processes reading pickled figures on stdin and writing PNG bytes on
stdout (length-prefixed, `analysis.worker_pipe`), started once per process and reused by later reports (the test suite writes
dozens). Not ``multiprocessing``: its ``spawn`` start re-runs the user's ``__main__`` script in every
worker (a script without an ``if __name__ == "__main__"`` guard would run its report again), and
``fork`` is unsafe in a process running JAX's threads. A worker exits when its stdin closes, so it never
outlives the report's process. Anything that goes wrong on the way (a figure that does not pickle, a
worker that cannot start or dies) renders that figure here instead, so the PNG is the same bytes either
way (tested); ``GMM_RENDER_WORKERS=0`` renders everything here. A worker imports matplotlib and
:mod:`analysis.html_page` only (no JAX).

A job is a call: a pickled ``(function, args)`` that the worker runs, its result pickled back (a figure's job is
:func:`analysis.html_page.figure_png`). :func:`submit_call` hands the workers other work of the same kind, slow
Python the report would otherwise do on its own thread (its NetCDF files: :mod:`analysis.netcdf_file`); the
function's module is imported by the worker when the job arrives, so it should import little.
"""

from __future__ import annotations

import atexit
import os
import pickle
import queue
import sys
import threading
from concurrent.futures import Future

from analysis.html_page import figure_png
from analysis.worker_pipe import receive, send
from analysis.worker_pipe import start as start_worker

__all__ = ["render_workers", "start", "submit", "submit_call", "PendingCall", "PendingPng", "shutdown"]

MAX_WORKERS = 4
_WORKERS: list | None = None
_LOCK = threading.Lock()


def render_workers() -> int:
    """Worker processes for rendering: ``$GMM_RENDER_WORKERS`` if set, else the cores this process may
    use (at most ``MAX_WORKERS``), 0 on one core (a worker would only add its start-up)."""
    env = os.environ.get("GMM_RENDER_WORKERS")
    if env is not None:
        try:
            return max(0, int(env))
        except ValueError:
            return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores < 2 else min(cores, MAX_WORKERS)


def serve() -> None:
    """A worker's loop: a pickled ``(function, args)`` in (a figure's: ``(figure_png, (figure, dpi))``),
    ``pickle((ok, function(*args) or error text))`` out, until stdin closes."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    warm = Figure(figsize=(1, 1), layout="constrained")  # fonts and the layout engine loaded before the first job
    warm.subplots().set_title("x")
    figure_png(warm, 10)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            job = receive(stdin)
        except EOFError:
            return
        try:
            function, args = pickle.loads(job)
            answer = (True, function(*args))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which renders the figure itself
            answer = (False, f"{type(exc).__name__}: {exc}")
        send(stdout, pickle.dumps(answer))


class _Worker:
    """One worker process and the thread that feeds it jobs one at a time."""

    def __init__(self):
        self.process = start_worker("analysis.render_pool")
        self.jobs: queue.Queue = queue.Queue()
        self.busy = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            blob, future = job
            try:
                send(self.process.stdin, blob)
                ok, value = pickle.loads(receive(self.process.stdout))
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(RuntimeError(value))
            except Exception as exc:  # noqa: BLE001 - a dead worker: the caller renders the figure itself
                future.set_exception(exc)
            finally:
                with _LOCK:
                    self.busy -= 1

    def submit(self, blob: bytes) -> Future:
        future: Future = Future()
        with _LOCK:
            self.busy += 1
        self.jobs.put((blob, future))
        return future

    def close(self) -> None:
        self.jobs.put(None)
        try:
            self.process.stdin.close()
        except OSError:
            pass


def _workers() -> list:
    global _WORKERS
    if _WORKERS is None:
        count, started = render_workers(), []
        for _ in range(count):
            try:
                started.append(_Worker())
            except OSError:
                break
        _WORKERS = started
    return [w for w in _WORKERS if w.process.poll() is None]


def start() -> int:
    """Start the workers now (they import matplotlib while the caller does other work); returns how many run."""
    return len(_workers())


def shutdown() -> None:
    """Close the workers' pipes (they exit); the next :func:`submit` starts new ones."""
    global _WORKERS
    for worker in _WORKERS or []:
        worker.close()
    _WORKERS = None


atexit.register(shutdown)


class PendingCall:
    """The result of ``function(*args)``, computed by a worker or here; :meth:`result` waits for it."""

    def __init__(self, function, args: tuple, future: Future | None):
        self._function, self._args, self._future = function, args, future

    def result(self):
        """The function's result; if no worker could run it (none started, the job did not pickle, the worker
        failed or died), it runs here, so the result is the same either way."""
        if self._future is not None:
            try:
                return self._future.result()
            except Exception:  # noqa: BLE001 - the same result from this process
                pass
        return self._function(*self._args)


class PendingPng(PendingCall):
    """A figure's PNG bytes, rendered by a worker or here; :meth:`result` waits for them."""

    def __init__(self, fig, dpi: int, future: Future | None):
        super().__init__(figure_png, (fig, dpi), future)


def submit_call(function, *args) -> PendingCall:
    """Start ``function(*args)`` in the least busy worker (``function`` a module-level function, ``args`` and
    its result picklable); the arguments are kept until :meth:`PendingCall.result`, which runs it here if no
    worker can."""
    return PendingCall(function, args, _submit(function, args))


def submit(fig, dpi: int = 100) -> PendingPng:
    """Start rendering ``fig`` (a matplotlib Figure) as PNG at ``dpi`` in the least busy worker; the figure
    itself is kept until :meth:`PendingPng.result` (it renders here if no worker can)."""
    return PendingPng(fig, dpi, _submit(figure_png, (fig, dpi)))


def _submit(function, args: tuple) -> Future | None:
    workers = _workers()
    if not workers:
        return None
    try:
        blob = pickle.dumps((function, args))
    except Exception:  # noqa: BLE001 - an unpicklable job: run here
        return None
    worker = min(workers, key=lambda w: w.busy)
    return worker.submit(blob)
