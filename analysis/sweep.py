"""``gmm-report sweep``: the name ``analysis.report.SUBCOMMANDS`` dispatches to; the code is in :mod:`analysis.sweeps`."""

from analysis.sweeps import main  # noqa: F401

__all__ = ["main"]
