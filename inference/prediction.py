"""The estimator's prediction programs: scores of rows at one parameter point or averaged over draws.

Jitted once per padded row count: rows are padded to a bucket (:func:`bucket`: powers of two up to 2**16,
then multiples of 2**16), so that predicting on many batch sizes compiles O(log N) programs, not one per N.
Used by ``inference.estimator.GaussianMixture`` (``predict``, ``predict_proba``, ``score_samples``, with or
without ``posterior=True``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from models.density import component_log_prob
from models.params import GMMParams

__all__ = ["bucket", "point_scores", "posterior_scores"]


def bucket(num_rows: int) -> int:
    """Padded row count for prediction programs: powers of two up to 2**16, then multiples of
    2**16, so that predicting on many batch sizes compiles O(log N) programs, not one per N."""
    if num_rows <= 1 << 16:
        return max(8, 1 << (num_rows - 1).bit_length())
    return -(-num_rows // (1 << 16)) * (1 << 16)


@jax.jit
def _point_scores(params: GMMParams, x):
    """(log responsibilities (N, K), pointwise log-likelihood (N,)) at one parameter point."""
    joint = component_log_prob(params, x)
    point_ll = logsumexp(joint, axis=1)
    return joint - point_ll[:, None], point_ll


@jax.jit
def _posterior_scores(draws: GMMParams, x):
    """Over S draws (leading dim): (mean responsibilities (N, K), log mean_s p(x_n | theta_s) (N,))."""
    num_draws = draws.weights.shape[0]
    init = (jnp.zeros((x.shape[0], draws.weights.shape[-1]), x.dtype), jnp.full((x.shape[0],), -jnp.inf, x.dtype))

    def body(carry, params):
        resp_sum, lse = carry
        log_resp, point_ll = _point_scores(params, x)
        return (resp_sum + jnp.exp(log_resp), jnp.logaddexp(lse, point_ll)), None

    (resp_sum, lse), _ = jax.lax.scan(body, init, draws)
    return resp_sum / num_draws, lse - jnp.log(num_draws)


def point_scores(params: GMMParams, X) -> tuple[np.ndarray, np.ndarray]:
    """(log responsibilities (N, K), pointwise log-likelihood (N,)) of ``X`` at ``params``, as numpy,
    computed on a padded row bucket."""
    num_rows = X.shape[0]
    padded = np.zeros((bucket(num_rows), X.shape[1]), X.dtype)
    padded[:num_rows] = X
    log_resp, point_ll = _point_scores(GMMParams(*(jnp.asarray(a) for a in params)), jnp.asarray(padded))
    return np.asarray(log_resp)[:num_rows], np.asarray(point_ll)[:num_rows]


def posterior_scores(samples: GMMParams, X) -> tuple[np.ndarray, np.ndarray]:
    """Over the draws of ``samples`` (leading (chain, draw) dims): (mean responsibilities (N, K),
    log posterior predictive density ``log mean_s p(x_n | theta_s)`` (N,)), as numpy."""
    num_rows = X.shape[0]
    draws = GMMParams(*(jnp.asarray(np.reshape(a, (-1,) + np.shape(a)[2:])) for a in samples))
    padded = np.zeros((bucket(num_rows), X.shape[1]), np.result_type(X.dtype, np.asarray(samples.weights).dtype))
    padded[:num_rows] = X
    resp, point_ll = _posterior_scores(draws, jnp.asarray(padded))
    return np.asarray(resp)[:num_rows], np.asarray(point_ll)[:num_rows]
