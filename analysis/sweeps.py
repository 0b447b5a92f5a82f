"""The seed notebook's four questions as reproducible experiments ("sweeps").

    How do the algorithms change with different true GMM parameters (``separation``), different
    initialisations (``init``), different numbers of samples (``samples``), different numbers of
    clusters (``components``)?

Python API
----------
    tables = run_sweep("samples", seed=0, quick=True)              # dict: table name -> list of row dicts
    tables = run_sweep("components", seed=0, out_dir="out", methods=("em", "nuts"))
    figs = plot_sweep("samples", tables)                            # dict: figure name -> Figure

CLI (a subcommand of ``gmm-report``; the same --out / --force / --quiet / --seed options)
------------------------------------------------------------------------------------------
    gmm-report sweep separation|init|samples|components [--quick] [--repeats R] [--methods em,nuts]
                     [--data FILE] [--ks 1-8] [--num-samples N] [--out DIR] [--force] [--quiet] [--seed S]

Every sweep writes ``<table>.csv`` and ``<table>.json`` per table (columns in ``COLUMNS``),
``figures/<name>.png``, ``sweep.html`` (self-contained) and ``manifest.json``; the components axis
also writes ``selection.json`` (schema in ``SELECTION_SCHEMA``). Runs are seeded: the data of a
condition and repeat come from ``fold_in`` of the seed, so every engine sees the SAME data set
(common random numbers) and a rerun reproduces the tables (timings aside).

Cost control: ``quick=True`` shrinks grids and repeats and, by default, uses the engines whose
programs compile in seconds (EM, hard EM; MAP for the separation / init / samples axes).
NUTS always gets fewer repetitions (``NUTS_REPEATS``) and is skipped above ``NUTS_MAX_N`` rows in the
samples sweep; each skip is listed in the manifest's ``notes``. Compiled programs are cached per
shape by the engines, so repeats of one shape cost only run time.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

import models
from inference import METHODS
from inference.init import INIT_METHODS
from models.params import GMMParams, covariances, to_numpy

__all__ = [
    "AXES",
    "COLUMNS",
    "SELECTION_SCHEMA",
    "DEFAULT_METHODS",
    "QUICK_METHODS",
    "SWEEP_ENGINE_OPTIONS",
    "run_sweep",
    "plot_sweep",
    "write_sweep",
    "sweep_separation",
    "sweep_init",
    "sweep_samples",
    "sweep_components",
    "separation_truth",
    "init_truth",
    "components_truth",
    "main",
]

AXES = ("separation", "init", "samples", "components")
ALL_METHODS = METHODS
DEFAULT_METHODS = {
    "separation": ALL_METHODS,
    "init": ("em", "hard_em", "map"),  # SVI and NUTS start from the MAP point: no init choice of their own
    "samples": ALL_METHODS,
    "components": ("em", "svi", "nuts"),
}
QUICK_METHODS = {
    "separation": ("em", "hard_em", "map"),
    "init": ("em", "hard_em", "map"),
    "samples": ("em", "hard_em", "map"),
    "components": ("em",),
}
NUTS_REPEATS = 2  # NUTS repetitions per condition (fewer than the others: it is the slow engine)
NUTS_MAX_N = 5000  # samples sweep: NUTS is not run above this many rows
REACHED_BEST_TOL = 1e-3  # init sweep: a run "reaches the best mode" if its log-lik per row is within this

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

_ERR = ["weight_err_max", "mean_err_max", "cov_err_max", "kl_mean", "ari"]
_FIT = ["loglik_per_obs", "loglik_truth_per_obs", "seconds", "compile_seconds", "num_iters", "converged", "error"]
COLUMNS = {
    "separation": {
        "runs": ["scenario", "distance", "shape", "weight_min", "repeat", "method", "n", *_ERR,
                 "separation_bias", "cov_trace_ratio", *_FIT],
        "summary": ["scenario", "distance", "shape", "weight_min", "method", "runs", "failed",
                    "weight_err_max_mean", "mean_err_max_mean", "mean_err_max_sd", "cov_err_max_mean", "kl_mean_mean",
                    "ari_mean", "separation_bias_mean", "cov_trace_ratio_mean", "seconds_mean"],
        "hard_em_bias": ["scenario", "distance", "shape", "weight_min", "repeats", "mean_err_em", "mean_err_hard_em",
                         "separation_bias_em", "separation_bias_hard_em", "cov_trace_ratio_em", "cov_trace_ratio_hard_em",
                         "ari_em", "ari_hard_em"],
    },
    "init": {
        "runs": ["method", "init", "seed", "n", "loglik", "loglik_per_obs", "best_loglik_per_obs", "gap_per_obs",
                 "reached_best", "num_iters", "converged", "collapsed_events", "mean_err_max", "ari", "seconds", "error"],
        "summary": ["method", "init", "runs", "failed", "share_reached_best", "loglik_per_obs_median",
                    "loglik_per_obs_min", "loglik_per_obs_max", "gap_per_obs_mean", "iters_median", "iters_mean",
                    "share_with_collapse", "collapsed_events_total", "seconds_mean"],
    },
    "samples": {
        "runs": ["n", "repeat", "method", *_ERR, *_FIT, "run_seconds"],
        "summary": ["n", "method", "runs", "failed", "weight_err_max_median", "mean_err_max_median",
                    "cov_err_max_median", "kl_mean_median", "ari_median", "seconds_median", "run_seconds_median"],
        "slopes": ["method", "num_n", "slope_weight_err", "slope_mean_err", "slope_cov_err", "slope_run_seconds"],
    },
    "components": {
        "criteria": ["method", "k", "loglik", "num_parameters", "bic", "aic", "icl", "entropy", "loo", "loo_se",
                     "p_loo", "pareto_k_max", "waic", "waic_se", "p_waic", "seconds", "error"],
        "selected": ["criterion", "method", "selected_k", "rule"],
    },
}

SELECTION_SCHEMA = {
    "selected_k": "{bic, aic, icl, loo, waic}: the selected K (int) or null when the criterion was not computed",
    "criterion_method": "{criterion: engine whose fits the criterion was computed from}",
    "true_k": "K of the simulated truth, or null for --data",
    "ks": "the K tried",
    "num_samples": "N",
    "num_features": "D",
    "data_file": "path given to --data, or null",
    "conventions": "{criterion: definition and direction}",
}
CONVENTIONS = {
    "bic": "sklearn GaussianMixture.bic: -2 log L + p log N, lower is better (mclust's BIC is its negative)",
    "aic": "sklearn GaussianMixture.aic: -2 log L + 2 p, lower is better",
    "icl": "ICL-BIC (Biernacki, Celeux & Govaert 2000): bic + 2 * sum_n entropy(responsibilities), lower is better",
    "loo": "ArviZ PSIS-LOO elpd_loo (log scale), higher is better",
    "waic": "WAIC elpd_waic (log scale, az.waic's formula), higher is better",
}


# --------------------------------------------------------------------------- problems


def _rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


SHAPES = {
    "spherical": np.eye(2),
    "elongated": np.diag([2.5, 0.4]),  # long axis along the line joining the means
    "rotated": _rotation(60.0) @ np.diag([2.5, 0.4]) @ _rotation(60.0).T,
}


def separation_truth(distance: float, shape: str = "spherical", weight_min: float = 0.5) -> GMMParams:
    """Two 2-D components, means at (-d/2, 0) and (d/2, 0), both with covariance ``SHAPES[shape]``
    (determinant 1 so that ``distance`` is comparable across shapes), weights (weight_min, 1 - weight_min)."""
    cov = SHAPES[shape]
    means = [[-distance / 2, 0.0], [distance / 2, 0.0]]
    return models.from_covariances([weight_min, 1.0 - weight_min], means, np.stack([cov, cov]))


def init_truth() -> GMMParams:
    """Five 2-D components, moderately separated and unbalanced: local optima are common."""
    means = [[0.0, 0.0], [3.5, 0.0], [0.0, 3.5], [3.5, 3.5], [7.0, 1.5]]
    covs = np.stack([0.6 * np.eye(2), np.diag([1.0, 0.3]), 0.4 * np.eye(2), SHAPES["rotated"] * 0.4, 0.8 * np.eye(2)])
    return models.from_covariances([0.3, 0.2, 0.2, 0.15, 0.15], means, covs)


def components_truth() -> GMMParams:
    """Three well-separated 2-D components (true K = 3)."""
    means = [[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]
    covs = np.stack([np.eye(2), 0.7 * np.eye(2), np.diag([1.6, 0.5])])
    return models.from_covariances([0.3, 0.4, 0.3], means, covs)


# --------------------------------------------------------------------------- helpers


class _Progress:
    def __init__(self, progress):
        self.fn = progress
        self.start = time.perf_counter()

    def __call__(self, message: str):
        if self.fn is True:
            print(f"[gmm-report sweep {time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)
        elif callable(self.fn):
            self.fn(message)


def _engine_options(method, quick, engine_options):
    opts = dict(SWEEP_ENGINE_OPTIONS.get(method, {}))
    if quick:
        opts.update(QUICK_ENGINE_OPTIONS.get(method, {}))
    opts.update((engine_options or {}).get(method, {}))
    return opts


def _resolve_methods(axis, methods, quick):
    if methods is None:
        methods = (QUICK_METHODS if quick else DEFAULT_METHODS)[axis]
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("methods is empty")
    bad = [m for m in methods if m not in ALL_METHODS]
    if bad:
        raise ValueError(f"unknown method {bad[0]!r}; choose from {', '.join(ALL_METHODS)}")
    return methods


def _key(seed: int, *path: int):
    key = jax.random.PRNGKey(int(seed))
    for p in path:
        key = jax.random.fold_in(key, int(p))
    return key


def _fit(method, key, x, k, opts):
    """(FitResult or None, error line or None, wall seconds)."""
    from inference import fit

    start = time.perf_counter()
    try:
        result = fit(method, key, x, k, **opts)
        return result, None, time.perf_counter() - start
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0][:300], time.perf_counter() - start


def _scores(result, x, truth: GMMParams, z) -> dict:
    """Errors of the estimate ALIGNED to the truth (Hungarian, symmetrised KL)."""
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


def _fit_fields(result, err, seconds):
    if result is None:
        return {"seconds": seconds, "compile_seconds": None, "num_iters": None, "converged": None, "error": err}
    cs = result.info.get("compile_seconds")
    rs = result.info.get("run_seconds")
    return {"seconds": seconds, "compile_seconds": None if cs is None else float(cs),
            "run_seconds": None if rs is None else float(rs),
            "num_iters": int(result.num_iters), "converged": bool(result.converged), "error": None}


def _row(columns, values: dict) -> dict:
    return {c: values.get(c) for c in columns}


def _vals(rows, col):
    return np.array([r[col] for r in rows if r.get(col) is not None and np.isfinite(r[col])], dtype=float)


def _stat(rows, col, fn):
    v = _vals(rows, col)
    return float(fn(v)) if v.size else None


def _group(rows, keys):
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _repeats_for(method, repeats):
    return min(repeats, NUTS_REPEATS) if method == "nuts" else repeats


# --------------------------------------------------------------------------- separation


def sweep_separation(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                     progress=None, notes=None) -> dict:
    """Error of each engine vs the distance between the means, the covariance shape and the weight
    imbalance; hard EM's bias (means pushed apart, covariances shrunk) measured against soft EM."""
    progress = _Progress(progress)
    notes = [] if notes is None else notes
    methods = _resolve_methods("separation", methods, quick)
    repeats = int(repeats or (2 if quick else 5))
    n = int(num_samples or (200 if quick else 500))
    distances = [1.0, 2.0, 4.0] if quick else [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0]
    weight_mins = [0.5, 0.05] if quick else [0.5, 0.3, 0.15, 0.05]
    shape_distance, weights_distance = 3.0, 3.0
    conditions = [("distance", d, "spherical", 0.5) for d in distances]
    conditions += [("shape", shape_distance, s, 0.5) for s in SHAPES]
    conditions += [("weights", weights_distance, "spherical", w) for w in weight_mins]
    if "nuts" in methods and repeats > NUTS_REPEATS:
        notes.append(f"NUTS ran {NUTS_REPEATS} repeats per condition, the other engines {repeats}.")
    if "nuts" in methods or "svi" in methods:
        notes.append("On overlapping clusters the posterior is nearly unidentifiable: the posterior MEAN (NUTS, SVI point) can "
                     "average over label configurations and give a weakly-supported component the prior's wide covariance "
                     "(LogNormal(0, 2) standard deviations), so its covariance error can be orders of magnitude larger.")
    cols = COLUMNS["separation"]["runs"]
    rows = []
    for ci, (scenario, dist, shape, wmin) in enumerate(conditions):
        truth = separation_truth(dist, shape, wmin)
        for rep in range(repeats):
            x, z = models.sample(_key(seed, 1, ci, rep), truth, n)
            x, z = np.asarray(x), np.asarray(z)
            for mi, method in enumerate(methods):
                if rep >= _repeats_for(method, repeats):
                    continue
                progress(f"separation: {scenario} d={dist:g} {shape} w={wmin:g} repeat {rep + 1}/{repeats} {method}")
                result, err, secs = _fit(method, _key(seed, 2, ci, rep, mi), x, 2, _engine_options(method, quick, engine_options))
                vals = dict(scenario=scenario, distance=dist, shape=shape, weight_min=wmin, repeat=rep, method=method, n=n,
                            **_fit_fields(result, err, secs))
                if result is not None:
                    vals.update(_scores(result, x, truth, z))
                rows.append(_row(cols, vals))
    summary = []
    keys = ["scenario", "distance", "shape", "weight_min", "method"]
    for key, grp in _group(rows, keys).items():
        ok = [r for r in grp if r["error"] is None]
        summary.append(_row(COLUMNS["separation"]["summary"], dict(
            zip(keys, key), runs=len(grp), failed=len(grp) - len(ok),
            weight_err_max_mean=_stat(ok, "weight_err_max", np.mean), mean_err_max_mean=_stat(ok, "mean_err_max", np.mean),
            mean_err_max_sd=_stat(ok, "mean_err_max", np.std), cov_err_max_mean=_stat(ok, "cov_err_max", np.mean),
            kl_mean_mean=_stat(ok, "kl_mean", np.mean), ari_mean=_stat(ok, "ari", np.mean),
            separation_bias_mean=_stat(ok, "separation_bias", np.mean),
            cov_trace_ratio_mean=_stat(ok, "cov_trace_ratio", np.mean), seconds_mean=_stat(grp, "seconds", np.mean))))
    bias = []
    if "em" in methods and "hard_em" in methods:
        for key, grp in _group(rows, keys[:-1]).items():
            em = [r for r in grp if r["method"] == "em" and r["error"] is None]
            hard = [r for r in grp if r["method"] == "hard_em" and r["error"] is None]
            bias.append(_row(COLUMNS["separation"]["hard_em_bias"], dict(
                zip(keys[:-1], key), repeats=min(len(em), len(hard)),
                mean_err_em=_stat(em, "mean_err_max", np.mean), mean_err_hard_em=_stat(hard, "mean_err_max", np.mean),
                separation_bias_em=_stat(em, "separation_bias", np.mean),
                separation_bias_hard_em=_stat(hard, "separation_bias", np.mean),
                cov_trace_ratio_em=_stat(em, "cov_trace_ratio", np.mean),
                cov_trace_ratio_hard_em=_stat(hard, "cov_trace_ratio", np.mean),
                ari_em=_stat(em, "ari", np.mean), ari_hard_em=_stat(hard, "ari", np.mean))))
    return {"runs": rows, "summary": summary, "hard_em_bias": bias}


