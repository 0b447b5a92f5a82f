"""The MAP of ``models.gmm_model`` by ECM: EM's E-step, and an M-step that maximises the expected complete-data log
posterior from the moments alone, so that a pass costs what EM's costs and the M-step does not depend on N.

The objective is AutoDelta's (``inference.numpyro_map``): log p(x | theta) + log p(theta), the priors of the
constrained sites (weights, means, scales, corr_chol) without a Jacobian. EM for a posterior mode (Dempster, Laird &
Rubin 1977, sec. 3.1; McLachlan & Krishnan 2008, sec. 1.6.1) maximises, with r_nk the responsibilities at theta_t,

    Q(theta) = sum_k [n_k log w_k + sum_n r_nk log N(x_n | mu_k, Sigma_k)] + log p(theta).

* E-step: :func:`inference.em_loop.e_step`: n_k, sum_n r_nk x_n, sum_n r_nk x_n x_n^T weighted by the sample
  weights, the expected moments of the holes for rows with NaN (the observed-data likelihood's EM,
  ``inference.missing_em``), over the devices of the rows' mesh; it gives the log-likelihood at theta_t too.
* M-step, weights: the Dirichlet(alpha) mode, w_k proportional to max(n_k + alpha - 1, 0) (plus ``WEIGHT_FLOOR``:
  alpha < 1 with an emptied component has no mode).
* M-step, each component: its mean and covariance Cholesky factor (log diagonal, lower entries) together, by damped
  Newton on its term of Q (the exact Hessian by autodiff over P = D (D + 3) / 2 coordinates; -H + lambda
  diag|H| factored by Cholesky, lambda raised tenfold after a failed factorisation or a step that does not increase
  the term, lowered tenfold after one that does: Levenberg-Marquardt), from the better of theta_t and the moments'
  prior-free closed form. A step is taken only when it increases the term, so the log posterior never decreases
  (a generalised EM, Meng & Rubin 1993).
* Acceleration: SQUAREM (Varadhan & Roland 2008, S3) on the ECM map, in unconstrained coordinates, kept only when
  the extrapolated point is at least as good as the plain step's, its length capped by SQUAREM's adaptive step.max
  (from 1, x4 after a full-length step that is kept; unbounded, it leapt into scales of ~1e-100 with K near N, where
  the E-step's expanded quadratic form is rounding) (:func:`ecm_program`): EM's rate is linear, and on
  overlapping clusters the plain ECM took 200-2,500 passes.
* Collapse: with a cluster of <= D rows (K near N, or more components than clusters) the posterior is unbounded (a
  component's covariance shrinking onto those rows' affine span: LKJ(1) does not stop the correlation reaching +-1 in
  D = 2), and the ECM follows it. A restart whose component's conditional sd (a diagonal entry of its covariance
  Cholesky factor) falls below ``COLLAPSE_SD`` (the data standardised) stops there as ``degenerate``; the best
  restart is taken from the others when there are any, and the fit is flagged not converged when there are none.
* Stop: Aitken's acceleration (Boehning et al. 1994; McNicholas et al. 2010) at SQUAREM's cycle starts. Converged
  when the last cycle gained at most tol (1 + |loss|) and so does the gain still to come, ``gain a / (1 - a)`` with
  a the ratio of the last two gains: the last gain alone says little when a is near 1.

The restarts advance together in one ``while_loop`` (the E-steps vmapped, the M-step one batch of R x K components)
and the hopeless ones are stopped as Adam's are (:func:`inference.restarts.trailing_restarts`). No LAPACK call is
batched over more than one (P, P) matrix (``models.linalg``): the E-step's are EM's, the Newton systems' and the
objective's (D, D) inverses go through ``models.linalg``, and the inverse's derivative is matrix products
(:func:`_inverse_lower`), so the Hessians' tangents add no LAPACK call.
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist

from models.gmm import gmm_model
from models.linalg import cholesky, inverse_lower, solve_lower, vmap_is_safe
from models.params import GMMParams

from . import executable_store
from ._numpyro_common import PRIOR_KEYS
from .compiled_cache import remember_compiled
from .em_loop import e_step
from .restarts import trailing_restarts

WEIGHT_FLOOR = 1e-12  # relative: the least weight a component keeps
NEWTON_STEPS = 50  # damped Newton iterations per M-step, at most (a far start took 16-40)
STEP_GROWTH = 4.0  # SQUAREM's mstep: step_max grows (shrinks) by this after an accepted (refused) longest step
COLLAPSE_SD = 1e-7  # standardised units: a component's conditional sd below this has collapsed (module docstring)
ROUNDING = 64 * float(np.finfo(np.float64).eps)  # relative: a change of a term this small is its rounding
NEWTON_TOL = 1e-11  # an M-step's Newton decrement, relative to its term, below which it stops
MAX_COORDINATES = 230  # P per component above which optimizer="auto" takes Adam (D > 20)


def coordinates(num_features: int) -> int:
    """P: a component's mean, log Cholesky diagonal and lower entries (:func:`to_coordinates`), D (D + 3) / 2."""
    return num_features * (num_features + 3) // 2


