"""Ctrl-C: the command stops within seconds at any moment, prints one line, exits 130 and leaves nothing.

The command runs as a user runs it (``python -m analysis``, a subprocess); SIGINT is sent after a
progress line shows that the run reached the moment under test (never a fixed sleep from the start),
and every wait is bounded. Each case also checks the compilation cache it used: no entry cut short.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from analysis.interrupt import INTERRUPTED_MESSAGE, OutputGuard, scrub_compilation_cache

ROOT = Path(__file__).resolve().parent.parent
LINE = f"gmm-report: {INTERRUPTED_MESSAGE}"
EXIT_WITHIN = 15.0  # seconds from SIGINT to exit allowed (measured: ~0.1 s); generous for a loaded machine


class Command:
    """``python -m analysis ARGS`` with stderr collected on a thread (progress bars end in ``\r``, not
    a newline: ``lines`` splits on both)."""

    def __init__(self, args, cwd, cache):
        env = dict(os.environ, GMM_REFERENCE_CACHE=str(cache), PYTHONPATH=str(ROOT))
        env.pop("GMM_REPORT_IN_PROCESS", None)
        self.text = ""
        self.proc = subprocess.Popen([sys.executable, "-m", "analysis", *args], cwd=cwd, env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while chunk := self.proc.stderr.read(1):
            self.text += chunk

    @property
    def lines(self) -> list[str]:
        return [line for line in self.text.replace("\r", "\n").split("\n") if line.strip()]

    def wait_for(self, text: str, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text:
            if self.proc.poll() is not None:
                self.reader.join(5)
                pytest.fail(f"exited {self.proc.returncode} before {text!r}: {self.lines}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {text!r} within {timeout}s: {self.lines}")
            time.sleep(0.05)

    def interrupt(self) -> float:
        """SIGINT; returns the seconds until the command exited (fails after EXIT_WITHIN)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"still running {EXIT_WITHIN}s after SIGINT: {self.lines}")
        latency = time.monotonic() - t0
        self.reader.join(5)
        return latency

    def finish(self, timeout: float = 300.0) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"did not finish within {timeout}s: {self.lines}")
        self.reader.join(5)
        return code


def _check_interrupted(cmd: Command, latency: float, where: Path, keep=()):
    assert cmd.proc.returncode == 130, cmd.lines
    assert cmd.lines[-1] == LINE, cmd.lines
    assert sum(LINE in line for line in cmd.lines) == 1
    text = "\n".join(cmd.lines)
    assert "Traceback" not in text and "Exception ignored" not in text and "KeyboardInterrupt" not in text, text
    left = sorted(p.name for p in where.iterdir())
    assert left == sorted(["cache", *keep]), left  # no report, no .r.tmp-* / .r.old-* sibling
    print(f"SIGINT -> exit in {latency:.2f}s")


def _cache_readable(cache: Path) -> None:
    """Every entry of the compilation cache decompresses (none was cut short)."""
    import zlib

    try:
        import zstandard
    except ImportError:
        zstandard = None
    for entry in cache.glob("*-cache"):
        data = entry.read_bytes()
        if zstandard is not None and data[:4] == b"\x28\xb5\x2f\xfd":
            zstandard.ZstdDecompressor().decompress(data)
        else:
            zlib.decompress(data)


def test_sigint_while_compiling(tmp_path):
    """Moment 1: XLA compiling EM (a fresh cache, so the fit starts with a compilation)."""
    cmd = Command(["--methods", "em,hard_em", "--num-samples", "150", "--out", "r"], tmp_path, tmp_path / "cache")
    cmd.wait_for("fitting em")
    _check_interrupted(cmd, cmd.interrupt(), tmp_path)
    _cache_readable(tmp_path / "cache")


