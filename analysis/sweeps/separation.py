"""The ``separation`` sweep: how do the engines change with other true GMM parameters?

Two 2-D components: the distance between the means (overlapping to well separated), the covariance
shape (spherical, elongated, rotated; determinant 1) and the weight imbalance. Every engine fits the
same data sets; hard EM's bias (means pushed apart, covariances shrunk) is measured against soft EM.
One job: this axis's truth, experiment and figures.

Imports: numpy, ``models``, :mod:`analysis.sweeps.common`; matplotlib inside the figures.
"""

from __future__ import annotations

import math

import numpy as np

import models
from analysis.sweeps.common import (ALL_METHODS, ERROR_COLUMNS, FIT_COLUMNS, MARKERS, NUTS_REPEATS, engine_color,
                                    engine_label, fit_fields, fit_once, group, key, methods_in, options_for, progress_of,
                                    repeats_for, resolve_methods, row, scores, stat, summarise)
from models.params import GMMParams

__all__ = ["SHAPES", "separation_truth", "sweep_separation", "plot_separation", "COLUMNS"]

DEFAULT_METHODS = ALL_METHODS
QUICK_METHODS = ("em", "hard_em", "map")
COLUMNS = {
    "runs": ["scenario", "distance", "shape", "weight_min", "repeat", "method", "n", *ERROR_COLUMNS,
             "separation_bias", "cov_trace_ratio", *FIT_COLUMNS],
    "summary": ["scenario", "distance", "shape", "weight_min", "method", "runs", "failed",
                "weight_err_max_mean", "mean_err_max_mean", "mean_err_max_sd", "cov_err_max_mean", "kl_mean_mean",
                "ari_mean", "separation_bias_mean", "cov_trace_ratio_mean", "seconds_mean"],
    "hard_em_bias": ["scenario", "distance", "shape", "weight_min", "repeats", "mean_err_em", "mean_err_hard_em",
                     "separation_bias_em", "separation_bias_hard_em", "cov_trace_ratio_em", "cov_trace_ratio_hard_em",
                     "ari_em", "ari_hard_em"],
}
INTRO = ("How do the algorithms change with different true GMM parameters? Two components in 2-D: the distance between "
         "the means (overlapping to well separated), the covariance shape (spherical, elongated along the line of the "
         "means, rotated by 60 degrees) and the weight imbalance. Every engine fits the same data sets.")
CAPTIONS = {
    "separation_distance": "Error of each engine vs the distance between two unit-covariance components (mean over repeats).",
    "separation_hard_em_bias": "Hard EM vs soft EM on the same data: distance between the estimated means minus the true "
                               "distance, and the ratio of covariance traces. Hard EM truncates each cluster at the decision "
                               "boundary, so on overlapping clusters it pushes the means apart and shrinks the covariances.",
    "separation_shape_weights": "Max mean error at distance 3 vs the covariance shape (all with determinant 1) and vs the smaller weight.",
}


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


# --------------------------------------------------------------------------- the experiment


def sweep_separation(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                     progress=None, notes=None) -> dict:
    """Error of each engine vs the distance between the means, the covariance shape and the weight
    imbalance; hard EM's bias (means pushed apart, covariances shrunk) measured against soft EM."""
    progress = progress_of(progress)
    notes = [] if notes is None else notes
    methods = resolve_methods(methods, QUICK_METHODS if quick else DEFAULT_METHODS)
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
    cols = COLUMNS["runs"]
    rows = []
    for ci, (scenario, dist, shape, wmin) in enumerate(conditions):
        truth = separation_truth(dist, shape, wmin)
        for rep in range(repeats):
            x, z = models.sample(key(seed, 1, ci, rep), truth, n)
            x, z = np.asarray(x), np.asarray(z)
            for mi, method in enumerate(methods):
                if rep >= repeats_for(method, repeats):
                    continue
                progress(f"separation: {scenario} d={dist:g} {shape} w={wmin:g} repeat {rep + 1}/{repeats} {method}")
                result, err, secs = fit_once(method, key(seed, 2, ci, rep, mi), x, 2, options_for(method, quick, engine_options))
                vals = dict(scenario=scenario, distance=dist, shape=shape, weight_min=wmin, repeat=rep, method=method, n=n,
                            **fit_fields(result, err, secs))
                if result is not None:
                    vals.update(scores(result, x, truth, z))
                rows.append(row(cols, vals))
    return {"runs": rows, "summary": _summary(rows), "hard_em_bias": _hard_em_bias(rows, methods)}


_CONDITION = ["scenario", "distance", "shape", "weight_min"]


