"""Initial GMM parameters: random_from_data (the seed's), k-means++ seeding, k-means (Lloyd).

Every initialiser returns ``GMMParams`` in the dtype of ``x``. k-means++ and k-means end with one
hard-assignment M-step (as sklearn's ``init_params="k-means++"/"kmeans"``), so weights and
covariances start from the clusters, not from the identity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.params import GMMParams, validate_params

from .stats import SuffStats, chunk_moments, default_chunk_size, m_step, needs_full_moment, scan_chunks

INIT_METHODS = ("random_from_data", "kmeans++", "kmeans")
KMEANS_MAX_ITERS = 100


def data_covariance_tril(x, covariance_type: str, reg_covar) -> jnp.ndarray:
    """Cholesky factor (D, D) of the whole data's covariance, reduced to ``covariance_type``."""
    num_features = x.shape[1]
    centered = x - x.mean(axis=0)
    cov = jnp.atleast_2d(centered.T @ centered / max(x.shape[0] - 1, 1))
    if covariance_type in ("diag", "spherical"):
        var = jnp.diagonal(cov)
        if covariance_type == "spherical":
            var = jnp.full_like(var, var.mean())
        return jnp.diag(jnp.sqrt(var + reg_covar))
    return jnp.linalg.cholesky(cov + reg_covar * jnp.eye(num_features, dtype=x.dtype))


def random_from_data(key, x, num_components: int, covariance_type: str = "full", reg_covar=1e-6) -> GMMParams:
    """Means at K distinct random rows, equal weights, every covariance = the data covariance."""
    idx = jax.random.choice(key, x.shape[0], (num_components,), replace=False)
    tril = data_covariance_tril(x, covariance_type, reg_covar)
    return GMMParams(
        jnp.full((num_components,), 1.0 / num_components, x.dtype),
        x[idx],
        jnp.broadcast_to(tril, (num_components,) + tril.shape),
    )


def _nearest_sq_dist(x, centers):
    """Squared distance from each row to its nearest center, (N,), and the argmin, (N,)."""
    d2 = jnp.sum(x**2, axis=1)[:, None] - 2 * x @ centers.T + jnp.sum(centers**2, axis=1)[None, :]
    return jnp.maximum(d2.min(axis=1), 0.0), d2.argmin(axis=1)


def kmeans_plus_plus_centers(key, x, num_components: int) -> jnp.ndarray:
    """k-means++ seeding (Arthur & Vassilvitskii): each new center drawn with probability ~ D(x)^2."""
    keys = jax.random.split(key, num_components)
    first = x[jax.random.randint(keys[0], (), 0, x.shape[0])]
    centers = jnp.zeros((num_components, x.shape[1]), x.dtype).at[0].set(first)
    min_d2 = jnp.sum((x - first) ** 2, axis=1)

    def body(i, carry):
        centers, min_d2 = carry
        logits = jnp.where(min_d2 > 0, jnp.log(jnp.where(min_d2 > 0, min_d2, 1.0)), -jnp.inf)
        new = x[jax.random.categorical(keys[i], logits)]
        return centers.at[i].set(new), jnp.minimum(min_d2, jnp.sum((x - new) ** 2, axis=1))

    centers, _ = jax.lax.fori_loop(1, num_components, body, (centers, min_d2))
    return centers


def _hard_stats(x, centers, full_moment: bool, chunk_size: int) -> SuffStats:
    """Moments of the nearest-center partition, accumulated over chunks."""
    num_components, num_features = centers.shape
    zeros = SuffStats(
        jnp.zeros(num_components, x.dtype),
        jnp.zeros((num_components, num_features), x.dtype),
        jnp.zeros((num_components, num_features, num_features) if full_moment else (num_components, num_features), x.dtype),
    )

    def step(stats, xc):
        _, labels = _nearest_sq_dist(xc, centers)
        moments = chunk_moments(jax.nn.one_hot(labels, num_components, dtype=x.dtype), xc, full_moment)
        return jax.tree.map(jnp.add, stats, moments)

    return scan_chunks(step, zeros, x, chunk_size)


def lloyd(x, centers, chunk_size: int, max_iters: int = KMEANS_MAX_ITERS):
    """Lloyd's k-means iterations until the centers stop moving; an emptied center keeps its place."""

    def cond(carry):
        i, _, moved = carry
        return (i < max_iters) & moved

    def body(carry):
        i, centers, _ = carry
        stats = _hard_stats(x, centers, False, chunk_size)
        new = jnp.where(stats.counts[:, None] > 0, stats.sum_x / jnp.maximum(stats.counts, 1)[:, None], centers)
        return i + 1, new, jnp.any(new != centers)

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, True))
    return centers


def _params_from_centers(x, centers, covariance_type, reg_covar, chunk_size) -> GMMParams:
    """One hard M-step on the nearest-center partition; empty clusters get the data covariance."""
    stats = _hard_stats(x, centers, needs_full_moment(covariance_type), chunk_size)
    params = m_step(stats, covariance_type, reg_covar, x.shape[0])
    empty = stats.counts < 0.5
    tril = data_covariance_tril(x, covariance_type, reg_covar)
    weights = jnp.where(empty, 1.0 / x.shape[0], params.weights)
    return GMMParams(
        weights / weights.sum(),
        jnp.where(empty[:, None], centers, params.means),
        jnp.where(empty[:, None, None], tril, params.scale_tril),
    )


def stack_given_init(init: GMMParams, x, num_components: int, n_init: int) -> GMMParams:
    """A user's initial GMMParams, validated against ``x`` (N, D) and K, in x's dtype, repeated for
    ``n_init`` starts: leading (n_init,) dim. Raises ``ValueError`` naming ``init``."""
    validate_params(init, x.shape[1], name="init")
    if init.means.shape[0] != num_components:
        raise ValueError(f"init has {init.means.shape[0]} components but num_components is {num_components}")
    return GMMParams(*(jnp.broadcast_to(jnp.asarray(a, x.dtype), (n_init,) + jnp.shape(a)) for a in init))


def initialize(
    key,
    x,
    num_components: int,
    method: str = "kmeans++",
    covariance_type: str = "full",
    reg_covar=1e-6,
    chunk_size: int | None = None,
) -> GMMParams:
    """Initial parameters by ``method`` (one of ``INIT_METHODS``); jit-able for a static method.

    Parameters
    ----------
    key : PRNG key.
    x : (N, D) data (its dtype is the result's dtype).
    num_components : K.
    method : "random_from_data" | "kmeans++" | "kmeans".
    covariance_type : "full" | "diag" | "spherical" | "tied".
    reg_covar : added to the diagonal of every covariance.
    chunk_size : rows per chunk for the data passes (default: automatic).
    """
    x = jnp.asarray(x)
    chunk_size = chunk_size or default_chunk_size(x.shape[0], num_components, x.shape[1])
    if method == "random_from_data":
        return random_from_data(key, x, num_components, covariance_type, reg_covar)
    centers = kmeans_plus_plus_centers(key, x, num_components)
    if method == "kmeans":
        centers = lloyd(x, centers, chunk_size)
    elif method != "kmeans++":
        raise ValueError(f"init must be one of {', '.join(INIT_METHODS)} or a GMMParams; got {method!r}")
    return _params_from_centers(x, centers, covariance_type, reg_covar, chunk_size)
