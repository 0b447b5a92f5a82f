"""Initial GMM parameters: random_from_data (the seed's), k-means++ seeding, k-means (Lloyd).

Every initialiser returns ``GMMParams`` in the dtype of the rows and honours sample weights: rows are
drawn with probability proportional to their weight (random_from_data: K rows without replacement by
Gumbel-top-K of ``log w``; k-means++: each new center with probability ~ ``w D(x)^2``), and the moments
(data covariance, Lloyd's means, the closing M-step) are weighted. k-means++ and k-means end with one
hard-assignment M-step (as sklearn's ``init_params="k-means++"/"kmeans"``), so weights and covariances
start from the clusters, not from the identity.

All of them are folds over row chunks (:func:`inference.rows.data_pass`): they run unchanged on
sharded or streamed rows and never gather the data onto one device. The random draws depend on the
key and the global row index only (:func:`inference.rows.row_gumbel`), so a key gives the same start on
any number of devices.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from models.linalg import cholesky
from models.params import GMMParams, validate_params

from .rows import Layout, RowData, data_pass, row_gumbel
from .stats import SuffStats, active_slots, chunk_moments, default_chunk_size, m_step, mask_components, needs_full_moment

INIT_METHODS = ("random_from_data", "kmeans++", "kmeans")
KMEANS_MAX_ITERS = 100


def _unbiased_denominator(total):
    return jnp.where(total > 1, total - 1, jnp.maximum(total, 1e-300))


def covariance_from_sums(total, sum_x, sum_xx):
    """The weighted data covariance (D, D) from (sum w, sum w x, sum w x x^T), divided by sum w - 1 (as
    ``np.cov`` for integer weights), symmetrised."""
    mean = sum_x / total
    cov = (sum_xx - total * jnp.outer(mean, mean)) / _unbiased_denominator(total)
    return 0.5 * (cov + cov.T)


def covariance_tril_from_sums(total, sum_x, sum_xx, covariance_type: str, reg_covar):
    """Cholesky factor (D, D) of the weighted data covariance from (sum w, sum w x, sum w x x^T), reduced
    to ``covariance_type`` (unbiased: divided by sum w - 1, as ``np.cov`` for integer weights)."""
    if sum_xx.ndim == 1:
        mean = sum_x / total
        var = (sum_xx - total * mean**2) / _unbiased_denominator(total)
        if covariance_type == "spherical":
            var = jnp.full_like(var, var.mean())
        return jnp.diag(jnp.sqrt(var + reg_covar))
    return covariance_tril_from_cov(covariance_from_sums(total, sum_x, sum_xx), covariance_type, reg_covar)


def covariance_tril_from_cov(cov, covariance_type: str, reg_covar):
    """Cholesky factor (D, D) of the covariance ``cov`` (D, D) reduced to ``covariance_type``, plus ``reg_covar``."""
    if covariance_type in ("diag", "spherical"):
        var = jnp.diagonal(cov)
        if covariance_type == "spherical":
            var = jnp.full_like(var, var.mean())
        return jnp.diag(jnp.sqrt(var + reg_covar))
    return cholesky(cov + reg_covar * jnp.eye(cov.shape[0], dtype=cov.dtype))


def _weighted_sums(args, xc, wc, row0):
    return wc.sum(), wc @ xc, (xc * wc[:, None]).T @ xc


def data_moments_pass(layout: Layout, data: RowData, dtype):
    """(sum w, sum w x (D,), sum w x x^T (D, D)) of every row, one pass."""
    d = layout.num_features
    zero = (jnp.zeros((), dtype), jnp.zeros(d, dtype), jnp.zeros((d, d), dtype))
    return data_pass(layout, data, _weighted_sums, zero, ())


def data_tril_pass(layout: Layout, data: RowData, covariance_type: str, reg_covar, dtype, moments=None):
    """Cholesky factor of the whole (weighted) data's covariance, one pass (none if ``moments`` are given)."""
    total, sum_x, sum_xx = data_moments_pass(layout, data, dtype) if moments is None else moments
    return covariance_tril_from_sums(total, sum_x, sum_xx, covariance_type, reg_covar)


