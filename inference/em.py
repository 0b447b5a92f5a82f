"""Hand-written EM and hard (classification) EM for GMMs: one loop, two E-steps.

Pass t of the loop (t = 1 .. num_iters) runs the E-step at theta_{t-1} (its log-likelihood and
moments) and the M-step to theta_t, in sklearn's order; one last data pass at the final parameters gives
their log-likelihood and the responsibilities. The traces are aligned so that entry t describes theta_t:

* ``log_likelihood[t]`` = log p(x | theta_t): in the loop from the quadratic-feature log joint
  (``inference.stats.log_prob_coefficients``, one GEMM per chunk), the last one (the final parameters)
  from ``models.density.component_log_prob`` (whitened differences);
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

Rows, weights, devices: every statistic is weighted by ``sample_weight`` (a row of weight w counts as w
copies; padding rows have weight 0); every data pass is one fold of :mod:`inference.rows` over the rows,
sharded over the devices of a mesh (one ``psum`` per pass) or streamed from disk (see that module).

``info["snapshots"]`` holds the parameters at up to ``NUM_SNAPSHOTS`` iterations (geometric spacing,
``info["snapshot_iters"]``; 0 = the initial point) for the figures' EM snapshot strip.
"""

from __future__ import annotations

import functools
import os
import re
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from models.density import component_log_prob
from models.params import GMMParams, to_numpy

from .compiled_cache import remember_compiled
from .init import INIT_METHODS, covariance_from_sums, data_moments_pass, data_tril_pass, initialize_rows, stack_given_init
from .result import FitResult
from .rows import (ChunkReader, Layout, NpyRows, RowData, check_sample_weight, data_pass, make_mesh, map_rows,
                   normalize_sample_weight, rechunk)
from .stats import (
    COVARIANCE_TYPES,
    SuffStats,
    default_chunk_size,
    expected_complete_log_lik,
    log_prob_coefficients,
    m_step,
    needs_full_moment,
    quadratic_features,
    stats_from_feature_sums,
)
from .validate import check_choice, check_data, check_float32_resolution, check_num_components, check_positive

NUM_SNAPSHOTS = 8
STREAM_BLOCK_ROWS = 1 << 16  # rows per read of the host pre-pass over a streamed source
READ_BYTES = 1 << 22  # ~bytes per host read of a streamed fold (a whole number of compute chunks)
HOST_STREAM_BYTES = 1 << 28  # in-memory float arrays from 256 MiB on are streamed from host memory (_fit)
# Every statistic is computed in float64, whatever the data's dtype (float32 rows are converted chunk by
# chunk on the device; they stay float32 in memory). The E-step's quadratic features and the raw-moment
# M-step cancel ~eps |x - c|^2 / sd^2 (c the data's centre, sd a cluster's width): in float32 that is
# every cluster narrower than ~1/300 of its distance from c; in float64, ~1e-8 at 1e4 cluster sds.
COMPUTE_DTYPE = jnp.float64
ROWS_LAST_MAX_WIDTH = 16  # F + K at or below which a chunk is laid out rows-last (_estep_chunk)


class EStepOut(NamedTuple):
    """What one pass over the data returns (all weighted by the sample weights)."""

    stats: SuffStats  # inside the pass: the feature sums resp^T @ features (K, F)
    log_lik: jnp.ndarray  # total marginal log-likelihood
    entropy: jnp.ndarray  # sum_n H(q_n) (0 for hard EM)
    worst_ll: jnp.ndarray  # (K,) lowest pointwise log-likelihoods seen (hard EM)
    worst_rows: jnp.ndarray  # (K, D) their rows


