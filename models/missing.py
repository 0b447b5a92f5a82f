"""The GMM density of rows with missing entries (NaN), marginalised under missing-at-random.

Row n with observed coordinates o contributes ``log sum_k w_k N(x_o | mu_k,o, Sigma_k,oo)``
(Ghahramani & Jordan 1994; Murphy, *Machine Learning: a Probabilistic Perspective*, 11.6.1).

The trick that keeps every shape fixed (Pyro's ``NanMaskedMultivariateNormal`` does the same per row):
for an observed mask M = diag(m), the matrix ``A = M Sigma M + (I - M)`` has ``A_oo = Sigma_oo``, an
identity block on the missing coordinates and zeros between the two. Its Cholesky factor is
``chol(Sigma_oo)`` on the observed coordinates and the identity elsewhere, in the original order (no
permutation), so with ``x'`` = x with 0 at the missing entries and ``mu' = M mu``:
``log N(x_o | mu_o, Sigma_oo) = log N(x' | mu', A) + n_missing log(2 pi) / 2``. The whitened residual
``y = W (x' - mu')`` (``W = chol(A)^{-1}``) is 0 on the missing coordinates, and the conditional mean of
the missing part is ``E[x_m | x_o, k] = mu_m + Sigma_mo Sigma_oo^{-1} (x_o - mu_o) = mu_m + G y`` with
``G = (I - M) Sigma M W^T`` (no inverse: ``Sigma_oo^{-1} = W^T W`` on the observed block); its covariance
is ``(I - M) Sigma (I - M) - G G^T``.

Everything per (pattern, component) is in :class:`PatternTables`; rows look theirs up by pattern index.
The host finds the patterns (:func:`missing_patterns`); complete data never comes here.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .linalg import cholesky, inverse_lower
from .params import GMMParams

BLOCK_ROWS = 2048  # rows per vectorised block of the per-row lookups (memory: BLOCK_ROWS x K x D x D)


class MissingPatterns(NamedTuple):
    """Host-side description of where the holes are.

    observed : (P, D) bool, one row per distinct pattern (True = observed), in first-seen order.
    index : (N,) int32, each row's pattern.
    counts : (P,) int64, rows per pattern.
    """

    observed: np.ndarray
    index: np.ndarray
    counts: np.ndarray


def has_missing(x) -> bool:
    """True when the concrete array ``x`` holds a NaN (False for tracers: they cannot be inspected)."""
    if isinstance(x, jax.core.Tracer):
        return False
    arr = np.asarray(x)
    return bool(arr.dtype.kind == "f" and np.isnan(arr).any())


def missing_patterns(x) -> MissingPatterns:
    """The distinct missingness patterns of ``x`` (N, D) (NaN = missing), on the host."""
    observed = ~np.isnan(np.asarray(x))
    codes, first, index, counts = np.unique(observed, axis=0, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")  # first-seen order: a complete data set's only pattern is 0
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return MissingPatterns(codes[order], rank[np.asarray(index).reshape(-1)].astype(np.int32), counts[order])


class PatternTables(NamedTuple):
    """Per (pattern p, component k) quantities (module doc), shapes with P patterns, K components, D dims.

    whiten : (P, K, D, D) ``W = chol(A)^{-1}`` (identity on the missing coordinates).
    offset : (P, K, D) ``W M mu``.
    log_norm : (P, K) ``log w_k - log det chol(Sigma_oo) - D_o log(2 pi) / 2``.
    gain : (P, K, D, D) ``G``: the conditional mean of the missing coordinates is ``fill + G y``.
    fill : (P, K, D) ``(I - M) mu``.
    cond_cov : (P, K, D, D) covariance of the missing coordinates given the observed ones (0 elsewhere).
    """

    whiten: jnp.ndarray
    offset: jnp.ndarray
    log_norm: jnp.ndarray
    gain: jnp.ndarray
    fill: jnp.ndarray
    cond_cov: jnp.ndarray


@jax.jit
def pattern_tables(params: GMMParams, observed) -> PatternTables:
    """:class:`PatternTables` of ``params`` for the patterns ``observed`` (P, D) bool."""
    lower = params.scale_tril
    dtype = lower.dtype
    num_features = lower.shape[-1]
    mask = jnp.asarray(observed, dtype)[:, None, :]  # (P, 1, D)
    missing = 1.0 - mask
    cov = lower @ jnp.swapaxes(lower, -1, -2)  # (K, D, D)
    eye = jnp.eye(num_features, dtype=dtype)
    masked = cov[None] * mask[..., :, None] * mask[..., None, :] + eye * missing[..., :, None]  # (P, K, D, D)
    chol = cholesky(masked)
    whiten = inverse_lower(chol)
    means = params.means[None]  # (1, K, D)
    offset = jnp.einsum("pkij,pkj->pki", whiten, means * mask)
    log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)  # missing diagonal is 1
    num_observed = jnp.sum(mask, axis=-1)  # (P, 1)
    log_norm = jnp.log(params.weights)[None] - log_det - 0.5 * num_observed * math.log(2 * math.pi)
    gain = (missing[..., :, None] * cov[None] * mask[..., None, :]) @ jnp.swapaxes(whiten, -1, -2)
    fill = means * missing
    cond_cov = cov[None] * missing[..., :, None] * missing[..., None, :] - gain @ jnp.swapaxes(gain, -1, -2)
    return PatternTables(whiten, offset, log_norm, gain, fill, cond_cov)


def _row_terms(tables: PatternTables, x_row, pattern):
    """One row: (joint (K,), conditional completions (K, D)) with ``x_row`` zero-filled."""
    whiten = tables.whiten[pattern]
    white = whiten @ x_row - tables.offset[pattern]  # (K, D)
    joint = tables.log_norm[pattern] - 0.5 * jnp.sum(white**2, axis=-1)
    completed = x_row + tables.fill[pattern] + jnp.einsum("kij,kj->ki", tables.gain[pattern], white)
    return joint, completed


@jax.jit
def _observed_terms(params: GMMParams, x_filled, index, observed):
    tables = pattern_tables(params, observed)
    return jax.lax.map(lambda a: _row_terms(tables, *a), (x_filled, index), batch_size=BLOCK_ROWS)


def _joint_row(tables: PatternTables, x_row, pattern):
    """One zero-filled row: ``log w_k + log N(x_o | mu_k,o, Sigma_k,oo)``, shape (K,)."""
    white = tables.whiten[pattern] @ x_row - tables.offset[pattern]  # (K, D)
    return tables.log_norm[pattern] - 0.5 * jnp.sum(white**2, axis=-1)


def masked_component_log_prob(params: GMMParams, x, index, observed) -> jnp.ndarray:
    """Jit-able :func:`observed_component_log_prob` for patterns found beforehand, shape (N, K).

    Parameters
    ----------
    params : GMMParams (weights (K,), means (K, D), scale_tril (K, D, D)).
    x : (N, D) data; entries where the row's pattern is not observed are ignored (NaN allowed there).
    index : (N,) int, each row's pattern (:func:`missing_patterns`).
    observed : (P, D) bool patterns.
    """
    x = jnp.where(jnp.asarray(observed)[index], x, 0.0)  # the zero fill; the NaN never reaches a product
    tables = pattern_tables(params, observed)
    return jax.lax.map(lambda a: _joint_row(tables, *a), (x, index), batch_size=BLOCK_ROWS)


@jax.jit
def noise_factors(params: GMMParams, observed) -> jnp.ndarray:
    """Per (pattern, component) ``F`` (P, K, D, D) with ``F F^T = cond_cov`` (:class:`PatternTables`).

    ``cond_cov`` is singular outside the missing block, so it is never factored: with the observed
    coordinates ordered first (a stable permutation), the lower-right block of ``chol(Sigma)`` IS the
    Cholesky factor of the Schur complement ``Sigma_mm - Sigma_mo Sigma_oo^{-1} Sigma_om`` (Golub & Van
    Loan 4.2). ``F`` is that block, put back in the original order; its rows and columns at observed
    coordinates are 0, so ``F eps`` leaves observed entries alone.
    """
    observed = jnp.asarray(observed, bool)
    order = jnp.argsort(~observed, axis=-1, stable=True)  # (P, D): observed first, then missing
    back = jnp.argsort(order, axis=-1)
    cov = params.scale_tril @ jnp.swapaxes(params.scale_tril, -1, -2)  # (K, D, D)
    permuted = jnp.swapaxes(cov[:, order[:, :, None], order[:, None, :]], 0, 1)  # (P, K, D, D)
    lower = cholesky(permuted)
    missing_cols = jnp.take_along_axis(~observed, order, axis=-1)[:, None, None, :]  # (P, 1, 1, D) permuted order
    lower = jnp.where(missing_cols, lower, 0.0)  # keep the missing columns: L_mm (L_om is 0 above the block)
    return jnp.take_along_axis(lower, back[:, None, :, None], axis=-2)  # rows back to the original order


@jax.jit
def sample_missing_filled(key, params: GMMParams, x, index, observed) -> jnp.ndarray:
    """Jit-able core of :func:`sample_missing` for patterns found beforehand (arguments as
    :func:`masked_component_log_prob`); returns (N, D)."""
    observed = jnp.asarray(observed, bool)
    row_observed = observed[index]
    filled = jnp.where(row_observed, x, 0.0)
    tables = pattern_tables(params, observed)
    joint, completed = jax.lax.map(lambda a: _row_terms(tables, *a), (filled, index), batch_size=BLOCK_ROWS)
    pick_key, noise_key = jax.random.split(key)
    component = jax.random.categorical(pick_key, joint, axis=-1)  # (N,) k ~ p(k | x_o)
    factors = noise_factors(params, observed)  # (P, K, D, D)
    eps = jax.random.normal(noise_key, filled.shape, filled.dtype)
    mean = jnp.take_along_axis(completed, component[:, None, None], axis=1)[:, 0]  # (N, D)
    noise = jnp.einsum("nij,nj->ni", factors[index, component], eps)
    return jnp.where(row_observed, x, mean + noise)


def sample_missing(key, params: GMMParams, x) -> jnp.ndarray:
    """One draw of the missing entries from ``p(x_m | x_o, params)`` per row (a completed data set).

    ``k ~ p(k | x_o)`` (:func:`observed_responsibilities`), then ``x_m ~ N(fill + G y, cond_cov)``
    (:class:`PatternTables`; the noise by :func:`noise_factors`, no inverse). Observed entries are
    returned unchanged; a row with nothing observed is a draw from the mixture.

    Parameters
    ----------
    key : PRNG key.
    params : GMMParams.
    x : (N, D) data, NaN where missing.

    Returns
    -------
    (N, D) completed data.
    """
    patterns, filled = _prepare(params, x)
    return sample_missing_filled(key, params, jnp.asarray(filled), patterns.index, patterns.observed)


def _prepare(params: GMMParams, x):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != params.means.shape[-1]:
        raise ValueError(f"x must have shape (N, {params.means.shape[-1]}); got {x.shape}")
    patterns = missing_patterns(x)
    filled = np.where(np.isnan(x), 0.0, x).astype(params.means.dtype)
    return patterns, filled


def observed_component_log_prob(params: GMMParams, x) -> jnp.ndarray:
    """``log w_k + log N(x_n,o | mu_k,o, Sigma_k,oo)`` for rows with NaN holes, shape (N, K).

    A row with nothing observed gets ``log w_k`` (its density is 1)."""
    patterns, filled = _prepare(params, x)
    joint, _ = _observed_terms(params, filled, patterns.index, patterns.observed)
    return joint


def observed_pointwise_log_likelihood(params: GMMParams, x) -> jnp.ndarray:
    """Marginal log density of each row's observed entries, shape (N,)."""
    return logsumexp(observed_component_log_prob(params, x), axis=-1)


