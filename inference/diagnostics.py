"""MCMC convergence diagnostics for the engines' own ``converged`` flag (host-side numpy).

Rank-normalised split R-hat, bulk ESS and tail ESS as defined by Vehtari, Gelman, Simpson, Carpenter &
Bürkner (2021), the numbers ArviZ reports (``tests/test_diagnostics.py`` checks them against ArviZ).
The autocorrelation-based ESS itself is NumPyro's ``numpyro.diagnostics.effective_sample_size``
(Stan's estimator), applied to the rank-normalised split chains; nothing else is hand-written.
inference cannot import ArviZ (analysis owns it), hence this module.

``convergence_warnings`` turns the numbers into the words behind ``FitResult.converged``:
R-hat <= 1.01, bulk and tail ESS >= 100 per chain, no divergent transitions.
"""

from __future__ import annotations

import numpy as np
from numpyro.diagnostics import effective_sample_size, split_gelman_rubin
from scipy.special import ndtri
from scipy.stats import rankdata

from models.params import GMMParams, covariances

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
MAX_DIVERGENT_FRACTION = 0.0

__all__ = ["RHAT_MAX", "ESS_PER_CHAIN_MIN", "MAX_DIVERGENT_FRACTION", "rank_rhat", "ess_bulk", "ess_tail",
           "parameter_draws", "diagnose", "convergence_warnings"]


def _split(draws: np.ndarray) -> np.ndarray:
    """(chain, draw) -> (2 chain, draw // 2): each chain cut in halves (the middle draw dropped if odd)."""
    half = draws.shape[1] // 2
    return np.concatenate([draws[:, :half], draws[:, draws.shape[1] - half:]], axis=0)


def _z_scale(draws: np.ndarray) -> np.ndarray:
    """Rank-normalised draws: normal scores of the pooled ranks (Blom's offset 3/8)."""
    ranks = rankdata(draws, method="average").reshape(draws.shape)
    return ndtri((ranks - 0.375) / (draws.size + 0.25))


def _rhat(draws: np.ndarray) -> float:
    """Classic R-hat of (chain, draw) draws (already split)."""
    n = draws.shape[1]
    between = n * np.var(draws.mean(axis=1), ddof=1)
    within = np.mean(np.var(draws, axis=1, ddof=1))
    return float(np.sqrt((between / within + n - 1) / n))


def rank_rhat(draws) -> float:
    """Rank-normalised split R-hat of (chain, draw) draws: max of the bulk and folded (tail) R-hat."""
    draws = np.asarray(draws, np.float64)
    bulk = _rhat(_z_scale(_split(draws)))
    folded = np.abs(draws - np.median(draws))
    return max(bulk, _rhat(_z_scale(_split(folded))))


def _ess(draws: np.ndarray) -> float:
    return float(effective_sample_size(draws))


def ess_bulk(draws) -> float:
    """Bulk ESS: ESS of the rank-normalised split chains."""
    return _ess(_z_scale(_split(np.asarray(draws, np.float64))))


def ess_tail(draws) -> float:
    """Tail ESS: the smaller ESS of the indicators of the 5% and 95% quantiles (split chains)."""
    draws = np.asarray(draws, np.float64)
    out = []
    for prob in (0.05, 0.95):
        indicator = (draws <= np.quantile(draws, prob)).astype(np.float64)
        out.append(_ess(_split(indicator)))
    return min(out)


def parameter_draws(samples: GMMParams) -> dict:
    """``{"weights[0]": (chain, draw), "means[0, 1]": ..., "covariances[0, 1, 1]": ...}`` of every
    element that varies (constant elements, e.g. a K = 1 weight, have no R-hat)."""
    arrays = {"weights": np.asarray(samples.weights), "means": np.asarray(samples.means),
              "covariances": np.asarray(covariances(samples))}
    out = {}
    for name, values in arrays.items():
        for index in np.ndindex(values.shape[2:]):
            if name == "covariances" and index[-1] < index[-2]:
                continue  # symmetric: the upper triangle says it all
            column = values[(slice(None), slice(None)) + index]
            if np.ptp(column) > 0:
                out[f"{name}[{', '.join(str(i) for i in index)}]"] = column
    return out


