"""Ctrl-C for the commands: one job, run the work in a child process that the parent can stop at once.

Why a child process
-------------------
CPython runs a signal handler only in the main thread, and only when that thread is back in the
bytecode loop. A report spends most of its time inside C++ that never returns there for seconds to
minutes: XLA compilation, a jitted ``lax.while_loop`` (EM), the SVI/MAP chunk loop (one
``while_loop`` whose host callbacks run on XLA's threads), a NUTS segment. A SIGINT that lands there
is noticed only when the call returns, and then often inside a weakref or GC callback that JAX runs
from C, where the ``KeyboardInterrupt`` cannot propagate: Python prints ``Exception ignored in:
<function WeakValueDictionary.__init__.<locals>.remove ...>`` (or ``_xla_gc_callback``, JAX issue
18246) and the run goes on. Checking a flag between engine steps would not help either: the EM loop is
one XLA call, and a compile cannot be cut short. So the command (:func:`analysis.cli.main` with no
argv: the ``gmm-report`` script, ``python -m analysis``) is a small supervisor:

* the parent imports nothing heavy, starts ``python -c "... main(argv)"`` (the same command, in
  process) with SIGINT ignored in the child (Python then installs no KeyboardInterrupt handler there,
  so a terminal's Ctrl-C, which goes to the whole process group, reaches only the parent), and waits
  with a handler that records SIGINT / SIGTERM;
* on a signal it SIGKILLs the child (immediate, whatever the child is doing), then
  :class:`OutputGuard` puts the output directory back as it was (removes the temporary sibling the
  child was writing, a half-finished rename, or a report renamed into place a moment ago) and
  :func:`scrub_compilation_cache` removes the compilation-cache entries written just before the kill
  (JAX 0.10 writes an entry with a plain ``write_bytes``; a truncated entry would stay forever, since
  JAX never overwrites an existing key, and print "Error reading persistent compilation cache entry"
  on every later run);
* it prints one line ``gmm-report: interrupted; nothing written`` and exits 130 (143 for SIGTERM).
  The child's own exit code (0, 1, 2) passes through unchanged; a child killed by someone else (the
  OOM killer) is cleaned up the same way and reported in one line, exit 1.

``main(argv)`` called with a list (tests, notebooks) runs in process, where Ctrl-C is the ordinary
KeyboardInterrupt (caught by :func:`analysis.cli.run_guarded`: exit 130, the ``atomic_output_dir``
removes its temporary directory). ``GMM_REPORT_IN_PROCESS=1`` makes the command itself run in
process (for profilers and debuggers).

Imports: the standard library only (the parent must start in milliseconds and never start JAX).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["run_supervised", "supervision_wanted", "OutputGuard", "scrub_compilation_cache", "INTERRUPTED_MESSAGE",
           "CACHE_SCRUB_SECONDS"]

INTERRUPTED_MESSAGE = "interrupted; nothing written"

# Cache entries modified this many seconds before the kill (or later) are removed: a write that was cut
# short is among them (an entry is at most a few MB, written in milliseconds); the price is at most a
# recompilation of the programs compiled in the last moments of the interrupted run.
CACHE_SCRUB_SECONDS = 3.0

_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)
_CHILD_CODE = ("import sys; sys.path[0] = {root!r}; from analysis.cli import main; "
               "sys.exit(main(sys.argv[1:], own_process=True))")


def supervision_wanted() -> bool:
    """Whether the command should run its work in a child process (not when ``GMM_REPORT_IN_PROCESS``
    is set, nor on platforms without ``fork``)."""
    if os.environ.get("GMM_REPORT_IN_PROCESS", "").lower() not in ("", "0", "false", "no"):
        return False
    return os.name == "posix"


class OutputGuard:
    """Remember the state of an output directory ``out`` and its siblings, to put it back later.

    :func:`analysis.files.atomic_output_dir` writes into ``.<name>.tmp-*`` next to ``out`` and, with
    ``--force``, moves an old ``out`` into ``.<name>.old-*/previous`` just before renaming the new one
    into place. :meth:`restore` (after the writer is dead) removes every such sibling that was not
    there at :meth:`__init__`, puts a moved-away ``previous`` back as ``out`` and removes an ``out``
    that did not exist before: the directory is then as the user left it.
    """

    def __init__(self, out):
        self.out = Path(out).absolute()
        self.parent = self.out.parent
        self.before = set(self._siblings())
        self.out_existed = self.out.exists() or self.out.is_symlink()

    def _siblings(self):
        name = self.out.name
        try:
            return [p for p in self.parent.iterdir()
                    if p.name.startswith(f".{name}.tmp-") or p.name.startswith(f".{name}.old-")]
        except OSError:
            return []

    def restore(self) -> None:
        """Undo what a killed writer left; never raises."""
        new = [p for p in self._siblings() if p not in self.before]
        for p in new:
            previous = p / "previous"
            if p.name.startswith(f".{self.out.name}.old-") and (previous.exists() or previous.is_symlink()):
                if self.out.exists():
                    _remove(self.out)  # the new report was already renamed into place
                try:
                    os.replace(previous, self.out)
                except OSError:
                    pass
        if not self.out_existed and self.out.exists():
            _remove(self.out)  # renamed into place a moment before the kill
        for p in new:
            _remove(p)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()
    except OSError:
        pass


def scrub_compilation_cache(cache_dir, since: float) -> list[str]:
    """Remove the files of JAX's persistent cache directory ``cache_dir`` modified at or after
    ``since`` (a ``time.time()``); returns their names. A missing directory is fine."""
    if not cache_dir:
        return []
    removed = []
    try:
        entries = list(os.scandir(cache_dir))
    except OSError:
        return []
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime >= since:
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
    return removed


def _ignore_sigint() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_supervised(argv, *, out, cache_dir, prog: str = "gmm-report", poll_seconds: float = 0.05) -> int:
    """Run ``main(argv)`` in a child process and return its exit code; on SIGINT / SIGTERM stop it at
    once, leave ``out`` and ``cache_dir`` as they were and return 130 / 143 with one line on stderr."""
    guard = OutputGuard(out)
    received: list[int] = []

    def record(signum, frame):  # noqa: ARG001
        received.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            child = subprocess.Popen([sys.executable, "-c", _CHILD_CODE.format(root=_PACKAGE_ROOT), *argv],
                                     preexec_fn=_ignore_sigint)
        except OSError as exc:
            print(f"{prog}: error: cannot start the run: {exc}", file=sys.stderr)
            return 1
        while not received and child.poll() is None:
            time.sleep(poll_seconds)
        killed_at = time.time()
        if child.returncode is None:  # a signal came while the child ran
            child.kill()
            child.wait()
        if child.returncode >= 0:
            return child.returncode  # it finished on its own (possibly just before the kill)
        # the child is dead: nothing writes any more
        guard.restore()
        scrub_compilation_cache(cache_dir, killed_at - CACHE_SCRUB_SECONDS)
        if _isatty(sys.stderr):
            sys.stderr.write("\n")  # after a progress bar or the terminal's ^C
        if received:
            print(f"{prog}: {INTERRUPTED_MESSAGE}", file=sys.stderr, flush=True)
            return 130 if received[0] == signal.SIGINT else 128 + int(received[0])
        name = _signal_name(-child.returncode)
        print(f"{prog}: error: the run was killed by {name} (out of memory?); nothing written", file=sys.stderr, flush=True)
        return 1
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