# --------------------------------------------------------------------------- init


def sweep_init(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
               progress=None, notes=None) -> dict:
    """Many seeds x each init method for EM, hard EM (and MAP) on one data set from :func:`init_truth`:
    final log-likelihood, share of runs reaching the best mode, iterations, collapsed components."""
    progress = _Progress(progress)
    notes = [] if notes is None else notes
    methods = _resolve_methods("init", methods, quick)
    for m in ("svi", "nuts"):
        if m in methods:
            methods.remove(m)
            notes.append(f"{m} is not part of the init sweep: it starts from the MAP point (sweep MAP's init instead).")
    if not methods:
        raise ValueError("the init sweep needs at least one of em, hard_em, map")
    seeds = int(repeats or (8 if quick else 50))
    n = int(num_samples or (300 if quick else 1000))
    truth = init_truth()
    k = truth.weights.shape[0]
    x, z = models.sample(_key(seed, 10), truth, n)
    x, z = np.asarray(x), np.asarray(z)
    cols = COLUMNS["init"]["runs"]
    rows = []
    for mi, method in enumerate(methods):
        for ii, init in enumerate(INIT_METHODS):
            opts = _engine_options(method, quick, engine_options)
            opts.update(init=init, n_init=1)  # one start per seed: the spread IS the experiment
            progress(f"init: {method} init={init} x {seeds} seeds")
            for s in range(seeds):
                result, err, secs = _fit(method, _key(seed, 11, mi, ii, s), x, k, opts)
                vals = dict(method=method, init=init, seed=s, n=n, seconds=secs, error=err)
                if result is not None:
                    sc = _scores(result, x, truth, z)
                    ll = sc["loglik_per_obs"] * n
                    vals.update(loglik=ll, loglik_per_obs=sc["loglik_per_obs"], num_iters=int(result.num_iters),
                                converged=bool(result.converged), mean_err_max=sc["mean_err_max"], ari=sc["ari"],
                                collapsed_events=int(result.info.get("empty_cluster_events", result.info.get("collapsed_components", 0)) or 0))
                rows.append(_row(cols, vals))
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["error"] is None]
        best = max((r["loglik_per_obs"] for r in mine), default=None)
        for r in mine:
            r["best_loglik_per_obs"] = best
            r["gap_per_obs"] = best - r["loglik_per_obs"]
            r["reached_best"] = bool(r["gap_per_obs"] < REACHED_BEST_TOL)
    notes.append(f"best mode = the highest log-likelihood any run of the same engine reached on this data; a run reaches it "
                 f"when within {REACHED_BEST_TOL} per observation. MAP's log-likelihood is at its (prior-regularised) mode.")
    summary = []
    for (method, init), grp in _group(rows, ["method", "init"]).items():
        ok = [r for r in grp if r["error"] is None]
        summary.append(_row(COLUMNS["init"]["summary"], dict(
            method=method, init=init, runs=len(grp), failed=len(grp) - len(ok),
            share_reached_best=float(np.mean([r["reached_best"] for r in ok])) if ok else None,
            loglik_per_obs_median=_stat(ok, "loglik_per_obs", np.median), loglik_per_obs_min=_stat(ok, "loglik_per_obs", np.min),
            loglik_per_obs_max=_stat(ok, "loglik_per_obs", np.max), gap_per_obs_mean=_stat(ok, "gap_per_obs", np.mean),
            iters_median=_stat(ok, "num_iters", np.median), iters_mean=_stat(ok, "num_iters", np.mean),
            share_with_collapse=float(np.mean([r["collapsed_events"] > 0 for r in ok])) if ok else None,
            collapsed_events_total=int(sum(r["collapsed_events"] for r in ok)), seconds_mean=_stat(grp, "seconds", np.mean))))
    return {"runs": rows, "summary": summary}