def diagnose(samples: GMMParams) -> dict:
    """Worst R-hat and smallest bulk/tail ESS over the elements of aligned draws (chain, draw, ...).

    Returns ``{"rhat_max", "ess_bulk_min", "ess_tail_min", "worst_rhat", "worst_ess"}`` (the last two
    name the element); R-hat and ESS are None with fewer than 2 chains or 4 draws."""
    draws = parameter_draws(samples)
    chains, num_draws = np.shape(samples.weights)[:2]
    if chains < 2 or num_draws < 4 or not draws:
        return {"rhat_max": None, "ess_bulk_min": None, "ess_tail_min": None, "worst_rhat": None, "worst_ess": None}
    rhat = {k: rank_rhat(v) for k, v in draws.items()}
    bulk = {k: ess_bulk(v) for k, v in draws.items()}
    tail = {k: ess_tail(v) for k, v in draws.items()}
    worst_rhat = max(rhat, key=rhat.get)
    worst_ess = min(draws, key=lambda k: min(bulk[k], tail[k]))
    return {"rhat_max": rhat[worst_rhat], "ess_bulk_min": min(bulk.values()), "ess_tail_min": min(tail.values()),
            "worst_rhat": worst_rhat, "worst_ess": worst_ess}


def convergence_warnings(diagnostics: dict, num_chains: int, num_divergences: int, num_draws_total: int) -> list:
    """The failed convergence conditions, in words (empty: converged).

    Conditions: rank-normalised R-hat <= ``RHAT_MAX`` after relabelling; bulk and tail ESS >=
    ``ESS_PER_CHAIN_MIN`` per chain; divergent transitions <= ``MAX_DIVERGENT_FRACTION`` of the draws.
    """
    warnings = []
    need = ESS_PER_CHAIN_MIN * num_chains
    rhat = diagnostics.get("rhat_max")
    if num_chains < 2:
        warnings.append(f"R-hat needs at least 2 chains, got {num_chains}: convergence cannot be checked")
    elif rhat is None:
        warnings.append("R-hat could not be computed (too few draws)")
    elif rhat > RHAT_MAX:
        warnings.append(f"R-hat {rhat:.3f} > {RHAT_MAX} (worst: {diagnostics.get('worst_rhat')}): the chains disagree; "
                        "run longer or check for several modes")
    for kind in ("bulk", "tail"):
        ess = diagnostics.get(f"ess_{kind}_min")
        if ess is not None and ess < need:
            warnings.append(f"{kind} ESS {ess:.0f} < {need} ({ESS_PER_CHAIN_MIN} per chain; worst: "
                            f"{diagnostics.get('worst_ess')}): draw more samples")
    if num_divergences > MAX_DIVERGENT_FRACTION * num_draws_total:
        warnings.append(f"{num_divergences} divergent transition(s) of {num_draws_total}: the sampler missed part of the "
                        "posterior; raise target_accept_prob or check the data's scale")
    return warnings


# --------------------------------------------------------------------------- degenerate components

REG_COVAR_FACTOR = 10.0  # a covariance eigenvalue within 10x of EM's reg_covar floor
SHARED_VALUE_FRACTION = 0.05  # an sd below 1/20 of a column's smallest gap between distinct values
SINGULAR_RATIO = 1e-12  # smallest eigenvalue of a component's correlation matrix: numerically singular


def column_resolution(x) -> np.ndarray:
    """(D,) smallest gap between distinct values of each column of ``x`` (N, D); 0 for a constant column
    (a component cannot be narrower than nothing: the rule flags nothing there).

    The data's own resolution: integer ratings have 1, continuous measurements ~range / N^2."""
    x = np.asarray(x, np.float64)
    out = np.zeros(x.shape[1])
    for j in range(x.shape[1]):
        values = np.unique(x[:, j])
        values = values[~np.isnan(values)]  # missing values are no values
        if values.size > 1:
            out[j] = float(np.min(np.diff(values)))
    return out


