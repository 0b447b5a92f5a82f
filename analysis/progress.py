"""Progress lines of the report and the sweeps: one job, ``Progress``.

Imports: the standard library only (no JAX: the command line creates one before JAX starts).
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "REPORT_STAGES"]

# The stage lines of ``gmm-report``, in the order they come. Each line names its stage when the stage starts, so
# that nothing runs silent for long: the longest steps between two lines are one engine's fit, one engine's
# prior predictive or InferenceData, one figure. Lines start with these words (after ``[i/n] `` for the fits);
# stages marked "(if ...)" come only then. tests/test_report.py checks the order on a small run.
REPORT_STAGES = (
    "choosing K",  # (if --data without --num-components) once per covariance type and K (analysis.model_choice)
    "sampling",  # (simulated data; a streamed file: "checking every value", CSV / NPY rows are read before)
    "fitting",  # once per engine: "[i/n] fitting <engine> (K=.., N=.., D=..)", then its time and compile split
    "aligning labels and scoring",  # once per engine (per draw for svi / nuts: the relabelling)
    "responsibilities",  # every engine's per-row responsibilities and classification uncertainty
    "scoring",  # (if streamed) the full-data scores, one more pass over the file
    "imputing",  # (if the data have missing values) every engine's imputations
    "drawing figure",  # once per figure of the fits alone: "drawing figure i/n: <name>", rendered while the next stages run
    "predictive checks",  # once per engine: replicated data sets and test statistics; then its prior predictive
    "InferenceData",  # once per engine: its InferenceData and <engine>.nc
    "az.summary and LOO",  # (if svi / nuts ran) once per engine with draws
    "az.compare",  # (if two engines have draws)
    "figure",  # once per other figure: "figure i/n: <name>", drawn, then rendered (PNG) while the next is drawn
    "writing",  # assignments.csv, manifest.json; then metrics.json and report.html
)


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
            # one write, newline included: print() writes the text and its newline separately, and a report killed
            # between the two (Ctrl-C while drawing figures) left the supervisor's "interrupted" line glued to it
            sys.stderr.write(f"[{self.label} {time.perf_counter() - self.start:6.1f}s] {message}\n")
            sys.stderr.flush()
        elif callable(self.sink):
            self.sink(message)
