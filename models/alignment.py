"""Label alignment of mixture components (Hungarian matching, scipy's linear_sum_assignment).

Mixtures are identifiable only up to a permutation of their components, so every comparison of
components (with the truth, across engines, across MCMC draws) goes through these functions.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from .params import GMMParams, permute


def component_cost(reference: GMMParams, estimate: GMMParams) -> np.ndarray:
    """Symmetrised KL between reference component i and estimate component j, shape (..., K, K).

    Uses means and covariances, so components with equal means but different shapes are told apart.
    Host-side numpy (batched solves against the Cholesky factors; no inverse is formed): alignment
    runs on host arrays of up to thousands of draws, where one XLA program per shape bought nothing
    and a large batched triangular solve stalled XLA's CPU runtime.
    """
    ref_mean = np.asarray(reference.means, np.float64)[..., :, None, :]
    ref_tril = np.asarray(reference.scale_tril, np.float64)[..., :, None, :, :]
    est_mean = np.asarray(estimate.means, np.float64)[..., None, :, :]
    est_tril = np.asarray(estimate.scale_tril, np.float64)[..., None, :, :, :]
    return _kl_numpy(ref_mean, ref_tril, est_mean, est_tril) + _kl_numpy(est_mean, est_tril, ref_mean, ref_tril)


def _kl_numpy(mean0, tril0, mean1, tril1) -> np.ndarray:
    """KL(N(mean0, L0 L0^T) || N(mean1, L1 L1^T)) with broadcasting, numpy (see models.density.gaussian_kl)."""
    num_features = mean0.shape[-1]
    shape = np.broadcast_shapes(mean0.shape[:-1], mean1.shape[:-1], tril0.shape[:-2], tril1.shape[:-2])
    tril0 = np.broadcast_to(tril0, shape + (num_features, num_features))
    tril1 = np.broadcast_to(tril1, shape + (num_features, num_features))
    diff = np.broadcast_to(mean1 - mean0, shape + (num_features,))[..., None]
    with np.errstate(all="ignore"):
        m = np.linalg.solve(tril1, tril0)
        w = np.linalg.solve(tril1, diff)
        log_det = lambda lower: np.sum(np.log(np.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
        return 0.5 * (np.sum(m**2, axis=(-2, -1)) + np.sum(w**2, axis=(-2, -1)) - num_features) + log_det(tril1) - log_det(tril0)


def match_components(reference: GMMParams, estimate: GMMParams) -> np.ndarray:
    """Permutation ``perm`` (K,) so that ``permute(estimate, perm)`` lines up with ``reference``.

    Minimises the summed symmetrised KL over all K! assignments (Hungarian method).
    """
    cost = component_cost(reference, estimate)
    if not np.all(np.isfinite(cost)):
        cost = np.nan_to_num(cost, nan=np.inf, posinf=1e300)
    _, perm = linear_sum_assignment(cost)
    return perm


def align(reference: GMMParams, estimate: GMMParams) -> tuple[GMMParams, np.ndarray]:
    """``(permute(estimate, perm), perm)`` with ``perm = match_components(reference, estimate)``."""
    perm = match_components(reference, estimate)
    return permute(estimate, perm), perm


def relabel_draws(samples: GMMParams, pivot: GMMParams, num_passes: int = 3) -> tuple[GMMParams, np.ndarray]:
    """Relabel every draw of ``samples`` (leading dims, e.g. (chain, draw)) against a pivot.

    Each draw is matched to the pivot by the Hungarian method; the pivot is then replaced by the
    mean of the aligned draws and the matching repeated (``num_passes`` times, a Stephens-style
    fixed point). Returns the aligned samples and the permutations, shape (..., K).
    """
    lead = np.shape(samples.weights)[:-1]
    k = np.shape(samples.weights)[-1]
    flat = GMMParams(*(np.asarray(a).reshape((-1,) + np.shape(a)[len(lead):]) for a in samples))
    perms = np.tile(np.arange(k), (flat.weights.shape[0], 1))
    current = GMMParams(*(np.asarray(a) for a in pivot))
    for _ in range(max(1, num_passes)):
        cost = component_cost(GMMParams(*(a[None] for a in current)), flat)  # (S, K, K)
        cost = np.nan_to_num(cost, nan=1e300, posinf=1e300)
        new_perms = np.stack([linear_sum_assignment(c)[1] for c in cost])
        if np.array_equal(new_perms, perms) and _ > 0:
            break
        perms = new_perms
        aligned = permute(flat, perms)
        current = mean_of_draws(aligned)
    aligned = GMMParams(*(np.asarray(a).reshape(lead + np.shape(a)[1:]) for a in permute(flat, perms)))
    return aligned, perms.reshape(lead + (k,))


def mean_of_draws(samples: GMMParams) -> GMMParams:
    """Component-wise posterior mean over all leading (e.g. (chain, draw)) dims of ALIGNED draws.

    Weights and means are averaged; covariances are averaged and re-factored by Cholesky (the mean
    of Cholesky factors is not the factor of the mean covariance). Returns numpy GMMParams.
    """
    weights, means, lower = (np.asarray(a) for a in samples)
    k, d = means.shape[-2:]
    weights = weights.reshape(-1, k).mean(0)
    lower = lower.reshape(-1, k, d, d)
    covs = (lower @ np.swapaxes(lower, -1, -2)).mean(0)
    return GMMParams(weights / weights.sum(), means.reshape(-1, k, d).mean(0), np.linalg.cholesky(covs))