class Prior(NamedTuple):
    """``gmm_model``'s prior as arrays, in the E-step's centred coordinates (``mean_loc`` minus the centre)."""

    concentration: jnp.ndarray  # ()
    mean_loc: jnp.ndarray  # (D,)
    mean_scale: jnp.ndarray  # (D,)
    scale_log_loc: jnp.ndarray  # (D,) log(scale_loc)
    scale_log_sd: jnp.ndarray  # (D,)
    lkj_concentration: jnp.ndarray  # ()


def prior_arrays(prior: tuple, num_features: int, center) -> Prior:
    """:class:`Prior` from ``inference._numpyro_common.prior_items`` (overrides; the rest ``gmm_model``'s defaults)."""
    defaults = {name: p.default for name, p in inspect.signature(gmm_model).parameters.items() if name in PRIOR_KEYS}
    given = {**defaults, **{name: (np.asarray(v) if isinstance(v, tuple) else v) for name, v in prior}}
    vec = lambda v: np.broadcast_to(np.asarray(v, np.float64), (num_features,)).copy()
    return Prior(np.float64(given["concentration"]), vec(given["mean_loc"]) - np.asarray(center, np.float64),
                 vec(given["mean_scale"]), np.log(vec(given["scale_loc"])), vec(given["scale_log_sd"]),
                 np.float64(given["lkj_concentration"]))


@jax.custom_jvp
def _inverse_lower(lower):
    """L^{-1} of (B, D, D) lower-triangular factors (``models.linalg``: LAPACK batches kept small). Its derivative is
    ``-W dL W`` (W = L^{-1}), matrix products only: the Hessians below push P tangents through it at once without
    a LAPACK call per tangent (a batched solve of 704 (8, 8) factors hung jaxlib's thread pool on this machine)."""
    return inverse_lower(lower)


@_inverse_lower.defjvp
def _inverse_lower_jvp(primals, tangents):
    whiten = _inverse_lower(primals[0])
    return whiten, -whiten @ tangents[0] @ whiten


def _tril_index(num_features: int) -> np.ndarray:
    """(D, D) positions into ``[0, diag (D), strictly lower (D (D - 1) / 2)]`` that rebuild a lower factor."""
    index = np.zeros((num_features, num_features), np.int32)
    rows, cols = np.tril_indices(num_features, -1)
    index[np.arange(num_features), np.arange(num_features)] = 1 + np.arange(num_features)
    index[rows, cols] = 1 + num_features + np.arange(rows.size)
    return index


