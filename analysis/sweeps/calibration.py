"""The ``calibration`` sweep: are the Bayesian engines' posteriors calibrated? Simulation-based calibration.

Talts, Betancourt, Simpson, Vehtari & Gelman (2018): draw parameters from the prior and data from the
model (``models.sample_prior``, the declared model through ``numpyro.infer.Predictive``), fit the data
with the SAME prior (passed to the engines in the data's units, ``prior=CALIBRATION_PRIOR``), and rank
the true value of every scalar parameter among L thinned posterior draws. For a calibrated engine each
rank is uniform on 0..L; central 50% / 90% intervals cover the truth 50% / 90% of the time. Labels:
the true parameters are aligned (Hungarian) to the posterior mean before ranking, as the engines align
their draws to a pivot. One job: this axis's experiment, tables and figures.

The engines are called directly (``inference.numpyro_nuts.fit_nuts``, ``numpyro_svi.fit_svi``), without
the standardisation ``inference.fit`` applies (``inference.standardize``): with a user prior that
standardisation turns the prior's numbers into data-dependent ones, which are compile-time constants
of the engines, so every replicate would compile anew (~9 s each). The calibration data are drawn at
unit scale, and standardising is an exact change of variables (affine equivariance is tested in
``tests/test_trust.py``), so what is calibrated is the same posterior.

Imports: numpy, scipy.stats, ``models``, :mod:`analysis.sweeps.common`; matplotlib inside the figures.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

import models
from analysis.sweeps.common import engine_color, engine_label, fit_once, key, progress_of, resolve_methods, row

__all__ = ["sweep_calibration", "plot_calibration", "COLUMNS", "CALIBRATION_PRIOR", "NUM_RANK_DRAWS"]

DEFAULT_METHODS = ("nuts", "svi")
QUICK_METHODS = ("nuts", "svi")
# A proper prior that makes mixtures a sampler can be asked to calibrate on (components not vanishingly
# small, spreads within a factor ~2 of each other); the same dict is passed to the fits.
CALIBRATION_PRIOR = dict(concentration=3.0, mean_loc=0.0, mean_scale=2.0, scale_loc=1.0, scale_log_sd=0.3,
                         lkj_concentration=2.0)
PROBLEM = dict(num_samples=100, num_features=2, num_components=2)
NUM_RANK_DRAWS = 99  # L: ranks take values 0..L, L + 1 = 100 possible ranks in NUM_BINS bins
NUM_BINS = 10
ENGINE_OPTIONS = {
    "nuts": dict(num_chains=2, num_warmup=500, num_samples=1000, progress=False, num_assignment_draws=0,
                 map_options=dict(num_steps=1000, n_init=2)),
    "svi": dict(num_steps=2000, num_draws=1000, progress=False, map_options=dict(num_steps=1000, n_init=2)),
}
QUICK_ENGINE_OPTIONS = {
    "nuts": dict(num_chains=2, num_warmup=400, num_samples=500, progress=False, num_assignment_draws=0,
                 map_options=dict(num_steps=1000, n_init=2)),
    "svi": dict(num_steps=1500, num_draws=500, progress=False, map_options=dict(num_steps=1000, n_init=2)),
}
COLUMNS = {
    "ranks": ["replicate", "method", "parameter", "kind", "truth", "rank", "num_draws", "covered_50", "covered_90",
              "converged", "seconds", "error"],
    "calibration": ["method", "parameter", "kind", "replicates", "rank_chi2", "rank_p_value", "coverage_50",
                    "coverage_50_se", "coverage_90", "coverage_90_se"],
    "engines": ["method", "replicates", "failed", "not_converged", "coverage_50", "coverage_50_se", "coverage_90",
                "coverage_90_se", "min_rank_p_value", "seconds_median"],
}
INTRO = ("Are the Bayesian engines calibrated? Simulation-based calibration (Talts et al. 2018): parameters drawn "
         f"from the prior {CALIBRATION_PRIOR}, {PROBLEM['num_samples']} rows of data from the model, the same prior "
         f"in the fit; the rank of each true value among {NUM_RANK_DRAWS} thinned posterior draws is uniform and "
         "central intervals cover at their nominal rate when the engine is calibrated.")
CAPTIONS = {
    "calibration_ranks": ("Rank histograms of the true values among the posterior draws, pooled by parameter kind; "
                          "grey band: the 99% range of a bin count under uniform ranks."),
    "calibration_coverage": ("Coverage of the central 50% and 90% intervals per parameter (± 2 binomial standard "
                             "errors); dashed: nominal."),
}


def sweep_calibration(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                      progress=None, notes=None) -> dict:
    """SBC of ``methods`` (default NUTS and SVI) over ``repeats`` prior draws (quick 60, full 300)."""
    progress = progress_of(progress)
    notes = [] if notes is None else notes
    methods = resolve_methods(methods, QUICK_METHODS if quick else DEFAULT_METHODS)
    bad = [m for m in methods if m not in _ENGINES]
    if bad:
        raise ValueError(f"the calibration sweep runs the Bayesian engines ({', '.join(_ENGINES)}), not {bad[0]!r}")
    repeats = int(repeats or (60 if quick else 300))
    n = int(num_samples or PROBLEM["num_samples"])
    d, k = PROBLEM["num_features"], PROBLEM["num_components"]
    options = {m: {**(QUICK_ENGINE_OPTIONS if quick else ENGINE_OPTIONS).get(m, {}), **(engine_options or {}).get(m, {}),
                   "prior": CALIBRATION_PRIOR} for m in methods}
    notes.append(f"{repeats} prior draws, N = {n}, D = {d}, K = {k}; engines: {', '.join(methods)}; prior {CALIBRATION_PRIOR}")
    rows = []
    for rep in range(repeats):
        params, x, _ = models.sample_prior(key(seed, 50, rep), 1, n, d, k, **CALIBRATION_PRIOR)
        truth = models.to_numpy(models.GMMParams(*(a[0] for a in params)))
        x = np.asarray(x[0])
        for mi, method in enumerate(methods):
            progress(f"calibration: draw {rep + 1}/{repeats}, {method}")
            result, err, seconds = _fit(method, key(seed, 51, rep, mi), x, k, options[method])
            rows.extend(_rank_rows(rep, method, truth, result, err, seconds))
    return {"ranks": rows, "calibration": _calibration_table(rows), "engines": _engine_table(rows)}


_ENGINES = {"nuts": ("inference.numpyro_nuts", "fit_nuts"), "svi": ("inference.numpyro_svi", "fit_svi")}


def _fit(method, fit_key, x, k, options):
    """(FitResult or None, error line or None, seconds) of the engine itself (module docstring)."""
    import importlib

    module, name = _ENGINES[method]
    return fit_once(method, fit_key, x, k, options, engine=getattr(importlib.import_module(module), name))


def scalar_parameters(params: models.GMMParams) -> dict:
    """``{"weights[0]": array (...), "means[0, 1]": ..., "covariances[0, 1, 1]": ...}`` (upper triangle)."""
    arrays = {"weights": np.asarray(params.weights), "means": np.asarray(params.means),
              "covariances": np.asarray(models.covariances(params))}
    k, d = arrays["means"].shape[-2:]
    out = {}
    for j in range(k):
        out[f"weights[{j}]"] = arrays["weights"][..., j]
    for j in range(k):
        for a in range(d):
            out[f"means[{j}, {a}]"] = arrays["means"][..., j, a]
    for j in range(k):
        for a in range(d):
            for b in range(a, d):
                out[f"covariances[{j}, {a}, {b}]"] = arrays["covariances"][..., j, a, b]
    return out


def _rank_rows(rep, method, truth, result, err, seconds) -> list:
    base = dict(replicate=rep, method=method, seconds=seconds)
    if result is None:
        return [row(COLUMNS["ranks"], dict(base, error=err, converged=None))]
    aligned_truth, _ = models.align(result.params, truth)
    draws = models.GMMParams(*(np.asarray(a).reshape((-1,) + np.shape(a)[2:]) for a in result.samples))
    index = np.linspace(0, draws.weights.shape[0] - 1, NUM_RANK_DRAWS).round().astype(int)
    thinned = scalar_parameters(models.GMMParams(*(a[index] for a in draws)))
    full = scalar_parameters(draws)
    rows = []
    for name, true_value in scalar_parameters(models.to_numpy(aligned_truth)).items():
        true_value = float(true_value)
        lo50, hi50, lo90, hi90 = np.quantile(full[name], [0.25, 0.75, 0.05, 0.95])
        rows.append(row(COLUMNS["ranks"], dict(
            base, parameter=name, kind=name.split("[")[0], truth=true_value,
            rank=int(np.sum(thinned[name] < true_value)), num_draws=NUM_RANK_DRAWS,
            covered_50=bool(lo50 <= true_value <= hi50), covered_90=bool(lo90 <= true_value <= hi90),
            converged=bool(result.converged), error=None)))
    return rows


def _coverage(rows, column):
    hits = np.array([r[column] for r in rows], float)
    if hits.size == 0:
        return None, None
    p = hits.mean()
    return float(p), float(np.sqrt(max(p * (1 - p), 1e-12) / hits.size))


def _uniformity(ranks) -> tuple:
    """Chi-square test of uniform ranks 0..L over ``NUM_BINS`` equal bins: (statistic, p-value)."""
    counts = np.histogram(ranks, bins=NUM_BINS, range=(-0.5, NUM_RANK_DRAWS + 0.5))[0]
    if counts.sum() == 0:
        return None, None
    chi2, p = stats.chisquare(counts)
    return float(chi2), float(p)


def _calibration_table(rows) -> list:
    ok = [r for r in rows if r["error"] is None]
    out = []
    for method in dict.fromkeys(r["method"] for r in ok):
        for name in dict.fromkeys(r["parameter"] for r in ok if r["method"] == method):
            grp = [r for r in ok if r["method"] == method and r["parameter"] == name]
            chi2, p = _uniformity([r["rank"] for r in grp])
            c50, s50 = _coverage(grp, "covered_50")
            c90, s90 = _coverage(grp, "covered_90")
            out.append(row(COLUMNS["calibration"], dict(method=method, parameter=name, kind=grp[0]["kind"],
                                                        replicates=len(grp), rank_chi2=chi2, rank_p_value=p,
                                                        coverage_50=c50, coverage_50_se=s50, coverage_90=c90,
                                                        coverage_90_se=s90)))
    return out


def _engine_table(rows) -> list:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        grp = [r for r in rows if r["method"] == method]
        ok = [r for r in grp if r["error"] is None]
        fits = {r["replicate"]: r for r in grp}
        c50, s50 = _coverage(ok, "covered_50")
        c90, s90 = _coverage(ok, "covered_90")
        pvals = [_uniformity([r["rank"] for r in ok if r["parameter"] == name])[1]
                 for name in dict.fromkeys(r["parameter"] for r in ok)]
        pvals = [p for p in pvals if p is not None]
        out.append(row(COLUMNS["engines"], dict(
            method=method, replicates=len(fits), failed=sum(r["error"] is not None for r in fits.values()),
            not_converged=sum(r["converged"] is False for r in fits.values()), coverage_50=c50, coverage_50_se=s50,
            coverage_90=c90, coverage_90_se=s90, min_rank_p_value=min(pvals) if pvals else None,
            seconds_median=float(np.median([r["seconds"] for r in fits.values()])))))
    return out


# --------------------------------------------------------------------------- figures


def plot_calibration(tables: dict) -> dict:
    """Rank histograms (engine x parameter kind) and interval coverage per parameter."""
    import matplotlib.pyplot as plt

    ok = [r for r in tables["ranks"] if r["error"] is None]
    methods = list(dict.fromkeys(r["method"] for r in ok))
    kinds = ["weights", "means", "covariances"]
    figs = {}
    fig, axes = plt.subplots(max(1, len(methods)), len(kinds), figsize=(3.2 * len(kinds), 2.4 * max(1, len(methods))),
                             squeeze=False, layout="constrained")
    for i, method in enumerate(methods):
        for j, kind in enumerate(kinds):
            ax = axes[i, j]
            ranks = [r["rank"] for r in ok if r["method"] == method and r["kind"] == kind]
            counts = np.histogram(ranks, bins=NUM_BINS, range=(-0.5, NUM_RANK_DRAWS + 0.5))[0]
            lo, hi = stats.binom.ppf([0.005, 0.995], len(ranks), 1 / NUM_BINS) if ranks else (0, 0)
            ax.axhspan(lo, hi, color="0.85", zorder=0)
            ax.bar(np.arange(NUM_BINS), counts, width=0.9, color=engine_color(method))
            ax.set_title(f"{engine_label(method)}: {kind}", fontsize="small")
            ax.set_xticks([0, NUM_BINS - 1], ["low rank", "high rank"], fontsize="x-small")
    fig.suptitle("SBC rank histograms (uniform when calibrated)")
    figs["calibration_ranks"] = fig

    cal = tables["calibration"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False, layout="constrained")
    for ax, level in zip(axes[0], (50, 90)):
        for i, method in enumerate(methods):
            rows = [r for r in cal if r["method"] == method]
            xs = np.arange(len(rows)) + (i - (len(methods) - 1) / 2) * 0.25
            ax.errorbar(xs, [r[f"coverage_{level}"] for r in rows], yerr=[2 * r[f"coverage_{level}_se"] for r in rows],
                        fmt="o", color=engine_color(method), label=engine_label(method), capsize=2)
            ax.set_xticks(np.arange(len(rows)), [r["parameter"] for r in rows], rotation=60, fontsize="x-small")
        ax.axhline(level / 100, color="black", linestyle="--", linewidth=1)
        ax.set_ylim(0, 1.02)
        ax.set_title(f"coverage of the central {level}% interval", fontsize="small")
    axes[0, 0].legend(fontsize="small")
    figs["calibration_coverage"] = fig
    return figs
