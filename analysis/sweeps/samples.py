"""The ``samples`` sweep: how do the engines change with other numbers of samples?

The seed problem at n on a log grid (50 .. 50 000), repeated: parameter error and time vs n, and the
slope of log(error) on log(n) (-0.5 for a root-n consistent estimator). One job: this axis's
experiment and figures (its truth is ``models.seed_problem``).

Imports: numpy, ``models``, :mod:`analysis.sweeps.common`; matplotlib inside the figures.
"""

from __future__ import annotations

import numpy as np

import models
from analysis.sweeps.common import (ALL_METHODS, ERROR_COLUMNS, FIT_COLUMNS, MARKERS, NUTS_MAX_N, NUTS_REPEATS,
                                    engine_color, engine_label, fit_fields, fit_once, key, methods_in,
                                    options_for, progress_of, repeats_for, resolve_methods, row, scores, stat, summarise)

__all__ = ["sweep_samples", "plot_samples", "COLUMNS"]

DEFAULT_METHODS = ALL_METHODS
QUICK_METHODS = ("em", "hard_em", "map")
COLUMNS = {
    "runs": ["n", "repeat", "method", *ERROR_COLUMNS, *FIT_COLUMNS, "run_seconds"],
    "summary": ["n", "method", "runs", "failed", "weight_err_max_median", "mean_err_max_median",
                "cov_err_max_median", "kl_mean_median", "ari_median", "seconds_median", "run_seconds_median"],
    "slopes": ["method", "num_n", "slope_weight_err", "slope_mean_err", "slope_cov_err", "slope_run_seconds"],
}
INTRO = "How do the algorithms change with different numbers of samples? The seed problem at n on a log grid, repeated."
CAPTIONS = {
    "samples_error": "Parameter error vs n on log-log axes, median over repeats; dashed: 1/sqrt(n) reference anchored at the smallest n.",
    "samples_time": "Seconds per fit vs n (median over repeats).",
}

# --------------------------------------------------------------------------- the experiment


def sweep_samples(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                  progress=None, notes=None) -> dict:
    """Parameter error and time vs n (log grid 50 .. 50 000) on the seed problem, repeated."""
    progress = progress_of(progress)
    notes = [] if notes is None else notes
    methods = resolve_methods(methods, QUICK_METHODS if quick else DEFAULT_METHODS)
    repeats = int(repeats or (2 if quick else 5))
    if num_samples:
        ns = sorted({int(v) for v in np.atleast_1d(num_samples)})
    else:
        ns = [50, 500, 5000] if quick else [int(round(v)) for v in np.geomspace(50, 50_000, 7)]
    truth = models.seed_problem()
    notes.extend(_cost_notes(methods, ns, repeats))
    cols = COLUMNS["runs"]
    rows = []
    for ni, n in enumerate(ns):
        for rep in range(repeats):
            x, z = models.sample(key(seed, 20, ni, rep), truth, n)
            x, z = np.asarray(x), np.asarray(z)
            for mi, method in enumerate(methods):
                if rep >= repeats_for(method, repeats) or (method == "nuts" and n > NUTS_MAX_N):
                    continue
                if method == "svi" and n > NUTS_MAX_N and rep >= NUTS_REPEATS:
                    continue  # SVI on tens of thousands of rows: minutes per fit
                progress(f"samples: n={n} repeat {rep + 1}/{repeats} {method}")
                result, err, secs = fit_once(method, key(seed, 21, ni, rep, mi), x, 2, options_for(method, quick, engine_options))
                vals = dict(n=n, repeat=rep, method=method, **fit_fields(result, err, secs))
                if result is not None:
                    vals.update(scores(result, x, truth, z))
                rows.append(row(cols, vals))
    summary = _summary(rows)
    slopes = _slopes(summary, methods)
    notes.append("slopes: least-squares slope of log(median error) on log(n); a root-n consistent estimator has -0.5.")
    return {"runs": rows, "summary": summary, "slopes": slopes}


