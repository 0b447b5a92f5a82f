"""The GMM density in log-space: the seed's gmm_lik / gmm_log_lik / gmm_posterior_probabilities done right.

Every engine's trace uses :func:`log_likelihood` from here, which is what makes engines comparable.
All functions are pure and jitted (one compile per input shape, also when called eagerly); no explicit inverses (triangular solves only), logsumexp throughout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from . import missing as _missing
from .linalg import inverse_lower, solve_lower
from .params import GMMParams
from .program_caller import run_program
from .quadratic import log_prob_coefficients, quadratic_features


@jax.jit
def _component_log_prob(params: GMMParams, x) -> jnp.ndarray:
    """Log joint ``log w_k + log N(x_n | mu_k, Sigma_k)``.

    Parameters
    ----------
    params : GMMParams with weights (K,), means (K, D), scale_tril (K, D, D).
    x : (N, D) data.

    Returns
    -------
    (N, K) array.
    """
    x = jnp.asarray(x)
    num_components, num_features = params.means.shape[-2:]
    lower = params.scale_tril
    # Whitening matrices W_k = L_k^{-1} by a triangular solve against the identity (sklearn's
    # _compute_precision_cholesky); no covariance is ever inverted. Then ONE matmul for all k:
    # W_k (x_n - mu_k) = W_k x_n - W_k mu_k.
    whiten = inverse_lower(lower)  # (K, D, D)
    projected = x @ jnp.swapaxes(whiten, -1, -2).transpose(1, 0, 2).reshape(num_features, -1)  # (N, K*D)
    projected = projected.reshape(x.shape[0], num_components, num_features)
    offset = jnp.einsum("kij,kj->ki", whiten, params.means)  # (K, D)
    maha = jnp.sum((projected - offset) ** 2, axis=-1)  # (N, K)
    log_det = jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)  # (K,)
    log_norm = -0.5 * num_features * math.log(2 * math.pi) - log_det
    return jnp.log(params.weights) + log_norm - 0.5 * maha


@jax.jit
def _pointwise_log_likelihood(params: GMMParams, x) -> jnp.ndarray:
    """Marginal log density of each row, ``log sum_k w_k N(x_n | mu_k, Sigma_k)``, shape (N,)."""
    return logsumexp(_component_log_prob(params, x), axis=-1)


@jax.jit
def _log_likelihood(params: GMMParams, x) -> jnp.ndarray:
    """Total marginal log-likelihood of the data (a scalar)."""
    return jnp.sum(_pointwise_log_likelihood(params, x))


@jax.jit
def _responsibilities(params: GMMParams, x) -> jnp.ndarray:
    """Posterior component probabilities ``p(z_n = k | x_n)``, shape (N, K), rows sum to 1."""
    joint = _component_log_prob(params, x)
    return jnp.exp(joint - logsumexp(joint, axis=-1, keepdims=True))



def _dispatch(complete, observed, doc):
    def public(params: GMMParams, x):
        if _missing.has_missing(x):
            return observed(params, x)
        return complete(params, x)

    public.__doc__ = doc + """

    Rows with NaN entries (a concrete array, not inside a user's ``jit``) are marginalised over their
    missing entries: :mod:`models.missing`. Without NaN this is the jitted complete-data formula."""
    public.__wrapped__ = complete
    return public


component_log_prob = _dispatch(_component_log_prob, _missing.observed_component_log_prob, _component_log_prob.__doc__)
component_log_prob.__name__ = "component_log_prob"
pointwise_log_likelihood = _dispatch(_pointwise_log_likelihood, _missing.observed_pointwise_log_likelihood,
                                     _pointwise_log_likelihood.__doc__)
pointwise_log_likelihood.__name__ = "pointwise_log_likelihood"
log_likelihood = _dispatch(_log_likelihood, _missing.observed_log_likelihood, _log_likelihood.__doc__)
log_likelihood.__name__ = "log_likelihood"
responsibilities = _dispatch(_responsibilities, _missing.observed_responsibilities, _responsibilities.__doc__)
responsibilities.__name__ = "responsibilities"


@jax.jit
def gaussian_kl(mean0, scale_tril0, mean1, scale_tril1) -> jnp.ndarray:
    """KL( N(mean0, L0 L0^T) || N(mean1, L1 L1^T) ), broadcasting over leading dims.

    Parameters
    ----------
    mean0, mean1 : (..., D); scale_tril0, scale_tril1 : (..., D, D) lower Cholesky factors.

    Returns
    -------
    (...,) KL divergences (nats), computed with triangular solves only.
    """
    num_features = mean0.shape[-1]
    batch = jnp.broadcast_shapes(mean0.shape[:-1], mean1.shape[:-1], scale_tril0.shape[:-2], scale_tril1.shape[:-2])
    mean0 = jnp.broadcast_to(mean0, batch + (num_features,))[..., None, :]
    mean1 = jnp.broadcast_to(mean1, batch + (num_features,))[..., None, :]
    scale_tril0 = jnp.broadcast_to(scale_tril0, batch + (num_features, num_features))
    scale_tril1 = jnp.broadcast_to(scale_tril1, batch + (num_features, num_features))
    # tr(S1^{-1} S0) = ||L1^{-1} L0||_F^2 ; Mahalanobis term = ||L1^{-1} (m1 - m0)||^2
    m = solve_lower(scale_tril1, scale_tril0)
    diff = solve_lower(scale_tril1, jnp.swapaxes(mean1 - mean0, -1, -2))
    log_det = lambda lower: jnp.sum(jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1)), axis=-1)
    trace_term = jnp.sum(m**2, axis=(-2, -1))
    maha = jnp.sum(diff**2, axis=(-2, -1))
    return 0.5 * (trace_term + maha - num_features) + log_det(scale_tril1) - log_det(scale_tril0)


# The largest rounding error, in nats per row, that :func:`draws_pointwise_log_likelihood` accepts from the
# expanded quadratic form before it recomputes a draw with the whitened difference (the exact path above).
QUADRATIC_MAX_ERROR = 1e-8


@jax.jit
def _draws_quadratic(params: GMMParams, features, feature_max, center):
    """(B, N) marginal log density of B draws by ONE matmul of the rows' centred quadratic features (N, F) with
    the draws' (F, B K) coefficients, and (B,) a bound on each draw's rounding error (nats per row).

    The bound is the dot product's ``gamma_F |a|^T |f|`` (Higham, *Accuracy and Stability of Numerical
    Algorithms*, eq. 3.4) with ``|f|`` the largest feature per column, plus the coefficients' and features' own
    rounding: ``(F + D + 2) u sum_f |A_fk| max_n |f_nf|``, the largest over k (u = eps / 2). Every component's
    term is within it, so the logsumexp over them is too. It is large exactly where the expansion cancels: a
    narrow component far from ``center`` (``|W (mu - c)|^2`` of the constant term)."""
    num_draws, num_components, num_features = params.means.shape
    unit = lambda p: GMMParams(jnp.ones_like(p.weights), p.means - center, p.scale_tril)
    coef = jax.vmap(lambda p: log_prob_coefficients(unit(p), True))(params)  # (B, F, K), weights kept out
    num_coef = coef.shape[1]
    table = features @ jnp.moveaxis(coef, 0, 1).reshape(num_coef, num_draws * num_components)
    table = table.reshape(-1, num_draws, num_components) + jnp.log(params.weights)
    rounding = (num_coef + num_features + 2) * 0.5 * jnp.finfo(features.dtype).eps
    bound = rounding * jnp.max(jnp.einsum("bfk,f->bk", jnp.abs(coef), feature_max), axis=-1)
    return logsumexp(table, axis=-1).T, jnp.where(jnp.all(jnp.isfinite(coef), axis=(1, 2)), bound, jnp.inf)


@jax.jit
def _centred_features(x, center):
    """The rows' quadratic features about ``center`` (N, F) and each feature's largest magnitude (F,): one program."""
    features = quadratic_features(x - center, True)
    return features, jnp.max(jnp.abs(features), axis=0)


def draws_pointwise_log_likelihood(params: GMMParams, x, max_values: int = 25_000_000):
    """Yield ``(start, (B, N) log p(x_n | draw))`` over the S draws of ``params`` (batched: weights (S, K), means
    (S, K, D), scale_tril (S, K, D, D)) for complete rows ``x`` (N, D), in blocks of B draws whose (N, B K) table
    holds at most ``max_values`` values: :func:`pointwise_log_likelihood` of each draw, to
    ``QUADRATIC_MAX_ERROR`` nats per row.

    How: the expanded quadratic form of the rows centred on their mean, one (N, F) x (F, B K) matmul per block
    (F = D(D+1)/2 + D + 1, every draw's coefficients side by side; ~8x fewer values written than the whitened
    difference's (N, B K D)), in float64. A draw whose rounding bound (``_draws_quadratic``) exceeds
    ``QUADRATIC_MAX_ERROR`` (a narrow component far from the rows' centre, non-finite parameters) is recomputed by
    the whitened difference, exact to rounding there too. Blocks have one size (the last one padded), one program.
    Raises ValueError for rows with NaN (``models.missing`` marginalises them; use :func:`pointwise_log_likelihood`).
    """
    x = np.asarray(x, np.float64)
    if np.isnan(x).any():
        raise ValueError("x: rows with NaN need models.missing's observed-data density (pointwise_log_likelihood)")
    weights, means, scale_tril = (np.asarray(a, np.float64) for a in params)
    total, num_components = weights.shape
    center = x.mean(axis=0)
    features, feature_max = run_program(_centred_features, (), x, center)
    block = int(max(1, min(total, max_values // max(1, x.shape[0] * num_components))))
    for start in range(0, total, block):
        take = np.minimum(np.arange(start, start + block), total - 1)  # the last block padded with its last draw
        chunk = GMMParams(weights[take], means[take], scale_tril[take])
        values, bound = run_program(_draws_quadratic, (), chunk, features, feature_max, center)
        values, bound = np.array(values), np.asarray(bound)
        redo = np.flatnonzero(~(bound <= QUADRATIC_MAX_ERROR))
        for i in redo:  # one draw at a time: the whitened (N, K, D) stays small
            values[i] = np.asarray(_pointwise_log_likelihood(GMMParams(*(a[i] for a in chunk)), x))
        count = min(block, total - start)
        yield start, values[:count]