# --------------------------------------------------------------------------- samples


def _slope(ns, values):
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(ns[ok]), np.log(values[ok]), 1)[0])


def sweep_samples(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                  progress=None, notes=None) -> dict:
    """Parameter error and time vs n (log grid 50 .. 50 000) on the seed problem, repeated."""
    progress = _Progress(progress)
    notes = [] if notes is None else notes
    methods = _resolve_methods("samples", methods, quick)
    repeats = int(repeats or (2 if quick else 5))
    if num_samples:
        ns = sorted({int(v) for v in np.atleast_1d(num_samples)})
    else:
        ns = [50, 500, 5000] if quick else [int(round(v)) for v in np.geomspace(50, 50_000, 7)]
    truth = models.seed_problem()
    if "nuts" in methods:
        skipped = [m for m in ns if m > NUTS_MAX_N]
        if skipped:
            notes.append(f"NUTS not run for n > {NUTS_MAX_N} (n = {', '.join(map(str, skipped))}): minutes per fit on a CPU.")
        if repeats > NUTS_REPEATS:
            notes.append(f"NUTS ran {NUTS_REPEATS} repeats per n, the other engines {repeats}.")
    if "svi" in methods and repeats > NUTS_REPEATS and any(m > NUTS_MAX_N for m in ns):
        notes.append(f"SVI ran {NUTS_REPEATS} repeats for n > {NUTS_MAX_N} (about 2.5 minutes per fit at n = 50 000 on a 2-core CPU).")
    cols = COLUMNS["samples"]["runs"]
    rows = []
    for ni, n in enumerate(ns):
        for rep in range(repeats):
            x, z = models.sample(_key(seed, 20, ni, rep), truth, n)
            x, z = np.asarray(x), np.asarray(z)
            for mi, method in enumerate(methods):
                if rep >= _repeats_for(method, repeats) or (method == "nuts" and n > NUTS_MAX_N):
                    continue
                if method == "svi" and n > NUTS_MAX_N and rep >= NUTS_REPEATS:
                    continue  # SVI on tens of thousands of rows: minutes per fit
                progress(f"samples: n={n} repeat {rep + 1}/{repeats} {method}")
                result, err, secs = _fit(method, _key(seed, 21, ni, rep, mi), x, 2, _engine_options(method, quick, engine_options))
                vals = dict(n=n, repeat=rep, method=method, **_fit_fields(result, err, secs))
                if result is not None:
                    vals.update(_scores(result, x, truth, z))
                rows.append(_row(cols, vals))
    summary = []
    for (n, method), grp in _group(rows, ["n", "method"]).items():
        ok = [r for r in grp if r["error"] is None]
        summary.append(_row(COLUMNS["samples"]["summary"], dict(
            n=n, method=method, runs=len(grp), failed=len(grp) - len(ok),
            **{f"{c}_median": _stat(ok, c, np.median) for c in ("weight_err_max", "mean_err_max", "cov_err_max", "kl_mean", "ari")},
            seconds_median=_stat(grp, "seconds", np.median), run_seconds_median=_stat(ok, "run_seconds", np.median))))
    slopes = []
    for method in methods:
        mine = [r for r in summary if r["method"] == method]
        ns_m = [r["n"] for r in mine]
        slopes.append(_row(COLUMNS["samples"]["slopes"], dict(
            method=method, num_n=len(mine),
            slope_weight_err=_slope(ns_m, [r["weight_err_max_median"] for r in mine]),
            slope_mean_err=_slope(ns_m, [r["mean_err_max_median"] for r in mine]),
            slope_cov_err=_slope(ns_m, [r["cov_err_max_median"] for r in mine]),
            slope_run_seconds=_slope(ns_m, [r["run_seconds_median"] for r in mine]))))
    notes.append("slopes: least-squares slope of log(median error) on log(n); a root-n consistent estimator has -0.5.")
    return {"runs": rows, "summary": summary, "slopes": slopes}