def observed_log_likelihood(params: GMMParams, x) -> jnp.ndarray:
    """Observed-data log-likelihood ``sum_n log sum_k w_k N(x_n,o | mu_k,o, Sigma_k,oo)`` (a scalar)."""
    return jnp.sum(observed_pointwise_log_likelihood(params, x))


def observed_responsibilities(params: GMMParams, x) -> jnp.ndarray:
    """``p(z_n = k | x_n,o)``, shape (N, K)."""
    joint = observed_component_log_prob(params, x)
    return jnp.exp(joint - logsumexp(joint, axis=-1, keepdims=True))


def impute(params: GMMParams, x, *, return_std: bool = False):
    """Conditional expectation of the missing entries: ``E[x_m | x_o] = sum_k p(k | x_o) E[x_m | x_o, k]``.

    Parameters
    ----------
    params : GMMParams.
    x : (N, D) data, NaN where missing.
    return_std : also return the conditional standard deviation of every entry (0 where observed), by
        the law of total variance over the components.

    Returns
    -------
    (N, D) completed data (observed entries unchanged) [, (N, D) standard deviations].
    """
    patterns, filled = _prepare(params, x)
    joint, completed = _observed_terms(params, filled, patterns.index, patterns.observed)
    resp = jnp.exp(joint - logsumexp(joint, axis=-1, keepdims=True))  # (N, K)
    mean = jnp.einsum("nk,nkd->nd", resp, completed)
    observed = np.asarray(patterns.observed)[patterns.index]
    mean = jnp.where(observed, jnp.asarray(np.asarray(x), mean.dtype), mean)  # observed entries exactly as given
    if not return_std:
        return mean
    cond_var = jnp.diagonal(pattern_tables(params, patterns.observed).cond_cov, axis1=-2, axis2=-1)  # (P, K, D)
    second = jnp.einsum("nk,nkd->nd", resp, cond_var[patterns.index] + completed**2)
    std = jnp.sqrt(jnp.clip(second - mean**2, 0.0, None))
    return mean, jnp.where(observed, 0.0, std)


__all__ = [
    "MissingPatterns", "PatternTables", "has_missing", "missing_patterns", "pattern_tables", "impute",
    "observed_component_log_prob", "observed_pointwise_log_likelihood", "observed_log_likelihood",
    "observed_responsibilities", "masked_component_log_prob", "noise_factors", "sample_missing",
    "sample_missing_filled",
]
