"""Minibatch SVI on ``models.gmm_model``: the SVI of :mod:`inference.numpyro_svi` (AutoNormal guide over the
global sites, z enumerated by TraceEnum_ELBO, Laplace start, preconditioned Adam) on batches of rows read from a
``.npy`` file (or an array) that need never be in memory at once.

The model is the declared one with ``subsample_size=B``: the data plate is ``plate("data", N, subsample_size=B)``,
so the batch's log-likelihood is scaled by ``N / B`` (NumPyro's plate does the scaling; z is still summed out per
row, inside the scale) and the loss is an unbiased estimate of the full-data negative ELBO when every row is in
a batch with probability ``B / N`` (tests/test_minibatch_svi.py measures it). The plate's own index draw is
replaced by ``arange(B)`` (``handlers.substitute``): the rows are chosen on the host, and NumPyro's draw on CPU
shuffles an ``arange(N)`` every step.

Batches (:class:`BatchReader`): each step's B rows are ``pieces`` (default 16) runs of ``B / pieces`` contiguous
rows, each starting at a uniformly random row of the file and wrapping around its end, read with ``os.pread``
(:class:`inference.host_readers.NpyRows`; an in-memory array is sliced). Every row is then in a batch with
probability exactly ``B / N`` (unbiased), reads stay a few pages each, and a file sorted by cluster still gives
batches that mix ``pieces`` places of it. The batches of ``check_every`` steps are read on the host, standardised
and transferred together (``check_every x B x D`` floats, 13 MB at 200 x 1024 x 8), then trained in one jitted
``lax.scan``.

Standardisation (:mod:`inference.standardize`): column means and sds from one pre-pass over the file (Chan's
pairwise merge of per-block moments, float64), which also refuses NaN / inf and draws the rows of the start.

Start: the MAP (``inference.numpyro_map``) of a random subsample of ``start_rows`` rows (default 10,000; all rows
when N is smaller) with the full-data standardisation, or a given GMMParams; the guide's scales start at the
Laplace ``1 / sqrt(H_ii)`` of the subsample's model scaled to N rows (the same plate), the preconditioner of Adam.

Step size: Adam (preconditioned by the starting scales, :func:`inference.numpyro_svi.preconditioned_adam`) whose
rate decays exponentially from ``learning_rate`` (0.01) to ``final_learning_rate`` (1e-3) over ``num_steps``: the
decay, not the iterate, damps the batches' noise (a Robbins-Monro-like schedule, not its 1/t, which at these
counts would freeze the guide before it arrives).

``converged`` (a stochastic objective): per chunk of ``check_every`` steps the mean loss and its standard error
(the steps' sd / sqrt(check_every)), and the chunk means of every guide location and log scale. A chunk passes
when its mean loss is within two standard errors of the previous chunk's (or within ``tol`` relative) -- the loss
stopped improving by more than its noise -- AND no location's chunk mean moved by more than ``param_tol`` of its
guide scale AND no log scale by more than ``param_tol``. ``converged`` is True after ``patience`` (2) passing
chunks in a row; otherwise False after ``num_steps`` with a line in ``info["warnings"]``.

Missing values (NaN) are refused (one-line ValueError); sample weights too.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import SVI, TraceEnum_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_value

from models.alignment import mean_of_draws, relabel_draws
from models.density import component_log_prob, responsibilities
from models.gmm import gmm_model, params_from_sites
from models.params import GMMParams

from ._numpyro_common import (check_float_option, check_int_option, key_array, model_sites, params_from_site_draws,
                              prior_items, site_supports, to_unconstrained)
from .host_readers import NpyRows
from .numpyro_map import starting_point
from .numpyro_svi import FIXED_INIT_SCALE, LAPLACE_MAX_PARAMS, SVI_DEFAULTS, laplace_scales, preconditioned_adam
from .result import FitResult
from .standardize import (Standardizer, _result_in_data_units, prior_in_standard_units, standardizer, to_standard)

__all__ = ["fit_minibatch_svi", "BatchReader", "streamed_moments", "minibatch_model", "MINIBATCH_DEFAULTS"]

MINIBATCH_DEFAULTS = dict(SVI_DEFAULTS, batch_size=1024, num_particles=1)
PIECES = 16  # contiguous runs per batch
START_ROWS = 10_000  # rows of the MAP start and the Laplace scales
PATIENCE = 2  # passing chunks in a row for converged
PREPASS_ROWS = 1 << 16


# --------------------------------------------------------------------------- the rows on the host


def _open(source):
    """(sliceable rows, N, D) of a ``.npy`` path (read by ``pread``) or an in-memory (N, D) array."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".npy"):
            raise ValueError(f"x as a path must name a .npy file, got {path!r}")
        rows = NpyRows(path)
        if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
            raise ValueError(f"x must be a 2-D array (num_samples, num_features), got shape {rows.shape} in {path!r}")
        return rows, int(rows.shape[0]), int(rows.shape[1])
    x = np.asarray(source)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be a 2-D array (num_samples, num_features), got shape {x.shape}")
    return x, int(x.shape[0]), int(x.shape[1])


