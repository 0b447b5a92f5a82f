"""The ``init`` sweep: how do the engines change with other initialisations?

One data set from a 5-component mixture with local optima; EM, hard EM and MAP run once per seed
and init method (random_from_data, kmeans++, kmeans): final log-likelihood, share of runs reaching
the best mode, iterations, collapsed components. SVI and NUTS start from the MAP point and have no
init of their own. One job: this axis's truth, experiment and figures.

Imports: numpy, ``models``, ``inference.init``, :mod:`analysis.sweeps.common` and the separation
axis's covariance shapes; matplotlib inside the figure.
"""

from __future__ import annotations

import numpy as np

import models
from analysis.sweeps.common import (engine_color, engine_label, fit_once, group, key, options_for, progress_of,
                                    resolve_methods, row, scores, stat, summarise)
from analysis.sweeps.separation import SHAPES
from inference.init import INIT_METHODS
from models.params import GMMParams

__all__ = ["INIT_METHODS", "REACHED_BEST_TOL", "init_truth", "sweep_init", "plot_init", "COLUMNS"]

DEFAULT_METHODS = ("em", "hard_em", "map")  # SVI and NUTS start from the MAP point: no init choice of their own
QUICK_METHODS = ("em", "hard_em", "map")
REACHED_BEST_TOL = 1e-3  # a run "reaches the best mode" if its log-lik per row is within this
COLUMNS = {
    "runs": ["method", "init", "seed", "n", "loglik", "loglik_per_obs", "best_loglik_per_obs", "gap_per_obs",
             "reached_best", "num_iters", "converged", "collapsed_events", "mean_err_max", "ari", "seconds", "error"],
    "summary": ["method", "init", "runs", "failed", "share_reached_best", "loglik_per_obs_median",
                "loglik_per_obs_min", "loglik_per_obs_max", "gap_per_obs_mean", "iters_median", "iters_mean",
                "share_with_collapse", "collapsed_events_total", "seconds_mean"],
}
INTRO = ("How do the algorithms change with different initialisations? One data set from a 5-component mixture; every "
         "engine runs once per seed and init method (random_from_data, kmeans++, kmeans).")
CAPTIONS = {
    "init": "Final log-likelihood per observation over seeds, share of runs reaching the best mode found by the same engine, "
            "and median iterations (annotated: share of runs with collapsed / re-seeded components).",
}


def init_truth() -> GMMParams:
    """Five 2-D components, moderately separated and unbalanced: local optima are common."""
    means = [[0.0, 0.0], [3.5, 0.0], [0.0, 3.5], [3.5, 3.5], [7.0, 1.5]]
    covs = np.stack([0.6 * np.eye(2), np.diag([1.0, 0.3]), 0.4 * np.eye(2), SHAPES["rotated"] * 0.4, 0.8 * np.eye(2)])
    return models.from_covariances([0.3, 0.2, 0.2, 0.15, 0.15], means, covs)


# --------------------------------------------------------------------------- the experiment


def sweep_init(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
               progress=None, notes=None) -> dict:
    """Many seeds x each init method for EM, hard EM (and MAP) on one data set from :func:`init_truth`:
    final log-likelihood, share of runs reaching the best mode, iterations, collapsed components."""
    progress = progress_of(progress)
    notes = [] if notes is None else notes
    methods = resolve_methods(methods, QUICK_METHODS if quick else DEFAULT_METHODS)
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
    x, z = models.sample(key(seed, 10), truth, n)
    x, z = np.asarray(x), np.asarray(z)
    cols = COLUMNS["runs"]
    rows = []
    for mi, method in enumerate(methods):
        for ii, init in enumerate(INIT_METHODS):
            opts = options_for(method, quick, engine_options)
            opts.update(init=init, n_init=1)  # one start per seed: the spread IS the experiment
            progress(f"init: {method} init={init} x {seeds} seeds")
            for s in range(seeds):
                result, err, secs = fit_once(method, key(seed, 11, mi, ii, s), x, k, opts)
                vals = dict(method=method, init=init, seed=s, n=n, seconds=secs, error=err)
                if result is not None:
                    sc = scores(result, x, truth, z)
                    ll = sc["loglik_per_obs"] * n
                    vals.update(loglik=ll, loglik_per_obs=sc["loglik_per_obs"], num_iters=int(result.num_iters),
                                converged=bool(result.converged), mean_err_max=sc["mean_err_max"], ari=sc["ari"],
                                collapsed_events=int(result.info.get("empty_cluster_events", result.info.get("collapsed_components", 0)) or 0))
                rows.append(row(cols, vals))
    _mark_best_mode(rows, methods)
    notes.append(f"best mode = the highest log-likelihood any run of the same engine reached on this data; a run reaches it "
                 f"when within {REACHED_BEST_TOL} per observation. MAP's log-likelihood is at its (prior-regularised) mode.")
    return {"runs": rows, "summary": _summary(rows)}


