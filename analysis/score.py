"""The recovery scorecard: how well each (aligned) engine recovered the truth.

All functions take host arrays and return plain Python / numpy values; :func:`scorecard` returns a
JSON-ready dict (the per-engine entry of ``metrics.json``, see ``analysis.report.METRICS_SCHEMA``).
Results must already be aligned (``analysis.align.align_result``): component ``k`` of the estimate
is compared with component ``k`` of the truth.
"""

from __future__ import annotations

import numpy as np

from models.density import gaussian_kl, log_likelihood
from models.params import GMMParams, covariances, to_numpy

from models.criteria import bic_of, num_parameters

__all__ = [
    "adjusted_rand_index",
    "component_errors",
    "posterior_intervals",
    "num_free_parameters",
    "bic",
    "scorecard",
    "COVERAGE_LEVEL",
]

COVERAGE_LEVEL = 0.9


def _comb2(a):
    a = np.asarray(a, dtype=np.float64)
    return a * (a - 1.0) / 2.0


def adjusted_rand_index(labels_true, labels_pred) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) from the contingency table.

    ARI = (sum_ij C(n_ij,2) - E) / (0.5 (sum_i C(a_i,2) + sum_j C(b_j,2)) - E),
    E = sum_i C(a_i,2) sum_j C(b_j,2) / C(n,2). Invariant to relabelling; 1 for identical
    partitions, about 0 for independent ones. Matches ``sklearn.metrics.adjusted_rand_score``
    (including its convention of 1.0 when both partitions are trivial).
    """
    labels_true = np.asarray(labels_true).ravel()
    labels_pred = np.asarray(labels_pred).ravel()
    if labels_true.shape != labels_pred.shape:
        raise ValueError(f"label arrays differ in length: {labels_true.shape[0]} vs {labels_pred.shape[0]}")
    n = labels_true.shape[0]
    _, ti = np.unique(labels_true, return_inverse=True)
    _, pi = np.unique(labels_pred, return_inverse=True)
    table = np.zeros((ti.max(initial=-1) + 1, pi.max(initial=-1) + 1), dtype=np.int64)
    np.add.at(table, (ti, pi), 1)
    if n < 2 or (table.shape[0] == table.shape[1] == 1) or (table.shape[0] == table.shape[1] == n):
        return 1.0  # both partitions trivial (one cluster each, or all singletons)
    sum_cells = _comb2(table).sum()
    sum_rows = _comb2(table.sum(1)).sum()
    sum_cols = _comb2(table.sum(0)).sum()
    expected = sum_rows * sum_cols / _comb2(n)
    max_index = 0.5 * (sum_rows + sum_cols)
    if max_index == expected:
        return 1.0
    return float((sum_cells - expected) / (max_index - expected))


def component_errors(truth: GMMParams, estimate: GMMParams) -> dict:
    """Per-component errors of an ALIGNED estimate, each a (K,) array.

    weight_abs_error : |w_k - w_k*|
    mean_l2_error : ||mu_k - mu_k*||_2
    cov_frobenius_error : ||Sigma_k - Sigma_k*||_F
    kl_true_to_estimate : KL(N(mu_k*, Sigma_k*) || N(mu_k, Sigma_k)) in nats
    """
    truth, estimate = to_numpy(truth), to_numpy(estimate)
    return {
        "weight_abs_error": np.abs(estimate.weights - truth.weights),
        "mean_l2_error": np.linalg.norm(estimate.means - truth.means, axis=-1),
        "cov_frobenius_error": np.linalg.norm(
            np.asarray(covariances(estimate)) - np.asarray(covariances(truth)), ord="fro", axis=(-2, -1)
        ),
        "kl_true_to_estimate": np.asarray(gaussian_kl(truth.means, truth.scale_tril, estimate.means, estimate.scale_tril)),
    }


def _param_arrays(p: GMMParams) -> dict:
    p = to_numpy(p)
    return {"weights": p.weights, "means": p.means, "covariances": np.asarray(covariances(p))}


def posterior_intervals(samples: GMMParams, truth: GMMParams | None = None, level: float = COVERAGE_LEVEL) -> dict:
    """Posterior mean, sd and central ``level`` interval of weights, means and covariances of
    ALIGNED draws (leading dims flattened); with ``truth``, whether each interval covers it.

    Returns ``{name: {"mean", "sd", "lower", "upper"[, "truth", "covered"]}}`` of nested lists and
    ``{"coverage": fraction of all true values covered}`` when ``truth`` is given.
    """
    arrays = _param_arrays(samples)
    true_arrays = _param_arrays(truth) if truth is not None else None
    out: dict = {}
    covered_all = []
    tail = (1.0 - level) / 2.0
    for name, a in arrays.items():
        event_ndim = {"weights": 1, "means": 2, "covariances": 3}[name]
        flat = a.reshape((-1,) + a.shape[a.ndim - event_ndim:])
        lower, upper = np.quantile(flat, [tail, 1.0 - tail], axis=0)
        entry = {"mean": flat.mean(0), "sd": flat.std(0, ddof=1) if flat.shape[0] > 1 else np.zeros(flat.shape[1:]),
                 "lower": lower, "upper": upper}
        if true_arrays is not None:
            t = true_arrays[name]
            covered = (lower <= t) & (t <= upper)
            entry["truth"] = t
            entry["covered"] = covered
            if name == "covariances":  # count each symmetric off-diagonal entry once
                rows, cols = np.tril_indices(covered.shape[-1])
                covered = covered[..., rows, cols]
            covered_all.append(np.ravel(covered))
        out[name] = {key: np.asarray(v).tolist() for key, v in entry.items()}
    out["level"] = level
    out["num_draws"] = int(np.prod(np.shape(samples.weights)[:-1]))
    if covered_all:
        out["coverage"] = float(np.mean(np.concatenate(covered_all)))
    return out


def num_free_parameters(num_components: int, num_features: int, covariance_type: str = "full") -> int:
    """Free parameters of a GMM (:func:`models.criteria.num_parameters`, sklearn's count)."""
    return num_parameters(num_components, num_features, covariance_type)


def bic(log_lik: float, num_samples: int, num_components: int, num_features: int, covariance_type: str = "full") -> float:
    """Bayesian information criterion, -2 log L + p log N (lower is better; :func:`models.criteria.bic_of`)."""
    return bic_of(log_lik, num_samples, num_components, num_features, covariance_type)


def _assignments(result) -> np.ndarray:
    a = result.info.get("assignments")
    if a is None:
        return np.asarray(result.assignments)
    return np.asarray(a)


def _f(v):
    return None if v is None else float(v)


def scorecard(result, x, truth: GMMParams | None = None, z=None) -> dict:
    """JSON-ready recovery scorecard of one ALIGNED ``FitResult`` (see ``METRICS_SCHEMA`` in
    ``analysis.report``). Without ``truth`` / ``z`` only what can be shown on user data:
    log-likelihood, BIC, iterations, time and cluster sizes (error and ARI keys are None)."""
    x = np.asarray(x)
    n, d = x.shape
    k = result.num_components
    params = to_numpy(result.params)
    ll = float(log_likelihood(params, x))
    labels = _assignments(result)
    card = {
        "method": result.method,
        "log_likelihood": ll,
        "log_likelihood_per_obs": ll / n,
        "log_likelihood_truth": None,
        "covariance_type": result.info.get("covariance_type", "full"),
        "bic": bic(ll, n, k, d, result.info.get("covariance_type", "full")),
        "num_iters": int(result.num_iters),
        "converged": bool(result.converged),
        "seconds": float(result.seconds),
        "compile_seconds": _f(result.info.get("compile_seconds")),
        "run_seconds": _f(result.info.get("run_seconds")),
        "cluster_sizes": np.bincount(labels, minlength=k).astype(int).tolist(),
        "weights": params.weights.tolist(),
        "means": params.means.tolist(),
        "covariances": np.asarray(covariances(params)).tolist(),
        "ari": None,
        "components": None,
        "summary": None,
        "posterior": None,
        "num_divergences": None if result.info.get("num_divergences") is None else int(result.info["num_divergences"]),
        "rhat_before": result.info.get("rhat_before"),
        "rhat_after": result.info.get("rhat_after"),
        "relabelled_fraction": _f(result.info.get("relabelled_fraction")),
    }
    if truth is not None:
        truth = to_numpy(truth)
        card["log_likelihood_truth"] = float(log_likelihood(truth, x))
        errs = component_errors(truth, params)
        card["components"] = {key: v.tolist() for key, v in errs.items()}
        card["summary"] = {
            "weight_abs_error_max": float(errs["weight_abs_error"].max()),
            "mean_l2_error_max": float(errs["mean_l2_error"].max()),
            "cov_frobenius_error_max": float(errs["cov_frobenius_error"].max()),
            "kl_true_to_estimate_mean": float(errs["kl_true_to_estimate"].mean()),
            "kl_true_to_estimate_max": float(errs["kl_true_to_estimate"].max()),
        }
    if z is not None:
        card["ari"] = adjusted_rand_index(z, labels)
    if result.samples is not None:
        card["posterior"] = posterior_intervals(result.samples, truth)
    return card