def to_coordinates(means, lower):
    """(..., P) coordinates of components: the means (..., D), the log of the covariance Cholesky factors' diagonals,
    their strictly lower entries (row by row). The mode of the constrained sites does not depend on the coordinates
    it is searched in (no Jacobian: AutoDelta's objective), and in these the factor is a gather."""
    num_features = means.shape[-1]
    rows, cols = np.tril_indices(num_features, -1)
    log_diag = jnp.log(jnp.diagonal(lower, axis1=-2, axis2=-1))
    return jnp.concatenate([means, log_diag, lower[..., rows, cols]], axis=-1)


def from_coordinates(u, num_features: int):
    """(means (..., D), scale_tril (..., D, D)) of coordinates (..., P)."""
    zero = jnp.zeros(u.shape[:-1] + (1,), u.dtype)
    flat = jnp.concatenate([zero, jnp.exp(u[..., num_features:2 * num_features]), u[..., 2 * num_features:]], axis=-1)
    return u[..., :num_features], flat[..., _tril_index(num_features)]


def component_log_prior(means, lower, prior: Prior):
    """Each component's log prior (B,): Normal means, LogNormal scales (the rows' norms of the factor), LKJCholesky
    correlation factor (``diag(1 / scales) @ lower``), as ``gmm_model`` declares them. means (B, D), lower (B, D, D)."""
    num_features = means.shape[-1]
    scales = jnp.sqrt(jnp.sum(lower**2, axis=-1))
    value = jnp.sum(dist.Normal(prior.mean_loc, prior.mean_scale).log_prob(means), axis=-1)
    value = value + jnp.sum(dist.LogNormal(prior.scale_log_loc, prior.scale_log_sd).log_prob(scales), axis=-1)
    if num_features > 1:
        value = value + dist.LKJCholesky(num_features, prior.lkj_concentration).log_prob(lower / scales[..., None])
    return value


def component_objective(u, counts, sum_x, sum_xx, prior: Prior):
    """Each component's term of Q (B,): ``sum_n r_nk log N(x_n | mu_k, Sigma_k)`` from its moments, plus its log prior.

    u : (B, P) coordinates (:func:`to_coordinates`); counts (B,); sum_x (B, D); sum_xx (B, D, D)."""
    num_features = sum_x.shape[-1]
    means, lower = from_coordinates(u, num_features)
    whiten = _inverse_lower(lower)
    outer = sum_x[:, :, None] * means[:, None, :]
    scatter = sum_xx - outer - jnp.swapaxes(outer, -1, -2) + counts[:, None, None] * means[:, :, None] * means[:, None, :]
    quad = jnp.sum((whiten @ scatter) * whiten, axis=(-2, -1))  # tr(Sigma^{-1} scatter)
    log_det = jnp.sum(u[:, num_features:2 * num_features], axis=-1)
    log_lik = -0.5 * quad - counts * (log_det + 0.5 * num_features * jnp.log(2 * jnp.pi))
    return log_lik + component_log_prior(means, lower, prior)


def _block_hessians(objective, u):
    """Each component's gradient (B, P) and Hessian (B, P, P) of a sum of per-component terms: the Hessian is block
    diagonal, so one tangent per coordinate, the same for every component, gives every block's column at once (P
    Hessian-vector products, not B P)."""
    total = lambda v: jnp.sum(objective(v))
    gradient = jax.grad(total)
    basis = jnp.broadcast_to(jnp.eye(u.shape[-1], dtype=u.dtype)[:, None, :], (u.shape[-1],) + u.shape)
    columns = jax.vmap(lambda t: jax.jvp(gradient, (u,), (t,))[1])(basis)  # (P, B, P): column j of each block
    return gradient(u), jnp.moveaxis(columns, 0, -1)


def _solve_spd(chol, rhs):
    """``A^{-1} rhs`` from A's lower Cholesky factor (B, P, P) and rhs (B, P), through ``models.linalg``: the upper
    solve is the lower one of the reversed system (J L^T J is lower triangular, J the reversal)."""
    half = solve_lower(chol, rhs[..., None])
    flipped = jnp.flip(jnp.swapaxes(chol, -1, -2), axis=(-2, -1))
    return jnp.flip(solve_lower(flipped, jnp.flip(half, axis=-2)), axis=-2)[..., 0]