def _estep_chunk(coefficients, xc, wc, row0, *, hard: bool, full_moment: bool) -> EStepOut:
    """One chunk's weighted contribution: xc (c, D), wc (c,) (padding rows have weight 0).

    ``coefficients`` (F, K) = ``stats.log_prob_coefficients``: the log joint is ONE GEMM of the chunk's
    quadratic features, and every sufficient statistic is ONE more, ``resp^T @ features`` (K, F),
    returned in ``stats`` (``e_step`` unpacks it). One exp per (row, component). When F + K is small
    the chunk is laid out rows-last ((F, c), (K, c)), so that the max / sum over components vectorise
    along the rows (measured: 1.3x faster at D = 2, K = 4; slower from D = 8 on)."""
    num_components, width = coefficients.shape[1], coefficients.shape[0]
    dtype = xc.dtype
    rows_last = width + num_components <= ROWS_LAST_MAX_WIDTH
    comp = 0 if rows_last else 1  # the component axis of joint / resp
    features = quadratic_features(xc, full_moment, rows_last=rows_last)  # (F, c) or (c, F)
    joint = coefficients.T @ features if rows_last else features @ coefficients  # (K, c) or (c, K)
    top = jnp.max(joint, axis=comp, keepdims=True)
    scaled = jnp.exp(joint - top)
    total = jnp.sum(scaled, axis=comp, keepdims=True)
    point_ll = (top + jnp.log(total)).reshape(-1)
    row_weight = wc[None, :] if rows_last else wc[:, None]
    positive = wc > 0
    log_lik = jnp.sum(jnp.where(positive, wc * point_ll, 0.0))
    entropy = jnp.zeros((), dtype)  # soft EM: from the sums, in e_step
    if hard:
        resp = jax.nn.one_hot(jnp.argmax(joint, axis=comp), num_components, dtype=dtype, axis=comp) * row_weight
        take = min(num_components, xc.shape[0])
        neg, idx = jax.lax.top_k(-jnp.where(positive, point_ll, jnp.inf), take)
        worst_ll, worst_rows = -neg, xc[idx]
        if take < num_components:
            worst_ll = jnp.concatenate([worst_ll, jnp.full(num_components - take, jnp.inf, dtype)])
            worst_rows = jnp.concatenate([worst_rows, jnp.zeros((num_components - take, xc.shape[1]), dtype)])
    else:
        resp = scaled * (row_weight / total)
        worst_ll = jnp.full((num_components,), jnp.inf, dtype)
        worst_rows = jnp.zeros((num_components, xc.shape[1]), dtype)
    sums = resp @ features.T if rows_last else resp.T @ features
    return EStepOut(sums, log_lik, entropy, worst_ll, worst_rows)


def _merge_hard(acc: EStepOut, part: EStepOut) -> EStepOut:
    """Sums add; the K worst-explained rows are kept (for re-seeding empty clusters)."""
    cand_ll = jnp.concatenate([acc.worst_ll, part.worst_ll])
    cand_rows = jnp.concatenate([acc.worst_rows, part.worst_rows])
    _, keep = jax.lax.top_k(-cand_ll, acc.worst_ll.shape[0])
    return EStepOut(jax.tree.map(jnp.add, acc.stats, part.stats), acc.log_lik + part.log_lik,
                    acc.entropy + part.entropy, cand_ll[keep], cand_rows[keep])


