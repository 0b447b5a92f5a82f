"""Label alignment of mixture components (Hungarian matching, scipy's linear_sum_assignment).

Mixtures are identifiable only up to a permutation of their components, so every comparison of
components (with the truth, across engines, across MCMC draws) goes through these functions.
"""

from __future__ import annotations

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment

from .density import gaussian_kl
from .params import GMMParams, permute


def component_cost(reference: GMMParams, estimate: GMMParams) -> np.ndarray:
    """Symmetrised KL between reference component i and estimate component j, shape (..., K, K).

    Uses means and covariances, so components with equal means but different shapes are told apart.
    """
    ref_mean = np.asarray(reference.means)[..., :, None, :]
    ref_tril = np.asarray(reference.scale_tril)[..., :, None, :, :]
    est_mean = np.asarray(estimate.means)[..., None, :, :]
    est_tril = np.asarray(estimate.scale_tril)[..., None, :, :, :]
    return np.asarray(_symmetrised_kl(ref_mean, ref_tril, est_mean, est_tril))


@jax.jit
def _symmetrised_kl(mean0, tril0, mean1, tril1):
    return gaussian_kl(mean0, tril0, mean1, tril1) + gaussian_kl(mean1, tril1, mean0, tril0)


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
        current = _mean_params(aligned)
    aligned = GMMParams(*(np.asarray(a).reshape(lead + np.shape(a)[1:]) for a in permute(flat, perms)))
    return aligned, perms.reshape(lead + (k,))


def _mean_params(flat: GMMParams) -> GMMParams:
    """Component-wise posterior mean: mean weights, means and covariances (re-factored by Cholesky)."""
    weights = np.asarray(flat.weights).mean(0)
    lower = np.asarray(flat.scale_tril)
    covs = (lower @ np.swapaxes(lower, -1, -2)).mean(0)
    return GMMParams(weights / weights.sum(), np.asarray(flat.means).mean(0), np.linalg.cholesky(covs))