def newton_components(u, counts, sum_x, sum_xx, prior: Prior):
    """Each component's coordinates (B, P) moved up its term of Q by damped Newton (module docstring).

    Returns (B, P) coordinates whose terms are >= those of ``u``."""
    objective = lambda v: component_objective(v, counts, sum_x, sum_xx, prior)
    eye = jnp.eye(u.shape[-1], dtype=u.dtype)

    def body(carry):
        i, u, value, damping, done = carry
        gradient, hessian = _block_hessians(objective, u)
        minus = -hessian
        scale = jnp.abs(jnp.diagonal(minus, axis1=-2, axis2=-1)) + jnp.finfo(u.dtype).tiny
        chol = cholesky(minus + damping[:, None, None] * eye * scale[:, None, :])
        step = _solve_spd(chol, gradient)
        factored = jnp.all(jnp.isfinite(step), axis=-1)
        step = jnp.where(factored[:, None], step, 0.0)
        decrement = jnp.sum(gradient * step, axis=-1)
        candidate = objective(u + step)
        # a step whose gain is below the term's rounding is taken too: refused, EM stalled ~1e-7 short of its fixed
        # point along a slow direction (its steps there gain ~1e-16 of the term)
        better = factored & jnp.isfinite(candidate) & (candidate >= value - ROUNDING * (1 + jnp.abs(value))) & ~done
        u = jnp.where(better[:, None], u + step, u)
        value = jnp.where(better, candidate, value)
        small = factored & (damping == 0) & (decrement <= NEWTON_TOL * (1 + jnp.abs(value)))
        stuck = damping > 1e12
        damping = jnp.where(better, jnp.where(damping < 1e-8, 0.0, damping / 10), jnp.maximum(damping * 10, 1e-6))
        return i + 1, u, value, damping, done | small | stuck

    value = objective(u)
    start = (jnp.zeros((), jnp.int32), u, value, jnp.zeros_like(value), ~jnp.isfinite(value))
    return jax.lax.while_loop(lambda c: (c[0] < NEWTON_STEPS) & ~jnp.all(c[4]), body, start)[1]


def weights_mode(counts, concentration):
    """The Dirichlet(concentration) posterior mode of the weights given responsibility counts (..., K)."""
    if counts.shape[-1] == 1:
        return jnp.ones_like(counts)
    raw = jnp.maximum(counts + concentration - 1.0, 0.0)
    raw = raw + WEIGHT_FLOOR * jnp.sum(raw, axis=-1, keepdims=True)
    return raw / jnp.sum(raw, axis=-1, keepdims=True)


def m_step(stats, params: GMMParams, prior: Prior) -> GMMParams:
    """The M-step of every restart: stats and params with leading (R,) dims, centred coordinates."""
    num_restarts, num_components, num_features = params.means.shape
    flat = lambda a: a.reshape((num_restarts * num_components,) + a.shape[2:])
    counts, sum_x, sum_xx = flat(stats.counts), flat(stats.sum_x), flat(stats.sum_xx)
    now = to_coordinates(flat(params.means), flat(params.scale_tril))
    n = jnp.maximum(counts, jnp.finfo(counts.dtype).tiny)[:, None]
    mean = sum_x / n
    cov = sum_xx / n[..., None] - mean[:, :, None] * mean[:, None, :]
    closed = to_coordinates(mean, cholesky(0.5 * (cov + jnp.swapaxes(cov, -1, -2))))
    score = lambda v: jnp.nan_to_num(component_objective(v, counts, sum_x, sum_xx, prior), nan=-jnp.inf)
    start = jnp.where((score(closed) > score(now))[:, None], closed, now)
    means, lower = from_coordinates(newton_components(start, counts, sum_x, sum_xx, prior), num_features)
    unflat = lambda a: a.reshape((num_restarts, num_components) + a.shape[1:])
    return GMMParams(weights_mode(stats.counts, prior.concentration), unflat(means), unflat(lower))


