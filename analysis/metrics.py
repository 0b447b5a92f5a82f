"""metrics.json of the report: one job, its schema, its validator and the pieces that build it.

``METRICS_SCHEMA`` documents every key (schema_version 1); :func:`validate_metrics` refuses a dict
with a missing or undocumented key; :func:`build_metrics` assembles the sections (the engines'
scorecards come from :func:`analysis.score.scorecard`, with ``netcdf``, ``diagnostics`` and ``loo``
added by the report) and validates the result. The builders are pure: the report computes the
numbers (log-likelihoods, ArviZ summaries) and passes them in.

Imports: numpy and :mod:`analysis.files` (JSON cleaning); no JAX, no ArviZ.
"""

from __future__ import annotations

import numpy as np

from analysis.files import clean_json

__all__ = [
    "METRICS_SCHEMA",
    "SCHEMA_VERSION",
    "ALIGNMENT_METHOD",
    "validate_metrics",
    "problem_metrics",
    "alignment_metrics",
    "diagnostics_metrics",
    "compare_metrics",
    "timings_metrics",
    "build_metrics",
    "engine_notes",
]

SCHEMA_VERSION = 1
ALIGNMENT_METHOD = ("Hungarian assignment (scipy linear_sum_assignment) on the symmetrised Gaussian KL between "
                    "components; posterior draws relabelled one by one against the reference")
COMPARE_COLUMNS = ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")