def streamed_moments(rows, num_rows: int, start_index: np.ndarray) -> tuple[Standardizer, np.ndarray]:
    """One pass over ``rows`` in blocks: the column means and sds (float64, Chan's merge of block moments), NaN /
    inf refused in one line, and the rows at the sorted ``start_index`` (the start's subsample)."""
    count, mean, m2, picked = 0, None, None, []
    for first in range(0, num_rows, PREPASS_ROWS):
        block = np.asarray(rows[first: first + PREPASS_ROWS], np.float64)
        if not np.isfinite(block).all():
            bad = first + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            kind = "NaN (missing values)" if np.isnan(block).any() else "inf"
            raise ValueError(f"x has {kind} first at row {bad}: minibatch SVI takes complete, finite rows only "
                             "(fit the in-memory svi, or em, for rows with holes)")
        b_mean, b_m2, b = block.mean(axis=0), ((block - block.mean(axis=0)) ** 2).sum(axis=0), block.shape[0]
        if mean is None:
            count, mean, m2 = b, b_mean, b_m2
        else:
            delta = b_mean - mean
            total = count + b
            mean = mean + delta * (b / total)
            m2 = m2 + b_m2 + delta**2 * (count * b / total)
            count = total
        lo, hi = np.searchsorted(start_index, [first, first + b])
        picked.append(block[start_index[lo:hi] - first])
    scale = np.sqrt(m2 / count)
    constant = np.flatnonzero(~(scale > 0))
    if constant.size:
        raise ValueError(f"x: column(s) {constant.tolist()} are constant; the NumPyro engines standardise every "
                         "column by its spread (drop those columns)")
    return Standardizer(mean, scale), np.concatenate(picked)