def _top_rows_chunk(num_take):
    def chunk_fn(args, xc, wc, row0):
        key, centers, num_chosen = args
        score = jnp.where(wc > 0, jnp.log(jnp.where(wc > 0, wc, 1.0)), -jnp.inf)
        if centers is not None:
            d2 = jnp.sum((xc[:, None, :] - centers[None]) ** 2, axis=-1)  # (c, K), exact 0 on a chosen row
            d2 = jnp.where(jnp.arange(centers.shape[0])[None, :] < num_chosen, d2, jnp.inf).min(axis=1)
            score = score + jnp.where(num_chosen > 0, jnp.where(d2 > 0, jnp.log(jnp.where(d2 > 0, d2, 1.0)), -jnp.inf), 0.0)
        score = score + row_gumbel(key, row0, xc.shape[0]).astype(score.dtype)
        take = min(num_take, xc.shape[0])
        vals, idx = jax.lax.top_k(score, take)
        if take < num_take:
            vals = jnp.concatenate([vals, jnp.full(num_take - take, -jnp.inf, vals.dtype)])
            idx = jnp.concatenate([idx, jnp.zeros(num_take - take, idx.dtype)])
        return vals, xc[idx]

    return chunk_fn


def _merge_top(acc, part):
    vals = jnp.concatenate([acc[0], part[0]])
    rows = jnp.concatenate([acc[1], part[1]])
    best, keep = jax.lax.top_k(vals, acc[0].shape[0])
    return best, rows[keep]


def _top_rows(layout, data, key, num_take, dtype, centers=None, num_chosen=0):
    """The ``num_take`` rows with the largest ``log w (+ log D^2) + Gumbel`` keys, in decreasing order."""
    zero = (jnp.full((num_take,), -jnp.inf, dtype), jnp.zeros((num_take, layout.num_features), dtype))
    return data_pass(layout, data, _top_rows_chunk(num_take), zero, (key, centers, num_chosen), merge=_merge_top)[1]


def kmeans_plus_plus_pass(layout, data, key, num_components: int, dtype, num_active=None):
    """k-means++ seeding (Arthur & Vassilvitskii), weighted: one pass per center. Center j draws with
    ``fold_in(key, j)``, so the first centers do not depend on K; ``num_active`` (traced) centers of
    ``num_components`` slots are drawn, the rest stay 0 (padding: :func:`inference.stats.mask_components`)."""
    centers = jnp.zeros((num_components, layout.num_features), dtype)

    def body(j, centers):
        row = _top_rows(layout, data, jax.random.fold_in(key, j), 1, dtype, centers, j)[0]
        return centers.at[j].set(row)

    return jax.lax.fori_loop(0, num_components if num_active is None else num_active, body, centers)


def _nearest(xc, centers, active):
    d2 = jnp.sum(xc**2, axis=1)[:, None] - 2 * xc @ centers.T + jnp.sum(centers**2, axis=1)[None, :]
    return jnp.where(active[None, :], d2, jnp.inf).argmin(axis=1)


def _hard_stats(layout, data, centers, full_moment: bool, dtype, active) -> SuffStats:
    """Weighted moments of the nearest-(active-)center partition."""
    num_components, d = centers.shape
    zero = SuffStats(jnp.zeros(num_components, dtype), jnp.zeros((num_components, d), dtype),
                     jnp.zeros((num_components, d, d) if full_moment else (num_components, d), dtype))

    def chunk_fn(args, xc, wc, row0):
        centers, active = args
        resp = jax.nn.one_hot(_nearest(xc, centers, active), num_components, dtype=dtype) * wc[:, None]
        return chunk_moments(resp, xc, full_moment)

    return data_pass(layout, data, chunk_fn, zero, (centers, active))


def lloyd_pass(layout, data, centers, dtype, max_iters: int = KMEANS_MAX_ITERS, active=None):
    """Lloyd's k-means iterations (weighted means) until the centers stop moving; an emptied center keeps
    its place. Only the ``active`` (K,) centers take rows (default: all)."""
    active = jnp.ones(centers.shape[0], bool) if active is None else active

    def cond(carry):
        i, _, moved = carry
        return (i < max_iters) & moved

    def body(carry):
        i, centers, _ = carry
        stats = _hard_stats(layout, data, centers, False, dtype, active)
        new = jnp.where(stats.counts[:, None] > 0, stats.sum_x / jnp.where(stats.counts > 0, stats.counts, 1)[:, None], centers)
        return i + 1, new, jnp.any(new != centers)

    _, centers, _ = jax.lax.while_loop(cond, body, (0, centers, True))
    return centers