METRICS_SCHEMA: dict = {
    "schema_version": "int, 1",
    "problem": {
        "source": '"seed_problem" (simulated from models.seed_problem()) or "file"',
        "data_file": "path given to --data, or null",
        "num_samples": "N, rows of the data",
        "num_features": "D, columns of the data",
        "num_components": "K fitted",
        "columns": "(D,) column names: the CSV header, or x0, x1, ... (simulated data, .npy)",
        "seed": "the --seed integer (data and every engine's key derive from it)",
        "truth": "{weights (K,), means (K,D), covariances (K,D,D)} or null for user data",
        "log_likelihood_truth": "total log-likelihood of the data at the truth, or null",
        "streamed": "true when the --data .npy was read from disk in passes (analysis.streamed): em and hard_em "
                    "fit in passes, svi by minibatches (map, nuts skipped, see failed); figures and checks on a subsample",
        "stream_mode": '--stream given with --data ("auto", "always", "never"), or null',
        "stream_threshold_bytes": "file size above which --stream auto streams a .npy (analysis.streamed.STREAM_THRESHOLD_BYTES)",
        "data_bytes": "size of the --data file in bytes, or null",
        "subsample_rows": "streamed: rows of the subsample that figures, predictive checks and the NetCDF files' "
                          "observed_data / log_likelihood use (N when N is smaller); null when not streamed",
        "subsample": "streamed: how the subsample was drawn and what uses it (log-likelihood, BIC, cluster sizes "
                     "and degeneracy counts are of all rows); null when not streamed",
        "missing": "null when no value was missing; else (analysis.missing_report) {num_rows_counted (the rows the counts are "
                   "of: N, or a streamed file's subsample), num_cells_missing, "
                   "fraction_cells_missing, rows_with_missing (of the N rows fitted), columns: [{column, missing, percent}], "
                   "patterns: [{missing_columns, rows, percent}] (which columns are missing together, most frequent first), "
                   "dropped_rows: {count, rows (0-based indices among the file's data rows), lines (CSV) | null, reason} "
                   "(rows with every value missing: not fitted, not in N), handling (marginalised under MAR by every "
                   "engine), imputed_file (\"imputed.csv\") | null}",
    },
    "model_selection": "null when K was given (or the seed problem); else how K was chosen (analysis.model_choice): "
                       "{criterion: \"bic\", k, covariance_type (EM's), icl_choice: {k, covariance_type}, max_k, num_rows (the rows "
                       "fitted: a streamed file's subsample), "
                       "covariance_types, fitted (what each engine fits), seconds, table: [{covariance_type, k, loglik, "
                       "num_parameters, bic, icl, degenerate (count of degenerate components: not eligible), error, "
                       "seconds}]}",
    "alignment": {
        "reference": '"truth" or the name of the engine whose estimate is the reference (user data)',
        "method": "how labels were matched (Hungarian, symmetrised Gaussian KL)",
        "rhat_method": '"rank": ArviZ rank-normalised split R-hat (Vehtari et al. 2021)',
    },
    "engines": {
        "<method>": {
            "method": "engine name",
            "log_likelihood": "total marginal log-likelihood of the data at the (aligned) point estimate",
            "log_likelihood_per_obs": "the same divided by N",
            "log_likelihood_truth": "at the truth, or null",
            "covariance_type": 'the covariances fitted: "full" (MAP, SVI and NUTS always; EM and hard EM by default), '
                               '"diag", "spherical" or "tied" (EM, hard EM: --option or the fallback of analysis.budget)',
            "bic": "-2 log L + p log N, p = sklearn's parameter count for the fit's covariance type (full: (K-1) + K D + K D (D+1) / 2)",
            "num_iters": "iterations / optimisation steps / draws per chain",
            "converged": "bool, the engine's stopping rule was met",
            "seconds": "wall time of the fit (compile included)",
            "compile_seconds": "compile time, or null",
            "run_seconds": "run time after compilation, or null",
            "cluster_sizes": "(K,) points assigned to each aligned component",
            "weights": "(K,) aligned point estimate",
            "means": "(K,D) aligned point estimate",
            "covariances": "(K,D,D) aligned point estimate",
            "ari": "adjusted Rand index of the assignments vs the true z, or null",
            "components": "{weight_abs_error, mean_l2_error, cov_frobenius_error, kl_true_to_estimate}: (K,) lists, or null",
            "summary": "{weight_abs_error_max, mean_l2_error_max, cov_frobenius_error_max, kl_true_to_estimate_mean, kl_true_to_estimate_max}, or null",
            "posterior": "engines with draws: {weights|means|covariances: {mean, sd, lower, upper[, truth, covered]}, level, num_draws[, coverage]}, else null",
            "num_divergences": "NUTS divergent transitions, or null",
            "rhat_before": "{weights, means, covariances}: max R-hat of the draws before relabelling, or null",
            "rhat_after": "the same after relabelling against the reference, or null",
            "relabelled_fraction": "share of draws whose relabelling differs from the most frequent one (label-switched draws), or null",
            "diagnostics": "MCMC engines (NUTS): {rhat_max, ess_bulk_min, ess_tail_min} from az.summary, else null (SVI "
                           "too: its draws are independent draws of the guide, whose R-hat / ESS measure the random "
                           "number generator, not convergence)",
            "sampler": "NUTS: {bfmi (per chain, ArviZ's; < 0.3 flags poor exploration), bfmi_min, step_size (per chain, "
                       "after warm-up), tree_depth_mean, tree_depth_max, max_tree_depth, hit_max_tree_depth (share of "
                       "draws at it), acceptance_rate_mean, divergences} from sample_stats, else null",
            "loo": "engines with draws: {elpd_loo, se, p_loo, pareto_k_max, warning, draws} from az.loo (draws: the "
                   "posterior draws it used, every draw up to arviz_io.LOO_MAX_VALUES pointwise values, evenly "
                   "spaced ones above), else null",
            "netcdf": "file name of the engine's InferenceData, null when it could not be written (a note says why)",
            "warnings": "one-line warnings of the engine (FitResult.info['warnings']: failed NUTS convergence conditions, degenerate components), [] when none",
            "degenerate_components": "FitResult.info['degenerate_components']: [{component, reasons, ...}], [] when none",
            "prior": "the prior actually used, in the data's units ({description, ...}; NumPyro engines), null for em / hard_em",
            "uncertainty": "classification uncertainty 1 - max_k P(z = k | x) of each row at the aligned point estimate "
                           "(analysis.assignments; per row in assignments.csv and the NetCDF's assignments group): "
                           "{mean, max, num_uncertain (rows above threshold), threshold}",
            "imputation": "null without missing values; else the engine's imputations of the missing cells "
                          "(imputed.csv): {method (posterior multiple imputation for svi / nuts, conditional draws at the "
                          "point estimate for em / hard_em / map), level (of the [lower, upper] intervals), num_cells, "
                          "mean_interval_width: {column: width}}",
            "ppc_p_values": "posterior predictive p-values P(T(x_rep) >= T(x)) per test statistic (mean, sd, skewness, kurtosis, min, max), one per column: {statistic: [D]}; values near 0 or 1 flag a feature the fit does not reproduce; null if not computed",
        }
    },
    "compare": "az.compare (LOO) rows [{engine, rank, elpd_loo, p_loo, elpd_diff, weight, se, dse, warning}] for >= 2 engines with draws, else null",
    "failed": "{method: one-line reason} of engines that failed (fit, scoring or InferenceData); the others are reported; gmm-report exits 3",
    "notes": "one-line notes: library warnings caught during the run (category: message), figures that could not be drawn; [] when none",
    "timings": {
        "total_seconds": "wall time of the whole report",
        "fit_seconds": "{method: seconds}",
        "compile_seconds": "{method: seconds or null}",
        "run_seconds": "{method: seconds or null}",
    },
}


