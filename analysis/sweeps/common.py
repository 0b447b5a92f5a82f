"""What the four sweeps share: one job, running and tabulating many small fits.

Engine settings of the sweeps, the seeded key of a condition, one guarded fit, the scores of an
estimate aligned to the truth, row/column helpers for the tables, and the engines' colours, markers
and labels in the sweep figures.

Imports: numpy, JAX (keys), ``models``, ``inference`` (inside :func:`fit_once`), and
``analysis.align`` / ``score`` / ``plots`` / ``engine_options`` / ``progress``; never an axis module.
"""

from __future__ import annotations

import time

import jax
import numpy as np

import models
from analysis.engine_options import layered
from analysis.plots import engine_color, engine_label
from analysis.progress import Progress
from inference import METHODS
from models.params import GMMParams, covariances, to_numpy

ALL_METHODS = METHODS
NUTS_REPEATS = 2  # NUTS repetitions per condition (fewer than the others: it is the slow engine)
NUTS_MAX_N = 5000  # samples sweep: NUTS is not run above this many rows

# Engine settings of the sweeps: cheaper than the engines' defaults (many fits), same for every
# condition so that the comparisons are fair. Overridable with ``engine_options``.
_MAP = dict(num_steps=1500, n_init=2)
SWEEP_ENGINE_OPTIONS = {
    "em": dict(n_init=1, max_iters=500),
    "hard_em": dict(n_init=1, max_iters=500),
    "map": dict(_MAP),
    "svi": dict(num_steps=1500, num_draws=300, progress=False, map_options=dict(_MAP)),
    "nuts": dict(num_chains=1, num_warmup=300, num_samples=300, progress=False, num_assignment_draws=0, map_options=dict(_MAP)),
}
QUICK_ENGINE_OPTIONS = {
    "map": dict(num_steps=500, n_init=2),
    "svi": dict(num_steps=500, num_draws=100, progress=False, map_options=dict(num_steps=500, n_init=2)),
    "nuts": dict(num_chains=1, num_warmup=100, num_samples=100, progress=False, num_assignment_draws=0,
                 map_options=dict(num_steps=500, n_init=2)),
}

# Columns shared by the tables of several axes: errors of an aligned estimate, facts of a fit.
ERROR_COLUMNS = ["weight_err_max", "mean_err_max", "cov_err_max", "kl_mean", "ari"]
FIT_COLUMNS = ["loglik_per_obs", "loglik_truth_per_obs", "seconds", "compile_seconds", "num_iters", "converged", "error"]

MARKERS = {"em": "o", "hard_em": "s", "map": "^", "svi": "D", "nuts": "v"}

__all__ = [
    "ALL_METHODS", "NUTS_REPEATS", "NUTS_MAX_N", "SWEEP_ENGINE_OPTIONS", "QUICK_ENGINE_OPTIONS", "ERROR_COLUMNS",
    "FIT_COLUMNS", "MARKERS", "progress_of", "options_for", "resolve_methods", "key", "fit_once", "scores",
    "fit_fields", "row", "stat", "summarise", "group", "repeats_for", "methods_in", "engine_color", "engine_label", "one_line",
]

# --------------------------------------------------------------------------- running


def progress_of(progress) -> Progress:
    """The sweeps' progress: True (stderr), a callable taking a message, or None (silent)."""
    return Progress(progress, "gmm-report sweep")


def options_for(method: str, quick: bool, engine_options: dict | None) -> dict:
    """Options of ``method`` in a sweep: ``SWEEP_ENGINE_OPTIONS``, then ``QUICK_ENGINE_OPTIONS`` when
    ``quick``, then the caller's ``{method: options}``."""
    return layered(method, SWEEP_ENGINE_OPTIONS, QUICK_ENGINE_OPTIONS if quick else None, engine_options)


def resolve_methods(methods, default) -> list[str]:
    """``methods`` (a sequence, a comma-separated string, or None for ``default``) as a list without
    duplicates; ValueError when empty or unknown."""
    if methods is None:
        methods = default
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("methods is empty")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown method {bad[0]!r}; choose from {', '.join(ALL_METHODS)}")
    return methods


def key(seed: int, *path: int):
    """``PRNGKey(seed)`` folded with each integer of ``path`` (a condition, a repeat, an engine)."""
    k = jax.random.PRNGKey(int(seed))
    for p in path:
        k = jax.random.fold_in(k, int(p))
    return k


