"""The commands' name and their user error: one job, the exception class and how errors read.

``ReportError`` is raised by anything that checks what a user gave (arguments, data files, the
output directory); the command line (:mod:`analysis.cli`) prints it as one line and exits 2.
:func:`one_line` is how any other exception is reported in a line (an engine's failure, a figure's).
Imports: nothing.
"""

from __future__ import annotations

__all__ = ["PROG", "ReportError", "one_line"]

PROG = "gmm-report"  # the command's name: its error lines, progress lines and manifest.json "tool"


class ReportError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: ``ValueError`` messages as they are, others prefixed with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, ValueError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
