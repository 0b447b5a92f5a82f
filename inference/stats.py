"""Sufficient statistics of a GMM, accumulated over row chunks, and the M-step that consumes them.

The E-step never materialises more than ``chunk_size x K x D`` numbers, so memory does not grow with
``N x K x D^2``: soft EM, hard EM and k-means all run through :func:`inference.rows.data_pass` (sharded
or streamed rows; responsibilities arrive already multiplied by the sample weights).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from models.linalg import cholesky, inverse_lower
from models.params import GMMParams
from models.quadratic import log_prob_coefficients, quadratic_features  # noqa: F401  (re-exported: EM's E-step)
from models.quadratic import upper_indices as _upper

COVARIANCE_TYPES = ("full", "diag", "spherical", "tied")


class SuffStats(NamedTuple):
    """Responsibility-weighted moments.

    counts : (K,) sum_n r_nk.
    sum_x : (K, D) sum_n r_nk x_n.
    sum_xx : (K, D, D) sum_n r_nk x_n x_n^T ("full", "tied") or (K, D) its diagonal ("diag", "spherical").
    """

    counts: jnp.ndarray
    sum_x: jnp.ndarray
    sum_xx: jnp.ndarray


def needs_full_moment(covariance_type: str) -> bool:
    return covariance_type in ("full", "tied")


def chunk_moments(resp, x_chunk, full_moment: bool) -> SuffStats:
    """Moments of one chunk: resp (c, K), x_chunk (c, D) -> SuffStats."""
    counts = resp.sum(axis=0)
    sum_x = resp.T @ x_chunk
    if full_moment:
        num_rows, num_components = resp.shape
        weighted = (resp[:, :, None] * x_chunk[:, None, :]).reshape(num_rows, -1)  # (c, K*D)
        sum_xx = (weighted.T @ x_chunk).reshape(num_components, x_chunk.shape[1], x_chunk.shape[1])
    else:
        sum_xx = resp.T @ (x_chunk * x_chunk)
    return SuffStats(counts, sum_x, sum_xx)


def stats_from_feature_sums(sums, num_features: int, full_moment: bool) -> SuffStats:
    """SuffStats from ``resp^T @ quadratic_features(x)`` (K, F)."""
    num_components = sums.shape[0]
    num_second = sums.shape[1] - num_features - 1
    second = sums[:, :num_second]
    if full_moment:
        upper_i, upper_j = _upper(num_features)
        sum_xx = jnp.zeros((num_components, num_features, num_features), sums.dtype)
        sum_xx = sum_xx.at[:, upper_i, upper_j].set(second).at[:, upper_j, upper_i].set(second)
    else:
        sum_xx = second
    return SuffStats(sums[:, -1], sums[:, num_second:num_second + num_features], sum_xx)


def weighted_posterior(joint, weights, rows, hard: bool):
    """The E-step of one chunk from its (c, K) log joint: ``(post, resp, point_ll, log_lik, worst_ll, worst_rows)``
    with ``post`` the posterior (one-hot for hard EM), ``resp = post * weights``, ``point_ll`` (c,) the
    log-likelihood of each row, ``log_lik`` their weighted sum (rows of weight 0 left out) and hard EM's
    re-seeding candidates (:func:`worst_explained`; +inf / zeros for soft EM). Shared by the E-steps of rows
    with NaN holes (per row, ``inference.missing_em``, and grouped by pattern, ``inference.missing_blocks``)."""
    num_components = joint.shape[1]
    dtype = rows.dtype
    top = jnp.max(joint, axis=1, keepdims=True)
    scaled = jnp.exp(joint - top)
    total = jnp.sum(scaled, axis=1, keepdims=True)
    point_ll = (top + jnp.log(total))[:, 0]
    log_lik = jnp.sum(jnp.where(weights > 0, weights * point_ll, 0.0))
    if hard:
        post = jax.nn.one_hot(jnp.argmax(joint, axis=1), num_components, dtype=dtype)
        worst_ll, worst_rows = worst_explained(point_ll, weights, rows, num_components)
    else:
        post = scaled / total
        worst_ll = jnp.full((num_components,), jnp.inf, dtype)
        worst_rows = jnp.zeros((num_components, rows.shape[1]), dtype)
    return post, post * weights[:, None], point_ll, log_lik, worst_ll, worst_rows


def worst_explained(point_ll, weights, rows, num_components: int):
    """Hard EM's re-seeding candidates in one chunk: the ``num_components`` lowest pointwise log-likelihoods
    among rows of positive weight and those rows, padded with +inf / zeros when the chunk is shorter.
    ``point_ll`` (c,), ``weights`` (c,), ``rows`` (c, D) -> ((K,), (K, D))."""
    dtype = rows.dtype
    take = min(num_components, rows.shape[0])
    neg, idx = jax.lax.top_k(-jnp.where(weights > 0, point_ll, jnp.inf), take)
    worst_ll, worst_rows = -neg, rows[idx]
    if take < num_components:
        worst_ll = jnp.concatenate([worst_ll, jnp.full(num_components - take, jnp.inf, dtype)])
        worst_rows = jnp.concatenate([worst_rows, jnp.zeros((num_components - take, rows.shape[1]), dtype)])
    return worst_ll, worst_rows


def scan_chunks(step: Callable, carry, x, chunk_size: int):
    """Fold ``carry = step(carry, x_chunk)`` over row chunks of ``x`` (N, D).

    Full chunks go through one ``lax.scan``; the remainder (N mod chunk_size rows) is one more call.
    """
    num_rows = x.shape[0]
    num_full = num_rows // chunk_size
    if num_full > 0:
        chunks = x[: num_full * chunk_size].reshape(num_full, chunk_size, x.shape[1])
        carry, _ = jax.lax.scan(lambda c, xc: (step(c, xc), None), carry, chunks)
    if num_rows % chunk_size:
        carry = step(carry, x[num_full * chunk_size :])
    return carry


def default_chunk_size(num_rows: int, num_components: int, num_features: int, itemsize: int = 8) -> int:
    """Rows per chunk: the chunk's features and log joint, c * (F + K) numbers with F =
    D(D+1)/2 + D + 1 (:func:`quadratic_features`), fill at most ~512 KiB (the largest power of two, 512 <=
    c <= 65536).

    Measured on the 2-core benchmark machine (ms per EM iteration, float64): (1e6, 2, 4): 17.6 / 12.1 / 15.5
    at c = 2048 / 4096 / 8192; (1e6, 8, 8): 52-54 at 1024 and 2048, 70 at 4096; (2e5, 16, 8): 29 at 512 and
    1024, 36 at 2048. Per-chunk overhead of XLA's CPU runtime favours big chunks, the cache small ones.
    """
    width = num_features * (num_features + 1) // 2 + num_features + 1 + num_components
    target = 2 ** math.floor(math.log2(max(1.0, (1 << 19) / (width * itemsize))))
    return int(min(num_rows, min(65536, max(512, target))))


def _cholesky_from_stats(stats: SuffStats, means, counts, divisor, covariance_type: str, reg_covar):
    """Lower Cholesky factors (K, D, D) of the M-step covariances (sklearn's estimators, from moments);
    ``counts`` are 0 on padded component slots, ``divisor`` is 1 there (no 0 / 0)."""
    num_components, num_features = means.shape
    eye = jnp.eye(num_features, dtype=means.dtype)
    if covariance_type == "full":
        cov = stats.sum_xx / divisor[:, None, None] - means[:, :, None] * means[:, None, :]
        cov = 0.5 * (cov + jnp.swapaxes(cov, -1, -2)) + reg_covar * eye
        return cholesky(cov)
    if covariance_type == "tied":
        scatter = stats.sum_xx.sum(axis=0) - jnp.einsum("k,ki,kj->ij", counts, means, means)
        cov = scatter / counts.sum()
        cov = 0.5 * (cov + cov.T) + reg_covar * eye
        return jnp.broadcast_to(jnp.linalg.cholesky(cov), (num_components, num_features, num_features))
    var = stats.sum_xx / divisor[:, None] - means**2 + reg_covar  # (K, D)
    if covariance_type == "spherical":
        var = jnp.broadcast_to(var.mean(axis=1, keepdims=True), var.shape)
    return jnp.sqrt(var)[:, :, None] * eye


def active_slots(num_slots: int, num_active) -> jnp.ndarray:
    """(num_slots,) bool: the first ``num_active`` (traced or static) component slots are real components,
    the rest padding (weight 0, mean 0, identity scale: :func:`mask_components`)."""
    return jnp.arange(num_slots) < num_active


def mask_components(params: GMMParams, active) -> GMMParams:
    """``params`` with the padded slots (``active`` False) set to weight 0 (log weight -inf: no row's
    density or responsibility changes), mean 0 and identity scale. One compiled EM program then serves
    every K up to its slot count (:func:`inference.em.component_slots`)."""
    eye = jnp.eye(params.means.shape[-1], dtype=params.means.dtype)
    return GMMParams(
        jnp.where(active, params.weights, 0.0),
        jnp.where(active[:, None], params.means, 0.0),
        jnp.where(active[:, None, None], params.scale_tril, eye),
    )


def m_step(stats: SuffStats, covariance_type: str, reg_covar, num_rows, active=None) -> GMMParams:
    """Maximum-likelihood parameters from sufficient statistics (sklearn's estimators).

    As in sklearn, ``10 * eps`` is added to the counts so that an empty soft component has finite
    moments; hard EM handles empty clusters itself before calling this. ``active`` (K,) bool marks the
    real components among padded slots (:func:`mask_components`; default: all real). With every slot
    active the result is bit-identical to the unpadded formula.
    """
    counts = stats.counts + 10 * jnp.finfo(stats.counts.dtype).eps
    divisor = counts
    if active is not None:
        counts = jnp.where(active, counts, 0.0)
        divisor = jnp.where(active, counts, 1.0)
    means = stats.sum_x / divisor[:, None]
    scale_tril = _cholesky_from_stats(stats, means, counts, divisor, covariance_type, reg_covar)
    params = GMMParams(counts / counts.sum(), means, scale_tril)
    return params if active is None else mask_components(params, active)


def expected_complete_log_lik(stats: SuffStats, params: GMMParams) -> jnp.ndarray:
    """``sum_n sum_k r_nk [log w_k + log N(x_n | mu_k, Sigma_k)]`` from moments alone (no data pass).

    With the E-step entropy added this is the ELBO; with one-hot r it is the classification
    log-likelihood.
    """
    num_features = params.means.shape[-1]
    lower = params.scale_tril
    whiten = inverse_lower(lower)  # (K, D, D)
    mu, s, n = params.means, stats.sum_x, stats.counts
    if stats.sum_xx.ndim == 3:
        scatter = (
            stats.sum_xx
            - s[:, :, None] * mu[:, None, :]
            - mu[:, :, None] * s[:, None, :]
            + n[:, None, None] * mu[:, :, None] * mu[:, None, :]
        )
        quad = jnp.sum((whiten @ scatter) * whiten, axis=(-2, -1))  # tr(W A W^T)
    else:
        scatter_diag = stats.sum_xx - 2 * mu * s + n[:, None] * mu**2
        quad = jnp.sum(scatter_diag * jnp.diagonal(whiten, axis1=-2, axis2=-1) ** 2, axis=-1)
    log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
    log_norm = -0.5 * num_features * jnp.log(2 * jnp.pi) - log_det
    log_w = jnp.where(n > 0, jnp.log(params.weights), 0.0)
    return jnp.sum(n * (log_w + log_norm) - 0.5 * quad)