def degenerate_components(params: GMMParams, x, responsibilities, reg_covar: float | None = None,
                          full_covariance: bool = True, *, counts=None, data_covariance=None) -> list:
    """Components whose fit is degenerate: judged from the component itself, never from how far apart
    the clusters are or the data's overall spread (well-separated clusters are not degenerate).

    A component is degenerate when

    * it has fewer effective points (the responsibilities' column sum) than its covariance needs:
      D + 1 for a full (or tied) covariance, 2 for a diagonal or spherical one;
    * (EM) its smallest covariance eigenvalue is within ``REG_COVAR_FACTOR`` of ``reg_covar``: the floor
      EM adds, so the points lie on a lower-dimensional set and the likelihood would grow without bound;
    * its standard deviation along some column is below ``SHARED_VALUE_FRACTION`` of that column's
      smallest gap between distinct values (:func:`column_resolution`): its rows share one value of the
      column (e.g. integer ratings), where the likelihood also grows without bound;
    * its covariance is numerically singular: its correlation matrix (scale-free, so columns in any units
      pass) has an eigenvalue below ``SINGULAR_RATIO``.

    ``counts`` (K,), when given, replaces the responsibilities' column sums (a streamed fit has neither
    rows nor responsibilities in memory; EM returns ``info["final_counts"]``); ``x`` and
    ``responsibilities`` may then be None, and the shared-value rule is skipped. ``data_covariance`` is
    accepted for callers of the former rule and unused.

    Returns a list of ``{"component", "effective_count", "min_eigenvalue", "min_correlation_eigenvalue", "reasons"}``
    (empty: none).
    """
    del data_covariance
    num_features = np.shape(params.means)[-1]
    lower = np.asarray(params.scale_tril, np.float64)  # on the host: no eager XLA program per K
    covs = lower @ np.swapaxes(lower, -1, -2)
    if counts is None:
        counts = np.asarray(responsibilities, np.float64).sum(axis=0)
    counts = np.asarray(counts, np.float64)
    # no rows (streamed): the shared-value rule is skipped (a resolution of 0 flags nothing)
    resolution = column_resolution(x) if x is not None else np.zeros(num_features)
    needed = num_features + 1 if full_covariance else 2
    out = []
    for k in range(covs.shape[0]):
        cov = (covs[k] + covs[k].T) / 2
        smallest = float(np.linalg.eigvalsh(cov)[0])
        sd = np.sqrt(np.maximum(np.diagonal(cov), 0.0))
        if np.all(sd > 0):  # of the correlation matrix: the columns' units do not matter
            ratio = float(np.linalg.eigvalsh(cov / np.outer(sd, sd))[0])
        else:
            ratio = 0.0
        reasons = []
        if counts[k] < needed:
            reasons.append(f"{counts[k]:.1f} effective points < {f'D + 1 = {needed}' if full_covariance else 2}")
        if reg_covar is not None and smallest <= REG_COVAR_FACTOR * reg_covar:
            reasons.append(f"smallest covariance eigenvalue {smallest:.1e} is at the reg_covar floor ({reg_covar:g})")
        shared = np.flatnonzero(sd < SHARED_VALUE_FRACTION * resolution)
        if shared.size:
            j = int(shared[0])
            reasons.append(f"its rows share one value of column {j} (sd {sd[j]:.1e} < {SHARED_VALUE_FRACTION:g} x the "
                           f"column's smallest gap between values, {resolution[j]:.3g})")
        if ratio < SINGULAR_RATIO:
            reasons.append(f"covariance numerically singular (smallest eigenvalue of its correlation matrix {ratio:.1e})")
        if reasons:
            out.append({"component": k, "effective_count": float(counts[k]), "min_eigenvalue": smallest,
                        "min_correlation_eigenvalue": ratio, "reasons": reasons})
    return out


def tree_depth(num_steps) -> np.ndarray:
    """NUTS tree depth of each transition from its number of leapfrog steps (Stan's ``treedepth__``): a
    trajectory of depth d takes between 2^(d-1) and 2^d - 1 steps, so d = floor(log2(num_steps)) + 1."""
    steps = np.maximum(np.asarray(num_steps, np.int64), 1)
    return (np.floor(np.log2(steps)) + 1).astype(np.int64)


def split_r_hat(samples: GMMParams) -> dict:
    """Max split R-hat per field of draws with leading (chain, draw) dims (weights, means, scale_tril).

    Constant elements (the zero upper triangle of ``scale_tril``) are ignored.
    """
    out = {}
    for name, values in zip(GMMParams._fields, samples):
        values = np.asarray(values, np.float64)
        flat = values.reshape(values.shape[:2] + (-1,))
        varying = np.ptp(flat, axis=(0, 1)) > 0
        out[name] = float(np.max(split_gelman_rubin(flat[..., varying]))) if varying.any() else 1.0
    return out


def min_ess(samples: GMMParams) -> float:
    """Smallest effective sample size over every varying element of the draws."""
    values = np.concatenate([np.asarray(a, np.float64).reshape(np.shape(a)[:2] + (-1,)) for a in samples], axis=-1)
    varying = np.ptp(values, axis=(0, 1)) > 0
    return float(np.min(effective_sample_size(values[..., varying])))
