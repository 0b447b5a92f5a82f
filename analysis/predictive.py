"""Predictive checks: replicated data from each engine's fit and from its prior, and test statistics.

One job: draw what the checks need with the model's own samplers (``models.sample_posterior_predictive``
and ``models.sample_prior``, i.e. ``numpyro.infer.Predictive`` on ``gmm_model``) and compare
replicated data with the observed data through per-dimension test statistics and their posterior
predictive p-values (Gelman, Meng & Stern 1996): ``p = P(T(x_rep) >= T(x))``; values near 0 or 1
say the fitted mixture does not reproduce that feature of the data.

Sizes: at most ``MAX_DRAWS`` replicated data sets per engine (posterior draws evenly thinned; a point
estimate is replicated), fewer when N x D is large so that one engine's replicates hold at most
``MAX_ELEMENTS`` numbers.

Imports: numpy, scipy.stats, ``models``, the seeded keys of ``analysis.sweeps.common``. Never ArviZ (``analysis.arviz_io`` stores the draws).
"""

from __future__ import annotations

import jax
import numpy as np
from scipy import stats

import models
from analysis.sweeps.common import key as rng_key
from models.params import GMMParams

__all__ = ["MAX_DRAWS", "MAX_ELEMENTS", "STATISTICS", "num_replicates", "posterior_predictive", "prior_predictive",
           "predictive_checks", "stored_count", "BAYESIAN_METHODS",
           "test_statistics", "predictive_p_values"]

MAX_DRAWS = 100
MAX_ELEMENTS = 2_000_000
STATISTICS = ("mean", "sd", "skewness", "kurtosis", "min", "max")
PRIOR_KEYS = ("concentration", "mean_loc", "mean_scale", "scale_loc", "scale_log_sd", "lkj_concentration")


