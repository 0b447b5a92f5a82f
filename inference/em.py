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

Rows, weights, devices: every statistic is weighted by ``sample_weight`` (relative weights, normalised
to sum to the rows with a positive weight: ``inference.rows.normalize_sample_weight``; padding rows have
weight 0); every data pass is one fold of :mod:`inference.rows` over the rows, sharded over the devices of
a mesh (one ``psum`` per pass) or streamed from disk (see that module).

Precision: every statistic is float64 (``inference.em_rows.COMPUTE_DTYPE``) whatever the data's dtype;
float32 rows stay float32 in memory, are converted and centred chunk by chunk on the device, and the
results are returned as float32. A float32 fit therefore equals the float64 fit of the same rows.

Files: this module compiles and runs the program and builds the ``FitResult``; :mod:`inference.em_loop`
is the program (E-step, loop, final pass); :mod:`inference.em_rows` reads the user's rows.

``info["snapshots"]`` holds the parameters at up to ``NUM_SNAPSHOTS`` iterations (geometric spacing,
``info["snapshot_iters"]``; 0 = the initial point) for the figures' EM snapshot strip.
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from models.params import GMMParams, to_numpy

from . import executable_store
from .compiled_cache import remember_compiled
from .em_loop import em_program
from .em_rows import COMPUTE_DTYPE, in_memory_rows, is_streamed, streamed_rows, streams_from_memory
from .init import INIT_METHODS, stack_given_init
from .random_keys import split_key
from .result import FitResult
from .prediction import _pad_components, component_bucket
from .rows import make_mesh, row_bucket
from .stats import COVARIANCE_TYPES
from .validate import check_choice, check_positive

__all__ = ["fit_em", "fit_hard_em", "component_slots", "HOST_STREAM_BYTES", "NUM_SNAPSHOTS", "PAD_MAX_WORK"]

NUM_SNAPSHOTS = 8
HOST_STREAM_BYTES = 1 << 28  # in-memory float arrays from 256 MiB on are streamed from host memory, in place
PAD_MAX_WORK = 1 << 22  # row bucket x component slots x quadratic features up to which K is padded (component_slots)


_COMPILED: dict = {}


def component_slots(num_components: int, x, pad_components: bool = True) -> int:
    """The component slots EM's program is compiled for: ``prediction.component_bucket(K)`` (8, 16, 32, ...)
    for small complete in-memory data (row bucket x slots x quadratic features <= ``PAD_MAX_WORK``), so that
    a grid over K (GridSearchCV, BIC curves, sweeps) compiles one program, not one per K; K otherwise
    (large data: padding would multiply every pass's work; NaN holes, streamed rows, several processes).
    The padded slots have weight 0 and change no result beyond rounding (tests/test_compile_once.py)."""
    num_components = int(num_components)
    if not pad_components or jax.process_count() > 1 or callable(x) or isinstance(x, (str, bytes, os.PathLike)):
        return num_components
    shape = np.shape(x)
    if len(shape) != 2 or num_components < 1:
        return num_components
    slots = component_bucket(num_components)
    num_rows, num_features = shape
    width = num_features * (num_features + 1) // 2 + num_features + 1
    if row_bucket(num_rows, num_features, 8) * slots * width > PAD_MAX_WORK:
        return num_components
    values = np.asarray(x)
    if values.dtype.kind not in "fiub" or (values.dtype.kind == "f" and np.isnan(values).any()):
        return num_components
    return slots


def _compiled_program(keys, given_init, data, total_weight, tol, reg_covar, num_active, *, store_mesh=None, **static):
    """Ahead-of-time compiled EM program, cached per (shapes, dtype, shardings, static options); with ``store_mesh``
    (the mesh the rows are on; given for data in memory: no host reads inside the program) also kept on disk across
    processes (``inference.executable_store``: a new process then neither traces nor lowers it, ~1 s per program).

    Returns the executable and the seconds spent compiling (or loading) it (0.0 on a cache hit).
    """
    args = (keys, given_init, data, total_weight, tol, reg_covar, num_active)
    shapes = jax.tree.map(lambda a: (a.shape, str(a.dtype)), (keys, given_init, data))
    cache_key = (tuple(sorted(static.items())), str(shapes))
    if cache_key in _COMPILED:
        return _COMPILED[cache_key], 0.0
    start = time.perf_counter()
    devices = store_key = None
    if store_mesh is not None:  # the shardings name the mesh's axes; the device ids are added (a Mesh's repr has none)
        devices = list(np.asarray(store_mesh.devices).ravel())
        store_key = ("inference.em.em_program", cache_key, str(jax.tree.map(lambda a: getattr(a, "sharding", None), args)),
                     tuple(int(d.id) for d in devices))
    compiled, _ = executable_store.load_or_compile(
        store_key, lambda options: jax.jit(functools.partial(em_program, **static)).lower(*args).compile(
            compiler_options=options or None), devices)
    remember_compiled(_COMPILED, cache_key, compiled)
    return compiled, time.perf_counter() - start


