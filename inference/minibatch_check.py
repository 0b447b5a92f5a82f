"""Minibatch SVI's two full-data passes (:mod:`inference.numpyro_minibatch`): the start carried to all N rows by EM,
and the exact check of where the guide ended.

Why: with N / B batches per pass, each step's gradient is the full one plus noise of ~sqrt(N / B) posterior sd, so a
start from a subsample's MAP (~sqrt(N / start rows) sd from the N-row answer: ~50 sd at 25,000,000 rows) is
travelled in far more passes than EM needs, and a chunk of steps cannot tell a guide 20 sd away from one at the
optimum (its mean gradient's standard error is ~sqrt(N / (B * steps)) sd). Deterministic passes can:

* :func:`em_start`: EM (``inference.em``, streamed for a file) on all N rows from the subsample's MAP, to a
  tolerance of ``EM_START_NATS`` nats in all (maximum likelihood: the prior's pull is O(1 / N) of a posterior sd
  at the N > start rows where this runs);
* :func:`full_gradient_z`: the gradient of the N-row potential (NumPyro's: prior, likelihood, Jacobians, in the
  unconstrained space the guide lives in) at the guide's locations, summed over every row in blocks of
  ``CHECK_ROWS``, times the guide's scales: ``z_i = |dU/du_i| * sigma_i``. For the mean-field guide ``sigma_i``
  is ``1 / sqrt(H_ii)``, so ``z_i`` is how many conditional posterior sd a Newton step along ``u_i`` would
  move it; 0 at the optimum up to the guide's O(sigma^2) offset from the mode (Bernstein-von Mises).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import potential_energy

from models.gmm import params_from_sites
from models.params import GMMParams

from ._numpyro_common import Missing, data_component_log_prob, site_supports
from .em import fit_em
from .minibatch_rows import patterns_of
from .standardize import Standardizer, to_data, to_standard

__all__ = ["em_start", "full_gradient_z", "CHECK_ROWS", "EM_START_NATS", "EM_START_MAX_ITERS"]

CHECK_ROWS = 1 << 16  # rows per block of the gradient pass
EM_START_NATS = 0.01  # EM's start tolerance: the log-likelihood of all rows changing by less between passes
EM_START_MAX_ITERS = 100


def em_start(key, x, num_components: int, start: GMMParams, st: Standardizer, num_rows: int):
    """EM on all rows of ``x`` (a ``.npy`` path or an array, data units) from ``start`` (standardised units).

    Returns
    -------
    (params in standardised units or None when EM's point is not usable, info dict: iterations, converged,
    seconds, and the reason when not used)
    """
    try:
        fit = fit_em(key, x, num_components, init=to_data(start, st), tol=EM_START_NATS / num_rows,
                     max_iters=EM_START_MAX_ITERS)
    except (ValueError, FloatingPointError) as err:  # EM refusing what SVI takes: keep the subsample's MAP
        return None, dict(used=False, reason=f"EM raised: {err}")
    info = dict(iterations=int(fit.num_iters), converged=bool(fit.converged), seconds=float(fit.seconds))
    params = to_standard(GMMParams(*(np.asarray(a, np.float64) for a in fit.params)), st)
    weights = np.asarray(params.weights)
    if not all(np.all(np.isfinite(np.asarray(a))) for a in params) or np.any(weights <= 0):
        return None, dict(info, used=False, reason="EM's point has an empty or non-finite component")
    return params, dict(info, used=True)


@functools.lru_cache(maxsize=16)
def _gradient_programs(model, num_components: int, num_features: int, prior: tuple):
    supports = site_supports(num_components, num_features, prior)

    def constrained(u):
        return {n: biject_to(supports[n])(v) for n, v in u.items()}

    @jax.jit
    def data_gradient(u, x, mask, observed, pattern):
        missing = None if observed is None else Missing(observed, pattern)

        def log_lik(u):
            joint = data_component_log_prob(params_from_sites(constrained(u)), x, missing)
            return jnp.sum(jnp.where(mask, logsumexp(joint, axis=-1), 0.0))

        return jax.grad(log_lik)(u)

    @jax.jit
    def prior_gradient(u, x, observed, pattern):
        """d(-log prior - log Jacobian)/du: the potential of the model with its data and assignment sites hidden."""
        missing = None if observed is None else Missing(observed, pattern)
        args = (x, None) if missing is None else (x, None, missing)
        priors = handlers.block(handlers.seed(model, rng_seed=0), hide=["x", "z"])
        return jax.grad(lambda v: potential_energy(priors, args, {}, v))(u)

    return data_gradient, prior_gradient


def full_gradient_z(model, num_components: int, prior: tuple, locs: dict, scales: dict, rows, num_rows: int,
                    st: Standardizer, codes=None, observed=None):
    """``max_i |dU/du_i| * scales_i`` over every guide location (module docstring), U the N-row potential of
    ``model`` (the minibatch model of N rows, ``num_components`` and ``prior`` its), ``locs`` / ``scales`` the guide's (unconstrained, per site),
    ``rows`` sliceable data-unit rows (standardised here by ``st``; ``codes`` / ``observed`` the missingness
    patterns, None without NaN). One sequential pass in blocks of ``CHECK_ROWS``; the last block is padded and
    masked.

    Returns
    -------
    (max z, {site: z array})
    """
    data_gradient, prior_gradient = _gradient_programs(model, num_components, int(rows.shape[1]), prior)
    block = min(CHECK_ROWS, num_rows)
    total = None
    for first in range(0, num_rows, block):
        x = (np.asarray(rows[first:first + block], np.float64) - st.loc) / st.scale
        size = x.shape[0]
        if total is None:  # the prior and Jacobian terms, once
            total = prior_gradient(locs, jnp.asarray(x), observed, _pattern(x, codes))
        mask = np.arange(block) < size
        if size < block:
            x = np.concatenate([x, np.repeat(x[:1], block - size, axis=0)])
        g = data_gradient(locs, jnp.asarray(x), jnp.asarray(mask), observed, _pattern(x, codes))
        total = jax.tree.map(lambda t, d: t - d, total, g)
    z = {n: np.abs(np.asarray(total[n])) * np.asarray(scales[n]) for n in locs}
    return float(max(np.max(v) for v in z.values())), z


def _pattern(x, codes):
    p = patterns_of(x, codes)
    return None if p is None else jnp.asarray(p)