def _cost_notes(methods, ns, repeats) -> list:
    """What NUTS and SVI skip or run fewer times, and why."""
    notes = []
    if "nuts" in methods:
        skipped = [m for m in ns if m > NUTS_MAX_N]
        if skipped:
            notes.append(f"NUTS not run for n > {NUTS_MAX_N} (n = {', '.join(map(str, skipped))}): minutes per fit on a CPU.")
        if repeats > NUTS_REPEATS:
            notes.append(f"NUTS ran {NUTS_REPEATS} repeats per n, the other engines {repeats}.")
    if "svi" in methods and repeats > NUTS_REPEATS and any(m > NUTS_MAX_N for m in ns):
        notes.append(f"SVI ran {NUTS_REPEATS} repeats for n > {NUTS_MAX_N} (about 2.5 minutes per fit at n = 50 000 on a 2-core CPU).")
    return notes


def _summary(rows) -> list:
    """Median errors and times per n and engine."""
    return summarise(rows, ["n", "method"], COLUMNS["summary"], lambda grp, ok: dict(
        **{f"{c}_median": stat(ok, c, np.median) for c in ("weight_err_max", "mean_err_max", "cov_err_max", "kl_mean", "ari")},
        seconds_median=stat(grp, "seconds", np.median), run_seconds_median=stat(ok, "run_seconds", np.median)))


def _slope(ns, values):
    """Least-squares slope of log(values) on log(ns) over the finite positive values; None with < 2."""
    ns, values = np.asarray(ns, float), np.asarray(values, float)
    ok = np.isfinite(values) & (values > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(ns[ok]), np.log(values[ok]), 1)[0])


def _slopes(summary, methods) -> list:
    slopes = []
    for method in methods:
        mine = [r for r in summary if r["method"] == method]
        ns_m = [r["n"] for r in mine]
        slopes.append(row(COLUMNS["slopes"], dict(
            method=method, num_n=len(mine),
            slope_weight_err=_slope(ns_m, [r["weight_err_max_median"] for r in mine]),
            slope_mean_err=_slope(ns_m, [r["mean_err_max_median"] for r in mine]),
            slope_cov_err=_slope(ns_m, [r["cov_err_max_median"] for r in mine]),
            slope_run_seconds=_slope(ns_m, [r["run_seconds_median"] for r in mine]))))
    return slopes


# --------------------------------------------------------------------------- figures

_ERRORS = ("weight_err_max_median", "mean_err_max_median", "cov_err_max_median")


def plot_samples(tables: dict) -> dict:
    """``{name: Figure}``: error vs n on log-log axes with a 1/sqrt(n) line, and time vs n."""
    return {"samples_error": _plot_error(tables["summary"]), "samples_time": _plot_time(tables["summary"])}


def _plot_error(summ):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for m in methods_in(summ):
        rr = sorted((r for r in summ if r["method"] == m), key=lambda r: r["n"])
        ns = [r["n"] for r in rr]
        for ax, col in zip(axes, _ERRORS):
            ax.plot(ns, [np.nan if r[col] is None else r[col] for r in rr], marker=MARKERS.get(m, "o"),
                    color=engine_color(m), label=engine_label(m))
    all_ns = sorted({r["n"] for r in summ})
    for ax, col, title in zip(axes, _ERRORS, ("max weight error", "max mean error", "max covariance error (Frobenius)")):
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
    return fig


def _plot_time(summ):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods_in(summ):
        rr = sorted((r for r in summ if r["method"] == m), key=lambda r: r["n"])
        ax.plot([r["n"] for r in rr], [np.nan if r["run_seconds_median"] is None else r["run_seconds_median"] for r in rr],
                marker=MARKERS.get(m, "o"), color=engine_color(m), label=f"{engine_label(m)} (run)")
        ax.plot([r["n"] for r in rr], [r["seconds_median"] for r in rr], ls=":", color=engine_color(m), alpha=0.6)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n (samples)")
    ax.set_ylabel("seconds")
    ax.set_title("time vs n: run time after compilation (solid), whole fit incl. compile (dotted)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
