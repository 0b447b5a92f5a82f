"""The quadratic form of a Gaussian as one inner product: per-row quadratic features times a (F, K) matrix of
coefficients gives every component's log joint in ONE matmul (EM's E-step, the NumPyro model's likelihood).

Moved here from ``inference.stats`` so that ``models`` (the NumPyro model) can use it; ``inference.stats``
imports it from here (one source of truth).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from .linalg import inverse_lower
from .params import GMMParams


def quadratic_features(x_chunk, full_moment: bool, rows_last: bool = False):
    """Per-row features whose weighted sums are every sufficient statistic, and whose inner products
    with :func:`log_prob_coefficients` are every component's log joint: (c, F) =
    ``[x_i x_j for i <= j, x, 1]`` (full, tied: F = D(D+1)/2 + D + 1) or ``[x_i^2, x, 1]`` (diag,
    spherical: F = 2D + 1); (F, c) with ``rows_last``."""
    columns = x_chunk.T if rows_last else x_chunk  # features along axis `at`
    at = 0 if rows_last else 1
    num_features = x_chunk.shape[1]
    feature = lambda i, j=None: jax.lax.slice_in_dim(columns, i, i + 1 if j is None else j, axis=at)
    if full_moment:  # row-major upper triangle (np.triu_indices order), by static slices (no gather)
        second = jnp.concatenate([feature(i) * feature(i, num_features) for i in range(num_features)], axis=at)
    else:
        second = columns * columns
    ones = jnp.ones((1, x_chunk.shape[0]) if rows_last else (x_chunk.shape[0], 1), x_chunk.dtype)
    return jnp.concatenate([second, columns, ones], axis=at)


def upper_indices(num_features: int):
    return np.triu_indices(num_features)


def log_prob_coefficients(params: GMMParams, full_moment: bool) -> jnp.ndarray:
    """(F, K) matrix ``A`` with ``quadratic_features(x) @ A = log w_k + log N(x | mu_k, Sigma_k)``.

    With the precision ``P_k = W_k^T W_k`` (``W_k = L_k^{-1}`` by a triangular solve, no inverse of a
    covariance): ``log N = -x^T P x / 2 + x^T P mu - mu^T P mu / 2 - log det L - D log(2 pi) / 2``; the
    quadratic term's coefficient is ``-P_ii / 2`` on the diagonal and ``-P_ij`` above it. Rounding: the
    expanded form loses ``~eps |W (x - c)|^2`` against ``~eps |W (x - c)|`` for the whitened difference
    (c = the data's weighted mean, which EM subtracts first), the same order as the raw-moment M-step
    (sklearn's too), which already forms covariances from second moments about c.
    """
    num_components, num_features = params.means.shape
    lower = params.scale_tril
    dtype = lower.dtype
    whiten = inverse_lower(lower)  # (K, D, D)
    precision = jnp.swapaxes(whiten, -1, -2) @ whiten
    linear = jnp.einsum("kij,kj->ki", precision, params.means)  # (K, D) = P mu
    log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
    constant = (jnp.log(params.weights) - log_det - 0.5 * num_features * math.log(2 * math.pi)
                - 0.5 * jnp.sum(linear * params.means, axis=-1))
    if full_moment:
        upper_i, upper_j = upper_indices(num_features)
        factor = jnp.asarray(np.where(upper_i == upper_j, 0.5, 1.0), dtype)
        quadratic = -(precision[:, upper_i, upper_j] * factor)  # (K, D(D+1)/2)
    else:
        quadratic = -0.5 * jnp.diagonal(precision, axis1=-2, axis2=-1)
    return jnp.concatenate([quadratic, linear, constant[:, None]], axis=1).T


__all__ = ["quadratic_features", "log_prob_coefficients", "upper_indices"]