def log_prior(params: GMMParams, prior: Prior):
    """log p(theta) of every restart (R,): ``gmm_model``'s sites at params (leading (R,) dim, centred)."""
    num_restarts, num_components, num_features = params.means.shape
    flat = lambda a: a.reshape((num_restarts * num_components,) + a.shape[2:])
    terms = component_log_prior(flat(params.means), flat(params.scale_tril), prior)
    value = jnp.sum(terms.reshape(num_restarts, num_components), axis=-1)
    if num_components > 1:
        value = value + dist.Dirichlet(jnp.full((num_components,), prior.concentration)).log_prob(params.weights)
    return value


def aitken_converged(cycle_lps, tol):
    """Whether the log posterior has converged (module docstring) from its values at the last three cycle starts
    (R, 3), oldest first: the last gain and Aitken's estimate of the gain to come both <= tol (1 + |loss|)."""
    gain, previous = cycle_lps[:, 2] - cycle_lps[:, 1], cycle_lps[:, 1] - cycle_lps[:, 0]
    threshold = tol * (1 + jnp.abs(cycle_lps[:, 2]))
    noise = (gain <= 0) | (previous <= 0)  # no rate to read: rounding at the optimum
    rate = gain / jnp.where(noise, 1.0, previous)
    remaining = jnp.where(~noise & (rate < 1), gain * rate / (1 - rate), jnp.inf)
    return jnp.all(jnp.isfinite(cycle_lps), axis=1) & (jnp.abs(gain) <= threshold) & (noise | (remaining <= threshold))


def _flat_theta(params: GMMParams):
    """(R, K + K P) unconstrained coordinates of every restart: centred log weights, then each component's."""
    log_w = jnp.log(params.weights)
    coords = to_coordinates(params.means, params.scale_tril)
    return jnp.concatenate([log_w - jnp.mean(log_w, axis=-1, keepdims=True), coords.reshape(coords.shape[0], -1)], axis=-1)


def _from_flat_theta(theta, num_components: int, num_features: int) -> GMMParams:
    coords = theta[:, num_components:].reshape(theta.shape[0], num_components, -1)
    means, lower = from_coordinates(coords, num_features)
    return GMMParams(jax.nn.softmax(theta[:, :num_components], axis=-1), means, lower)


def squarem_point(anchor: GMMParams, first: GMMParams, second: GMMParams, step_max):
    """SQUAREM's extrapolation (Varadhan & Roland 2008, scheme S3) from x0, x1 = F(x0), x2 = F(x1) of the ECM map F,
    in unconstrained coordinates: r = x1 - x0, v = x2 - 2 x1 + x0, alpha = -|r| / |v| clipped to
    [-step_max, -1], x' = x0 - 2 alpha r + alpha^2 v (alpha = -1 gives x2 itself). Returns (x', alpha (R,))."""
    num_components, num_features = anchor.means.shape[1:]
    t0, t1, t2 = _flat_theta(anchor), _flat_theta(first), _flat_theta(second)
    r, v = t1 - t0, t2 - 2 * t1 + t0
    alpha = -jnp.sqrt(jnp.sum(r**2, axis=-1)) / jnp.sqrt(jnp.sum(v**2, axis=-1))
    alpha = jnp.clip(jnp.where(jnp.isfinite(alpha), alpha, -1.0), -step_max, -1.0)
    theta = t0 - 2 * alpha[:, None] * r + alpha[:, None] ** 2 * v
    return _from_flat_theta(theta, num_components, num_features), alpha


