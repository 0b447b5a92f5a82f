"""The estimator's scikit-learn plumbing: sklearn-shaped parameters <-> GMMParams, checks of a user's
``weights_init`` / ``means_init`` / ``precisions_init``, sklearn's input validation, keys from a
``random_state`` and the jitted initial points (``init_params``).

sklearn's shapes per ``covariance_type``: ``covariances_`` full (K, D, D), tied (D, D), diag (K, D),
spherical (K,); ``precisions_cholesky_`` ``inv(L).T`` (full, tied) or ``1 / sqrt(cov)`` (diag, spherical).
Used by :mod:`inference.estimator` only.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
from sklearn.utils import check_array
from sklearn.utils.validation import validate_data

from .stats import chunk_moments, m_step, needs_full_moment

__all__ = ["key_from", "initializer", "m_step_from_resp", "validate", "tril_from_precisions", "sklearn_covariances",
           "sklearn_precisions_cholesky", "sklearn_precisions", "check_weights", "check_means", "check_precisions"]


def key_from(rng: np.random.RandomState):
    """A JAX PRNG key from one draw of a NumPy RandomState (sklearn's ``random_state``)."""
    return jax.random.PRNGKey(int(rng.randint(np.iinfo(np.int32).max)))


@functools.lru_cache(maxsize=None)
def initializer(num_components: int, method: str, covariance_type: str):
    """Jitted ``inference.init.initialize`` for one (K, method, covariance type)."""
    from .init import initialize

    return jax.jit(lambda key, x, reg_covar: initialize(key, x, num_components, method, covariance_type, reg_covar))


@functools.lru_cache(maxsize=None)
def m_step_from_resp(covariance_type: str):
    """Jitted M-step of ``inference.stats`` on given responsibilities (sklearn's ``init_params="random"``)."""
    full = needs_full_moment(covariance_type)
    return jax.jit(lambda resp, x, reg_covar: m_step(chunk_moments(resp, x, full), covariance_type, reg_covar, x.shape[0]))


def validate(estimator, X, **kwargs):
    """sklearn's ``validate_data`` (float64 / float32 kept, NaN allowed: a missing value; inf refused), its
    ValueError / TypeError on one line:
    the same type and wording, without the array dump some messages carry."""
    try:
        return validate_data(estimator, X, dtype=[np.float64, np.float32], ensure_all_finite="allow-nan", **kwargs)
    except (ValueError, TypeError) as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        one_line = " ".join(line for line in lines if line and not line.startswith(("[", "array=")))
        if one_line == str(exc) or type(exc) not in (ValueError, TypeError):
            raise
        raise type(exc)(one_line) from None


# --------------------------------------------------------------------------- parameter conversions


def tril_from_precisions(precisions, covariance_type: str, num_components: int, num_features: int) -> np.ndarray:
    """(K, D, D) lower Cholesky factors of the covariances from sklearn-shaped precisions."""
    eye = np.eye(num_features)
    if covariance_type == "full":
        return np.linalg.cholesky(np.linalg.inv(precisions))
    if covariance_type == "tied":
        return np.broadcast_to(np.linalg.cholesky(np.linalg.inv(precisions)), (num_components, num_features, num_features)).copy()
    if covariance_type == "spherical":
        precisions = np.broadcast_to(np.asarray(precisions)[:, None], (num_components, num_features))
    return (1.0 / np.sqrt(precisions))[:, :, None] * eye


def sklearn_covariances(scale_tril: np.ndarray, covariance_type: str) -> np.ndarray:
    """sklearn's ``covariances_`` from (K, D, D) Cholesky factors: full (K, D, D), tied (D, D),
    diag (K, D), spherical (K,)."""
    cov = scale_tril @ np.swapaxes(scale_tril, -1, -2)
    if covariance_type == "full":
        return cov
    if covariance_type == "tied":
        return cov[0]
    diag = np.diagonal(cov, axis1=-2, axis2=-1).copy()
    return diag if covariance_type == "diag" else diag.mean(axis=1)


def sklearn_precisions_cholesky(scale_tril: np.ndarray, covariance_type: str) -> np.ndarray:
    """sklearn's ``precisions_cholesky_``: ``inv(L).T`` (full, tied) or ``1 / sqrt(cov)`` (diag, spherical)."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(sklearn_covariances(scale_tril, covariance_type))
    eye = np.eye(scale_tril.shape[-1], dtype=scale_tril.dtype)
    inv = np.linalg.solve(scale_tril, np.broadcast_to(eye, scale_tril.shape))  # L^{-1}
    prec_chol = np.swapaxes(inv, -1, -2)
    return prec_chol if covariance_type == "full" else prec_chol[0]


def sklearn_precisions(prec_chol: np.ndarray, covariance_type: str) -> np.ndarray:
    if covariance_type in ("diag", "spherical"):
        return prec_chol**2
    return prec_chol @ np.swapaxes(prec_chol, -1, -2)


# --------------------------------------------------------------------------- checks of user inits


def _check_shape(param, shape, name):
    if param.shape != shape:
        raise ValueError(f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}")


def check_weights(weights, num_components):
    weights = check_array(weights, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(weights, (num_components,), "weights")
    if np.any(weights < 0.0) or np.any(weights > 1.0):
        raise ValueError(
            f"The parameter 'weights' should be in the range [0, 1], but got max value {weights.max():.5f}, "
            f"min value {weights.min():.5f}"
        )
    atol = 1e-6 if weights.dtype == np.float32 else 1e-8
    if not np.allclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
        raise ValueError(f"The parameter 'weights' should be normalized, but got sum(weights) = {weights.sum():.5f}")
    return weights


def check_means(means, num_components, num_features):
    means = check_array(means, dtype=[np.float64, np.float32], ensure_2d=False)
    _check_shape(means, (num_components, num_features), "means")
    return means


def check_precisions(precisions, covariance_type, num_components, num_features):
    precisions = check_array(precisions, dtype=[np.float64, np.float32], ensure_2d=False, allow_nd=covariance_type == "full")
    shape = {
        "full": (num_components, num_features, num_features),
        "tied": (num_features, num_features),
        "diag": (num_components, num_features),
        "spherical": (num_components,),
    }[covariance_type]
    _check_shape(precisions, shape, f"{covariance_type} precision")
    if covariance_type in ("diag", "spherical"):
        if np.any(precisions <= 0.0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
        return precisions
    matrices = precisions if covariance_type == "full" else precisions[None]
    for p in matrices:
        if not (np.allclose(p, p.T) and np.all(np.linalg.eigvalsh(p) > 0.0)):
            raise ValueError(f"'{covariance_type} precision' should be symmetric, positive-definite")
    return precisions