def e_step(params: GMMParams, layout: Layout, data: RowData, *, hard: bool, full_moment: bool) -> EStepOut:
    """Soft (posterior) or hard (argmax) E-step over every row (sharded or streamed): one fold, one
    ``psum`` (soft) or ``all_gather`` (hard: the worst rows are not a sum).

    The soft E-step's entropy needs no pass of its own: ``sum_nk r_nk log r_nk = sum_nk r_nk joint_nk -
    sum_n w_n log p(x_n)`` and ``sum_nk r_nk joint_nk = sum_k sums_k . A_k`` (the feature sums times the
    log-joint coefficients)."""
    num_components, num_features = params.means.shape
    dtype = params.means.dtype
    coefficients = log_prob_coefficients(params, full_moment)  # (F, K)
    zero = EStepOut(
        jnp.zeros((num_components, coefficients.shape[0]), dtype),
        jnp.zeros((), dtype),
        jnp.zeros((), dtype),
        jnp.full((num_components,), jnp.inf, dtype),
        jnp.zeros((num_components, num_features), dtype),
    )
    chunk_fn = functools.partial(_estep_chunk, hard=hard, full_moment=full_moment)
    out = data_pass(layout, data, chunk_fn, zero, coefficients, merge=_merge_hard if hard else None)
    sums = out.stats
    if not hard:
        expected = jnp.sum(jnp.where(sums != 0, sums * coefficients.T, 0.0))
        out = out._replace(entropy=out.log_lik - expected)
    return out._replace(stats=stats_from_feature_sums(sums, num_features, full_moment))


def _reseed_empty(params: GMMParams, counts, worst_rows, data_tril, total_weight):
    """Re-seed components with zero hard counts at distinct worst-explained rows (see module doc)."""
    empty = counts <= 0
    rank = jnp.cumsum(empty) - 1  # j-th empty component takes the j-th worst row
    weights = jnp.where(empty, 1.0 / total_weight, params.weights)
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


def _run_em(init_params: GMMParams, layout, data, data_tril, total_weight, tol, reg_covar, *, hard, covariance_type, max_iters):
    """The EM loop for one start (vmapped over starts by the caller). Pure and jit-able.

    Each pass of the loop is E-step at theta_{t-1} (giving its log-likelihood), then M-step to theta_t,
    exactly sklearn's order; ``trace_ll[t-1]`` is therefore log p(x | theta_{t-1}).
    """
    full_moment = needs_full_moment(covariance_type)
    dtype = init_params.means.dtype
    history = jax.tree.map(lambda a: jnp.zeros((max_iters + 1,) + a.shape, a.dtype).at[0].set(a), init_params)

    def cond(s: _LoopState):
        return (s.iteration < max_iters) & ~s.converged & jnp.isfinite(s.curr_ll)

    def body(s: _LoopState):
        est = e_step(s.params, layout, data, hard=hard, full_moment=full_moment)
        params = m_step(est.stats, covariance_type, reg_covar, total_weight)
        events = s.events
        if hard:
            params, num_empty = _reseed_empty(params, est.stats.counts, est.worst_rows, data_tril, total_weight)
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
            jnp.abs(est.log_lik - s.prev_ll) / total_weight < tol,
            events,
            s.trace_ll.at[i].set(est.log_lik),
            s.trace_obj.at[i].set(objective),
            jax.tree.map(lambda h, a: h.at[i + 1].set(a), s.history, params),
        )

    nan_trace = jnp.full((max_iters,), jnp.nan, dtype)
    zero = jnp.zeros((), dtype)
    state = _LoopState(
        jnp.zeros((), jnp.int32), init_params, jnp.full((), -jnp.inf, dtype), zero, jnp.zeros((), bool),
        jnp.zeros((), jnp.int32), nan_trace, nan_trace, history,
    )
    return jax.lax.while_loop(cond, body, state)


def _final_rows(params: GMMParams, xc, hard: bool):
    joint = component_log_prob(params, xc)
    point_ll = logsumexp(joint, axis=1)
    if hard:
        resp = jax.nn.one_hot(jnp.argmax(joint, axis=1), joint.shape[1], dtype=joint.dtype)
    else:
        resp = jnp.exp(joint - point_ll[:, None])
    return resp, point_ll


def _final_ll_chunk(params, xc, wc, row0, *, hard: bool):
    """(weighted log-likelihood, weighted responsibility counts (K,)) of a chunk whose rows are not kept:
    the column sums of what :func:`_final_rows` gives in memory (one-hot for hard EM)."""
    resp, point_ll = _final_rows(params, xc, hard)
    resp = resp * wc[:, None]
    return jnp.sum(jnp.where(wc > 0, wc * point_ll, 0.0)), jnp.sum(jnp.where(wc[:, None] > 0, resp, 0.0), axis=0)


