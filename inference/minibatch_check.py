"""Minibatch SVI's passes over all N rows (:mod:`inference.numpyro_minibatch`): the start carried to the N-row
answer, and the exact check of where the guide ended.

Why: with N / B batches per pass, each step's gradient is the full one plus noise of ~sqrt(N / B) posterior sd, so a
start from a subsample's MAP (~sqrt(N / start rows) sd from the N-row answer: ~50 sd at 25,000,000 rows) is
travelled in far more passes than EM needs, and a chunk of steps cannot tell a guide 20 sd away from one at the
optimum (its mean gradient's standard error is ~sqrt(N / (B * steps)) sd). Deterministic passes can:

* :func:`em_start`: EM (``inference.em``, in standardised units, streamed for a file) on all N rows from the
  subsample's MAP, to ``EM_START_NATS`` nats in all (maximum likelihood: the prior's pull is O(1 / N) of a posterior
  sd at the N > start rows where this runs). EM can still stop far off where it is slow (overlapping clusters), so
* :func:`polished_start`: at most ``NEWTON_PASSES`` passes of Newton steps on the N-row potential
  (:func:`full_potential`: prior, Jacobians and every row's marginal likelihood, NumPyro's unconstrained space),
  with the Hessian estimated from the start's rows scaled to N (:func:`curvature_at`), each step halved until the
  potential falls (:func:`newton_polish`);
* :func:`final_check`: the Newton step from the guide's locations in marginal posterior sd (``sqrt(diag H^-1)``),
  or without a Hessian the gradient times the guide's scales (:func:`full_gradient_z`: for the mean-field guide
  ``1 / sqrt(H_ii)``, so each entry is how many conditional sd a Newton step along it would move); 0 at the optimum
  up to the guide's O(sigma^2) offset from the mode (Bernstein-von Mises).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import solve_triangular
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer.util import potential_energy

from models.gmm import params_from_sites
from models.linalg import cholesky, solve_lower
from models.params import GMMParams

from ._numpyro_common import Missing, data_component_log_prob, enumerated, model_sites, site_supports, to_unconstrained
from .em import fit_em
from .laplace_mass import basis_hvps
from .minibatch_rows import patterns_of
from .standardize import Standardizer

__all__ = ["em_start", "polished_start", "final_check", "full_potential", "full_gradient_z", "curvature_at", "newton_step", "newton_polish", "Curvature",
           "CHECK_ROWS", "EM_START_NATS", "EM_START_MAX_ITERS", "NEWTON_PASSES", "NEWTON_TOL_SD", "MAX_NEWTON_SD"]

CHECK_ROWS = 1 << 16  # rows per block of the gradient pass
EM_START_NATS = 0.01  # EM's start tolerance: the log-likelihood of all rows changing by less between passes
EM_START_MAX_ITERS = 100
IN_MEMORY_BYTES = 1 << 28  # em_start: an array up to this size is standardised in memory (a copy)
NEWTON_PASSES = 4  # passes over the rows for the Newton polish after EM
NEWTON_TOL_SD = 0.05  # ... which stops once a Newton step is below this many marginal posterior sd
MAX_NEWTON_SD = 0.5  # converged: the final guide's Newton step at most this many marginal posterior sd


def em_start(key, rows, num_components: int, start: GMMParams, st: Standardizer, num_rows: int):
    """EM on all ``rows`` (an array, or ``inference.minibatch_rows.open_rows``'s reader of a ``.npy``; data units)
    from ``start``, in standardised units (as the engines fit: EM's ``reg_covar`` is absolute, and on data of scale
    1e-8 it would be the covariance). An array of at most ``IN_MEMORY_BYTES`` is standardised in memory; anything
    else is read in standardised blocks.

    Returns
    -------
    (params in standardised units or None when EM's point is not usable, info dict: iterations, converged,
    seconds, and the reason when not used)
    """
    if isinstance(rows, np.ndarray) and rows.nbytes <= IN_MEMORY_BYTES:
        data = (np.asarray(rows, np.float64) - st.loc) / st.scale
    else:
        def data():
            return _standardised_blocks(rows, num_rows, st, CHECK_ROWS)
    try:
        fit = fit_em(key, data, num_components, init=start, tol=EM_START_NATS / num_rows, max_iters=EM_START_MAX_ITERS)
    except (ValueError, FloatingPointError) as err:  # EM refusing what SVI takes: keep the subsample's MAP
        return None, dict(used=False, reason=f"EM raised: {err}")
    info = dict(iterations=int(fit.num_iters), converged=bool(fit.converged), seconds=float(fit.seconds))
    params = GMMParams(*(np.asarray(a, np.float64) for a in fit.params))
    if not all(np.all(np.isfinite(np.asarray(a))) for a in params) or np.any(np.asarray(params.weights) <= 0):
        return None, dict(info, used=False, reason="EM's point has an empty or non-finite component")
    return params, dict(info, used=True)


@functools.lru_cache(maxsize=16)
def _programs(model, num_components: int, num_features: int, prior: tuple):
    supports = site_supports(num_components, num_features, prior)

    def constrained(u):
        return {n: biject_to(supports[n])(v) for n, v in u.items()}

    @jax.jit
    def data_gradient(u, x, mask, observed, pattern):
        """(sum of the rows' log-likelihoods, its gradient): rows where ``mask``."""
        missing = None if observed is None else Missing(observed, pattern)

        def log_lik(u):
            joint = data_component_log_prob(params_from_sites(constrained(u)), x, missing)
            return jnp.sum(jnp.where(mask, logsumexp(joint, axis=-1), 0.0))

        return jax.value_and_grad(log_lik)(u)

    @jax.jit
    def prior_gradient(u, x, observed, pattern):
        """(-log prior - log Jacobian, its gradient): the model's potential with its data and assignments hidden."""
        missing = None if observed is None else Missing(observed, pattern)
        args = (x, None) if missing is None else (x, None, missing)
        priors = handlers.block(handlers.seed(model, rng_seed=0), hide=["x", "z"])
        return jax.value_and_grad(lambda v: potential_energy(priors, args, {}, v))(u)

    @jax.jit
    def curvature(u, x, observed, pattern):
        """Cholesky factor of the Hessian (ravel order) of ``model``'s potential on the rows ``x`` (each weighted
        N / len(x): the N-row Hessian estimated from them), and whether it is positive definite."""
        missing = None if observed is None else Missing(observed, pattern)
        args = (x, None) if missing is None else (x, None, missing)
        flat, unravel = ravel_pytree(u)
        hessian = basis_hvps(lambda v: potential_energy(enumerated(model), args, {}, unravel(v), enum=True), flat)
        lower = cholesky(0.5 * (hessian + hessian.T))
        ok = jnp.all(jnp.isfinite(lower)) & jnp.all(jnp.diagonal(lower) > 0)
        return lower, ok

    return data_gradient, prior_gradient, curvature


def full_potential(model, num_components: int, prior: tuple, u: dict, rows, num_rows: int, st: Standardizer,
                   codes=None, observed=None):
    """(U, dU/du) of the N-row potential of ``model`` (prior, Jacobians and every row's marginal likelihood) at the
    unconstrained ``u``, in one sequential pass over ``rows`` (data units, standardised here by ``st``) in blocks of
    ``CHECK_ROWS``, the last padded and masked."""
    data_gradient, prior_gradient, _ = _programs(model, num_components, int(rows.shape[1]), prior)
    block = min(CHECK_ROWS, num_rows)
    value = total = None
    for x in _standardised_blocks(rows, num_rows, st, block):
        size = x.shape[0]
        if total is None:  # the prior and Jacobian terms, once
            value, total = prior_gradient(u, jnp.asarray(x), observed, _pattern(x, codes))
        mask = np.arange(block) < size
        if size < block:
            x = np.concatenate([x, np.repeat(x[:1], block - size, axis=0)])
        log_lik, g = data_gradient(u, jnp.asarray(x), jnp.asarray(mask), observed, _pattern(x, codes))
        value, total = value - log_lik, jax.tree.map(lambda t, d: t - d, total, g)
    return float(value), total


def full_gradient_z(model, num_components: int, prior: tuple, locs: dict, scales: dict, rows, num_rows: int,
                    st: Standardizer, codes=None, observed=None):
    """``max_i |dU/du_i| * scales_i`` over every guide location, U the N-row potential (:func:`full_potential`;
    ``model`` the minibatch model of N rows, ``num_components`` and ``prior`` its).

    Returns
    -------
    (max z, {site: z array})
    """
    _, total = full_potential(model, num_components, prior, locs, rows, num_rows, st, codes, observed)
    z = {n: np.abs(np.asarray(total[n])) * np.asarray(scales[n]) for n in locs}
    return float(max(np.max(v) for v in z.values())), z


class Curvature(NamedTuple):
    """The N-row Hessian estimated from the start's rows: its Cholesky factor (P, P), the marginal posterior sd
    ``sqrt(diag H^-1)`` (P,), and whether H was positive definite."""
    lower: np.ndarray
    marginal_sd: np.ndarray
    ok: bool


def curvature_at(model, num_components: int, prior: tuple, u: dict, x_start: np.ndarray, codes=None,
                 observed=None) -> Curvature:
    """The Hessian of the N-row potential at ``u`` estimated from ``x_start`` (standardised rows, each weighted
    N / len(x_start) by the minibatch ``model``)."""
    _, _, curvature = _programs(model, num_components, int(x_start.shape[1]), prior)
    lower, ok = curvature(u, jnp.asarray(x_start), observed, _pattern(x_start, codes))
    if not bool(ok):
        return Curvature(None, None, False)
    inverse = solve_lower(lower, jnp.eye(lower.shape[0], dtype=lower.dtype))  # L^-1: H^-1 = L^-T L^-1
    return Curvature(np.asarray(lower), np.sqrt(np.sum(np.asarray(inverse) ** 2, axis=0)), True)


def newton_step(curv: Curvature, gradient: dict):
    """(the Newton step -H^-1 g as a dict like ``gradient``, its largest |entry| in marginal posterior sd)."""
    flat, unravel = ravel_pytree(gradient)
    lower = jnp.asarray(curv.lower)
    step = -solve_triangular(lower.T, solve_triangular(lower, flat, lower=True), lower=False)
    return unravel(step), float(np.max(np.abs(np.asarray(step)) / curv.marginal_sd))


def newton_polish(model, num_components: int, prior: tuple, u: dict, curv: Curvature, rows, num_rows: int,
                  st: Standardizer, codes=None, observed=None, max_passes: int = NEWTON_PASSES):
    """Newton steps on the N-row potential from ``u`` (the Hessian ``curv`` fixed, each step halved until the
    potential falls, one pass over the rows per evaluation) until a step is below ``NEWTON_TOL_SD`` marginal sd
    or ``max_passes`` passes are spent.

    Returns
    -------
    (u, info dict: passes, accepted steps, the last step's size in marginal sd)
    """
    value, gradient = full_potential(model, num_components, prior, u, rows, num_rows, st, codes, observed)
    passes, accepted, size = 1, 0, np.inf
    while passes < max_passes:
        step, size = newton_step(curv, gradient)
        if size < NEWTON_TOL_SD:
            break
        for shrink in (1.0, 0.5, 0.25):
            trial = jax.tree.map(lambda a, d: a + shrink * d, u, step)
            trial_value, trial_gradient = full_potential(model, num_components, prior, trial, rows, num_rows, st,
                                                         codes, observed)
            passes += 1
            if np.isfinite(trial_value) and trial_value < value:
                u, value, gradient, accepted = trial, trial_value, trial_gradient, accepted + 1
                break
            if passes >= max_passes:
                break
        else:
            break  # no shrunk step lowered the potential: stay
    _, size = newton_step(curv, gradient)
    return u, dict(passes=passes, accepted=accepted, step_sd=float(size))


def polished_start(model, num_components: int, prior: tuple, start: GMMParams, x_start: np.ndarray, rows,
                   num_rows: int, st: Standardizer, codes=None, observed=None, polish: bool = True,
                   max_params: int = 2048):
    """The N-row curvature at ``start`` (standardised units; from the standardised ``x_start``), and, when
    ``polish``, ``start`` moved by :func:`newton_polish`. No curvature above ``max_params`` parameters (P x P) or
    where H is not positive definite: then ``start`` is returned as it is.

    Returns
    -------
    (start, Curvature or None, info dict)
    """
    supports = site_supports(num_components, int(x_start.shape[1]), prior)
    u = to_unconstrained(model_sites(start, jnp.float64), supports)
    if sum(int(np.size(v)) for v in u.values()) > max_params:
        return start, None, dict(polished=False, reason=f"more than {max_params} parameters")
    curv = curvature_at(model, num_components, prior, u, x_start, codes, observed)
    if not curv.ok:
        return start, None, dict(polished=False, reason="the Hessian at the start is not positive definite")
    if not polish:
        return start, curv, dict(polished=False, reason="a given start")
    u, info = newton_polish(model, num_components, prior, u, curv, rows, num_rows, st, codes, observed)
    sites = {n: biject_to(supports[n])(v) for n, v in u.items()}
    return GMMParams(*(np.asarray(a) for a in params_from_sites(sites))), curv, dict(info, polished=True)


def final_check(model, num_components: int, prior: tuple, curv, locs: dict, scales: dict, rows, num_rows: int,
                st: Standardizer, codes=None, observed=None):
    """How far the guide's locations are from the N-row optimum: the Newton step there in marginal posterior sd
    (with ``curv``), or without one the gradient times the guide's scales (:func:`full_gradient_z`).

    Returns
    -------
    (size, "newton" | "diagonal")
    """
    if curv is None:
        return full_gradient_z(model, num_components, prior, locs, scales, rows, num_rows, st, codes, observed)[0], "diagonal"
    _, gradient = full_potential(model, num_components, prior, locs, rows, num_rows, st, codes, observed)
    return newton_step(curv, gradient)[1], "newton"


def _standardised_blocks(rows, num_rows: int, st: Standardizer, block: int):
    """The rows in order, ``block`` at a time, float64 and standardised by ``st``."""
    return ((np.asarray(rows[i:i + block], np.float64) - st.loc) / st.scale for i in range(0, num_rows, block))


def _pattern(x, codes):
    p = patterns_of(x, codes)
    return None if p is None else jnp.asarray(p)
