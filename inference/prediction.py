"""The estimator's prediction programs: scores of rows at one parameter point or averaged over draws.

Jitted once per (row bucket, component bucket): rows are padded to a bucket (:func:`bucket`: powers of two up
to 2**16, then multiples of 2**16), so that predicting on many batch sizes compiles O(log N) programs, not one
per N; components are padded to :func:`component_bucket` (8, 16, 32, ...) with weight 0 (log weight -inf: a
padded component adds nothing to any row's density and gets responsibility 0), so that a grid over K = 1..8
(GridSearchCV) runs one scoring program per row bucket, not one per K. Arguments go to the programs as NumPy
arrays (no eager ``jnp.asarray``, which compiles a small staging program per shape).
Used by ``inference.estimator.GaussianMixture`` (``predict``, ``predict_proba``, ``score_samples``, with or
without ``posterior=True``).

Rows with NaN holes (missing at random) are scored by the density of their observed entries
(``models.missing``: per-pattern tables, each row looking up its pattern's) in programs of their own, whose
pattern count is padded to a power of two as well; complete data run the programs above, unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from models.density import component_log_prob
from models.missing import BLOCK_ROWS, missing_patterns, pattern_tables
from models.params import GMMParams

__all__ = ["bucket", "component_bucket", "point_scores", "posterior_scores"]


def bucket(num_rows: int) -> int:
    """Padded row count for prediction programs: powers of two up to 2**16, then multiples of
    2**16, so that predicting on many batch sizes compiles O(log N) programs, not one per N."""
    if num_rows <= 1 << 16:
        return max(8, 1 << (num_rows - 1).bit_length())
    return -(-num_rows // (1 << 16)) * (1 << 16)


def component_bucket(num_components: int) -> int:
    """Padded component count of the prediction programs: 8, then powers of two (a 9th component doubles the
    work of a row once; compiling a program per K costs ~0.3 s each)."""
    return max(8, 1 << (int(num_components) - 1).bit_length())


def _pad_components(params: GMMParams, dtype, num_slots: int | None = None) -> GMMParams:
    """``params`` (numpy, any leading dims) with components padded to ``num_slots`` (default
    :func:`component_bucket`): weight 0, mean 0, identity scale; in ``dtype`` at least (the data's and the
    parameters' common dtype). Also EM's padded user starts (``inference.em``)."""
    params = GMMParams(*(np.asarray(a) for a in params))
    dtype = np.result_type(dtype, params.weights.dtype)
    num_components, num_features = params.means.shape[-2:]
    extra = (component_bucket(num_components) if num_slots is None else num_slots) - num_components
    lead = params.weights.shape[:-1]
    weights = np.concatenate([params.weights, np.zeros(lead + (extra,))], axis=-1)
    means = np.concatenate([params.means, np.zeros(lead + (extra, num_features))], axis=-2)
    eye = np.broadcast_to(np.eye(num_features), lead + (extra, num_features, num_features))
    tril = np.concatenate([params.scale_tril, eye], axis=-3)
    return GMMParams(weights.astype(dtype), means.astype(dtype), tril.astype(dtype))


def _observed_joint(params: GMMParams, x, holes):
    """``log w_k + log N(x_n,o | mu_k,o, Sigma_k,oo)`` (N, K); ``holes`` = (pattern index (N,), observed (P, D)),
    ``x`` zero where missing (``models.missing``'s tables)."""
    index, observed = holes
    tables = pattern_tables(params, observed)

    def row(args):
        x_row, p = args
        white = tables.whiten[p] @ x_row - tables.offset[p]  # (K, D), 0 on the missing coordinates
        return tables.log_norm[p] - 0.5 * jnp.sum(white**2, axis=-1)

    return jax.lax.map(row, (x, index), batch_size=BLOCK_ROWS)


@jax.jit
def _point_scores(params: GMMParams, x, holes=None):
    """(log responsibilities (N, K), pointwise log-likelihood (N,)) at one parameter point; ``holes`` (see
    :func:`_observed_joint`) for rows with missing entries, None for complete rows."""
    joint = component_log_prob(params, x) if holes is None else _observed_joint(params, x, holes)
    point_ll = logsumexp(joint, axis=1)
    return joint - point_ll[:, None], point_ll


@jax.jit
def _posterior_scores(draws: GMMParams, x, holes=None):
    """Over S draws (leading dim): (mean responsibilities (N, K), log mean_s p(x_n | theta_s) (N,))."""
    num_draws = draws.weights.shape[0]
    init = (jnp.zeros((x.shape[0], draws.weights.shape[-1]), x.dtype), jnp.full((x.shape[0],), -jnp.inf, x.dtype))

    def body(carry, params):
        resp_sum, lse = carry
        log_resp, point_ll = _point_scores(params, x, holes)
        return (resp_sum + jnp.exp(log_resp), jnp.logaddexp(lse, point_ll)), None

    (resp_sum, lse), _ = jax.lax.scan(body, init, draws)
    return resp_sum / num_draws, lse - jnp.log(num_draws)


def _padded(X, dtype):
    """``(X zero-filled where NaN and padded to its row bucket, holes or None)``: holes = (pattern index of each
    padded row, observed patterns padded with complete ones to a power of two) when ``X`` has NaN."""
    num_rows = X.shape[0]
    padded = np.zeros((bucket(num_rows), X.shape[1]), dtype)
    nan = np.isnan(X)
    if not nan.any():
        padded[:num_rows] = X
        return padded, None
    padded[:num_rows] = np.where(nan, 0.0, X)
    patterns = missing_patterns(X)
    num_patterns = patterns.observed.shape[0]
    observed = np.ones((1 << (num_patterns - 1).bit_length(), X.shape[1]), bool)
    observed[:num_patterns] = patterns.observed
    index = np.full(padded.shape[0], num_patterns if observed.shape[0] > num_patterns else 0, np.int32)
    index[:num_rows] = patterns.index
    return padded, (index, observed)


def point_scores(params: GMMParams, X) -> tuple[np.ndarray, np.ndarray]:
    """(log responsibilities (N, K), pointwise log-likelihood (N,)) of ``X`` at ``params``, as numpy,
    computed on a padded row bucket and component bucket; rows with NaN by the density of their observed
    entries."""
    num_rows, num_components = X.shape[0], np.shape(params.weights)[-1]
    padded, holes = _padded(X, X.dtype)
    log_resp, point_ll = _point_scores(_pad_components(params, X.dtype), padded, holes)
    return np.asarray(log_resp)[:num_rows, :num_components], np.asarray(point_ll)[:num_rows]


def posterior_scores(samples: GMMParams, X) -> tuple[np.ndarray, np.ndarray]:
    """Over the draws of ``samples`` (leading (chain, draw) dims): (mean responsibilities (N, K),
    log posterior predictive density ``log mean_s p(x_n | theta_s)`` (N,)), as numpy."""
    num_rows, num_components = X.shape[0], np.shape(samples.weights)[-1]
    dtype = np.result_type(X.dtype, np.asarray(samples.weights).dtype)
    draws = _pad_components(GMMParams(*(np.reshape(a, (-1,) + np.shape(a)[2:]) for a in samples)), dtype)
    padded, holes = _padded(X, dtype)
    resp, point_ll = _posterior_scores(draws, padded, holes)
    return np.asarray(resp)[:num_rows, :num_components], np.asarray(point_ll)[:num_rows]