def test_sigint_inside_a_jitted_loop(tmp_path):
    """Moment 2: inside EM's one jitted ``while_loop`` (200 000 rows, tol=0: minutes of iterations)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 1, (100_000, 2)), rng.normal(2, 1, (100_000, 2))])
    np.save(tmp_path / "big.npy", x)
    cmd = Command(["--data", "big.npy", "-k", "2", "--methods", "em", "--option", "em.tol=0", "--option", "em.max_iters=50000",
                   "--max-seconds", "1e6", "--out", "r"], tmp_path, tmp_path / "cache")
    cmd.wait_for("fitting em")
    time.sleep(8.0)  # past the compilation (~1-2 s): now the loop runs
    assert cmd.proc.poll() is None, cmd.lines
    _check_interrupted(cmd, cmd.interrupt(), tmp_path, keep=["big.npy"])
    _cache_readable(tmp_path / "cache")


def test_sigint_while_drawing_figures_keeps_the_old_report(tmp_path):
    """Moment 3: drawing the figures, over an old report with --force: the old one stays as it was;
    then the same command runs to the end on the same cache (the cache is usable, no warning)."""
    old = tmp_path / "r"
    old.mkdir()
    (old / "keep.txt").write_text("an earlier report")
    args = ["--methods", "em", "--num-samples", "150", "--out", "r", "--force"]
    cmd = Command(args, tmp_path, tmp_path / "cache")
    cmd.wait_for("figure 1/")  # the first figure of the report (analysis.progress.REPORT_STAGES)
    _check_interrupted(cmd, cmd.interrupt(), tmp_path, keep=["r"])
    assert [p.name for p in old.iterdir()] == ["keep.txt"] and (old / "keep.txt").read_text() == "an earlier report"
    _cache_readable(tmp_path / "cache")
    again = Command(args, tmp_path, tmp_path / "cache")
    assert again.finish() == 0, again.lines
    assert not any("persistent compilation cache" in line for line in again.lines), again.lines
    assert (old / "report.html").exists() and not (old / "keep.txt").exists()


def test_sigint_stops_a_sweep(tmp_path):
    cmd = Command(["sweep", "separation", "--quick", "--out", "s"], tmp_path, tmp_path / "cache")
    cmd.wait_for("separation:")
    _check_interrupted(cmd, cmd.interrupt(), tmp_path)


@pytest.mark.slow
def test_sigint_while_nuts_samples(tmp_path):
    """A fourth moment (slow: MAP and NUTS compile first): while NUTS samples (its progress bar shows)."""
    cmd = Command(["--methods", "map,nuts", "--num-samples", "150", "--option", "nuts.num_warmup=20000",
                   "--out", "r"], tmp_path, tmp_path / "cache")
    cmd.wait_for("fitting nuts")
    cmd.wait_for("%|")  # the bar, "nuts (sequential):  3%|...": sampling has begun
    _check_interrupted(cmd, cmd.interrupt(), tmp_path)
    _cache_readable(tmp_path / "cache")


# --------------------------------------------------------------------------- the pieces, without a run


def test_output_guard_removes_what_a_killed_writer_left(tmp_path):
    out = tmp_path / "r"
    (tmp_path / ".r.tmp-old").mkdir()  # someone else's, there before: kept
    guard = OutputGuard(out)
    (tmp_path / ".r.tmp-abc").mkdir()
    (tmp_path / ".r.tmp-abc" / "report.html").write_text("half")
    out.mkdir()  # renamed into place a moment before the kill
    guard.restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".r.tmp-old"]


def test_output_guard_puts_a_moved_report_back(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "old.txt").write_text("old")
    guard = OutputGuard(out)
    aside = tmp_path / ".r.old-xyz"  # finalize_output_dir: old out moved aside, new one renamed in
    aside.mkdir()
    os.replace(out, aside / "previous")
    out.mkdir()
    (out / "new.txt").write_text("new")
    guard.restore()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    assert [p.name for p in out.iterdir()] == ["old.txt"]


def test_scrub_removes_only_recent_cache_entries(tmp_path):
    old, new = tmp_path / "a-cache", tmp_path / "b-cache"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    os.utime(old, (time.time() - 100, time.time() - 100))
    assert scrub_compilation_cache(tmp_path, time.time() - 10) == ["b-cache"]
    assert old.exists() and not new.exists()
    assert scrub_compilation_cache(None, 0.0) == [] and scrub_compilation_cache(tmp_path / "missing", 0.0) == []