class BatchReader:
    """Standardised batches of ``batch_size`` rows: ``pieces`` runs of contiguous rows, each from a uniformly
    random start, wrapping around the end (module docstring: every row with probability B / N)."""

    def __init__(self, rows, num_rows: int, st: Standardizer, batch_size: int, seed, pieces: int = PIECES):
        self.rows, self.num_rows, self.st, self.batch_size = rows, num_rows, st, batch_size
        self.pieces = max(1, min(pieces, batch_size))
        self.rng = np.random.default_rng(seed)

    def _run(self, start: int, length: int) -> np.ndarray:
        end = start + length
        if end <= self.num_rows:
            return np.asarray(self.rows[start:end], np.float64)
        return np.concatenate([np.asarray(self.rows[start:self.num_rows], np.float64),
                               np.asarray(self.rows[0:end - self.num_rows], np.float64)])

    def batch(self) -> np.ndarray:
        b = self.batch_size
        if b >= self.num_rows:
            out = np.asarray(self.rows[0:self.num_rows], np.float64)
        else:
            lengths = np.full(self.pieces, b // self.pieces)
            lengths[: b % self.pieces] += 1
            starts = self.rng.integers(0, self.num_rows, self.pieces)
            out = np.concatenate([self._run(int(s), int(n)) for s, n in zip(starts, lengths)])
        return (out - self.st.loc) / self.st.scale

    def batches(self, count: int) -> np.ndarray:
        return np.stack([self.batch() for _ in range(count)])


# --------------------------------------------------------------------------- the compiled pieces


@functools.lru_cache(maxsize=None)
def minibatch_model(num_components: int, prior: tuple, num_rows: int):
    """``model(x, sample_weight=None, missing=None)``: ``models.gmm_model`` on a batch ``x`` of B rows of
    ``num_rows`` (``subsample_size=B``: the plate scales the batch by N / B), the plate's index draw replaced."""
    kwargs = {name: (jnp.asarray(value) if isinstance(value, tuple) else value) for name, value in prior}

    def model(x, sample_weight=None, missing=None):
        batch = x.shape[0]
        with handlers.substitute(data={"data": jnp.arange(batch)}):
            return gmm_model(x, num_components=num_components, num_samples=num_rows, subsample_size=batch, **kwargs)

    return model


def _guide(model, start_sites=None):
    blocked = handlers.block(model, hide=["z"])
    init = {} if start_sites is None else dict(init_loc_fn=init_to_value(values=start_sites))
    return AutoNormal(blocked, init_scale=FIXED_INIT_SCALE, **init)


def _svi(model, guide, static, precond):
    _, _, _, num_steps, lr, final_lr, particles = static[:7]
    optim = preconditioned_adam(lr, final_lr, num_steps, precond)
    # the guide is wrapped so that its copy of the data plate does not draw indices either
    return SVI(model, handlers.substitute(guide, data={"data": jnp.arange(static[7])}), optim,
               TraceEnum_ELBO(num_particles=particles, max_plate_nesting=1))


@functools.lru_cache(maxsize=32)
def _programs(static: tuple):
    """Jitted (init, chunk, finish) for ``static = (K, prior, N, num_steps, lr, final_lr, particles, B, laplace,
    num_draws)``; each builds its model, guide and SVI at trace time (compiled once per static and shapes)."""
    num_components, prior, num_rows = static[:3]
    laplace, num_draws = static[8], static[9]
    model = minibatch_model(num_components, prior, num_rows)

    @jax.jit
    def init(key, start_sites, x_start, x_batch):
        supports = site_supports(num_components, x_batch.shape[-1], prior)
        if laplace:
            scales, fallbacks = laplace_scales(model, start_sites, x_start, None, supports)
        else:
            scales = jax.tree.map(lambda u: jnp.full_like(u, FIXED_INIT_SCALE), to_unconstrained(start_sites, supports))
            fallbacks = jnp.asarray(0)
        precond = {f"{name}_auto_loc": s for name, s in scales.items()}
        svi = _svi(model, _guide(model, start_sites), static, precond)
        state = svi.init(key, x_batch, init_params={f"{name}_auto_scale": s for name, s in scales.items()})
        return state, precond, fallbacks

    @jax.jit
    def chunk(state, precond, batches):
        guide = _guide(model)
        svi = _svi(model, guide, static, precond)
        svi.init(jax.random.PRNGKey(0), batches[0])  # sets svi.constrain_fn; its values are unused (dead code)
        supports = site_supports(num_components, batches.shape[-1], prior)

        def step(state, xb):
            state, loss = svi.update(state, xb)
            params = svi.get_params(state)
            tracked = {n: (params[f"{n}_auto_loc"], jnp.log(params[f"{n}_auto_scale"])) for n in supports}
            return state, (loss, tracked)

        state, (losses, tracked) = lax.scan(step, state, batches)
        params = svi.get_params(state)
        median = {n: biject_to(supports[n])(params[f"{n}_auto_loc"]) for n in supports}
        rows = batches.reshape(-1, batches.shape[-1])
        # the log-likelihood of all rows at the chunk's final guide median, estimated from the chunk's batches
        log_lik = jnp.sum(logsumexp(component_log_prob(params_from_sites(median), rows), axis=-1)) * (num_rows / rows.shape[0])
        return state, losses, jax.tree.map(lambda a: jnp.mean(a, axis=0), tracked), log_lik, params

    @jax.jit
    def finish(key, params, x_batch):
        guide = _guide(model)
        handlers.seed(handlers.substitute(guide, data={"data": jnp.arange(x_batch.shape[0])}), key)(x_batch)
        draws = guide.sample_posterior(key, params, sample_shape=(num_draws,))
        median = guide.median(params)
        return {n: draws[n] for n in median}, median

    return init, chunk, finish


def minibatch_loss(key, guide_params: dict, x_batch, num_rows: int, num_components: int, prior: tuple = (),
                   num_particles: int = 1):
    """The minibatch loss (negative ELBO estimate, standardised units) of the AutoNormal ``guide_params`` on
    ``x_batch`` (B rows of ``num_rows``); with ``x_batch`` all rows and ``num_rows`` = N, the full-data one."""
    model = minibatch_model(num_components, prior, num_rows)
    guide = handlers.substitute(_guide(model), data={"data": jnp.arange(x_batch.shape[0])})
    elbo = TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=1)
    return elbo.loss(key, guide_params, model, guide, jnp.asarray(x_batch))