def _em_program(keys, given_init, data, total_weight, tol, reg_covar, *, layout, num_components, init, hard,
                covariance_type, max_iters, dtype):
    """Initialise (vmapped over keys unless ``given_init``), run EM per start, finish the best start."""
    dtype = jnp.dtype(dtype)
    moments = data_moments_pass(layout, data, dtype)
    data_tril = data_tril_pass(layout, data, covariance_type, reg_covar, dtype, moments)
    data_cov = covariance_from_sums(*moments)  # the (unbiased, weighted) data covariance, for info
    if given_init is None:
        starts = jax.vmap(lambda k: initialize_rows(k, layout, data, num_components, init, covariance_type, reg_covar,
                                                    dtype, data_tril))(keys)
    else:
        starts = given_init
    run = lambda p: _run_em(p, layout, data, data_tril, total_weight, tol, reg_covar, hard=hard,
                            covariance_type=covariance_type, max_iters=max_iters)
    states = jax.vmap(run)(starts)
    best = jnp.argmax(jnp.where(jnp.isfinite(states.curr_ll), states.curr_ll, -jnp.inf))
    best_params = jax.tree.map(lambda a: a[best], states.params)
    if layout.streamed:
        resp = None
        final_ll, counts = data_pass(layout, data, functools.partial(_final_ll_chunk, hard=hard),
                                     (jnp.zeros((), dtype), jnp.zeros(num_components, dtype)), best_params)
    else:
        resp, final_ll = map_rows(layout, data, lambda p, xc: _final_rows(p, xc, hard), best_params, num_components, dtype)
        counts = None
    return states, best, resp, final_ll, counts, data_cov


_COMPILED: dict = {}


def _compiled_program(keys, given_init, data, total_weight, tol, reg_covar, **static):
    """Ahead-of-time compiled EM program, cached per (shapes, dtype, shardings, static options).

    Returns the executable and the seconds spent compiling it (0.0 on a cache hit).
    """
    shapes = jax.tree.map(lambda a: (a.shape, str(a.dtype)), (keys, given_init, data))
    cache_key = (tuple(sorted(static.items())), str(shapes))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    start = time.perf_counter()
    compiled = jax.jit(functools.partial(_em_program, **static)).lower(keys, given_init, data, total_weight, tol, reg_covar).compile()
    remember_compiled(_COMPILED, cache_key, compiled)
    return compiled, time.perf_counter() - start


def _given_init(init, num_features, num_components, n_init, center, dtype):
    """Validated user initial parameters, stacked (n_init, ...) in the centred coordinates; else None."""
    if not isinstance(init, GMMParams):
        check_choice("init", init, INIT_METHODS)
        return None
    stacked = stack_given_init(init, np.zeros((1, num_features), dtype), num_components, n_init)
    return stacked._replace(means=stacked.means - jnp.asarray(center, dtype))


# --------------------------------------------------------------------------- where the rows come from


class _Rows(NamedTuple):
    """Host-side result of reading the user's rows."""

    layout: Layout
    data: RowData
    center: np.ndarray
    total_weight: float
    dtype: np.dtype
    reader: ChunkReader | None
    local_rows: int  # this process's real rows (multi-process: its own; else N)


def _streams_from_memory(x) -> bool:
    """A 2-D float numpy array of at least ``HOST_STREAM_BYTES`` (single process): EM reads it in place, a few
    MiB per host read, instead of copying it (centred) to the devices. XLA's CPU runtime takes a host buffer
    without a copy only when it is 64-byte aligned, which numpy's large arrays are not (16), so a device copy
    would double the memory of a data set that fills it."""
    return (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype in (np.float32, np.float64)
            and x.nbytes >= HOST_STREAM_BYTES and jax.process_count() == 1)