class EcmState(NamedTuple):
    iteration: jnp.ndarray  # (R,) passes (E-steps) done
    phase: jnp.ndarray  # (R,) what ``params`` is: 0 a cycle's start x0, 1 x1 = F(x0), 2 SQUAREM's x'
    params: GMMParams  # (R, ...) the next point to evaluate
    anchor: GMMParams  # (R, ...) this cycle's x0
    fallback: GMMParams  # (R, ...) x2 = F(x1), taken when x' is worse than x1
    first_lp: jnp.ndarray  # (R,) log posterior at x1
    step_max: jnp.ndarray  # (R,) the longest extrapolation allowed (SQUAREM's step.max: x STEP_GROWTH when reached)
    alpha: jnp.ndarray  # (R,) this cycle's
    cycle_lps: jnp.ndarray  # (R, 3) log posterior at the last three cycle starts
    point: GMMParams  # (R, ...) the best point evaluated
    loss: jnp.ndarray  # (R,) -log posterior at ``point``
    log_lik: jnp.ndarray  # (R,) its log-likelihood
    converged: jnp.ndarray  # (R,)
    degenerate: jnp.ndarray  # (R,) a component's conditional sd fell below COLLAPSE_SD: stopped, never the best
    losses: jnp.ndarray  # (R, max_iters) ``loss`` after each pass
    log_liks: jnp.ndarray  # (R, max_iters) ``log_lik`` after each pass


def ecm_program(starts: GMMParams, data, prior: Prior, tol, *, layout, max_iters: int, stop_trailing: bool):
    """Run the ECM, accelerated by SQUAREM, from every start (leading (R,) dim, centred coordinates) on the rows
    ``data`` of ``layout`` (``inference.em_rows.in_memory_rows``).

    A cycle is three passes: E at x0 (M gives x1), E at x1 (M gives x2; x' extrapolated), E at x'; the next cycle
    starts at F(x') when x' is at least as good as x1, else at x2 (>= x1: a GEM step), so the best point never gets
    worse. Convergence is read at cycle starts (:func:`aitken_converged`). Returns the final :class:`EcmState` and
    whether each restart still ran (stopped as trailing)."""
    num_restarts, _, num_features = starts.means.shape
    estep = lambda p: e_step(p, layout, data, hard=False, full_moment=True)
    over = jax.vmap
    if layout.num_devices > 1 and not vmap_is_safe(num_restarts, num_features):
        over = lambda fn: (lambda xs: jax.lax.map(fn, xs))  # one restart after another (models.linalg)
    status = lambda s: trailing_restarts(s.iteration, jnp.where(s.degenerate, jnp.inf, s.loss), s.converged | s.degenerate,
                                         s.losses[..., None], max_iters)
    rows = jnp.arange(num_restarts)

    def where(mask, new, old):
        return jax.tree.map(lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)

    def body(s: EcmState):
        running, _ = status(s)
        est = over(estep)(s.params)
        log_post = est.log_lik + log_prior(s.params, prior)
        mapped = m_step(est.stats, s.params, prior)  # F(params)
        start, first, third = s.phase == 0, s.phase == 1, s.phase == 2
        anchor = where(start, s.params, s.anchor)
        extrapolated, alpha = squarem_point(anchor, s.params, mapped, s.step_max)
        accept = third & jnp.isfinite(log_post) & (log_post >= s.first_lp)
        step_max = jnp.where(accept & (s.alpha <= -s.step_max), s.step_max * STEP_GROWTH, s.step_max)
        step_max = jnp.where(third & ~accept, jnp.maximum(1.0, step_max / STEP_GROWTH), step_max)
        params = where(start, mapped, where(first, extrapolated, where(accept, mapped, s.fallback)))
        cycle_lps = jnp.where(start[:, None], jnp.concatenate([s.cycle_lps[:, 1:], log_post[:, None]], axis=1), s.cycle_lps)
        better = jnp.isfinite(log_post) & (-log_post < s.loss)
        loss, log_lik = jnp.where(better, -log_post, s.loss), jnp.where(better, est.log_lik, s.log_lik)
        at = jnp.minimum(s.iteration, max_iters - 1)
        step = lambda m, new: where(running, new, m)
        collapsed = jnp.min(jnp.diagonal(params.scale_tril, axis1=-2, axis2=-1), axis=(-2, -1)) < COLLAPSE_SD
        return EcmState(
            s.iteration + running.astype(jnp.int32),
            step(s.phase, (s.phase + 1) % 3),
            step(s.params, params),
            step(s.anchor, anchor),
            step(s.fallback, where(first, mapped, s.fallback)),
            step(s.first_lp, jnp.where(first, log_post, s.first_lp)),
            step(s.step_max, step_max),
            step(s.alpha, jnp.where(first, alpha, s.alpha)),
            step(s.cycle_lps, cycle_lps),
            step(s.point, where(better, s.params, s.point)),
            step(s.loss, loss),
            step(s.log_lik, log_lik),
            step(s.converged, jnp.where(start, aitken_converged(cycle_lps, tol), s.converged) | ~jnp.isfinite(loss)),
            step(s.degenerate, s.degenerate | collapsed | ~jnp.isfinite(loss)),
            step(s.losses, s.losses.at[rows, at].set(loss)),
            step(s.log_liks, s.log_liks.at[rows, at].set(log_lik)),
        )

    def cond(s: EcmState):
        running, stop = status(s)
        return jnp.any(running) & ~(stop & stop_trailing)

    dtype = starts.means.dtype
    history = jnp.full((num_restarts, max_iters), jnp.nan, dtype)
    scalars = jnp.full(num_restarts, jnp.nan, dtype)
    state = EcmState(jnp.zeros(num_restarts, jnp.int32), jnp.zeros(num_restarts, jnp.int32), starts, starts, starts,
                     scalars, jnp.ones(num_restarts, dtype), -jnp.ones(num_restarts, dtype),
                     jnp.full((num_restarts, 3), jnp.nan, dtype), starts,
                     jnp.full(num_restarts, jnp.inf, dtype), scalars, jnp.zeros(num_restarts, bool),
                     jnp.zeros(num_restarts, bool), history, history)
    state = jax.lax.while_loop(cond, body, state)
    return state, status(state)[0]