def _params_from_centers(layout, data, centers, covariance_type, reg_covar, data_tril, dtype, active) -> GMMParams:
    """One hard M-step on the nearest-center partition; empty clusters get the data covariance."""
    stats = _hard_stats(layout, data, centers, needs_full_moment(covariance_type), dtype, active)
    params = m_step(stats, covariance_type, reg_covar, layout.num_rows, active)
    empty = (stats.counts <= 0) & active
    weights = jnp.where(empty, 1.0 / stats.counts.sum(), params.weights)
    return GMMParams(
        weights / weights.sum(),
        jnp.where(empty[:, None], centers, params.means),
        jnp.where(empty[:, None, None], data_tril, params.scale_tril),
    )


def initialize_rows(key, layout: Layout, data: RowData, num_components: int, method: str, covariance_type: str,
                    reg_covar, dtype, data_tril=None, num_active=None) -> GMMParams:
    """Initial parameters by ``method`` over rows described by ``layout`` / ``data`` (any placement).

    ``num_components`` is the number of slots (static); ``num_active`` (traced, default all) of them are real
    components and the rest padding (:func:`inference.stats.mask_components`). The real components do not
    depend on the slot count (random_from_data takes the first rows of one Gumbel-top-k order; k-means++
    folds the center's index into the key)."""
    if method not in INIT_METHODS:
        raise ValueError(f"init must be one of {', '.join(INIT_METHODS)} or a GMMParams; got {method!r}")
    if data_tril is None:
        data_tril = data_tril_pass(layout, data, covariance_type, reg_covar, dtype)
    active = active_slots(num_components, num_components if num_active is None else num_active)
    if method == "random_from_data":
        means = _top_rows(layout, data, key, num_components, dtype)
        weights = jnp.where(active, 1.0, 0.0).astype(dtype)
        return mask_components(GMMParams(weights / weights.sum(), means,
                                         jnp.broadcast_to(data_tril, (num_components,) + data_tril.shape)), active)
    centers = kmeans_plus_plus_pass(layout, data, key, num_components, dtype, num_active)
    if method == "kmeans":
        centers = lloyd_pass(layout, data, centers, dtype, active=active)
    return _params_from_centers(layout, data, centers, covariance_type, reg_covar, data_tril, dtype, active)


def data_covariance_tril(x, covariance_type: str, reg_covar, sample_weight=None) -> jnp.ndarray:
    """Cholesky factor (D, D) of the whole (weighted) data's covariance, reduced to ``covariance_type``."""
    x = jnp.asarray(x)
    w = jnp.ones(x.shape[0], x.dtype) if sample_weight is None else jnp.asarray(sample_weight, x.dtype)
    total = w.sum()
    centered = x - (w @ x) / total
    sums = (total, w @ centered, (centered * w[:, None]).T @ centered)
    if covariance_type in ("diag", "spherical"):
        sums = (total, sums[1], jnp.diagonal(sums[2]))
    return covariance_tril_from_sums(*sums, covariance_type, reg_covar)


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
    sample_weight=None,
) -> GMMParams:
    """Initial parameters by ``method`` (one of ``INIT_METHODS``) for in-memory ``x``; jit-able for a
    static method.

    Parameters
    ----------
    key : PRNG key.
    x : (N, D) data (its dtype is the result's dtype).
    num_components : K.
    method : "random_from_data" | "kmeans++" | "kmeans".
    covariance_type : "full" | "diag" | "spherical" | "tied".
    reg_covar : added to the diagonal of every covariance.
    chunk_size : rows per chunk for the data passes (default: automatic).
    sample_weight : (N,) non-negative weights (default: all 1).
    """
    x = jnp.asarray(x)
    num_rows, num_features = x.shape
    w = jnp.ones(num_rows, x.dtype) if sample_weight is None else jnp.asarray(sample_weight, x.dtype)
    center = (w @ x) / w.sum()
    chunk_size = chunk_size or default_chunk_size(num_rows, num_components, num_features)
    layout = Layout(num_rows, num_features, int(chunk_size))
    params = initialize_rows(key, layout, RowData(x - center, w), num_components, method, covariance_type, reg_covar, x.dtype)
    return params._replace(means=params.means + center)
