"""Minibatch SVI on ``models.gmm_model``: the SVI of :mod:`inference.numpyro_svi` (AutoNormal guide over the
global sites, Laplace start, preconditioned Adam) on batches of rows read from a ``.npy`` file (or an array) that
need never be in memory at once.

The model is the declared one on a batch of B rows, each row's log-likelihood (z summed out) weighted N / B (the
model's ``sample_weight`` path, :func:`minibatch_model`), so the loss is an unbiased estimate of the full-data
negative ELBO when every row is in a batch with probability ``B / N`` (tests/test_minibatch_svi.py measures it).
(Before session 16 it was ``plate(subsample_size=B)`` with z enumerated: TraceEnum_ELBO's loss was right, but
the enumerated ``potential_energy`` behind the Laplace starting scales was not, :func:`minibatch_model`.)

Batches (:mod:`inference.minibatch_rows`): each step's B rows are 16 runs of contiguous rows from uniformly random
starts (wrapping), read by ``pread``: every row is in a batch with probability exactly ``B / N``. The batches of
``check_every`` steps are read on the host, standardised (means and sds from one pre-pass) and transferred together
(``check_every x B x D`` floats, 52 MB at 200 x 4096 x 8), then trained in one jitted ``lax.scan``.

Start: the MAP (``inference.numpyro_map``) of a random subsample of ``start_rows`` rows (default 10,000; all rows
when N is smaller) with the full-data standardisation, then, when that subsample is not every row, EM on all N rows
from it (:func:`inference.minibatch_check.em_start`: the subsample's MAP is ~sqrt(N / 10,000) posterior sd from the
N-row answer, and noisy steps travel that slowly); or a given GMMParams. The guide's scales start at the Laplace
``1 / sqrt(H_ii)`` of the subsample's model scaled to N rows, the preconditioner of Adam.

Step size: Adam (preconditioned by the starting scales, :func:`inference.numpyro_svi.preconditioned_adam`) whose
rate decays exponentially from ``learning_rate`` to ``final_learning_rate`` (half of it) over ``num_steps``; by
default capped at ``NOISE_RATE * sqrt(B / N)`` (0.0043 at 50,000 rows, 0.00019 at 25,000,000 in batches of 4,096):
near the optimum each step is noise of ~sqrt(N / B) posterior sd, and Adam's iterate jitters by ~sqrt(rate *
sqrt(N / B)) sd. The guide reported is the average over the last chunk of steps (locations and log scales:
Polyak-Ruppert tail averaging), not the last iterate. ``num_steps`` defaults to at least N / B steps and two chunks.

``converged`` (a stochastic objective): per chunk of ``check_every`` steps the mean loss and its standard error
(the steps' sd / sqrt(check_every)), the chunk means of every guide location and log scale, and the gradient
signal: per guide parameter, |chunk mean of Adam's running gradient| / (its standard error, from Adam's running
squared gradient) -- about N(0, 1) at the optimum. A chunk passes when the mean loss is within two standard errors
of the previous chunk's (or ``tol`` relative), no location moved by more than ``param_tol`` of its guide scale nor
log scale by more than ``param_tol``, the largest gradient signal is at most ``MAX_GRADIENT_Z`` (4), and the steps
so far have seen at least N rows. After ``PATIENCE`` (2) passing chunks in a row, one exact pass: the gradient of
the N-row potential at the guide's locations times its scales (:func:`inference.minibatch_check.full_gradient_z`)
must be at most ``MAX_FULL_GRADIENT_Z`` (0.5): a chunk's noisy gradient cannot tell a guide 20 sd away from one at
the optimum when N / B is in the thousands, all rows can. Otherwise False with the failed conditions in
``info["warnings"]``; ``info["minibatch"]`` has the numbers (``chunks``, ``full_gradient_z``, ``start_em``).

Missing values (NaN, at most 62 columns): the patterns found by the pre-pass are the model's ``missing`` tables
(each batch's rows indexed into them), as in-memory SVI's. Sample weights are refused (one-line ValueError).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.distributions.transforms import biject_to
from numpyro.infer.initialization import init_to_value

from models.alignment import mean_of_draws, relabel_draws
from models.gmm import gmm_model, params_from_sites
from models.params import GMMParams

from ._numpyro_common import (ChunkProgress, Missing, check_float_option, data_component_log_prob, data_responsibilities, missing_of, check_int_option, key_array, model_sites, params_from_site_draws,
                              prior_items, site_supports, to_unconstrained)
from .minibatch_check import MAX_NEWTON_SD, em_start, final_check, polished_start
from .minibatch_rows import PIECES, BatchReader, observed_table, open_rows, patterns_of, streamed_moments
from .numpyro_map import starting_point
from .numpyro_svi import FIXED_INIT_SCALE, LAPLACE_MAX_PARAMS, SVI_DEFAULTS, laplace_scales, preconditioned_adam
from .result import FitResult
from .standardize import _result_in_data_units, prior_in_standard_units, to_standard

__all__ = ["fit_minibatch_svi", "minibatch_model", "minibatch_loss", "MINIBATCH_DEFAULTS"]

# Batches of 4096 rows, one particle, and a step size that decays only to half (0.01 -> 0.005, then capped by
# NOISE_RATE): with noisy batches Adam's steps follow the gradient's signal-to-noise ratio (~ sqrt(B / N) per
# posterior sd of distance), and the full SVI's decay to 1e-3 froze the guide ~2 posterior sd short of the
# full-batch answer at N = 50,000, B = 1000 (measured before the EM start). param_tol 0.25: the chunk means of a
# guide at its optimum still jitter by ~0.1-0.2 sd.
MINIBATCH_DEFAULTS = dict(SVI_DEFAULTS, batch_size=4096, num_particles=1, final_learning_rate=0.005, param_tol=0.25)
START_ROWS = 10_000  # rows of the MAP start and the Laplace scales
PATIENCE = 2  # passing chunks in a row for converged
MAX_GRADIENT_Z = 4.0  # the largest |chunk-mean gradient| / its standard error of a guide at its optimum
NOISE_RATE = 0.015  # the step size's cap is NOISE_RATE * sqrt(B / N): Adam's jitter ~ sqrt(rate * sqrt(N / B)) sd


# --------------------------------------------------------------------------- the compiled pieces


@functools.lru_cache(maxsize=None)
def minibatch_model(num_components: int, prior: tuple, num_rows: int):
    """``model(x, sample_weight=None, missing=None)``: ``models.gmm_model`` on a batch ``x`` of B rows of
    ``num_rows``, each row's log-likelihood (z summed out) weighted N / B (``sample_weight``: the model's weighted
    path, Trace_ELBO). Not ``plate(subsample_size=B)`` with z enumerated: NumPyro's enumerated log density
    (``numpyro.contrib.funsor.infer_util._enum_log_density``, behind ``potential_energy(enum=True)`` and so the
    Laplace scales) multiplies each site's log-probability by the plate's scale before the sum over z, giving
    ``log sum_k exp(s a_k)`` instead of ``s log sum_k exp(a_k)``: 26 nats off at s = 2 on 25,000 rows of the
    (50,000, 8, 4) benchmark (TraceEnum_ELBO's loss scales after the sum and was right)."""
    kwargs = {name: (jnp.asarray(value) if isinstance(value, tuple) else value) for name, value in prior}

    def model(x, sample_weight=None, missing=None):
        batch = x.shape[0]
        scale = jnp.full((batch,), num_rows / batch, x.dtype)
        return gmm_model(x, num_components=num_components, num_samples=batch, sample_weight=scale, missing=missing,
                         **kwargs)

    return model


def _guide(model, start_sites=None):
    """AutoNormal over the global sites (the weighted batch model has no z site)."""
    init = {} if start_sites is None else dict(init_loc_fn=init_to_value(values=start_sites))
    return AutoNormal(model, init_scale=FIXED_INIT_SCALE, **init)


def _svi(model, guide, static, precond):
    _, _, _, num_steps, lr, final_lr, particles = static[:7]
    optim = preconditioned_adam(lr, final_lr, num_steps, precond)
    return SVI(model, guide, optim, Trace_ELBO(num_particles=particles))  # z is summed out in the weighted model


def _device(a):
    return None if a is None else jnp.asarray(a)


def _missing(observed, pattern):
    return None if observed is None else Missing(observed, pattern)


@functools.lru_cache(maxsize=32)
def _programs(static: tuple):
    """Jitted (init, chunk, finish) for ``static = (K, prior, N, num_steps, lr, final_lr, particles, B, laplace,
    num_draws)``; each builds its model, guide and SVI at trace time (compiled once per static and shapes).
    ``observed`` (P, D) and the ``*pattern`` arrays are None for complete rows (``models.gmm``'s ``missing``)."""
    num_components, prior, num_rows = static[:3]
    laplace, num_draws = static[8], static[9]
    model = minibatch_model(num_components, prior, num_rows)

    @jax.jit
    def init(key, start_sites, x_start, x_batch, observed, start_pattern, batch_pattern):
        supports = site_supports(num_components, x_batch.shape[-1], prior)
        if laplace:
            scales, fallbacks = laplace_scales(model, start_sites, x_start, None, supports, _missing(observed, start_pattern))
        else:
            scales = jax.tree.map(lambda u: jnp.full_like(u, FIXED_INIT_SCALE), to_unconstrained(start_sites, supports))
            fallbacks = jnp.asarray(0)
        precond = {f"{name}_auto_loc": s for name, s in scales.items()}
        svi = _svi(model, _guide(model, start_sites), static, precond)
        state = svi.init(key, x_batch, None, _missing(observed, batch_pattern),
                         init_params={f"{name}_auto_scale": s for name, s in scales.items()})
        return state, precond, fallbacks

    @jax.jit
    def chunk(state, precond, batches, observed, patterns):
        guide = _guide(model)
        svi = _svi(model, guide, static, precond)
        first = None if observed is None else patterns[0]
        svi.init(jax.random.PRNGKey(0), batches[0], None, _missing(observed, first))  # sets svi.constrain_fn (dead code)
        supports = site_supports(num_components, batches.shape[-1], prior)

        def step(state, batch):
            xb, pb = batch
            state, loss = svi.update(state, xb, None, _missing(observed, pb))
            params = svi.get_params(state)
            tracked = {n: (params[f"{n}_auto_loc"], jnp.log(params[f"{n}_auto_scale"])) for n in supports}
            _, (_, m, _) = state.optim_state  # Adam's running mean of the gradient (unconstrained guide params)
            return state, (loss, tracked, m)

        state, (losses, tracked, m) = lax.scan(step, state, (batches, patterns))
        # the gradient signal over the chunk: |mean gradient| / its standard error, per guide parameter (v: Adam's
        # running mean of the squared gradient, bias-corrected); ~N(0, 1) when the guide sits at its optimum
        i, (_, _, v) = state.optim_state
        correction = 1 - 0.999 ** jnp.maximum(i, 1)
        signal = jnp.max(jnp.stack([jnp.max(jnp.abs(jnp.mean(m[name], axis=0)) * jnp.sqrt(batches.shape[0])
                                            / jnp.sqrt(v[name] / correction + 1e-300)) for name in m]))
        params = svi.get_params(state)
        median = {n: biject_to(supports[n])(params[f"{n}_auto_loc"]) for n in supports}
        rows = batches.reshape(-1, batches.shape[-1])
        flat = _missing(observed, None if observed is None else patterns.reshape(-1))
        # the log-likelihood of all rows at the chunk's final guide median, estimated from the chunk's batches
        joint = data_component_log_prob(params_from_sites(median), rows, flat)
        log_lik = jnp.sum(logsumexp(joint, axis=-1)) * (num_rows / rows.shape[0])
        return state, losses, jax.tree.map(lambda a: jnp.mean(a, axis=0), tracked), log_lik, params, signal

    @jax.jit
    def finish(key, params, x_batch, observed, batch_pattern):
        guide = _guide(model)
        handlers.seed(guide, key)(x_batch, None, _missing(observed, batch_pattern))
        draws = guide.sample_posterior(key, params, sample_shape=(num_draws,))
        median = guide.median(params)
        return {n: draws[n] for n in median}, median

    return init, chunk, finish


def minibatch_loss(key, guide_params: dict, x_batch, num_rows: int, num_components: int, prior: tuple = (),
                   num_particles: int = 1, missing=None):
    """The minibatch loss (negative ELBO estimate, standardised units) of the AutoNormal ``guide_params`` on
    ``x_batch`` (B rows of ``num_rows``; ``missing`` its patterns or None); with ``x_batch`` all rows and
    ``num_rows`` = N, the full-data one."""
    model = minibatch_model(num_components, prior, num_rows)
    guide = _guide(model)
    elbo = Trace_ELBO(num_particles=num_particles)
    return elbo.loss(key, guide_params, model, guide, jnp.asarray(x_batch), None, missing)


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


def _warnings(converged: bool, num_steps: int, last: dict | None, param_tol: float, batch_size: int,
              num_rows: int, full_z: float = 0.0, check_kind: str = "newton") -> list[str]:
    if converged:
        return []
    if last is None:
        return [f"minibatch SVI ran {num_steps} steps, too few for its stopping rule (3 chunks): not converged"]
    why = []
    if full_z > MAX_NEWTON_SD:
        unit = ("marginal posterior sd (a Newton step on all of them)" if check_kind == "newton" else
                "of the guide's sd (the gradient on all of them times its scales)")
        why.append(f"by the gradient over all {num_rows:,} rows its guide's locations are up to {full_z:.3g} {unit} "
                   f"from the optimum (at most {MAX_NEWTON_SD:g})")
    if last["rows_seen"] < num_rows:
        why.append(f"it saw {last['rows_seen']:,} rows of {num_rows:,} (the guide cannot be surer than the rows it saw)")
    if last["gradient_z"] > MAX_GRADIENT_Z:
        why.append(f"its mean gradient over the last chunk is {last['gradient_z']:.1f} standard errors from 0 "
                   f"(at most {MAX_GRADIENT_Z:g} at the optimum)")
    if last["location_drift"] > param_tol or last["scale_drift"] > param_tol:
        why.append(f"the guide still moved (locations by up to {last['location_drift']:.2g} of their posterior sd, "
                   f"scales by up to a factor {np.exp(last['scale_drift']):.3g}; at most {param_tol:g})")
    if not last["loss_steady"]:
        why.append("its loss still changed by more than two standard errors")
    return [f"minibatch SVI (batches of {batch_size} rows) did not converge in {num_steps} steps: "
            + "; ".join(why or [f"the rule did not hold for {PATIENCE} chunks in a row"])
            + ", so its posterior means, sd and intervals are not to be trusted ("
            + ("raise num_steps or batch_size" if last["rows_seen"] < num_rows else
               f"it saw every row; at N / batch_size = {num_rows / batch_size:,.0f} each step is noise of "
               f"~{np.sqrt(num_rows / batch_size):.0f} posterior sd: start closer, as the default EM start does, or "
               "with an init= near the answer") + ")"]


def fit_minibatch_svi(key, x, num_components: int, **options) -> FitResult:
    """SVI of ``models.gmm_model`` on batches of rows (module docstring), in data units.

    Parameters
    ----------
    key : PRNG key.
    x : a ``.npy`` path (read in batches, never loaded) or an (N, D) array; complete, finite rows.
    num_components : K.
    batch_size : rows per step (default 4096; N or more: every step sees all rows, scale 1).
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
    rows, num_rows, num_features = open_rows(x)
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)) or not 1 <= num_components <= num_rows:
        raise ValueError(f"num_components must be an integer in [1, {num_rows}], got {num_components!r}")
    num_components = int(num_components)
    batch_size = min(check_int_option("batch_size", opts["batch_size"]), num_rows)
    num_steps = check_int_option("num_steps", opts["num_steps"])
    if options.get("num_steps") is None:  # the default runs long enough to see N rows, then two chunks
        num_steps = max(num_steps, -(-num_rows // batch_size) + PATIENCE * check_int_option("check_every", opts["check_every"]))
    check_every = min(check_int_option("check_every", opts["check_every"]), num_steps)
    tol = float(opts["tol"]) if opts["tol"] == 0 else check_float_option("tol", opts["tol"])
    param_tol = check_float_option("param_tol", opts["param_tol"])
    num_draws = check_int_option("num_draws", opts["num_draws"])
    key = key_array(key)
    seed = np.asarray(key).tolist()
    start_index = np.sort(np.random.default_rng([0x5C] + list(seed)).choice(num_rows, min(START_ROWS, num_rows), replace=False))
    moments = streamed_moments(rows, num_rows, start_index)
    st, codes = moments.st, moments.codes
    observed = None if codes is None else jnp.asarray(observed_table(codes, num_features))
    prior_std = prior_in_standard_units(opts["prior"], st)
    prior = prior_items(prior_std)
    x_start = (moments.x_start - st.loc) / st.scale
    init = to_standard(opts["init"], st) if isinstance(opts["init"], GMMParams) else opts["init"]
    map_options = dict(opts["map_options"] or {})
    if isinstance(map_options.get("init"), GMMParams):
        map_options["init"] = to_standard(map_options["init"], st)
    map_key, init_key, draw_key = jax.random.split(key, 3)
    start_params, start_compile, start_run = starting_point(map_key, x_start, num_components, init, prior_std or None,
                                                         map_options, None)
    start_em = dict(used=False, reason="the MAP start saw every row" if isinstance(init, str) else "a given start")
    if isinstance(init, str) and start_index.size < num_rows:  # carried to all N rows (inference.minibatch_check)
        em_params, start_em = em_start(map_key, rows, num_components, start_params, st, num_rows)
        start_params = start_params if em_params is None else em_params
    batch_model = minibatch_model(num_components, prior, num_rows)
    start_params, curvature, start_newton = polished_start(
        batch_model, num_components, prior, start_params, x_start, rows, num_rows, st, codes, observed,
        polish=bool(start_em.get("used")), max_params=LAPLACE_MAX_PARAMS)
    learning_rate = check_float_option("learning_rate", opts["learning_rate"])
    final_learning_rate = check_float_option("final_learning_rate", opts["final_learning_rate"])
    rate_cap = NOISE_RATE * float(np.sqrt(batch_size / num_rows))
    if options.get("learning_rate") is None and rate_cap < learning_rate:  # the default: capped for N / B
        learning_rate, final_learning_rate = rate_cap, final_learning_rate * rate_cap / learning_rate
    supports = site_supports(num_components, num_features, prior)
    num_params = sum(int(np.prod(s.shape)) for s in to_unconstrained(model_sites(start_params, jnp.float64), supports).values())
    laplace = opts["init_scale"] == "laplace" and num_params <= LAPLACE_MAX_PARAMS
    static = (num_components, prior, num_rows, num_steps, learning_rate, final_learning_rate, check_int_option("num_particles", opts["num_particles"]), batch_size, laplace, num_draws)
    init_fn, chunk_fn, finish_fn = _programs(static)
    reader = BatchReader(rows, num_rows, st, batch_size, [0x5D] + list(seed))
    compile_start = time.perf_counter()
    first = reader.batch()
    state, precond, fallbacks = init_fn(init_key, model_sites(start_params, jnp.float64), jnp.asarray(x_start),
                                        jnp.asarray(first), observed, _device(patterns_of(x_start, codes)),
                                        _device(patterns_of(first, codes)))
    losses, log_liks, chunk_stats = [], [], []
    previous, passes, converged, drift = None, 0, False, (np.inf, np.inf)
    steps = 0
    with ChunkProgress.shown(bool(opts["progress"]), num_steps, f"svi minibatch of {batch_size} rows (steps, stops early when converged)"):
        while steps < num_steps:
            count = min(check_every, num_steps - steps)
            batches, patterns = reader.batches(count, codes)
            state, chunk_losses, tracked, log_lik, guide_params, signal = chunk_fn(state, precond, jnp.asarray(batches), observed,
                                                                           _device(patterns))
            chunk_losses = np.asarray(chunk_losses)
            steps += count
            ChunkProgress.advance(count)
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
                signal = float(signal)
                seen = steps * batch_size >= num_rows
                passes = passes + 1 if (loss_steady and loc_drift <= param_tol and scale_drift <= param_tol
                                        and signal <= MAX_GRADIENT_Z and seen) else 0
                chunk_stats.append(dict(step=steps, loss_mean=mean, loss_se=se, location_drift=loc_drift,
                                        scale_drift=scale_drift, loss_steady=bool(loss_steady), gradient_z=signal,
                                        rows_seen=steps * batch_size))
            previous = (mean, se, tracked)
            if passes >= PATIENCE:
                converged = True
                break
    # the guide reported is its last chunk's average (Polyak-Ruppert tail averaging: locations, log scales), not the
    # last step's iterate, which jitters by ~sqrt(rate * sqrt(N / B)) of a posterior sd
    guide_params = dict(guide_params, **{f"{n}_auto_{part}": jnp.asarray(v if part == "loc" else np.exp(v))
                                         for n, (loc, ls) in previous[2].items() for part, v in (("loc", loc), ("scale", ls))})
    full_z, check_kind = final_check(batch_model, num_components, prior, curvature,
                                {n: guide_params[f"{n}_auto_loc"] for n in supports},
                                {n: guide_params[f"{n}_auto_scale"] for n in supports}, rows, num_rows, st, codes, observed)
    converged = converged and full_z <= MAX_NEWTON_SD
    last = reader.batch()
    draws, median = finish_fn(draw_key, guide_params, jnp.asarray(last), observed, _device(patterns_of(last, codes)))
    run_seconds = time.perf_counter() - compile_start
    pivot = params_from_site_draws(median)
    aligned, perms = relabel_draws(GMMParams(*(np.asarray(a)[None] for a in params_from_site_draws(draws))), pivot)
    point = mean_of_draws(aligned)
    all_losses = np.concatenate(losses)
    in_memory = isinstance(x, np.ndarray) and not isinstance(x, np.memmap)
    if in_memory:
        x64 = np.asarray(x, np.float64)
        found = missing_of(x64)
        resp = np.asarray(data_responsibilities(point, (x64 - st.loc) / st.scale, found))
    else:
        resp = np.zeros((0, num_components))
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
            warnings=_warnings(converged, steps, chunk_stats[-1] if chunk_stats else None, param_tol, batch_size, num_rows,
                               full_z, check_kind),
            guide_params={n: np.asarray(v) for n, v in guide_params.items()},
            guide_median=pivot,
            num_relabelled_draws=int(np.sum(np.any(perms != np.arange(num_components), axis=-1))),
            start_params=GMMParams(*(np.asarray(a) for a in start_params)),
            minibatch=dict(batch_size=batch_size, num_rows=num_rows, pieces=min(PIECES, batch_size),
                           start_rows=int(start_index.size), streamed=not in_memory, chunks=chunk_stats,
                           start_em=start_em, start_newton=start_newton, full_check=full_z, full_check_kind=check_kind,
                           schedule=f"preconditioned Adam, rate {static[4]:g} -> {static[5]:g} exponentially over "
                                    f"{num_steps} steps",
                           converged_rule=f"loss chunk means within 2 standard errors (or tol {tol:g}), guide drift "
                                          f"<= {param_tol:g}, gradient z <= {MAX_GRADIENT_Z:g} and >= N rows seen, "
                                          f"for {PATIENCE} chunks of {check_every} steps in a row; then the N-row "
                                          f"Newton step from the guide's locations <= {MAX_NEWTON_SD:g} marginal sd"),
            compile_seconds=start_compile, run_seconds=run_seconds + start_run, start_seconds=start_compile + start_run,
        ),
    )
    shift = float(moments.observed @ np.log(st.scale))  # the data's Jacobian: each observed value's column sd
    return _result_in_data_units(result, st, shift, prior_std)