def _mark_best_mode(rows, methods) -> None:
    """Fill ``best_loglik_per_obs``, ``gap_per_obs`` and ``reached_best`` of the successful runs, per engine."""
    for method in methods:
        mine = [r for r in rows if r["method"] == method and r["error"] is None]
        best = max((r["loglik_per_obs"] for r in mine), default=None)
        for r in mine:
            r["best_loglik_per_obs"] = best
            r["gap_per_obs"] = best - r["loglik_per_obs"]
            r["reached_best"] = bool(r["gap_per_obs"] < REACHED_BEST_TOL)


def _summary(rows) -> list:
    """Per engine and init method: share reaching the best mode, log-likelihood spread, iterations, collapses."""
    return summarise(rows, ["method", "init"], COLUMNS["summary"], lambda grp, ok: dict(
        share_reached_best=float(np.mean([r["reached_best"] for r in ok])) if ok else None,
        loglik_per_obs_median=stat(ok, "loglik_per_obs", np.median), loglik_per_obs_min=stat(ok, "loglik_per_obs", np.min),
        loglik_per_obs_max=stat(ok, "loglik_per_obs", np.max), gap_per_obs_mean=stat(ok, "gap_per_obs", np.mean),
        iters_median=stat(ok, "num_iters", np.median), iters_mean=stat(ok, "num_iters", np.mean),
        share_with_collapse=float(np.mean([r["collapsed_events"] > 0 for r in ok])) if ok else None,
        collapsed_events_total=int(sum(r["collapsed_events"] for r in ok)), seconds_mean=stat(grp, "seconds", np.mean)))


# --------------------------------------------------------------------------- figure

_SHORT = {"random_from_data": "random", "kmeans++": "k-means++", "kmeans": "k-means"}


def plot_init(tables: dict) -> dict:
    """``{"init": Figure}``: log-likelihood spread, share reaching the best mode, median iterations."""
    import matplotlib.pyplot as plt

    runs = [r for r in tables["runs"] if r["error"] is None]
    groups = group(runs, ["method", "init"])
    labels = [f"{engine_label(m)}\n{_SHORT.get(i, i)}" for (m, i) in groups]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    data = [[r["loglik_per_obs"] for r in g] for g in groups.values()]
    axes[0].boxplot(data, showfliers=False)
    for j, ((m, _), vals) in enumerate(zip(groups, data)):
        jitter = np.random.default_rng(j).uniform(-0.15, 0.15, len(vals))
        axes[0].scatter(j + 1 + jitter, vals, s=10, color=engine_color(m), alpha=0.6)
    axes[0].set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    axes[0].set_title("final log-likelihood per observation")
    summ = tables["summary"]
    ticks = [f"{engine_label(r['method'])}\n{_SHORT.get(r['init'], r['init'])}" for r in summ]
    colors = [engine_color(r["method"]) for r in summ]
    axes[1].bar(range(len(summ)), [r["share_reached_best"] or 0 for r in summ], color=colors)
    axes[1].set_xticks(range(len(summ)), ticks, fontsize=8)
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title("share of runs reaching the best mode")
    axes[2].bar(range(len(summ)), [r["iters_median"] or 0 for r in summ], color=colors)
    for j, r in enumerate(summ):
        if r["share_with_collapse"]:
            axes[2].annotate(f"collapse {r['share_with_collapse']:.0%}", (j, (r["iters_median"] or 0)), ha="center",
                             va="bottom", fontsize=7, color="darkred")
    axes[2].set_xticks(range(len(summ)), ticks, fontsize=8)
    axes[2].set_yscale("log")
    axes[2].set_title("median iterations (steps for MAP) to converge, log scale")
    for ax in axes:
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return {"init": fig}
