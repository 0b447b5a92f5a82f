"""The user error of the commands: one job, the exception class.

``ReportError`` is raised by anything that checks what a user gave (arguments, data files, the
output directory); the command line (:mod:`analysis.cli`) prints it as one line and exits 2.
Imports: nothing.
"""

from __future__ import annotations

__all__ = ["ReportError"]


class ReportError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""