def _is_streamed(x) -> bool:
    """A path, a callable, an iterator, or a list of 2-D chunks / (x, w) pairs (not a nested list of numbers)."""
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(isinstance(c, tuple) or np.ndim(c) == 2 for c in x)
    return isinstance(x, (str, os.PathLike)) or callable(x) or (not isinstance(x, (np.ndarray, jax.Array)) and hasattr(x, "__iter__"))


def _padded_slice(arr, rows: slice, num_rows: int, center=None, fill=0.0):
    """Rows ``rows`` of ``arr`` (shorter than asked beyond ``num_rows``: zero-filled), centred."""
    start, stop = rows.start or 0, rows.stop if rows.stop is not None else num_rows
    part = arr[start:min(stop, num_rows)]
    if center is not None:
        part = part - center
    if stop > num_rows:
        pad = np.full((stop - max(start, num_rows),) + arr.shape[1:], fill, arr.dtype)
        part = np.concatenate([part, pad]) if part.size else pad
    return part


def _in_memory_rows(x, sample_weight, num_components, chunk_size, mesh) -> _Rows:
    x_np = check_data(x)
    check_float32_resolution(x_np)
    num_rows, num_features = x_np.shape
    dtype = x_np.dtype
    w = normalize_sample_weight(check_sample_weight(sample_weight, num_rows, np.float64))
    positive = x_np if w is None or (w > 0).all() else x_np[w > 0]
    if positive is not x_np and isinstance(num_components, (int, np.integer)) and 1 <= num_components <= num_rows:
        if np.unique(positive, axis=0).shape[0] < num_components:
            raise ValueError(f"x has only {np.unique(positive, axis=0).shape[0]} distinct rows with sample_weight > 0, "
                             f"fewer than num_components ({num_components})")
    num_components = check_num_components(num_components, positive)
    sum_w = float(num_rows) if w is None else float(w.sum())
    sum_x = x_np.sum(axis=0, dtype=np.float64) if w is None else w @ x_np.astype(np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        counts = np.asarray(multihost_utils.process_allgather(np.array([num_rows])))
        sums = np.asarray(multihost_utils.process_allgather(np.concatenate([[sum_w], sum_x])))
        sum_w, sum_x = float(sums[:, 0].sum()), sums[:, 1:].sum(axis=0)
        global_rows, max_local = int(counts.sum()), int(counts.max())
    else:
        global_rows, max_local = num_rows, num_rows
    center = sum_x / sum_w  # float64: rows are centred on the device, after conversion (RowData)
    num_devices = mesh.devices.size
    local_devices = max(1, num_devices // jax.process_count())
    chunk_size = int(chunk_size or default_chunk_size(-(-max_local // local_devices), num_components, num_features,
                                                       np.dtype(dtype).itemsize))
    layout = Layout(global_rows, num_features, chunk_size, mesh, dtype=str(dtype))
    sharding = layout.sharding
    weights = np.ones(num_rows, dtype) if w is None else w.astype(dtype)
    if jax.process_count() > 1:
        per_process = -(-max_local // local_devices) * local_devices
        local_x = _padded_slice(x_np, slice(0, per_process), num_rows)
        local_w = _padded_slice(weights, slice(0, per_process), num_rows)
        total = per_process * jax.process_count()
        x_dev = jax.make_array_from_process_local_data(sharding, local_x, (total, num_features))
        w_dev = jax.make_array_from_process_local_data(sharding, local_w, (total,))
    else:
        padded = layout.padded_rows
        x_dev = jax.make_array_from_callback((padded, num_features), sharding,
                                             lambda idx: _padded_slice(x_np, idx[0], num_rows))
        w_dev = jax.make_array_from_callback((padded,), sharding, lambda idx: _padded_slice(weights, idx[0], num_rows))
    data = RowData(x_dev, w_dev, center=jnp.asarray(center, COMPUTE_DTYPE))
    return _Rows(layout, data, center, sum_w, dtype, None, num_rows)


def _source_blocks(x):
    """A callable returning a fresh iterator of row blocks for a streamed source, and the source to read
    from (an array-like for ``.npy`` files, the callable otherwise)."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not path.endswith(".npy"):
            raise ValueError(f"x as a path must name a .npy file, got {path!r}")
        try:
            arr = NpyRows(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"x: could not read {path!r}: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"x must be a 2-D array of shape (num_samples, num_features), got shape {arr.shape} in {path!r}")
        return arr, (lambda: (arr[i : i + STREAM_BLOCK_ROWS] for i in range(0, arr.shape[0], STREAM_BLOCK_ROWS)))
    if isinstance(x, np.ndarray):  # a large in-memory array, read in place (_streams_from_memory)
        return x, (lambda: (x[i : i + STREAM_BLOCK_ROWS] for i in range(0, x.shape[0], STREAM_BLOCK_ROWS)))
    if callable(x):
        return x, x
    if iter(x) is x:
        raise ValueError("x is a one-shot iterator: EM reads the rows once per iteration; pass a callable that "
                         "returns a fresh iterator of row chunks (or a list of chunks, or a .npy path)")
    return (lambda: iter(x)), (lambda: iter(x))


def _streamed_rows(x, sample_weight, num_components, chunk_size, mesh) -> _Rows:
    """One host pre-pass over the source: shape, dtype, finiteness, weights, centre, distinct rows."""
    if jax.process_count() > 1:
        raise ValueError("streamed x (a path or chunk iterator) is single-process; in a multi-process run pass each "
                         "process's rows as an array")
    source, blocks = _source_blocks(x)
    num_rows, num_features, dtype = 0, None, None
    sum_w, sum_x, weights_in_chunks = 0.0, None, None
    num_positive, max_abs, sum_sq = 0, None, None
    distinct: set = set()
    for item in blocks():
        xb, wb = item if isinstance(item, tuple) else (item, None)
        try:
            xb = check_data(np.asarray(xb)[:, None] if np.ndim(xb) == 1 else xb)
        except ValueError as exc:  # name the row in the whole source, not in this block
            raise ValueError(re.sub(r"first at row (\d+)", lambda m: f"first at row {int(m.group(1)) + num_rows}", str(exc))) from None
        if num_features is None:
            num_features, dtype = xb.shape[1], xb.dtype
            sum_x, sum_sq, max_abs = np.zeros(num_features), np.zeros(num_features), np.zeros(num_features)
            sum_plain = np.zeros(num_features)
        elif xb.shape[1] != num_features:
            raise ValueError(f"x: a chunk has {xb.shape[1]} columns, the first had {num_features}")
        if weights_in_chunks is None:
            weights_in_chunks = wb is not None
        if (wb is not None) != weights_in_chunks:
            raise ValueError("x: either every chunk is an (x, w) pair or none is")
        if wb is not None:
            if sample_weight is not None:
                raise ValueError("sample_weight given twice: in the chunks and as sample_weight")
            wb = check_sample_weight(wb, xb.shape[0], np.float64) if (np.asarray(wb) > 0).any() or np.asarray(wb).size == 0 else np.zeros(xb.shape[0])
        elif sample_weight is not None:
            wb = None  # checked below as a whole
        w64 = np.ones(xb.shape[0]) if wb is None else np.asarray(wb, np.float64)
        sum_w += float(w64.sum())
        num_positive += int(np.count_nonzero(w64 > 0))
        sum_x += w64 @ np.asarray(xb, np.float64)
        x64 = np.asarray(xb, np.float64)
        sum_sq += np.sum(x64**2, axis=0)  # (only for the float32 resolution check: cancellation is harmless there)
        sum_plain += np.sum(x64, axis=0)
        max_abs = np.maximum(max_abs, np.max(np.abs(xb), axis=0)) if xb.shape[0] else max_abs
        if len(distinct) < num_components:
            keep = xb if wb is None else xb[w64 > 0]
            distinct.update(map(bytes, np.unique(keep[: 4 * num_components + 64], axis=0)))
        num_rows += xb.shape[0]
    if num_rows == 0:
        raise ValueError("x has no rows")
    w = normalize_sample_weight(check_sample_weight(sample_weight, num_rows, np.float64))
    weight_scale = 1.0
    if weights_in_chunks and sum_w > 0:  # the chunks' own weights, normalised as a whole (check_sample_weight)
        weight_scale, sum_x, sum_w = num_positive / sum_w, sum_x * (num_positive / sum_w), float(num_positive)
    if num_rows:
        mean_plain = sum_plain / num_rows
        check_float32_resolution(None, dtype=dtype, max_abs=max_abs,
                                 std=np.sqrt(np.maximum(sum_sq / num_rows - mean_plain**2, 0.0)))
    if w is not None:
        sum_w = float(w.sum())
        sum_x = np.zeros(num_features)
        for i, item in enumerate(rechunk(blocks(), STREAM_BLOCK_ROWS)):
            sum_x += w[i * STREAM_BLOCK_ROWS : i * STREAM_BLOCK_ROWS + item[0].shape[0]].astype(np.float64) @ item[0]
    if sum_w <= 0:
        raise ValueError("sample_weight is zero for every row: nothing to fit")
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)) or num_components < 1:
        check_num_components(num_components, np.zeros((1, 1)))
    if num_components > num_rows:
        raise ValueError(f"num_components ({num_components}) exceeds the number of rows of x ({num_rows})")
    if len(distinct) < num_components:
        raise ValueError(f"x has only {len(distinct)} distinct rows (among its leading rows), fewer than num_components ({num_components})")
    center = sum_x / sum_w  # float64: subtracted on the device, after conversion (RowData)
    num_devices = mesh.devices.size
    chunk_size = int(chunk_size or default_chunk_size(num_rows, num_components, num_features, np.dtype(dtype).itemsize))
    chunks_per_read = max(1, min(READ_BYTES // (chunk_size * num_features * np.dtype(dtype).itemsize),
                                 -(-num_rows // (num_devices * chunk_size))))
    read_rows = chunk_size * chunks_per_read
    per_device = -(-(-(-num_rows // read_rows)) // num_devices)
    layout = Layout(num_rows, num_features, chunk_size, mesh, streamed=True, chunks_per_device=per_device,
                    chunks_per_read=chunks_per_read, dtype=str(dtype))
    reader = ChunkReader(source, w, np.zeros(num_features), read_rows, dtype, window=4 * num_devices + 4,
                         weight_scale=weight_scale)
    token = jax.device_put(np.int32(reader.token), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    data = RowData(None, None, token, center=jnp.asarray(center, COMPUTE_DTYPE))
    return _Rows(layout, data, center, sum_w, dtype, reader, num_rows)


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
    sample_weight=None,
    devices=None,
    mesh=None,
) -> FitResult:
    start = time.perf_counter()
    check_choice("covariance_type", covariance_type, COVARIANCE_TYPES)
    check_positive("reg_covar", reg_covar, allow_zero=True)
    check_positive("tol", tol, allow_zero=True)
    check_positive("max_iters", max_iters, integer=True)
    check_positive("n_init", n_init, integer=True)
    if chunk_size is not None:
        check_positive("chunk_size", chunk_size, integer=True)
    if isinstance(init, GMMParams) and n_init != 1:
        raise ValueError(f"n_init must be 1 when init is a GMMParams, got {n_init}")
    device_mesh = make_mesh(devices, mesh)
    streamed = _is_streamed(x) or _streams_from_memory(x)
    rows = (_streamed_rows if streamed else _in_memory_rows)(x, sample_weight, num_components, chunk_size, device_mesh)
    layout, dtype, center_np = rows.layout, rows.dtype, rows.center
    num_components = int(num_components)

    compute = jnp.dtype(COMPUTE_DTYPE)
    given = _given_init(init, layout.num_features, num_components, n_init, center_np, compute)
    keys = jax.random.split(key, n_init)
    tol_arr, reg_arr, total_arr = (jnp.asarray(v, compute) for v in (tol, reg_covar, rows.total_weight))
    compiled, compile_seconds = _compiled_program(
        keys, given, rows.data, total_arr, tol_arr, reg_arr, layout=layout, num_components=num_components,
        init="params" if given is not None else init, hard=hard, covariance_type=covariance_type,
        max_iters=int(max_iters), dtype=str(compute),
    )
    run_start = time.perf_counter()
    if rows.reader is not None:
        with rows.reader:
            state, best, resp, final_ll, counts, data_cov = compiled(keys, given, rows.data, total_arr, tol_arr, reg_arr)
            state, best, final_ll, counts = jax.block_until_ready((state, best, final_ll, counts))
    else:
        state, best, resp, final_ll, counts, data_cov = compiled(keys, given, rows.data, total_arr, tol_arr, reg_arr)
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
    as_data = lambda p: GMMParams(*(np.asarray(a, dtype) for a in p))  # float32 data: float32 results
    params = as_data(params_c._replace(means=params_c.means + center_np))
    if resp is None:
        responsibilities = np.zeros((0, num_components), dtype)
    elif jax.process_count() > 1:
        shards = sorted(resp.addressable_shards, key=lambda s: s.index[0].start or 0)
        responsibilities = np.concatenate([np.asarray(s.data) for s in shards])[: rows.local_rows]
    else:
        responsibilities = np.asarray(resp)[: layout.num_rows]
    responsibilities = responsibilities.astype(dtype, copy=False)
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
    history = as_data(history._replace(means=history.means + center_np))
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
        "chunk_size": layout.chunk_size,
        "dtype": str(dtype),
        "compute_dtype": str(compute),
        "num_rows": layout.num_rows,
        "total_weight": rows.total_weight,
        "weighted": sample_weight is not None or (rows.reader is not None and rows.reader.weights is not None),
        "num_devices": layout.num_devices,
        "streamed": streamed,
        "source": ("host memory, read in place" if isinstance(x, np.ndarray) and streamed
                   else "streamed" if streamed else "device arrays"),
        "compile_seconds": compile_seconds,
        "run_seconds": run_seconds,
        "snapshots": history,
        "snapshot_iters": snapshot_iters,
        ("empty_cluster_events" if hard else "collapsed_components"): int(np.asarray(state.events[best])),
    }
    info["data_covariance"] = np.asarray(data_cov)
    if streamed:
        info["final_counts"] = np.asarray(counts)
        info["responsibilities"] = ("not materialised for streamed data (responsibilities has 0 rows): for rows "
                                    "x[a:b] use models.responsibilities(result.params, x[a:b])")
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
    sample_weight : (N,) non-negative relative row weights (their scale does not matter; integer weights
        give the repeated rows' fit: ``inference.rows.normalize_sample_weight``).
    devices, mesh : the devices EM shards its rows over (default: every device JAX sees).

    ``x`` may also be a path to a ``.npy`` file or a callable returning an iterator of row chunks: EM then
    streams the rows (memory bounded by a few MiB of read buffers), as it does for a float numpy array of
    256 MiB or more (``HOST_STREAM_BYTES``), read in place. Streamed fits do not materialise the (N, K)
    responsibilities (``responsibilities`` has 0 rows; ``info["responsibilities"]`` says how to get them)
    and give ``info["final_counts"]`` (K,), the weighted responsibility sums at the final parameters (hard
    EM: of its one-hot assignments, as its in-memory responsibilities).

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