def num_replicates(num_rows: int, num_features: int) -> int:
    """Replicated data sets per engine: ``MAX_DRAWS``, fewer for large N x D (at least 10)."""
    return int(max(10, min(MAX_DRAWS, MAX_ELEMENTS // max(1, num_rows * num_features))))


def _thinned_draws(result, count: int) -> GMMParams:
    """(count, ...) parameter draws: the posterior draws evenly thinned, or the point estimate repeated."""
    if result.samples is None:
        return GMMParams(*(np.broadcast_to(np.asarray(a), (count,) + np.shape(a)) for a in result.params))
    flat = GMMParams(*(np.asarray(a).reshape((-1,) + np.shape(a)[2:]) for a in result.samples))
    index = np.linspace(0, flat.weights.shape[0] - 1, min(count, flat.weights.shape[0])).round().astype(int)
    return GMMParams(*(a[index] for a in flat))


def posterior_predictive(key, result, num_rows: int) -> np.ndarray:
    """Replicated data (S, N, D) from ``result``: one data set per thinned posterior draw (or per
    replicate of a point estimate), S = ``num_replicates``."""
    return np.concatenate(list(posterior_predictive_batches(key, result, num_rows)))


def _batch_size(num_rows: int, num_features: int) -> int:
    """Replicated data sets drawn at once: as many as fit in ``MAX_ELEMENTS`` numbers (at least one)."""
    return max(1, MAX_ELEMENTS // max(1, num_rows * num_features))


def posterior_predictive_batches(key, result, num_rows: int):
    """:func:`posterior_predictive` in batches of at most ``MAX_ELEMENTS`` numbers (one batch, with
    ``key`` itself, whenever all S replicates fit: small data get exactly the same draws), so that
    large N x D never holds S full-size replicates at once (S >= 10: 10 x the data, and more in
    temporaries, measured at 5.4 GB peak for a 64 MB file before batching)."""
    count = num_replicates(num_rows, np.shape(result.params.means)[-1])
    draws = _thinned_draws(result, count)
    total = draws.weights.shape[0]
    batch = _batch_size(num_rows, np.shape(result.params.means)[-1])
    if batch >= total:
        yield np.asarray(models.sample_posterior_predictive(key, draws, num_rows)[0])
        return
    for start in range(0, total, batch):
        part = GMMParams(*(a[start : start + batch] for a in draws))
        yield np.asarray(models.sample_posterior_predictive(jax.random.fold_in(key, start), part, num_rows)[0])


def prior_predictive(key, prior: dict, num_rows: int, num_features: int, num_components: int,
                     max_kept: int | None = None):
    """(prior parameter draws GMMParams (S, ...), prior predictive data (S, N, D)) from the prior
    actually used (``FitResult.info["prior"]``, data units). ``max_kept``: keep only the first that many
    data sets (drawn in batches of ``MAX_ELEMENTS`` numbers when all S would not fit; one draw with
    ``key`` itself otherwise, as without it)."""
    kwargs = {k: np.asarray(v, np.float64) for k, v in prior.items() if k in PRIOR_KEYS}
    count = num_replicates(num_rows, num_features)
    batch = _batch_size(num_rows, num_features)
    if max_kept is None or batch >= count:
        params, x_rep, _ = models.sample_prior(key, count, num_rows, num_features, num_components, **kwargs)
        x_rep = np.asarray(x_rep)
        return models.to_numpy(params), (x_rep if max_kept is None else x_rep[:max_kept])
    params, kept = [], []
    for start in range(0, count, batch):
        size = min(batch, count - start)
        part, x_rep, _ = models.sample_prior(jax.random.fold_in(key, start), size, num_rows, num_features,
                                             num_components, **kwargs)
        params.append(models.to_numpy(part))
        have = sum(len(a) for a in kept)
        if have < max_kept:
            kept.append(np.asarray(x_rep)[: max_kept - have])
    return GMMParams(*(np.concatenate(a) for a in zip(*params))), np.concatenate(kept)


def test_statistics(x, missing=None) -> dict:
    """``{statistic: (..., D)}`` per dimension of data (..., N, D): mean, sd, skewness, excess kurtosis,
    min, max. ``missing`` (N, D) bool: cells left out of every data set's statistics (data with holes: the
    observed data's NaN cells, and the same cells of each replicate, so that both are seen the same way)."""
    x = np.asarray(x, np.float64)
    if missing is not None and np.any(missing):
        x = np.where(missing, np.nan, x)
        mean = np.nanmean(x, -2)
        centred = x - mean[..., None, :]
        m2, m3, m4 = (np.nanmean(centred**p, -2) for p in (2, 3, 4))  # scipy's biased skew / kurtosis, nan-aware
        return {"mean": mean, "sd": np.sqrt(m2), "skewness": m3 / m2**1.5, "kurtosis": m4 / m2**2 - 3.0,
                "min": np.nanmin(x, -2), "max": np.nanmax(x, -2)}
    return {
        "mean": x.mean(-2),
        "sd": x.std(-2),
        "skewness": stats.skew(x, axis=-2),
        "kurtosis": stats.kurtosis(x, axis=-2),
        "min": x.min(-2),
        "max": x.max(-2),
    }


def predictive_p_values(x, x_rep) -> dict:
    """``{statistic: (D,)}`` posterior predictive p-values ``P(T(x_rep) >= T(x))`` (ties count half),
    for observed ``x`` (N, D) and replicates ``x_rep`` (S, N, D)."""
    return p_values_from_statistics(test_statistics(x), test_statistics(x_rep))


def p_values_from_statistics(observed: dict, replicated: dict) -> dict:
    """:func:`predictive_p_values` from the statistics: observed ``{name: (D,)}``, replicated ``{name: (S, D)}``."""
    out = {}
    for name in STATISTICS:
        t_obs, t_rep = observed[name], replicated[name]
        out[name] = (np.mean(t_rep > t_obs, axis=0) + 0.5 * np.mean(t_rep == t_obs, axis=0))
    return out


STORED_ELEMENTS = 200_000  # replicated numbers stored per group in an engine's NetCDF file (float32)
BAYESIAN_METHODS = ("map", "svi", "nuts")


def stored_count(num_rows: int, num_features: int, available: int) -> int:
    """How many of ``available`` replicated data sets go into the InferenceData (all when small data)."""
    return int(max(1, min(available, STORED_ELEMENTS // max(1, num_rows * num_features))))


def predictive_checks(seed: int, results: dict, x, progress=None) -> tuple[dict, dict]:
    """Everything the report's predictive checks need, for every engine.

    Returns ``(draws, p_values)``: ``draws[method]`` is ``{"x_rep", "prior_params", "x_prior"}`` (the
    replicates to store, capped by ``stored_count``; prior entries only for the Bayesian engines, whose
    ``info["prior"]`` says what prior they used) and ``p_values[method]`` is ``{statistic: (D,) list}``
    from all the replicates (``predictive_p_values``). ``progress`` (a callable, optional) gets one line per engine.
    """
    x = np.asarray(x, np.float64)
    n, d = x.shape
    missing = np.isnan(x) if np.isnan(x).any() else None  # replicates are complete: compare the observed cells
    observed = test_statistics(x, missing)
    draws, p_values = {}, {}
    for i, (method, result) in enumerate(results.items()):
        statistics, stored = [], []
        keep = stored_count(n, d, num_replicates(n, d))
        prior = result.info.get("prior") if method in BAYESIAN_METHODS else None
        if progress is not None:
            progress(f"predictive checks of {method}: {num_replicates(n, d)} replicated data sets")
        for x_rep in posterior_predictive_batches(rng_key(seed, 7, i, 0), result, n):
            statistics.append(test_statistics(x_rep, missing))
            have = sum(len(a) for a in stored)
            if have < keep:
                stored.append(x_rep[: keep - have])
        replicated = {name: np.concatenate([t[name] for t in statistics]) for name in STATISTICS}
        p_values[method] = {k: np.asarray(v).tolist() for k, v in p_values_from_statistics(observed, replicated).items()}
        entry = {"x_rep": np.concatenate(stored), "prior_params": None, "x_prior": None}
        if prior:
            if progress is not None:
                progress(f"predictive checks of {method}: its prior predictive")
            keep = stored_count(n, d, num_replicates(n, d))
            params, x_prior = prior_predictive(rng_key(seed, 7, i, 1), prior, n, d, result.num_components, max_kept=keep)
            entry.update(prior_params=params, x_prior=x_prior)
        draws[method] = entry
    return draws, p_values