def _given_init(init, num_features, num_components, n_init, center, dtype):
    """Validated user initial parameters, stacked (n_init, ...) in the centred coordinates; else None."""
    if not isinstance(init, GMMParams):
        check_choice("init", init, INIT_METHODS)
        return None
    stacked = stack_given_init(init, np.zeros((1, num_features), dtype), num_components, n_init)
    return stacked._replace(means=stacked.means - jnp.asarray(center, dtype))


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
    pad_components: bool = True,
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
    streamed = is_streamed(x) or streams_from_memory(x, HOST_STREAM_BYTES)
    if streamed:
        rows = streamed_rows(x, sample_weight, num_components, chunk_size, device_mesh)
        num_slots = int(num_components)
    else:
        num_slots = component_slots(num_components, x, pad_components)
        rows = in_memory_rows(x, sample_weight, num_components, chunk_size, device_mesh, num_slots)
    layout, dtype, center_np = rows.layout, rows.dtype, rows.center
    num_components = int(num_components)

    compute = jnp.dtype(COMPUTE_DTYPE)
    given = _given_init(init, layout.num_features, num_components, n_init, center_np, compute)
    if given is not None and num_slots > num_components:  # user starts padded like the program's slots
        given = _pad_components(given, compute, num_slots)
    keys = split_key(key, n_init)
    tol_arr, reg_arr, total_arr = (jnp.asarray(v, compute) for v in (tol, reg_covar, rows.total_weight))
    active_arr = np.int32(num_components)
    compiled, compile_seconds = _compiled_program(
        keys, given, rows.data, total_arr, tol_arr, reg_arr, active_arr, layout=layout, num_components=num_slots,
        init="params" if given is not None else init, hard=hard, covariance_type=covariance_type,
        max_iters=int(max_iters), dtype=str(compute), store_mesh=device_mesh if rows.reader is None else None,
    )
    run_start = time.perf_counter()
    if rows.reader is not None:
        with rows.reader:
            state, best, resp, final_ll, counts, data_cov = compiled(keys, given, rows.data, total_arr, tol_arr, reg_arr,
                                                                     active_arr)
            state, best, final_ll, counts = jax.block_until_ready((state, best, final_ll, counts))
    else:
        state, best, resp, final_ll, counts, data_cov = compiled(keys, given, rows.data, total_arr, tol_arr, reg_arr,
                                                                 active_arr)
    best = int(best)
    final_ll = float(final_ll)
    start_ll = np.asarray(state.curr_ll)
    if not np.isfinite(final_ll):
        raise FloatingPointError(
            "EM produced a non-finite log-likelihood in every start; increase reg_covar or check the scale of x"
        )
    num_iters = int(np.asarray(state.iteration)[best])
    take = lambda a: np.asarray(a)[best]  # on the host: indexing a device array compiles a program per shape
    real = lambda p: GMMParams(p.weights[..., :num_components], p.means[..., :num_components, :],
                               p.scale_tril[..., :num_components, :, :])  # the padded slots dropped
    params_c = real(GMMParams(*(take(a) for a in state.params)))
    as_data = lambda p: GMMParams(*(np.asarray(a, dtype) for a in p))  # float32 data: float32 results
    params = as_data(params_c._replace(means=params_c.means + center_np))
    if resp is None:
        responsibilities = np.zeros((0, num_components), dtype)
    elif jax.process_count() > 1:
        shards = sorted(resp.addressable_shards, key=lambda s: s.index[0].start or 0)
        responsibilities = np.concatenate([np.asarray(s.data) for s in shards])[: rows.local_rows, :num_components]
    else:
        resp = np.asarray(resp)[:, :num_components]
        if rows.share:  # each device's real rows sit at the front of its block
            resp = resp.reshape(layout.num_devices, -1, num_components)[:, : rows.share].reshape(-1, num_components)
        responsibilities = resp[: rows.local_rows]
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
    history = real(GMMParams(*(take(h)[snapshot_iters] for h in state.history)))
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
        "num_rows": rows.local_rows if jax.process_count() == 1 else layout.num_rows,
        "compiled_rows": None if layout.streamed else layout.num_rows,  # streamed: any N
        "component_slots": num_slots,
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
        ("empty_cluster_events" if hard else "collapsed_components"): int(np.asarray(state.events)[best]),
    }
    info["data_covariance"] = np.asarray(data_cov)
    if rows.missing is not None:  # NaN holes, marginalised (inference.missing_em)
        info["missing"] = dict(rows.missing)
        if rows.missing["rows_all_missing"]:
            info["warnings"] = [f"{rows.missing['rows_all_missing']} row(s) have every value missing: they carry no "
                                "information and have weight 0 (their responsibilities are the mixture weights)"]
    if streamed:
        info["final_counts"] = np.asarray(counts)[:num_components]
        info["responsibilities"] = ("not materialised for streamed data (responsibilities has 0 rows): for rows "
                                    "x[a:b] use models.responsibilities(result.params, x[a:b])")
    return FitResult(
        method="hard_em" if hard else "em",
        params=to_numpy(params),
        trace=trace,
        samples=None,
        responsibilities=responsibilities,
        converged=bool(np.asarray(state.converged)[best]),
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
    pad_components : compile for ``component_slots(K, x)`` components on small data (default True: a grid
        over K compiles one program); False compiles exactly K. The result is the same either way.

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