# --------------------------------------------------------------------------- components


def sweep_components(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                     progress=None, notes=None, data=None, ks=None) -> dict:
    """Fit K = 1..8 (quick: 1..5) to data with a known true K (``components_truth``, K = 3) or to
    ``data`` (N, D): BIC/AIC/ICL of the point engines, LOO/WAIC of NUTS/SVI, the selected K of each.

    The returned dict also holds ``"selection"`` (the selection.json object) and, under the private
    key ``"_fits"``, the FitResults and data used by the figures (not written to files).
    """
    from analysis import selection as sel

    progress = _Progress(progress)
    notes = [] if notes is None else notes
    methods = _resolve_methods("components", methods, quick)
    ks = list(ks) if ks is not None else list(range(1, 6 if quick else 9))
    if not ks or min(ks) < 1:
        raise ValueError("ks must be a non-empty list of integers >= 1")
    if data is None:
        truth = components_truth()
        n = int(num_samples or (300 if quick else 500))
        x, z = models.sample(_key(seed, 30), truth, n)
        x, z = np.asarray(x), np.asarray(z)
        true_k = int(truth.weights.shape[0])
    else:
        truth, z, true_k = None, None, None
        x = np.asarray(data, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"data must be a 2-D array (N, D), got shape {x.shape}")
        ks = [k for k in ks if k <= x.shape[0]]
        if not ks:
            raise ValueError("every K exceeds the number of rows of the data")
    cols = COLUMNS["components"]["criteria"]
    rows, fits = [], {}
    for mi, method in enumerate(methods):
        opts = _engine_options(method, quick, engine_options)
        if method in ("em", "hard_em"):
            opts.setdefault("n_init", 5)
            opts["n_init"] = max(opts["n_init"], 5)
        for k in ks:
            progress(f"components: {method} K={k}")
            result, err, secs = _fit(method, _key(seed, 31, mi, k), x, k, opts)
            vals = dict(method=method, k=k, seconds=secs, error=err)
            if result is not None:
                try:
                    vals.update(sel.criteria_row(result, x))
                except (ValueError, FloatingPointError) as exc:
                    vals["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                fits[(method, k)] = result
            rows.append(_row(cols, vals))
    point = next((m for m in ("em", "hard_em", "map") if m in methods), None)
    post = next((m for m in ("nuts", "svi") if m in methods), None)
    if point is None:
        point = post  # BIC/AIC/ICL at the posterior mean when no point engine ran
    chosen, criterion_method, selected_rows = {}, {}, []
    for c in sel.CRITERIA:
        m = post if c in sel.POSTERIOR_CRITERIA else point
        chosen[c] = sel.select(rows, c, method=m) if m else None
        criterion_method[c] = m if chosen[c] is not None else None
        for meth in methods:
            k_sel = sel.select(rows, c, method=meth)
            if k_sel is not None:
                selected_rows.append(_row(COLUMNS["components"]["selected"], dict(
                    criterion=c, method=meth, selected_k=k_sel, rule="min" if sel.LOWER_IS_BETTER[c] else "max")))
    selection_json = {
        "selected_k": chosen,
        "criterion_method": criterion_method,
        "true_k": true_k,
        "ks": ks,
        "num_samples": int(x.shape[0]),
        "num_features": int(x.shape[1]),
        "data_file": None,
        "conventions": dict(CONVENTIONS),
    }
    if post is None:
        notes.append("LOO and WAIC need posterior draws: run with --methods including nuts or svi.")
    return {"criteria": rows, "selected": selected_rows, "selection": selection_json,
            "_fits": {"fits": fits, "x": x, "z": z, "truth": truth}}


_SWEEPS = {"separation": sweep_separation, "init": sweep_init, "samples": sweep_samples, "components": sweep_components}


def run_sweep(axis: str, seed: int = 0, out_dir=None, quick: bool = False, repeats: int | None = None, methods=None,
              num_samples=None, engine_options: dict | None = None, progress=None, data=None, ks=None,
              force: bool = False, key=None) -> dict:
    """Run one sweep and return its tables: ``{table name: list of row dicts}`` (columns ``COLUMNS[axis]``).

    Parameters
    ----------
    axis : "separation" | "init" | "samples" | "components".
    seed : integer seed of the data and every fit (``key``, a jax PRNG key, overrides it).
    out_dir : when given, the tables (CSV + JSON), figures (PNG), sweep.html and manifest.json are
        written there (atomically; an existing non-empty directory needs ``force=True``).
    quick : small grids, few repeats and cheap engines (``QUICK_METHODS``) for tests and previews.
    repeats : repetitions per condition (init axis: number of seeds); NUTS uses at most ``NUTS_REPEATS``.
    methods : engines (default ``DEFAULT_METHODS[axis]`` or ``QUICK_METHODS[axis]``).
    num_samples : rows per data set (samples axis: the list of n).
    engine_options : ``{method: {option: value}}`` on top of ``SWEEP_ENGINE_OPTIONS``.
    progress : True (stderr), a callable taking a message, or None (silent).
    data, ks : components axis only: a user's (N, D) data (no truth) and the K to try.

    The result also has ``"notes"`` (list of strings: what was skipped or reduced, and why), the
    components axis ``"selection"`` (selection.json) and ``"_fits"`` (private, for the figures).
    """
    if axis not in _SWEEPS:
        raise ValueError(f"unknown sweep axis {axis!r}; choose from {', '.join(AXES)}")
    if key is not None:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    if (data is not None or ks is not None) and axis != "components":
        raise ValueError("data and ks apply to the components axis only")
    start = time.perf_counter()
    notes: list = []
    kwargs = dict(seed=seed, quick=quick, repeats=repeats, methods=methods, num_samples=num_samples,
                  engine_options=engine_options, progress=progress, notes=notes)
    if axis == "components":
        kwargs.update(data=data, ks=ks)
    tables = _SWEEPS[axis](**kwargs)
    tables["notes"] = notes
    settings = dict(axis=axis, seed=int(seed), quick=bool(quick), repeats=repeats,
                    methods=_resolve_methods(axis, methods, quick), seconds=time.perf_counter() - start)
    if out_dir is not None:
        write_sweep(axis, tables, out_dir, settings=settings, force=force)
    return tables


# --------------------------------------------------------------------------- figures

_MARKERS = {"em": "o", "hard_em": "s", "map": "^", "svi": "D", "nuts": "v"}


def _color(method):
    from analysis.plots import ENGINE_COLORS

    return ENGINE_COLORS.get(method, "0.3")


def _label(method):
    from analysis.plots import ENGINE_LABELS

    return ENGINE_LABELS.get(method, method)


def _methods_in(rows):
    return list(dict.fromkeys(r["method"] for r in rows))


def _ellipses(ax, params, color, proj=None, ls="-"):
    """1- and 2-sigma ellipses and mean markers of ``params`` (projected by ``proj``, a plots.Projection)."""
    from matplotlib.patches import Ellipse

    p = to_numpy(params)
    if proj is None:
        means, covs = p.means[:, :2], np.asarray(covariances(p))[:, :2, :2]
    else:
        means, covs = proj.gaussians(p)
    for k in range(means.shape[0]):
        vals, vecs = np.linalg.eigh(covs[k])
        vals = np.clip(vals, 0.0, None)
        angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
        for nsig in (1, 2):
            ax.add_patch(Ellipse(means[k], 2 * nsig * np.sqrt(vals[1]), 2 * nsig * np.sqrt(vals[0]), angle=angle,
                                 edgecolor=color, facecolor="none", lw=1.6 if nsig == 1 else 0.8, ls=ls))
        ax.plot(*means[k], marker="x", color=color, ms=8, mew=2)


def plot_sweep(axis: str, tables: dict) -> dict:
    """Figures of a sweep from its tables: ``{name: matplotlib Figure}`` (never shown)."""
    import matplotlib.pyplot as plt

    figs = {}
    if axis == "separation":
        summ = tables["summary"]
        dist = [r for r in summ if r["scenario"] == "distance"]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
        for m in _methods_in(dist):
            rr = sorted((r for r in dist if r["method"] == m), key=lambda r: r["distance"])
            d = [r["distance"] for r in rr]
            for ax, col in zip(axes, ("mean_err_max_mean", "cov_err_max_mean", "ari_mean")):
                ax.plot(d, [np.nan if r[col] is None else r[col] for r in rr], marker=_MARKERS.get(m, "o"),
                        color=_color(m), label=_label(m))
        for ax, t in zip(axes, ("max mean error ||mu - mu*||", "max covariance error (Frobenius)", "ARI vs true labels")):
            ax.set_xlabel("distance between the means (covariance I)")
            ax.set_title(t)
            ax.grid(alpha=0.3)
        axes[0].set_yscale("log")
        axes[1].set_yscale("log")
        axes[0].legend()
        fig.suptitle("Error vs separation (2 components, weights 0.5/0.5, mean over repeats)")
        fig.tight_layout()
        figs["separation_distance"] = fig
        bias = [r for r in tables.get("hard_em_bias", []) if r["scenario"] == "distance"]
        if bias:
            bias = sorted(bias, key=lambda r: r["distance"])
            fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
            d = [r["distance"] for r in bias]
            for m in ("em", "hard_em"):
                axes[0].plot(d, [r[f"separation_bias_{m}"] for r in bias], marker=_MARKERS[m], color=_color(m), label=_label(m))
                axes[1].plot(d, [r[f"cov_trace_ratio_{m}"] for r in bias], marker=_MARKERS[m], color=_color(m), label=_label(m))
            axes[0].axhline(0, color="k", lw=0.8)
            axes[1].axhline(1, color="k", lw=0.8)
            axes[0].set_title("estimated - true distance between the means")
            axes[1].set_title("trace(estimated cov) / trace(true cov)")
            for ax in axes:
                ax.set_xlabel("true distance between the means")
                ax.grid(alpha=0.3)
                ax.legend()
            fig.suptitle("Hard EM's bias on overlapping clusters: means pushed apart, covariances shrunk")
            fig.tight_layout()
            figs["separation_hard_em_bias"] = fig
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for ax, scen, key, title in ((axes[0], "shape", "shape", "covariance shape (distance 3)"),
                                     (axes[1], "weights", "weight_min", "smaller weight (distance 3)")):
            rows = [r for r in summ if r["scenario"] == scen]
            cats = list(dict.fromkeys(r[key] for r in rows))
            ms = _methods_in(rows)
            width = 0.8 / max(len(ms), 1)
            for j, m in enumerate(ms):
                vals = [next((r["mean_err_max_mean"] for r in rows if r["method"] == m and r[key] == c), None) for c in cats]
                ax.bar(np.arange(len(cats)) + j * width, [np.nan if v is None else v for v in vals], width, color=_color(m), label=_label(m))
            ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, [str(c) for c in cats])
            ax.set_title(f"max mean error vs {title}")
            ax.grid(alpha=0.3, axis="y")
        axes[0].legend()
        fig.tight_layout()
        figs["separation_shape_weights"] = fig
    elif axis == "init":
        runs = [r for r in tables["runs"] if r["error"] is None]
        groups = _group(runs, ["method", "init"])
        short = {"random_from_data": "random", "kmeans++": "k-means++", "kmeans": "k-means"}
        labels = [f"{_label(m)}\n{short.get(i, i)}" for (m, i) in groups]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
        data = [[r["loglik_per_obs"] for r in g] for g in groups.values()]
        axes[0].boxplot(data, showfliers=False)
        for j, ((m, _), vals) in enumerate(zip(groups, data)):
            jitter = np.random.default_rng(j).uniform(-0.15, 0.15, len(vals))
            axes[0].scatter(j + 1 + jitter, vals, s=10, color=_color(m), alpha=0.6)
        axes[0].set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
        axes[0].set_title("final log-likelihood per observation")
        summ = tables["summary"]
        axes[1].bar(range(len(summ)), [r["share_reached_best"] or 0 for r in summ], color=[_color(r["method"]) for r in summ])
        axes[1].set_xticks(range(len(summ)), [f"{_label(r['method'])}\n{short.get(r['init'], r['init'])}" for r in summ], fontsize=8)
        axes[1].set_ylim(0, 1.05)
        axes[1].set_title("share of runs reaching the best mode")
        axes[2].bar(range(len(summ)), [r["iters_median"] or 0 for r in summ], color=[_color(r["method"]) for r in summ])
        for j, r in enumerate(summ):
            if r["share_with_collapse"]:
                axes[2].annotate(f"collapse {r['share_with_collapse']:.0%}", (j, (r["iters_median"] or 0)), ha="center",
                                 va="bottom", fontsize=7, color="darkred")
        axes[2].set_xticks(range(len(summ)), [f"{_label(r['method'])}\n{short.get(r['init'], r['init'])}" for r in summ], fontsize=8)
        axes[2].set_yscale("log")
        axes[2].set_title("median iterations (steps for MAP) to converge, log scale")
        for ax in axes:
            ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        figs["init"] = fig
    elif axis == "samples":
        summ = tables["summary"]
        fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
        for m in _methods_in(summ):
            rr = sorted((r for r in summ if r["method"] == m), key=lambda r: r["n"])
            ns = [r["n"] for r in rr]
            for ax, col in zip(axes, ("weight_err_max_median", "mean_err_max_median", "cov_err_max_median")):
                ax.plot(ns, [np.nan if r[col] is None else r[col] for r in rr], marker=_MARKERS.get(m, "o"), color=_color(m), label=_label(m))
        all_ns = sorted({r["n"] for r in summ})
        for ax, col, title in zip(axes, ("weight_err_max_median", "mean_err_max_median", "cov_err_max_median"),
                                  ("max weight error", "max mean error", "max covariance error (Frobenius)")):
            anchor = np.nanmedian([r[col] for r in summ if r["n"] == all_ns[0] and r[col] is not None] or [np.nan])
            if np.isfinite(anchor):
                ref = anchor * np.sqrt(all_ns[0] / np.asarray(all_ns, float))
                ax.plot(all_ns, ref, "k--", lw=1, label=r"$\propto 1/\sqrt{n}$")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("n (samples)")
            ax.set_title(f"{title}, median over repeats")
            ax.grid(alpha=0.3, which="both")
        axes[0].legend()
        fig.tight_layout()
        figs["samples_error"] = fig
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m in _methods_in(summ):
            rr = sorted((r for r in summ if r["method"] == m), key=lambda r: r["n"])
            ax.plot([r["n"] for r in rr], [np.nan if r["run_seconds_median"] is None else r["run_seconds_median"] for r in rr],
                    marker=_MARKERS.get(m, "o"), color=_color(m), label=f"{_label(m)} (run)")
            ax.plot([r["n"] for r in rr], [r["seconds_median"] for r in rr], ls=":", color=_color(m), alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("n (samples)")
        ax.set_ylabel("seconds")
        ax.set_title("time vs n: run time after compilation (solid), whole fit incl. compile (dotted)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        figs["samples_time"] = fig
    elif axis == "components":
        from analysis import selection as sel

        rows = [r for r in tables["criteria"] if r["error"] is None]
        chosen = tables["selection"]["selected_k"]
        has_post = any(r["loo"] is not None for r in rows)
        fig, axes = plt.subplots(1, 2 if has_post else 1, figsize=(13 if has_post else 7, 4.5), squeeze=False)
        ax = axes[0, 0]
        pm = tables["selection"]["criterion_method"].get("bic")
        styles = {"bic": ("tab:blue", "o"), "aic": ("tab:orange", "s"), "icl": ("tab:green", "^"),
                  "loo": ("tab:red", "v"), "waic": ("tab:purple", "D")}
        for c in sel.POINT_CRITERIA:
            rr = sorted((r for r in rows if r["method"] == pm and r[c] is not None), key=lambda r: r["k"])
            if not rr:
                continue
            ax.plot([r["k"] for r in rr], [r[c] for r in rr], marker=styles[c][1], color=styles[c][0], label=c.upper())
            if chosen.get(c) is not None:
                v = next(r[c] for r in rr if r["k"] == chosen[c])
                ax.plot([chosen[c]], [v], marker="*", ms=18, color=styles[c][0], mec="k")
        if tables["selection"].get("true_k"):
            ax.axvline(tables["selection"]["true_k"], color="k", ls=":", label="true K")
        ax.set_xlabel("K")
        ax.set_title(f"{_label(pm) if pm else ''}: BIC / AIC / ICL (lower is better; star = selected)")
        ax.grid(alpha=0.3)
        ax.legend()
        if has_post:
            ax = axes[0, 1]
            for m in ("nuts", "svi"):
                for c in sel.POSTERIOR_CRITERIA:
                    rr = sorted((r for r in rows if r["method"] == m and r[c] is not None), key=lambda r: r["k"])
                    if not rr:
                        continue
                    ax.plot([r["k"] for r in rr], [r[c] for r in rr], marker=styles[c][1], color=styles[c][0],
                            ls="-" if m == "nuts" else "--", label=f"{_label(m)} {c.upper()} elpd")
                    k_sel = sel.select(rr, c)
                    ax.plot([k_sel], [next(r[c] for r in rr if r["k"] == k_sel)], marker="*", ms=18, color=styles[c][0], mec="k")
            if tables["selection"].get("true_k"):
                ax.axvline(tables["selection"]["true_k"], color="k", ls=":")
            ax.set_xlabel("K")
            ax.set_title("PSIS-LOO / WAIC elpd (higher is better; star = selected)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        figs["components_criteria"] = fig
        priv = tables.get("_fits")
        if priv and priv["fits"]:
            fits, x, truth = priv["fits"], priv["x"], priv["truth"]
            fm = pm if any(m == pm for m, _ in fits) else next(iter(fits))[0]
            ks_avail = sorted(k for m, k in fits if m == fm)
            centre = tables["selection"].get("true_k") or chosen.get("bic") or ks_avail[len(ks_avail) // 2]
            picks = []
            for k, what in ((centre - 1, "too small"), (centre, "selected" if not truth else "true K"), (centre + 2, "too large")):
                if k in ks_avail:
                    picks.append((k, what))
            from analysis.plots import projection_for

            proj = projection_for(x) if x.shape[1] >= 2 else None
            fig, axes = plt.subplots(1, len(picks), figsize=(5.2 * len(picks), 4.6), squeeze=False)
            for ax, (k, what) in zip(axes[0], picks):
                if proj is None:  # D == 1: histogram
                    ax.hist(x[:, 0], bins=40, color="0.7")
                else:
                    pts = proj.points(x)
                    ax.scatter(pts[:, 0], pts[:, 1], s=6, color="0.6", alpha=0.6)
                    if truth is not None:
                        _ellipses(ax, truth, "k", proj, ls="--")
                    _ellipses(ax, fits[(fm, k)].params, _color(fm), proj)
                    ax.set_xlabel(proj.xlabel)
                    ax.set_ylabel(proj.ylabel)
                    ax.set_aspect("equal", adjustable="datalim")
                ax.set_title(f"K = {k} ({what}), {_label(fm)}" + (", truth dashed" if truth is not None else ""))
                ax.grid(alpha=0.3)
            fig.tight_layout()
            figs["components_fits"] = fig
    return figs


# --------------------------------------------------------------------------- output


def _csv_text(rows, columns) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (repr(float(r[c])) if isinstance(r[c], float) else r[c]) for c in columns])
    return buf.getvalue()


_CAPTIONS = {
    "separation_distance": "Error of each engine vs the distance between two unit-covariance components (mean over repeats).",
    "separation_hard_em_bias": "Hard EM vs soft EM on the same data: distance between the estimated means minus the true "
                               "distance, and the ratio of covariance traces. Hard EM truncates each cluster at the decision "
                               "boundary, so on overlapping clusters it pushes the means apart and shrinks the covariances.",
    "separation_shape_weights": "Max mean error at distance 3 vs the covariance shape (all with determinant 1) and vs the smaller weight.",
    "init": "Final log-likelihood per observation over seeds, share of runs reaching the best mode found by the same engine, "
            "and median iterations (annotated: share of runs with collapsed / re-seeded components).",
    "samples_error": "Parameter error vs n on log-log axes, median over repeats; dashed: 1/sqrt(n) reference anchored at the smallest n.",
    "samples_time": "Seconds per fit vs n (median over repeats).",
    "components_criteria": "Criteria vs K; the star marks the K each criterion selects, the dotted line the true K.",
    "components_fits": "What a too-small and a too-large K look like (1- and 2-sigma ellipses).",
}

_INTRO = {
    "separation": "How do the algorithms change with different true GMM parameters? Two components in 2-D: the distance between "
                  "the means (overlapping to well separated), the covariance shape (spherical, elongated along the line of the "
                  "means, rotated by 60 degrees) and the weight imbalance. Every engine fits the same data sets.",
    "init": "How do the algorithms change with different initialisations? One data set from a 5-component mixture; every "
            "engine runs once per seed and init method (random_from_data, kmeans++, kmeans).",
    "samples": "How do the algorithms change with different numbers of samples? The seed problem at n on a log grid, repeated.",
    "components": "How do the algorithms change with different numbers of clusters? K = 1..8 fitted to data with a known K; "
                  "BIC, AIC, ICL for the point engines and PSIS-LOO / WAIC for the posterior engines.",
}


def write_sweep(axis: str, tables: dict, out_dir, settings: dict | None = None, force: bool = False, figures: dict | None = None):
    """Write a sweep's tables (CSV + JSON), figures (PNG), sweep.html and manifest.json into ``out_dir``.

    The directory is built next to ``out_dir`` and renamed into place at the end (``analysis.report``'s
    helpers), so an interrupted sweep leaves nothing half written.
    """
    import matplotlib.pyplot as plt

    from analysis.report import (dumps_json, figure_html, figure_png, finalize_output_dir, prepare_output_dir, render_html, table_html,
                                 write_atomically)

    tmp = prepare_output_dir(out_dir, force)
    try:
        figs = figures if figures is not None else plot_sweep(axis, tables)
        sections = [("Question", f"<p>{_INTRO[axis]}</p>")]
        notes = tables.get("notes") or []
        if notes:
            sections[0] = ("Question", sections[0][1] + "".join(f'<p class="note">{n}</p>' for n in notes))
        if axis == "components":
            sj = tables["selection"]
            write_atomically(tmp / "selection.json", dumps_json(sj))
            conv = "".join(f"<li><b>{k.upper()}</b>: {v}</li>" for k, v in CONVENTIONS.items())
            chosen = ", ".join(f"{k.upper()} → K = {v} ({sj['criterion_method'][k]})" for k, v in sj["selected_k"].items() if v is not None)
            sections.append(("Selected K", f"<p>{chosen}" + (f"; true K = {sj['true_k']}" if sj["true_k"] else "") + f"</p><ul>{conv}</ul>"))
        for name, fig in figs.items():
            png = figure_png(fig)
            write_atomically(tmp / "figures" / f"{name}.png", png)
            sections.append((name.replace("_", " ").capitalize(), figure_html(fig, _CAPTIONS.get(name, ""), name=name, png=png)))
            plt.close(fig)
        for name, columns in COLUMNS[axis].items():
            rows = tables.get(name, [])
            write_atomically(tmp / f"{name}.csv", _csv_text(rows, columns))
            write_atomically(tmp / f"{name}.json", dumps_json({"columns": columns, "rows": rows}))
            shown = rows if name != "runs" or len(rows) <= 60 else rows[:60]
            more = f"<p>First 60 of {len(rows)} rows; all in <code>{name}.csv</code>.</p>" if shown is not rows else ""
            sections.append((f"Table: {name}", table_html(columns, [[r.get(c) for c in columns] for r in shown]) + more))
        manifest = {"axis": axis, **(settings or {}), "notes": notes, "tables": {n: COLUMNS[axis][n] for n in COLUMNS[axis]},
                    "figures": [f"figures/{n}.png" for n in figs]}
        write_atomically(tmp / "manifest.json", dumps_json(manifest))
        write_atomically(tmp / "sweep.html", render_html(f"gmm-report sweep {axis}", sections))
        finalize_output_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Path(out_dir)


# --------------------------------------------------------------------------- CLI


def _parse_ks(text: str) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    if not out or min(out) < 1:
        raise ValueError
    return sorted(set(out))


def build_parser() -> argparse.ArgumentParser:
    from analysis.report import _Parser, add_common_options

    p = _Parser(prog="gmm-report sweep", description="Run one of the seed notebook's four questions as an experiment: "
                "tables (CSV, JSON), figures (PNG) and an HTML page in --out.")
    p.add_argument("axis", choices=AXES, help="what to vary")
    p.add_argument("--quick", action="store_true", help="small grids, few repeats, cheap engines (a preview)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per condition (init: number of seeds)")
    p.add_argument("--methods", default=None, help="comma-separated engines (default depends on the axis)")
    p.add_argument("--num-samples", "-n", default=None, metavar="N",
                   help="rows per data set (samples axis: comma-separated list of n)")
    p.add_argument("--data", metavar="FILE", help="components axis: CSV with a header row or .npy, no truth needed")
    p.add_argument("--ks", default=None, help="components axis: K to try, e.g. 1-8 or 1,2,3 (default 1-8; quick 1-5)")
    add_common_options(p, default_out="gmm-sweep")
    return p


def main(argv=None) -> int:
    """``gmm-report sweep <axis> ...``: returns 0, or 2 with one line on stderr for a user error."""
    from analysis.report import ReportError, error_exit, run_guarded

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except ReportError as exc:
        return error_exit(str(exc))
    except SystemExit as exc:
        return int(exc.code or 0)
    return run_guarded(lambda: _run_cli(args, argv))


def _run_cli(args, argv) -> None:
    """The sweep command after parsing (errors propagate to ``run_guarded``)."""
    from analysis.report import ReportError, load_data, prepare_output_dir

    if args.repeats is not None and args.repeats < 1:
        raise ReportError(f"--repeats must be >= 1, got {args.repeats}")
    if (args.data or args.ks) and args.axis != "components":
        raise ReportError("--data and --ks apply to the components axis only")
    ks = None
    if args.ks:
        try:
            ks = _parse_ks(args.ks)
        except ValueError:
            raise ReportError(f"--ks must look like 1-8 or 1,2,3 with K >= 1, got {args.ks!r}") from None
    num_samples = None
    if args.num_samples:
        try:
            vals = [int(v) for v in str(args.num_samples).split(",") if v.strip()]
        except ValueError:
            raise ReportError(f"--num-samples must be integers, got {args.num_samples!r}") from None
        if not vals or min(vals) < 2:
            raise ReportError(f"--num-samples must be >= 2, got {args.num_samples!r}")
        if len(vals) > 1 and args.axis != "samples":
            raise ReportError("a list of --num-samples applies to the samples axis only")
        num_samples = vals if args.axis == "samples" else vals[0]
    data = None
    if args.data:
        data, _ = load_data(args.data)
    # refuse a non-empty (or unwritable) --out before any work
    shutil.rmtree(prepare_output_dir(args.out, args.force), ignore_errors=True)
    tables = run_sweep(args.axis, seed=args.seed, out_dir=None, quick=args.quick, repeats=args.repeats,
                       methods=args.methods, num_samples=num_samples, progress=not args.quiet, data=data, ks=ks)
    if data is not None:
        tables["selection"]["data_file"] = str(args.data)
    settings = dict(axis=args.axis, seed=args.seed, quick=args.quick, repeats=args.repeats,
                    methods=_resolve_methods(args.axis, args.methods, args.quick), argv=["sweep", *argv],
                    data_file=args.data)
    write_sweep(args.axis, tables, args.out, settings=settings, force=args.force)
    if not args.quiet:
        print(f"[gmm-report sweep] written to {Path(args.out) / 'sweep.html'}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
