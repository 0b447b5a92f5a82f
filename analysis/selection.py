"""Choosing the number of components K: BIC, AIC, ICL for point fits, PSIS-LOO and WAIC for posteriors.

Conventions (stated once, used everywhere in this package)
----------------------------------------------------------
* ``bic = -2 log L + p log N`` and ``aic = -2 log L + 2 p`` exactly as scikit-learn's
  ``GaussianMixture.bic`` / ``.aic`` (LOWER is better), with ``log L`` the total marginal
  log-likelihood at the fitted parameters and ``p`` from :func:`num_parameters` (sklearn's
  ``_n_parameters``). Note mclust reports ``BIC = 2 log L - p log N`` (higher is better): the same
  number with the opposite sign. The formulas are :mod:`models.criteria`'s (functions of params and x,
  shared with ``inference.estimator``); this module adds FitResults, LOO / WAIC and choosing K.
* ``icl = bic + 2 * sum_n H(r_n)`` with ``H(r_n) = -sum_k r_nk log r_nk`` the entropy of the
  responsibilities at the fitted parameters (Biernacki, Celeux & Govaert 2000, "ICL-BIC"); lower is
  better. It penalises overlapping components that BIC accepts. The responsibilities are always
  the soft posterior at the point estimate (also for hard EM).
* ``loo`` is ArviZ's PSIS-LOO ``elpd_loo`` and ``waic`` the ``elpd_waic`` (expected log pointwise
  predictive density, log scale: HIGHER is better; ``-2 * elpd`` is the deviance scale comparable
  in direction to BIC). They need posterior draws (NUTS, SVI) and come from ``az.loo`` / ``az.waic``
  through ``analysis.arviz_io`` (the only module that imports ArviZ).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import numpy as np

from models import criteria
from models.criteria import COVARIANCE_TYPES, num_parameters  # re-exported: the criteria's own definitions
from models.params import GMMParams, to_numpy

__all__ = [
    "COVARIANCE_TYPES",
    "CRITERIA",
    "LOWER_IS_BETTER",
    "num_parameters",
    "total_log_likelihood",
    "bic",
    "aic",
    "icl",
    "responsibility_entropy",
    "waic",
    "loo",
    "criteria_row",
    "select",
    "select_num_components",
    "Selection",
]

CRITERIA = ("bic", "aic", "icl", "loo", "waic")
LOWER_IS_BETTER = {"bic": True, "aic": True, "icl": True, "loo": False, "waic": False}
POINT_CRITERIA = ("bic", "aic", "icl")
POSTERIOR_CRITERIA = ("loo", "waic")
POSTERIOR_METHODS = ("nuts", "svi")


def _params_of(result_or_params) -> GMMParams:
    params = result_or_params if isinstance(result_or_params, GMMParams) else result_or_params.params
    return to_numpy(params)


def _covariance_type(result_or_params, covariance_type):
    if covariance_type is not None:
        return covariance_type
    info = getattr(result_or_params, "info", None) or {}
    return info.get("covariance_type", "full")


def total_log_likelihood(result_or_params, x) -> float:
    """Total marginal log-likelihood of ``x`` (N, D) at a FitResult's point estimate (or a GMMParams)."""
    return criteria.total_log_likelihood(_params_of(result_or_params), x)


def bic(result, x, covariance_type: str | None = None) -> float:
    """sklearn's BIC ``-2 log L + p log N`` (lower is better; :func:`models.criteria.bic`) of a FitResult
    or GMMParams. ``covariance_type`` defaults to the fit's ``info["covariance_type"]`` (EM) or "full"."""
    return criteria.bic(_params_of(result), x, _covariance_type(result, covariance_type))


def aic(result, x, covariance_type: str | None = None) -> float:
    """sklearn's AIC ``-2 log L + 2 p`` (lower is better; :func:`models.criteria.aic`)."""
    return criteria.aic(_params_of(result), x, _covariance_type(result, covariance_type))


def responsibility_entropy(result_or_params, x) -> float:
    """``sum_n H(r_n)``, the entropy (nats) of the soft responsibilities at the point estimate."""
    return criteria.responsibility_entropy(_params_of(result_or_params), x)


def icl(result, x, covariance_type: str | None = None) -> float:
    """ICL-BIC (Biernacki et al. 2000): ``bic + 2 * sum_n H(r_n)`` (lower is better; :func:`models.criteria.icl`)."""
    return criteria.icl(_params_of(result), x, _covariance_type(result, covariance_type))


def waic(log_lik_draws) -> dict:
    """WAIC (``az.waic`` through ``analysis.arviz_io``) of an (S, N) pointwise log-likelihood matrix.

    Returns ``{"elpd_waic", "se", "p_waic", "warning"}``; elpd is higher-is-better. ArviZ's
    ``p_waic`` uses the population variance (ddof = 0) of the pointwise log-likelihoods.
    """
    from analysis import arviz_io  # the one module that imports ArviZ

    return arviz_io.waic_of_pointwise(log_lik_draws)


def loo(result, x) -> dict:
    """PSIS-LOO of a fit with posterior draws via ``analysis.arviz_io`` (elpd_loo, se, p_loo,
    pareto_k_max, warning)."""
    from analysis import arviz_io  # the one module that imports ArviZ

    return arviz_io.loo(arviz_io.to_inference_data(result, np.asarray(x)))


