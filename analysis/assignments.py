"""Per-point output of the report: one job, each row's cluster and how sure each engine is of it.

For every (aligned) engine the report takes the responsibilities of its point estimate,
``models.responsibilities(params, x)`` (N, K) -- P(z_n = k | x_n) at the fitted parameters (NUTS, SVI: the
posterior mean of the aligned draws) --, in the aligned labels, and from them

* ``label``: the most probable component (argmax; ties to the lower label);
* ``max_responsibility``: that probability;
* ``uncertainty``: ``1 - max_responsibility``, mclust's classification uncertainty (0: sure; at most 1 - 1/K).

They go to ``assignments.csv`` (:func:`assignments_csv`: one line per row of the data, the row's index in the
file, then three columns per engine), to each engine's NetCDF file (``analysis.arviz_io.assignment_groups``)
and to the uncertainty figure (``analysis.plots.uncertainty``). Hard EM's own fit assigns hard labels; its
uncertainty here is that of its fitted mixture's soft responsibilities.

Imports: numpy at module level; ``models`` (JAX) inside :func:`point_responsibilities`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["point_responsibilities", "labels_and_uncertainty", "assignments_csv", "uncertainty_summary",
           "ASSIGNMENTS_FILE", "UNCERTAIN"]

ASSIGNMENTS_FILE = "assignments.csv"
UNCERTAIN = 0.2  # a row whose uncertainty exceeds this counts as uncertain in the summary (mclust's plots mark 0.2)


def point_responsibilities(aligned: dict, x) -> dict:
    """``{method: (N, K) float64}``: responsibilities of each aligned result's point estimate for the rows ``x``."""
    from models.density import responsibilities
    from models.params import to_numpy

    x = np.asarray(x, np.float64)
    return {m: np.asarray(responsibilities(to_numpy(r.params), x), np.float64) for m, r in aligned.items()}


def labels_and_uncertainty(resp) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(label (N,) int, max_responsibility (N,), uncertainty (N,))`` of responsibilities (N, K)."""
    resp = np.asarray(resp, np.float64)
    label = np.argmax(resp, axis=1)
    top = resp[np.arange(resp.shape[0]), label]
    return label, top, 1.0 - top


def assignments_csv(resp_by_engine: dict, row_index=None) -> str:
    """The text of ``assignments.csv``: ``row`` (the row's 0-based index among the file's data rows; a streamed
    file's subsample keeps its rows' indices), then ``<engine>_label``, ``<engine>_max_responsibility``,
    ``<engine>_uncertainty`` per engine (labels aligned, 0-based, as everywhere in the report)."""
    engines = list(resp_by_engine)
    if not engines:
        return "row\n"
    n = np.shape(resp_by_engine[engines[0]])[0]
    rows = np.arange(n) if row_index is None else np.asarray(row_index)
    header = ["row"] + [f"{m}_{c}" for m in engines for c in ("label", "max_responsibility", "uncertainty")]
    columns = [rows.astype(str)]
    for m in engines:
        label, top, unc = labels_and_uncertainty(resp_by_engine[m])
        columns += [label.astype(str), np.char.mod("%.6g", top), np.char.mod("%.6g", unc)]
    lines = [",".join(header)] + [",".join(values) for values in zip(*columns)]
    return "\n".join(lines) + "\n"


def uncertainty_summary(resp) -> dict:
    """``{mean, max, num_uncertain, threshold}`` of one engine's classification uncertainty (``num_uncertain``:
    rows above ``UNCERTAIN``)."""
    _, _, unc = labels_and_uncertainty(resp)
    return {"mean": float(unc.mean()) if unc.size else None, "max": float(unc.max()) if unc.size else None,
            "num_uncertain": int(np.sum(unc > UNCERTAIN)), "threshold": UNCERTAIN}