# --------------------------------------------------------------------------- the engine


def _options(options: dict) -> dict:
    opts = {**MINIBATCH_DEFAULTS, **{k: v for k, v in options.items() if v is not None or k != "batch_size"}}
    unknown = sorted(set(opts) - set(MINIBATCH_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SVI option(s) {unknown}; allowed: {', '.join(MINIBATCH_DEFAULTS)}")
    if opts["sample_weight"] is not None:
        raise ValueError("sample_weight is not supported by minibatch SVI (batch_size= or a streamed file)")
    if not isinstance(opts["progress"], (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {opts['progress']!r}")
    if opts["init_scale"] != "laplace":
        raise ValueError(f"minibatch SVI starts its guide at the Laplace scales: init_scale must be 'laplace', got "
                         f"{opts['init_scale']!r}")
    return opts


def _warnings(converged: bool, num_steps: int, drift: tuple, param_tol: float, batch_size: int) -> list[str]:
    if converged:
        return []
    return [f"minibatch SVI (batches of {batch_size} rows) did not converge in {num_steps} steps: over its last chunk "
            f"the guide still moved (locations by up to {drift[0]:.2g} of their posterior sd, scales by up to a factor "
            f"{np.exp(drift[1]):.3g}; the rule asks for at most {param_tol:g} and a loss steady within its standard "
            f"error for {PATIENCE} chunks in a row), so its posterior sd and intervals are not to be trusted "
            "(raise num_steps or batch_size)"]


def fit_minibatch_svi(key, x, num_components: int, **options) -> FitResult:
    """SVI of ``models.gmm_model`` on batches of rows (module docstring), in data units.

    Parameters
    ----------
    key : PRNG key.
    x : a ``.npy`` path (read in batches, never loaded) or an (N, D) array; complete, finite rows.
    num_components : K.
    batch_size : rows per step (default 1024; N or more: every step sees all rows, scale 1).
    The other options are :func:`inference.numpyro_svi.fit_svi`'s (``num_particles`` default 1 here), with
    ``map_options`` for the MAP start on ``START_ROWS`` random rows, and ``tol``, ``param_tol``, ``check_every``
    read as in the module docstring's stopping rule.

    Returns
    -------
    FitResult (method "svi") as :func:`inference.numpyro_svi.fit_svi`'s, plus ``info["minibatch"]`` (batch size,
    rows, pieces, the step-size schedule, the stopping rule's numbers); ``responsibilities`` of every row for an
    array, none (0 rows) for a file; ``trace["log_likelihood"]`` is an estimate from each chunk's batches.
    """
    start_time = time.perf_counter()
    opts = _options(options)
    rows, num_rows, num_features = _open(x)
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)) or not 1 <= num_components <= num_rows:
        raise ValueError(f"num_components must be an integer in [1, {num_rows}], got {num_components!r}")
    num_components = int(num_components)
    batch_size = min(check_int_option("batch_size", opts["batch_size"]), num_rows)
    num_steps = check_int_option("num_steps", opts["num_steps"])
    check_every = min(check_int_option("check_every", opts["check_every"]), num_steps)
    tol = float(opts["tol"]) if opts["tol"] == 0 else check_float_option("tol", opts["tol"])
    param_tol = check_float_option("param_tol", opts["param_tol"])
    num_draws = check_int_option("num_draws", opts["num_draws"])
    key = key_array(key)
    seed = np.asarray(key).tolist()
    start_index = np.sort(np.random.default_rng([0x5C] + list(seed)).choice(num_rows, min(START_ROWS, num_rows), replace=False))
    if isinstance(x, np.ndarray) and not isinstance(x, np.memmap):
        x64 = np.asarray(x, np.float64)
        if not np.isfinite(x64).all():
            raise ValueError("x has NaN (missing values) or inf: minibatch SVI takes complete, finite rows only "
                             "(fit the in-memory svi, or em, for rows with holes)")
        st, x_start = standardizer(x64), x64[start_index]
    else:
        st, x_start = streamed_moments(rows, num_rows, start_index)
    prior_std = prior_in_standard_units(opts["prior"], st)
    prior = prior_items(prior_std)
    x_start = (x_start - st.loc) / st.scale
    init = to_standard(opts["init"], st) if isinstance(opts["init"], GMMParams) else opts["init"]
    map_options = dict(opts["map_options"] or {})
    if isinstance(map_options.get("init"), GMMParams):
        map_options["init"] = to_standard(map_options["init"], st)
    map_key, init_key, draw_key = jax.random.split(key, 3)
    start_params, start_compile, start_run = starting_point(map_key, x_start, num_components, init, prior_std or None,
                                                         map_options, None)
    supports = site_supports(num_components, num_features, prior)
    num_params = sum(int(np.prod(s.shape)) for s in to_unconstrained(model_sites(start_params, jnp.float64), supports).values())
    laplace = opts["init_scale"] == "laplace" and num_params <= LAPLACE_MAX_PARAMS
    static = (num_components, prior, num_rows, num_steps, check_float_option("learning_rate", opts["learning_rate"]),
              check_float_option("final_learning_rate", opts["final_learning_rate"]),
              check_int_option("num_particles", opts["num_particles"]), batch_size, laplace, num_draws)
    init_fn, chunk_fn, finish_fn = _programs(static)
    reader = BatchReader(rows, num_rows, st, batch_size, [0x5D] + list(seed))
    compile_start = time.perf_counter()
    state, precond, fallbacks = init_fn(init_key, model_sites(start_params, jnp.float64), jnp.asarray(x_start),
                                        jnp.asarray(reader.batch()))
    losses, log_liks, chunk_stats = [], [], []
    previous, passes, converged, drift = None, 0, False, (np.inf, np.inf)
    steps = 0
    while steps < num_steps:
        count = min(check_every, num_steps - steps)
        state, chunk_losses, tracked, log_lik, guide_params = chunk_fn(state, precond, jnp.asarray(reader.batches(count)))
        chunk_losses = np.asarray(chunk_losses)
        steps += count
        losses.append(chunk_losses)
        log_liks.append(float(log_lik))
        mean, se = float(np.mean(chunk_losses)), float(np.std(chunk_losses) / np.sqrt(count))
        tracked = {n: (np.asarray(loc), np.asarray(ls)) for n, (loc, ls) in tracked.items()}
        if previous is not None:
            p_mean, p_se, p_tracked = previous
            loss_steady = abs(mean - p_mean) <= max(tol * (1 + abs(mean)), 2.0 * np.hypot(se, p_se))
            loc_drift = max(float(np.max(np.abs(loc - p_tracked[n][0]) * np.exp(-ls))) for n, (loc, ls) in tracked.items())
            scale_drift = max(float(np.max(np.abs(ls - p_tracked[n][1]))) for n, (_, ls) in tracked.items())
            drift = (loc_drift, scale_drift)
            passes = passes + 1 if (loss_steady and loc_drift <= param_tol and scale_drift <= param_tol) else 0
            chunk_stats.append(dict(step=steps, loss_mean=mean, loss_se=se, location_drift=loc_drift,
                                    scale_drift=scale_drift, loss_steady=bool(loss_steady)))
        previous = (mean, se, tracked)
        if passes >= PATIENCE:
            converged = True
            break
    draws, median = finish_fn(draw_key, guide_params, jnp.asarray(reader.batch()))
    run_seconds = time.perf_counter() - compile_start
    pivot = params_from_site_draws(median)
    aligned, perms = relabel_draws(GMMParams(*(np.asarray(a)[None] for a in params_from_site_draws(draws))), pivot)
    point = mean_of_draws(aligned)
    all_losses = np.concatenate(losses)
    chunks = len(log_liks)
    in_memory = isinstance(x, np.ndarray) and not isinstance(x, np.memmap)
    resp = (np.asarray(responsibilities(point, (np.asarray(x, np.float64) - st.loc) / st.scale)) if in_memory
            else np.zeros((0, num_components)))
    result = FitResult(
        method="svi",
        params=point,
        trace=dict(loss=all_losses, elbo=-all_losses, log_likelihood=np.asarray(log_liks),
                   log_likelihood_step=np.cumsum([len(c) for c in losses])),
        samples=aligned,
        responsibilities=resp,
        converged=converged,
        num_iters=steps,
        seconds=time.perf_counter() - start_time,
        info=dict(
            options={n: v for n, v in opts.items() if n != "sample_weight"},
            weighted=False, total_weight=float(num_rows),
            guide="AutoNormal",
            guide_init="laplace" if laplace else "fixed",
            laplace_fallbacks=int(fallbacks),
            guide_drift=dict(location=float(drift[0]), log_scale=float(drift[1])),
            warnings=_warnings(converged, steps, drift, param_tol, batch_size),
            guide_params={n: np.asarray(v) for n, v in guide_params.items()},
            guide_median=pivot,
            num_relabelled_draws=int(np.sum(np.any(perms != np.arange(num_components), axis=-1))),
            start_params=GMMParams(*(np.asarray(a) for a in start_params)),
            minibatch=dict(batch_size=batch_size, num_rows=num_rows, pieces=min(PIECES, batch_size),
                           start_rows=int(start_index.size), streamed=not in_memory, chunks=chunk_stats,
                           schedule=f"preconditioned Adam, rate {static[4]:g} -> {static[5]:g} exponentially over "
                                    f"{num_steps} steps",
                           converged_rule=f"loss chunk means within 2 standard errors (or tol {tol:g}) and guide "
                                          f"drift <= {param_tol:g} for {PATIENCE} chunks of {check_every} steps in a row"),
            compile_seconds=start_compile, run_seconds=run_seconds + start_run, start_seconds=start_compile + start_run,
        ),
    )
    shift = num_rows * float(np.sum(np.log(st.scale)))
    return _result_in_data_units(result, st, shift, prior_std)

