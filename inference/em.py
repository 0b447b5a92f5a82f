"""Hand-written EM and hard (classification) EM for GMMs: one loop, two E-steps.

Pass t of the loop (t = 1 .. num_iters) runs the E-step at theta_{t-1} (its log-likelihood and
moments) and the M-step to theta_t, in sklearn's order; one last data pass at the final parameters gives
their log-likelihood and the responsibilities. The traces are aligned so that entry t describes theta_t:

* ``log_likelihood[t]`` = log p(x | theta_t), from ``models.density.component_log_prob`` on each chunk;
* EM: ``elbo[t]`` = ELBO(q_t, theta_t) with q_t = p(z | x, theta_{t-1}) (the seed's ELBO, computed from
  the moments plus the E-step entropy), and ``kl[t] = log_likelihood[t] - elbo[t]`` = KL(q_t || p(z | x, theta_t)) >= 0;
* hard EM: ``classification_log_likelihood[t]`` = sum_n log w_{z_n} N(x_n | theta_t) with z from theta_{t-1}.

The log-likelihood at the initial point is ``info["initial_log_likelihood"]``, so sklearn's
``lower_bounds_`` (mean log-likelihood before each M-step) equals
``[initial, log_likelihood[:-1]] / N``. Convergence: ``|Delta log_likelihood| / N < tol``.

Empty clusters (hard EM). A component that receives no point is re-seeded at the worst-explained
points (lowest marginal log-likelihood under the current parameters, a different point for each empty
component), with the whole data's covariance and weight 1/N. Each event is counted in
``info["empty_cluster_events"]``. Soft EM follows sklearn (10 eps added to the counts) and counts
components whose responsibility mass falls below one point in ``info["collapsed_components"]``.

``info["snapshots"]`` holds the parameters at up to ``NUM_SNAPSHOTS`` iterations (geometric spacing,
``info["snapshot_iters"]``; 0 = the initial point) for the figures' EM snapshot strip.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from models.density import component_log_prob
from models.params import GMMParams, to_numpy

from .init import INIT_METHODS, data_covariance_tril, initialize, stack_given_init
from .result import FitResult
from .stats import (
    COVARIANCE_TYPES,
    SuffStats,
    chunk_moments,
    default_chunk_size,
    expected_complete_log_lik,
    m_step,
    needs_full_moment,
    scan_chunks,
)
from .validate import check_choice, check_data, check_num_components, check_positive

NUM_SNAPSHOTS = 8


class EStepOut(NamedTuple):
    """What one pass over the data returns."""

    stats: SuffStats
    log_lik: jnp.ndarray  # total marginal log-likelihood
    entropy: jnp.ndarray  # sum_n H(q_n) (0 for hard EM)
    worst_ll: jnp.ndarray  # (K,) lowest pointwise log-likelihoods seen
    worst_rows: jnp.ndarray  # (K, D) their rows


def e_step(params: GMMParams, x, *, hard: bool, full_moment: bool, chunk_size: int) -> EStepOut:
    """Soft (posterior) or hard (argmax) E-step, accumulated over row chunks of ``x`` (N, D)."""
    num_components, num_features = params.means.shape
    dtype = x.dtype
    second = (num_components, num_features, num_features) if full_moment else (num_components, num_features)
    init = EStepOut(
        SuffStats(jnp.zeros(num_components, dtype), jnp.zeros((num_components, num_features), dtype), jnp.zeros(second, dtype)),
        jnp.zeros((), dtype),
        jnp.zeros((), dtype),
        jnp.full((num_components,), jnp.inf, dtype),
        jnp.zeros((num_components, num_features), dtype),
    )

    def step(acc: EStepOut, xc):
        joint = component_log_prob(params, xc)  # (c, K)
        point_ll = logsumexp(joint, axis=1)
        if hard:
            resp = jax.nn.one_hot(jnp.argmax(joint, axis=1), num_components, dtype=dtype)
            entropy = jnp.zeros((), dtype)
        else:
            log_resp = joint - point_ll[:, None]
            resp = jnp.exp(log_resp)
            entropy = -jnp.sum(jnp.where(resp > 0, resp * log_resp, 0.0))
        moments = chunk_moments(resp, xc, full_moment)
        if not hard:
            return acc._replace(stats=jax.tree.map(jnp.add, acc.stats, moments), log_lik=acc.log_lik + point_ll.sum(),
                                entropy=acc.entropy + entropy)
        # keep the K worst-explained rows (for re-seeding empty clusters)
        k_take = min(num_components, xc.shape[0])
        neg, idx = jax.lax.top_k(-point_ll, k_take)
        cand_ll = jnp.concatenate([acc.worst_ll, -neg])
        cand_rows = jnp.concatenate([acc.worst_rows, xc[idx]])
        _, keep = jax.lax.top_k(-cand_ll, num_components)
        return EStepOut(
            jax.tree.map(jnp.add, acc.stats, moments),
            acc.log_lik + point_ll.sum(),
            acc.entropy + entropy,
            cand_ll[keep],
            cand_rows[keep],
        )

    return scan_chunks(step, init, x, chunk_size)


def _reseed_empty(params: GMMParams, counts, worst_rows, data_tril, num_rows):
    """Re-seed components with zero hard counts at distinct worst-explained rows (see module doc)."""
    empty = counts < 0.5
    rank = jnp.cumsum(empty) - 1  # j-th empty component takes the j-th worst row
    weights = jnp.where(empty, 1.0 / num_rows, params.weights)
    new = GMMParams(
        weights / weights.sum(),
        jnp.where(empty[:, None], worst_rows[jnp.clip(rank, 0, None)], params.means),
        jnp.where(empty[:, None, None], data_tril, params.scale_tril),
    )
    return new, jnp.sum(empty)


class _LoopState(NamedTuple):
    iteration: jnp.ndarray
    params: GMMParams
    prev_ll: jnp.ndarray
    curr_ll: jnp.ndarray
    converged: jnp.ndarray
    events: jnp.ndarray
    trace_ll: jnp.ndarray
    trace_obj: jnp.ndarray
    history: GMMParams


def _run_em(init_params: GMMParams, x, tol, reg_covar, *, hard, covariance_type, max_iters, chunk_size):
    """The EM loop for one start (vmapped over starts by the caller). Pure and jit-able.

    Each pass of the loop is E-step at theta_{t-1} (giving its log-likelihood), then M-step to theta_t,
    exactly sklearn's order; ``trace_ll[t-1]`` is therefore log p(x | theta_{t-1}).
    """
    num_rows = x.shape[0]
    full_moment = needs_full_moment(covariance_type)
    data_tril = data_covariance_tril(x, covariance_type, reg_covar)
    history = jax.tree.map(lambda a: jnp.zeros((max_iters + 1,) + a.shape, a.dtype).at[0].set(a), init_params)

    def cond(s: _LoopState):
        return (s.iteration < max_iters) & ~s.converged & jnp.isfinite(s.curr_ll)

    def body(s: _LoopState):
        est = e_step(s.params, x, hard=hard, full_moment=full_moment, chunk_size=chunk_size)
        params = m_step(est.stats, covariance_type, reg_covar, num_rows)
        events = s.events
        if hard:
            params, num_empty = _reseed_empty(params, est.stats.counts, est.worst_rows, data_tril, num_rows)
            events = events + num_empty.astype(events.dtype)
        else:
            events = events + jnp.sum(est.stats.counts < 1.0).astype(events.dtype)
        objective = expected_complete_log_lik(est.stats, params) + est.entropy
        i = s.iteration
        return _LoopState(
            i + 1,
            params,
            est.log_lik,
            est.log_lik,
            jnp.abs(est.log_lik - s.prev_ll) / num_rows < tol,
            events,
            s.trace_ll.at[i].set(est.log_lik),
            s.trace_obj.at[i].set(objective),
            jax.tree.map(lambda h, a: h.at[i + 1].set(a), s.history, params),
        )

    nan_trace = jnp.full((max_iters,), jnp.nan, x.dtype)
    zero = jnp.zeros((), x.dtype)
    state = _LoopState(
        jnp.zeros((), jnp.int32), init_params, jnp.full((), -jnp.inf, x.dtype), zero, jnp.zeros((), bool),
        jnp.zeros((), jnp.int32), nan_trace, nan_trace, history,
    )
    return jax.lax.while_loop(cond, body, state)


def _one_hot_or_posterior(joint, hard: bool):
    if hard:
        return jax.nn.one_hot(jnp.argmax(joint, axis=1), joint.shape[1], dtype=joint.dtype)
    return jnp.exp(joint - logsumexp(joint, axis=1, keepdims=True))


def _final_pass(params: GMMParams, x, hard: bool, chunk_size: int):
    """(N, K) responsibilities at ``params`` (one-hot argmax for hard EM) and the total log-likelihood."""
    def one_chunk(xc):
        joint = component_log_prob(params, xc)
        return _one_hot_or_posterior(joint, hard), logsumexp(joint, axis=1).sum()

    num_full = x.shape[0] // chunk_size
    resp, ll = [], jnp.zeros((), x.dtype)
    if num_full:
        chunks = x[: num_full * chunk_size].reshape(num_full, chunk_size, -1)
        r, l = jax.lax.map(one_chunk, chunks)
        resp.append(r.reshape(num_full * chunk_size, -1))
        ll = ll + l.sum()
    if x.shape[0] % chunk_size:
        r, l = one_chunk(x[num_full * chunk_size :])
        resp.append(r)
        ll = ll + l
    return (jnp.concatenate(resp) if len(resp) > 1 else resp[0]), ll


def _em_program(keys, given_init, x, tol, reg_covar, *, num_components, init, hard, covariance_type, max_iters, chunk_size):
    """Initialise (vmapped over keys unless ``given_init``), run EM per start, finish the best start."""
    if given_init is None:
        starts = jax.vmap(lambda k: initialize(k, x, num_components, init, covariance_type, reg_covar, chunk_size))(keys)
    else:
        starts = given_init
    run = lambda p: _run_em(p, x, tol, reg_covar, hard=hard, covariance_type=covariance_type, max_iters=max_iters, chunk_size=chunk_size)
    states = jax.vmap(run)(starts)
    best = jnp.argmax(jnp.where(jnp.isfinite(states.curr_ll), states.curr_ll, -jnp.inf))
    best_params = jax.tree.map(lambda a: a[best], states.params)
    resp, final_ll = _final_pass(best_params, x, hard, chunk_size)
    return states, best, resp, final_ll


_COMPILED: dict = {}


def _compiled_program(keys, given_init, x, tol, reg_covar, **static):
    """Ahead-of-time compiled EM program, cached per (shapes, dtype, static options).

    Returns the executable and the seconds spent compiling it (0.0 on a cache hit).
    """
    shapes = jax.tree.map(lambda a: (a.shape, str(a.dtype)), (keys, given_init, x))
    cache_key = (tuple(sorted(static.items())), str(shapes))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    start = time.perf_counter()
    compiled = jax.jit(functools.partial(_em_program, **static)).lower(keys, given_init, x, tol, reg_covar).compile()
    _COMPILED[cache_key] = compiled
    return compiled, time.perf_counter() - start


def _given_init(init, x, num_components, n_init, center):
    """Validated user initial parameters, stacked (n_init, ...) in the centred coordinates; else None."""
    if not isinstance(init, GMMParams):
        check_choice("init", init, INIT_METHODS)
        return None
    stacked = stack_given_init(init, x, num_components, n_init)
    return stacked._replace(means=stacked.means - center)


def _fit(
    key,
    x,
    num_components: int,
    *,
    hard: bool,
    covariance_type: str = "full",
    reg_covar: float = 1e-6,
    tol: float = 1e-5,
    max_iters: int = 500,
    init="kmeans++",
    n_init: int = 1,
    chunk_size: int | None = None,
) -> FitResult:
    start = time.perf_counter()
    x_np = check_data(x)
    num_components = check_num_components(num_components, x_np)
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_positive("reg_covar", reg_covar, allow_zero=True)
    check_positive("tol", tol, allow_zero=True)
    check_positive("max_iters", max_iters, integer=True)
    check_positive("n_init", n_init, integer=True)
    if chunk_size is not None:
        check_positive("chunk_size", chunk_size, integer=True)
    if isinstance(init, GMMParams) and n_init != 1:
        raise ValueError(f"n_init must be 1 when init is a GMMParams, got {n_init}")
    num_rows, num_features = x_np.shape
    chunk_size = int(chunk_size or default_chunk_size(num_rows, num_components, num_features))
    dtype = x_np.dtype
    # Translation leaves the likelihood unchanged; centring keeps the moment formulas well conditioned.
    center_np = x_np.mean(axis=0)
    xc = jnp.asarray(x_np - center_np.astype(dtype))
    center = jnp.asarray(center_np, dtype)

    given = _given_init(init, xc, num_components, n_init, center)
    keys = jax.random.split(key, n_init)
    tol_arr, reg_arr = jnp.asarray(tol, dtype), jnp.asarray(reg_covar, dtype)
    compiled, compile_seconds = _compiled_program(
        keys, given, xc, tol_arr, reg_arr, num_components=num_components,
        init="params" if given is not None else init, hard=hard, covariance_type=covariance_type,
        max_iters=int(max_iters), chunk_size=chunk_size,
    )
    run_start = time.perf_counter()
    state, best, resp, final_ll = compiled(keys, given, xc, tol_arr, reg_arr)
    best = int(best)
    final_ll = float(final_ll)
    start_ll = np.asarray(state.curr_ll)
    if not np.isfinite(final_ll):
        raise FloatingPointError(
            "EM produced a non-finite log-likelihood in every start; increase reg_covar or check the scale of x"
        )
    num_iters = int(state.iteration[best])
    take = lambda a: np.asarray(a[best])
    params_c = GMMParams(*(take(a) for a in state.params))
    params = params_c._replace(means=params_c.means + center_np.astype(dtype))
    responsibilities = np.asarray(resp)
    run_seconds = time.perf_counter() - run_start

    lls_before = take(state.trace_ll)[:num_iters]  # log p(x | theta_{t-1}), t = 1..T
    trace_ll = np.append(lls_before[1:], final_ll)  # log p(x | theta_t)
    trace_obj = take(state.trace_obj)[:num_iters]
    trace = {"log_likelihood": trace_ll}
    if hard:
        trace["classification_log_likelihood"] = trace_obj
    else:
        trace["elbo"] = trace_obj
        trace["kl"] = trace_ll - trace_obj
    snapshot_iters = np.unique(np.round(np.geomspace(1, num_iters + 1, NUM_SNAPSHOTS)).astype(int) - 1)
    history = GMMParams(*(take(h)[snapshot_iters] for h in state.history))
    history = history._replace(means=history.means + center_np.astype(dtype))
    info = {
        "covariance_type": covariance_type,
        "reg_covar": reg_covar,
        "tol": tol,
        "max_iters": int(max_iters),
        "init": "params" if isinstance(init, GMMParams) else init,
        "n_init": int(n_init),
        "best_init": best,
        "log_likelihood_per_init": start_ll,
        "initial_log_likelihood": float(lls_before[0]),
        "chunk_size": chunk_size,
        "dtype": str(dtype),
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "snapshots": history,
        "snapshot_iters": snapshot_iters,
        ("empty_cluster_events" if hard else "collapsed_components"): int(np.asarray(state.events[best])),
    }
    return FitResult(
        method="hard_em" if hard else "em",
        params=to_numpy(params),
        trace=trace,
        samples=None,
        responsibilities=responsibilities,
        converged=bool(np.asarray(state.converged[best])),
        num_iters=num_iters,
        seconds=time.perf_counter() - start,
        info=info,
    )


def fit_em(key, x, num_components: int, **options) -> FitResult:
    """Soft EM (maximum likelihood) for a GMM.

    Parameters
    ----------
    key : PRNG key (initialisation).
    x : (N, D) float32/float64 data (numpy or JAX).
    num_components : K.
    covariance_type : "full" (default) | "diag" | "spherical" | "tied", as sklearn.
    reg_covar : added to every covariance diagonal (default 1e-6).
    tol : stop when the mean per-point log-likelihood changes by less (default 1e-5).
    max_iters : iteration budget (default 500).
    init : "kmeans++" (default) | "random_from_data" | "kmeans" | a GMMParams.
    n_init : restarts (vmapped), the best final log-likelihood is kept (default 1).
    chunk_size : rows per E-step chunk (default: automatic).

    Returns
    -------
    FitResult with trace keys log_likelihood, elbo, kl.
    """
    return _fit(key, x, num_components, hard=False, **options)


def fit_hard_em(key, x, num_components: int, **options) -> FitResult:
    """Hard (classification) EM: argmax assignments, then per-cluster weight / mean / covariance.

    Same options as :func:`fit_em`. Trace keys: log_likelihood, classification_log_likelihood.
    Responsibilities are the one-hot assignments. Empty clusters are re-seeded (module doc).
    """
    return _fit(key, x, num_components, hard=True, **options)
