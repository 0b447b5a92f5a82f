"""Information criteria of a fitted mixture: functions of (params, x), below every engine and report.

* :func:`num_parameters` -- free parameters, scikit-learn's ``GaussianMixture._n_parameters``:
  ``(K - 1)`` weights + ``K D`` means + covariance parameters (full ``K D (D+1)/2``, diag ``K D``,
  spherical ``K``, tied ``D (D+1)/2``).
* :func:`bic` ``= -2 log L + p log N`` and :func:`aic` ``= -2 log L + 2 p``, exactly sklearn's
  ``GaussianMixture.bic`` / ``.aic`` (LOWER is better), ``log L`` the total marginal log-likelihood.
  mclust reports ``BIC = 2 log L - p log N`` (higher is better): the same number, opposite sign.
* :func:`icl` ``= bic + 2 sum_n H(r_n)`` (Biernacki, Celeux & Govaert 2000, "ICL-BIC"), ``H(r_n)`` the
  entropy of the soft responsibilities at the parameters; lower is better.

``params`` is a :class:`models.params.GMMParams` (numpy or JAX); ``x`` (N, D) host data. Both the
estimator (``inference.estimator``) and the report (``analysis.selection``, ``analysis.score``) call
these, so neither imports the other.
"""

from __future__ import annotations

import math

import numpy as np

from .density import pointwise_log_likelihood, responsibilities
from .params import GMMParams, to_numpy

__all__ = ["COVARIANCE_TYPES", "num_parameters", "total_log_likelihood", "bic", "aic", "bic_of", "aic_of",
           "responsibility_entropy", "icl"]

# The covariance structures of scikit-learn's GaussianMixture (and of EM here, ``inference.stats``).
COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


def num_parameters(num_components: int, num_features: int, covariance_type: str = "full") -> int:
    """Free parameters of a GMM, as sklearn's ``GaussianMixture._n_parameters``.

    ``(K - 1)`` weights + ``K D`` means + covariance parameters: full ``K D (D+1)/2``, diag ``K D``,
    spherical ``K``, tied ``D (D+1)/2``.
    """
    k, d = int(num_components), int(num_features)
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {', '.join(COVARIANCE_TYPES)}, got {covariance_type!r}")
    cov = {"full": k * d * (d + 1) // 2, "diag": k * d, "spherical": k, "tied": d * (d + 1) // 2}[covariance_type]
    return (k - 1) + k * d + cov


def _in_dtype_of(params: GMMParams, x: np.ndarray) -> GMMParams:
    return GMMParams(*(np.asarray(a, x.dtype) for a in to_numpy(params)))


def total_log_likelihood(params: GMMParams, x) -> float:
    """Total marginal log-likelihood of ``x`` (N, D) at ``params``."""
    x = np.asarray(x)
    return float(np.sum(np.asarray(pointwise_log_likelihood(_in_dtype_of(params, x), x))))


def bic_of(log_likelihood: float, num_samples: int, num_components: int, num_features: int,
           covariance_type: str = "full") -> float:
    """``-2 log L + p log N`` from a total log-likelihood (e.g. one summed over a streamed file)."""
    p = num_parameters(num_components, num_features, covariance_type)
    return float(-2.0 * log_likelihood + p * math.log(num_samples))


def aic_of(log_likelihood: float, num_components: int, num_features: int, covariance_type: str = "full") -> float:
    """``-2 log L + 2 p`` from a total log-likelihood."""
    return float(-2.0 * log_likelihood + 2.0 * num_parameters(num_components, num_features, covariance_type))


def bic(params: GMMParams, x, covariance_type: str = "full") -> float:
    """sklearn's BIC ``-2 log L + p log N`` of ``x`` at ``params`` (lower is better)."""
    x = np.asarray(x)
    n, d = x.shape
    p = num_parameters(np.shape(params.weights)[-1], d, covariance_type)
    return -2.0 * total_log_likelihood(params, x) + p * math.log(n)


def aic(params: GMMParams, x, covariance_type: str = "full") -> float:
    """sklearn's AIC ``-2 log L + 2 p`` of ``x`` at ``params`` (lower is better)."""
    x = np.asarray(x)
    p = num_parameters(np.shape(params.weights)[-1], x.shape[1], covariance_type)
    return -2.0 * total_log_likelihood(params, x) + 2.0 * p


def responsibility_entropy(params: GMMParams, x) -> float:
    """``sum_n H(r_n)``, the entropy (nats) of the soft responsibilities of ``x`` at ``params``."""
    x = np.asarray(x)
    r = np.asarray(responsibilities(_in_dtype_of(params, x), x), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(r > 0, r * np.log(r), 0.0)
    return max(0.0, float(-terms.sum()))


def icl(params: GMMParams, x, covariance_type: str = "full") -> float:
    """ICL-BIC (Biernacki et al. 2000): ``bic + 2 * sum_n H(r_n)`` (lower is better)."""
    return bic(params, x, covariance_type) + 2.0 * responsibility_entropy(params, x)