def criteria_row(result, x, covariance_type: str | None = None, posterior: bool | None = None) -> dict:
    """All criteria of one fit: ``k, loglik, num_parameters, bic, aic, icl, entropy`` and, for fits
    with ``samples`` (or ``posterior=True``), ``loo, loo_se, p_loo, pareto_k_max, waic, waic_se, p_waic``
    (None otherwise)."""
    x = np.asarray(x)
    params = _params_of(result)
    k = int(params.weights.shape[-1])
    ctype = _covariance_type(result, covariance_type)
    ll = total_log_likelihood(params, x)
    ent = responsibility_entropy(params, x)
    p = num_parameters(k, x.shape[1], ctype)
    n = x.shape[0]
    row = {
        "k": k,
        "loglik": ll,
        "num_parameters": p,
        "bic": -2.0 * ll + p * math.log(n),
        "aic": -2.0 * ll + 2.0 * p,
        "icl": -2.0 * ll + p * math.log(n) + 2.0 * ent,
        "entropy": ent,
        "loo": None, "loo_se": None, "p_loo": None, "pareto_k_max": None,
        "waic": None, "waic_se": None, "p_waic": None,
    }
    samples = getattr(result, "samples", None)
    if posterior is None:
        posterior = samples is not None
    if posterior and samples is not None:
        from analysis import arviz_io  # the one module that imports ArviZ

        idata = arviz_io.to_inference_data(result, x)
        lo = arviz_io.loo(idata)
        row.update(loo=lo["elpd_loo"], loo_se=lo["se"], p_loo=lo["p_loo"], pareto_k_max=lo["pareto_k_max"])
        w = arviz_io.waic(idata)
        row.update(waic=w["elpd_waic"], waic_se=w["se"], p_waic=w["p_waic"])
    return row


def select(rows, criterion: str, method: str | None = None, exclude_degenerate: bool = False):
    """K with the best ``criterion`` among ``rows`` (dicts with ``k`` and the criterion; optionally
    only those with ``row["method"] == method``; with ``exclude_degenerate``, only rows whose fit has no
    degenerate component, ``row["degenerate"] == 0``). None when no row has a finite value."""
    if criterion not in LOWER_IS_BETTER:
        raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    best_k, best_v = None, None
    for row in rows:
        if method is not None and row.get("method") != method:
            continue
        if exclude_degenerate and row.get("degenerate"):
            continue
        v = row.get(criterion)
        if v is None or not np.isfinite(v):
            continue
        better = best_v is None or (v < best_v if LOWER_IS_BETTER[criterion] else v > best_v)
        if better:
            best_k, best_v = int(row["k"]), float(v)
    return best_k


class Selection(NamedTuple):
    """What :func:`select_num_components` returns.

    table : list of row dicts (one per K: ``method, k, loglik, num_parameters, bic, aic, icl,
        entropy, loo, loo_se, p_loo, pareto_k_max, waic, waic_se, p_waic, degenerate, seconds, error``;
        ``degenerate`` counts the fit's degenerate components, ``inference.diagnostics``).
    selected : ``{criterion: K}`` for each requested criterion (None if it could not be computed);
        K values whose fit has a degenerate component are excluded when ``exclude_degenerate``.
    fits : ``{K: FitResult}`` of the successful fits.
    """

    table: list
    selected: dict
    fits: dict


def select_num_components(x, ks=range(1, 9), key=None, method: str = "em", criteria=None,
                          exclude_degenerate: bool = True, **fit_options) -> Selection:
    """Fit ``method`` for every K in ``ks`` and select K by each criterion.

    Parameters
    ----------
    x : (N, D) data.
    ks : the K to try (default 1..8).
    key : jax PRNG key (default ``PRNGKey(0)``); K's fit uses ``fold_in(key, K)``.
    method : any ``inference.fit`` engine; "nuts"/"svi" add LOO and WAIC.
    criteria : subset of ``CRITERIA``; default bic/aic/icl for point engines, all five for nuts/svi.
    exclude_degenerate : skip K whose fit has a degenerate component (a covariance collapsed onto a
        lower-dimensional set: its likelihood is unbounded, so BIC would reward it; default True).
    **fit_options : passed to ``inference.fit`` (EM defaults here: ``n_init=5`` restarts).

    A K whose fit raises gets a row with ``error`` set and no criteria.
    """
    import time

    from inference import fit

    x = np.asarray(x)
    key = jax.random.PRNGKey(0) if key is None else key
    if criteria is None:
        criteria = CRITERIA if method in POSTERIOR_METHODS else POINT_CRITERIA
    unknown = [c for c in criteria if c not in LOWER_IS_BETTER]
    if unknown:
        raise ValueError(f"unknown criterion {unknown[0]!r}; choose from {', '.join(CRITERIA)}")
    if method in ("em", "hard_em"):
        fit_options = {"n_init": 5, **fit_options}
    table, fits = [], {}
    for k in ks:
        k = int(k)
        start = time.perf_counter()
        try:
            result = fit(method, jax.random.fold_in(key, k), x, k, **fit_options)
            row = criteria_row(result, x, posterior=any(c in POSTERIOR_CRITERIA for c in criteria))
            row["degenerate"] = len(result.info.get("degenerate_components", []))
            row["error"] = None
            fits[k] = result
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            row = {"k": k, "error": f"{type(exc).__name__}: {exc}".splitlines()[0]}
        row = {"method": method, **row, "seconds": time.perf_counter() - start}
        table.append(row)
    selected = {c: select(table, c, exclude_degenerate=exclude_degenerate) for c in criteria}
    return Selection(table, selected, fits)
