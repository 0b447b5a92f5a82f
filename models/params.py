"""The GMM parameter pytree and its validating constructor (no NumPyro here)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

WEIGHT_ATOL = 1e-6


class GMMParams(NamedTuple):
    """Parameters of a K-component, D-dimensional Gaussian mixture.

    Leading batch dimensions (e.g. ``(chain, draw)`` for posterior samples) are allowed
    in front of every field.

    Attributes
    ----------
    weights : (..., K) mixing weights on the simplex.
    means : (..., K, D) component means.
    scale_tril : (..., K, D, D) lower Cholesky factor of each covariance (NumPyro's convention).
    """

    weights: jnp.ndarray
    means: jnp.ndarray
    scale_tril: jnp.ndarray

    @property
    def num_components(self) -> int:
        return self.means.shape[-2]

    @property
    def num_features(self) -> int:
        return self.means.shape[-1]


def covariances(params: GMMParams):
    """Covariance matrices ``L @ L.T``, shape (..., K, D, D)."""
    lower = params.scale_tril
    return lower @ jnp.swapaxes(lower, -1, -2)


@jax.jit
def permute(params: GMMParams, perm) -> GMMParams:
    """Reorder the components: component ``i`` of the result is component ``perm[i]`` of ``params``.

    ``perm`` has shape (K,) or, for batched params, (..., K) matching the leading dimensions.
    """
    perm = jnp.asarray(perm)
    if perm.ndim == 1:
        return GMMParams(params.weights[..., perm], params.means[..., perm, :], params.scale_tril[..., perm, :, :])
    take = lambda a, extra: jnp.take_along_axis(a, perm.reshape(perm.shape + (1,) * extra), axis=perm.ndim - 1)
    return GMMParams(take(params.weights, 0), take(params.means, 1), take(params.scale_tril, 2))


def to_numpy(params: GMMParams) -> GMMParams:
    """Host copy of ``params`` with numpy arrays."""
    return GMMParams(*(np.asarray(a) for a in params))


def from_covariances(weights, means, covariances, *, dtype=None) -> GMMParams:
    """Build validated ``GMMParams`` from weights (K,), means (K, D) and covariances (K, D, D).

    Raises
    ------
    ValueError
        One line naming the offending argument: wrong shapes, non-finite values, weights off the
        simplex (tolerance 1e-6) or covariances that are not symmetric positive definite.
    """
    weights = np.asarray(weights, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    covs = np.asarray(covariances, dtype=np.float64)
    if weights.ndim != 1 or weights.size < 1:
        raise ValueError(f"weights must be a 1-D array of shape (K,), got shape {weights.shape}")
    num_components = weights.shape[0]
    if means.ndim != 2 or means.shape[0] != num_components:
        raise ValueError(f"means must have shape (K, D) = ({num_components}, D), got shape {means.shape}")
    num_features = means.shape[1]
    if covs.shape != (num_components, num_features, num_features):
        raise ValueError(
            f"covariances must have shape (K, D, D) = ({num_components}, {num_features}, {num_features}), got shape {covs.shape}"
        )
    for name, arr in (("weights", weights), ("means", means), ("covariances", covs)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or inf")
    if np.any(weights < 0) or abs(weights.sum() - 1.0) > WEIGHT_ATOL:
        raise ValueError(f"weights must be non-negative and sum to 1 (within {WEIGHT_ATOL}), got sum {weights.sum():.8g}")
    if not np.allclose(covs, np.swapaxes(covs, -1, -2), rtol=1e-8, atol=1e-12):
        raise ValueError("covariances must be symmetric")
    try:
        scale_tril = np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
        raise ValueError("covariances must be positive definite (Cholesky failed)") from None
    if not np.all(np.isfinite(scale_tril)) or np.any(np.diagonal(scale_tril, axis1=-2, axis2=-1) <= 0):
        raise ValueError("covariances must be positive definite (Cholesky failed)")
    dtype = dtype or jnp.result_type(float)
    return GMMParams(jnp.asarray(weights, dtype), jnp.asarray(means, dtype), jnp.asarray(scale_tril, dtype))


def validate_params(params: GMMParams, num_features: int | None = None, name: str = "params") -> GMMParams:
    """Check a user-supplied ``GMMParams`` (shapes, finiteness, simplex, Cholesky factors).

    Returns the params unchanged; raises ``ValueError`` naming ``name`` otherwise.
    """
    if not isinstance(params, GMMParams):
        raise ValueError(f"{name} must be a GMMParams, got {type(params).__name__}")
    weights, means, lower = (np.asarray(a, dtype=np.float64) for a in params)
    if weights.ndim != 1 or means.ndim != 2 or lower.ndim != 3:
        raise ValueError(f"{name} must have weights (K,), means (K, D), scale_tril (K, D, D); got {weights.shape}, {means.shape}, {lower.shape}")
    k, d = means.shape
    if weights.shape != (k,) or lower.shape != (k, d, d):
        raise ValueError(f"{name} has inconsistent shapes: weights {weights.shape}, means {means.shape}, scale_tril {lower.shape}")
    if num_features is not None and d != num_features:
        raise ValueError(f"{name}.means has {d} features but x has {num_features}")
    if not (np.all(np.isfinite(weights)) and np.all(np.isfinite(means)) and np.all(np.isfinite(lower))):
        raise ValueError(f"{name} contains NaN or inf")
    if np.any(weights < 0) or abs(weights.sum() - 1.0) > WEIGHT_ATOL:
        raise ValueError(f"{name}.weights must be non-negative and sum to 1, got sum {weights.sum():.8g}")
    if np.any(np.triu(lower, 1) != 0) or np.any(np.diagonal(lower, axis1=-2, axis2=-1) <= 0):
        raise ValueError(f"{name}.scale_tril must be lower triangular with a positive diagonal")
    return params