def validate_metrics(metrics: dict, schema: dict = METRICS_SCHEMA, where: str = "metrics") -> None:
    """Raise ``ValueError`` if ``metrics`` lacks a documented key or has an undocumented one."""
    if not isinstance(metrics, dict):
        raise ValueError(f"{where} must be an object")
    if set(schema) == {"<method>"}:
        for name, value in metrics.items():
            validate_metrics(value, schema["<method>"], f"{where}.{name}")
        return
    missing = sorted(set(schema) - set(metrics))
    extra = sorted(set(metrics) - set(schema))
    if missing or extra:
        raise ValueError(f"{where}: missing keys {missing}, undocumented keys {extra}")
    for key, sub in schema.items():
        if isinstance(sub, dict):
            validate_metrics(metrics[key], sub, f"{where}.{key}")


def problem_metrics(*, source: str, data_file, x, num_components: int, seed: int, truth, truth_covariances,
                    log_likelihood_truth, columns=None, shape=None, stream: dict | None = None,
                    missing: dict | None = None) -> dict:
    """The ``problem`` section: ``x`` (N, D) (``shape`` (N, D) instead when ``x`` is a streamed file's
    subsample); ``truth`` a GMMParams or None, with its covariances (K, D, D) and the total log-likelihood
    of ``x`` at it (both None without a truth); ``stream`` the streaming entries
    (``analysis.streamed.problem_fields``; default: not streamed); ``missing`` what was missing
    (``analysis.missing_report.missing_metrics``) or None."""
    n, d = shape if shape is not None else x.shape
    stream = stream or {"streamed": False, "stream_mode": None, "stream_threshold_bytes": None, "data_bytes": None,
                        "subsample_rows": None, "subsample": None}
    return {
        "source": source,
        "data_file": str(data_file) if data_file else None,
        "num_samples": int(n),
        "num_features": int(d),
        "num_components": int(num_components),
        "columns": [str(c) for c in columns] if columns is not None else [f"x{j}" for j in range(d)],
        "seed": int(seed),
        "truth": None if truth is None else {
            "weights": np.asarray(truth.weights).tolist(),
            "means": np.asarray(truth.means).tolist(),
            "covariances": np.asarray(truth_covariances).tolist(),
        },
        "log_likelihood_truth": None if truth is None else float(log_likelihood_truth),
        **{key: stream[key] for key in ("streamed", "stream_mode", "stream_threshold_bytes", "data_bytes",
                                        "subsample_rows", "subsample")},
        "missing": missing,
    }


def alignment_metrics(reference_name: str, rhat_method: str) -> dict:
    """The ``alignment`` section: what the labels were aligned to and how R-hat was computed."""
    return {"reference": reference_name, "method": ALIGNMENT_METHOD, "rhat_method": rhat_method}


def diagnostics_metrics(summary) -> dict:
    """An engine's ``diagnostics`` from its ``az.summary`` frame: max R-hat, min bulk and tail ESS."""
    return {
        "rhat_max": _nan_reduce(np.max, summary, "r_hat"),
        "ess_bulk_min": _nan_reduce(np.min, summary, "ess_bulk"),
        "ess_tail_min": _nan_reduce(np.min, summary, "ess_tail"),
    }


def _nan_reduce(fn, frame, column):
    """``fn`` over the finite entries of ``frame[column]``; None when there are none (e.g. R-hat of one chain)."""
    if column not in frame:
        return None
    values = np.asarray(frame[column], dtype=float)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def compare_metrics(compare_df) -> list[dict]:
    """The ``compare`` rows from an ``az.compare`` frame (one row per engine, index = engine name)."""
    return [
        {"engine": str(name), **{c: clean_json(row[c]) for c in COMPARE_COLUMNS if c in row}}
        for name, row in compare_df.iterrows()
    ]


def timings_metrics(results: dict, total_seconds: float) -> dict:
    """The ``timings`` section from ``{method: FitResult}`` and the report's wall time so far."""
    return {
        "total_seconds": total_seconds,
        "fit_seconds": {m: float(r.seconds) for m, r in results.items()},
        "compile_seconds": {m: r.info.get("compile_seconds") for m, r in results.items()},
        "run_seconds": {m: r.info.get("run_seconds") for m, r in results.items()},
    }


def engine_notes(info: dict) -> dict:
    """An engine card's ``warnings``, ``degenerate_components`` and ``prior`` from its FitResult ``info``
    (keys absent from an engine are [] / [] / None)."""
    return {
        "warnings": [" ".join(str(w).split()) for w in (info.get("warnings") or [])],
        "degenerate_components": clean_json(list(info.get("degenerate_components") or [])),
        "prior": clean_json(info.get("prior")),
    }


def build_metrics(*, problem: dict, alignment: dict, engines: dict, compare, failed: dict, timings: dict,
                  notes=(), model_selection: dict | None = None) -> dict:
    """The whole metrics dict (keys in the schema's order), validated against ``METRICS_SCHEMA``."""
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "problem": problem,
        "model_selection": model_selection,
        "alignment": alignment,
        "engines": engines,
        "compare": compare,
        "failed": failed,
        "notes": list(notes),
        "timings": timings,
    }
    validate_metrics(metrics)
    return metrics