def one_line(exc: BaseException) -> str:
    """``"<Type>: <message>"``, first line, at most 300 characters (a table cell)."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0][:300]


def fit_once(method, key, x, k, opts, engine=None):
    """(FitResult or None, error line or None, wall seconds): a numerical failure is a table row.
    ``engine``: a fit function ``(key, x, k, **opts)`` to call instead of ``inference.fit(method, ...)``."""
    from inference import fit

    start = time.perf_counter()
    try:
        result = engine(key, x, k, **opts) if engine is not None else fit(method, key, x, k, **opts)
        return result, None, time.perf_counter() - start
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return None, one_line(exc), time.perf_counter() - start


def scores(result, x, truth: GMMParams, z) -> dict:
    """Errors of the estimate ALIGNED to the truth (Hungarian, symmetrised KL); ``x`` (N, D), ``z`` (N,) or None."""
    from analysis.align import align_params
    from analysis.score import adjusted_rand_index, component_errors

    aligned, _ = align_params(truth, result.params)
    errs = component_errors(truth, aligned)
    labels = np.argmax(np.asarray(models.responsibilities(GMMParams(*(np.asarray(a, x.dtype) for a in aligned)), x)), -1)
    n = x.shape[0]
    t_cov, e_cov = np.asarray(covariances(to_numpy(truth))), np.asarray(covariances(aligned))
    out = {
        "weight_err_max": float(errs["weight_abs_error"].max()),
        "mean_err_max": float(errs["mean_l2_error"].max()),
        "cov_err_max": float(errs["cov_frobenius_error"].max()),
        "kl_mean": float(errs["kl_true_to_estimate"].mean()),
        "ari": float(adjusted_rand_index(np.asarray(z), labels)) if z is not None else None,
        "loglik_per_obs": float(models.log_likelihood(GMMParams(*(np.asarray(a, x.dtype) for a in aligned)), x)) / n,
        "loglik_truth_per_obs": float(models.log_likelihood(GMMParams(*(np.asarray(a, x.dtype) for a in truth)), x)) / n,
        "cov_trace_ratio": float(np.mean(np.trace(e_cov, axis1=-2, axis2=-1) / np.trace(t_cov, axis1=-2, axis2=-1))),
    }
    if truth.means.shape[0] == 2:
        out["separation_bias"] = float(np.linalg.norm(aligned.means[1] - aligned.means[0])
                                       - np.linalg.norm(np.asarray(truth.means[1] - truth.means[0])))
    return out


def fit_fields(result, err, seconds) -> dict:
    """The fit columns of a row (time, compile time, iterations, convergence, error) from :func:`fit_once`."""
    if result is None:
        return {"seconds": seconds, "compile_seconds": None, "num_iters": None, "converged": None, "error": err}
    cs = result.info.get("compile_seconds")
    rs = result.info.get("run_seconds")
    return {"seconds": seconds, "compile_seconds": None if cs is None else float(cs),
            "run_seconds": None if rs is None else float(rs),
            "num_iters": int(result.num_iters), "converged": bool(result.converged), "error": None}


def repeats_for(method, repeats) -> int:
    """Repetitions of ``method`` per condition (NUTS: at most ``NUTS_REPEATS``)."""
    return min(repeats, NUTS_REPEATS) if method == "nuts" else repeats


# --------------------------------------------------------------------------- tables


def row(columns, values: dict) -> dict:
    """A table row: ``values[c]`` (None when absent) for each of ``columns``, in order."""
    return {c: values.get(c) for c in columns}


def _finite(rows, col) -> np.ndarray:
    return np.array([r[col] for r in rows if r.get(col) is not None and np.isfinite(r[col])], dtype=float)


def stat(rows, col, fn):
    """``fn`` of the finite values of column ``col``, or None when there are none."""
    v = _finite(rows, col)
    return float(fn(v)) if v.size else None


def summarise(rows, keys, columns, stats) -> list:
    """One summary row per group of ``keys``: the keys' values, ``runs``, ``failed`` and
    ``stats(group rows, rows of the group without an error)`` (a dict), laid out as ``columns``."""
    summary = []
    for values, grp in group(rows, keys).items():
        ok = [r for r in grp if r["error"] is None]
        summary.append(row(columns, dict(zip(keys, values), runs=len(grp), failed=len(grp) - len(ok), **stats(grp, ok))))
    return summary


def group(rows, keys) -> dict:
    """``{tuple of the keys' values: [rows]}``, in order of first appearance."""
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


# --------------------------------------------------------------------------- figures


def methods_in(rows) -> list:
    """The engines of ``rows``, in order of first appearance."""
    return list(dict.fromkeys(r["method"] for r in rows))