def _summary(rows) -> list:
    """Mean errors per condition and engine over the repeats that did not fail."""
    return summarise(rows, [*_CONDITION, "method"], COLUMNS["summary"], lambda grp, ok: dict(
        weight_err_max_mean=stat(ok, "weight_err_max", np.mean), mean_err_max_mean=stat(ok, "mean_err_max", np.mean),
        mean_err_max_sd=stat(ok, "mean_err_max", np.std), cov_err_max_mean=stat(ok, "cov_err_max", np.mean),
        kl_mean_mean=stat(ok, "kl_mean", np.mean), ari_mean=stat(ok, "ari", np.mean),
        separation_bias_mean=stat(ok, "separation_bias", np.mean),
        cov_trace_ratio_mean=stat(ok, "cov_trace_ratio", np.mean), seconds_mean=stat(grp, "seconds", np.mean)))


def _hard_em_bias(rows, methods) -> list:
    """Soft EM and hard EM side by side per condition (empty unless both ran)."""
    bias = []
    if "em" in methods and "hard_em" in methods:
        for k, grp in group(rows, _CONDITION).items():
            em = [r for r in grp if r["method"] == "em" and r["error"] is None]
            hard = [r for r in grp if r["method"] == "hard_em" and r["error"] is None]
            bias.append(row(COLUMNS["hard_em_bias"], dict(
                zip(_CONDITION, k), repeats=min(len(em), len(hard)),
                mean_err_em=stat(em, "mean_err_max", np.mean), mean_err_hard_em=stat(hard, "mean_err_max", np.mean),
                separation_bias_em=stat(em, "separation_bias", np.mean),
                separation_bias_hard_em=stat(hard, "separation_bias", np.mean),
                cov_trace_ratio_em=stat(em, "cov_trace_ratio", np.mean),
                cov_trace_ratio_hard_em=stat(hard, "cov_trace_ratio", np.mean),
                ari_em=stat(em, "ari", np.mean), ari_hard_em=stat(hard, "ari", np.mean))))
    return bias


# --------------------------------------------------------------------------- figures


def plot_separation(tables: dict) -> dict:
    """``{name: Figure}``: error vs distance, hard EM's bias (when EM and hard EM ran), shape and weights."""
    figs = {"separation_distance": _plot_distance(tables["summary"])}
    bias = [r for r in tables.get("hard_em_bias", []) if r["scenario"] == "distance"]
    if bias:
        figs["separation_hard_em_bias"] = _plot_hard_em_bias(sorted(bias, key=lambda r: r["distance"]))
    figs["separation_shape_weights"] = _plot_shape_weights(tables["summary"])
    return figs


def _plot_distance(summ):
    import matplotlib.pyplot as plt

    dist = [r for r in summ if r["scenario"] == "distance"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    for m in methods_in(dist):
        rr = sorted((r for r in dist if r["method"] == m), key=lambda r: r["distance"])
        d = [r["distance"] for r in rr]
        for ax, col in zip(axes, ("mean_err_max_mean", "cov_err_max_mean", "ari_mean")):
            ax.plot(d, [np.nan if r[col] is None else r[col] for r in rr], marker=MARKERS.get(m, "o"),
                    color=engine_color(m), label=engine_label(m))
    for ax, t in zip(axes, ("max mean error ||mu - mu*||", "max covariance error (Frobenius)", "ARI vs true labels")):
        ax.set_xlabel("distance between the means (covariance I)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend()
    fig.suptitle("Error vs separation (2 components, weights 0.5/0.5, mean over repeats)")
    fig.tight_layout()
    return fig


def _plot_hard_em_bias(bias):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    d = [r["distance"] for r in bias]
    for m in ("em", "hard_em"):
        axes[0].plot(d, [r[f"separation_bias_{m}"] for r in bias], marker=MARKERS[m], color=engine_color(m), label=engine_label(m))
        axes[1].plot(d, [r[f"cov_trace_ratio_{m}"] for r in bias], marker=MARKERS[m], color=engine_color(m), label=engine_label(m))
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
    return fig


def _plot_shape_weights(summ):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, scen, col, title in ((axes[0], "shape", "shape", "covariance shape (distance 3)"),
                                 (axes[1], "weights", "weight_min", "smaller weight (distance 3)")):
        rows = [r for r in summ if r["scenario"] == scen]
        cats = list(dict.fromkeys(r[col] for r in rows))
        ms = methods_in(rows)
        width = 0.8 / max(len(ms), 1)
        for j, m in enumerate(ms):
            vals = [next((r["mean_err_max_mean"] for r in rows if r["method"] == m and r[col] == c), None) for c in cats]
            ax.bar(np.arange(len(cats)) + j * width, [np.nan if v is None else v for v in vals], width,
                   color=engine_color(m), label=engine_label(m))
        ax.set_xticks(np.arange(len(cats)) + 0.4 - width / 2, [str(c) for c in cats])
        ax.set_title(f"max mean error vs {title}")
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend()
    fig.tight_layout()
    return fig