_COMPILED: dict = {}


def run_ecm(starts: GMMParams, rows, prior: Prior, tol: float, *, max_iters: int, stop_trailing: bool):
    """Compile (once per layout, shapes and options; kept on disk as EM's programs are, ``inference.executable_store``)
    and run :func:`ecm_program`. Returns (state, still running, compile_seconds, run_seconds)."""
    layout = rows.layout
    args = (starts, rows.data, prior, np.float64(tol))
    static = dict(layout=layout, max_iters=int(max_iters), stop_trailing=bool(stop_trailing))
    shapes = jax.tree.map(lambda a: (jnp.shape(a), str(jnp.result_type(a))), args)
    cache_key = (tuple(sorted(static.items())), str(shapes))
    compile_seconds = 0.0
    compiled = _COMPILED.get(cache_key)
    if compiled is None:
        start = time.perf_counter()
        devices = list(np.asarray(layout.mesh.devices).ravel())
        store_key = ("inference.map_ecm.ecm_program", cache_key,
                     str(jax.tree.map(lambda a: getattr(a, "sharding", None), args)), tuple(int(d.id) for d in devices))
        compiled, _ = executable_store.load_or_compile(
            store_key, lambda options: jax.jit(functools.partial(ecm_program, **static)).lower(*args).compile(
                compiler_options=options or None), devices)
        remember_compiled(_COMPILED, cache_key, compiled)
        compile_seconds = time.perf_counter() - start
    start = time.perf_counter()
    state, running = jax.block_until_ready(compiled(*args))
    return state, running, compile_seconds, time.perf_counter() - start
