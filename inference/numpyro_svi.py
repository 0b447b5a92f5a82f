"""SVI on ``models.gmm_model``: AutoNormal (mean-field, real uncertainty) over the global sites,
z summed out by TraceEnum_ELBO, started at the MAP point, ``svi.update`` driven by a jitted scan.

The guide starts at the answer's scale, not at a fixed width: its locations at the start point (the MAP)
and its scales at ``1 / sqrt(diag H)``, H the Hessian of the negative log joint in the unconstrained space
at that point (``init_scale="laplace"``). For a Gaussian posterior that IS the mean-field optimum (the
best factorised Gaussian has variances ``1 / H_ii``, the precision's diagonal, not ``diag(H^-1)``). Adam's
steps on each location are then measured in that location's starting scale (a preconditioner): a fixed
step of 1e-2 in unconstrained units is 50 posterior sd of a mean known to 2e-4 (two clusters 1000 sd
apart, standardised), and the guide could never settle there.

Stopping rule: consecutive ``check_every``-step chunks must agree on the loss (as before) AND on the guide
itself: the chunk means of every location moved by at most ``param_tol`` of its scale and of every log
scale by at most ``param_tol``. The loss alone is a poor witness: its "noise" threshold (two standard
errors of the chunk-mean difference) grows with the guide's own misfit (a guide 20x too wide has a loss
whose spread dwarfs its per-chunk improvement), so a wide guide used to look converged. When the rule is
not met within ``num_steps``, ``converged`` is False and ``info["warnings"]`` says by how much the guide
was still moving.

AutoMultivariateNormal / AutoLowRankMultivariateNormal are not offered: with TraceEnum_ELBO they
raise KeyError (NumPyro issue 1713), and a correlated guide would need a second, marginalised
copy of the model, which this project avoids.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value
from numpyro.infer.util import potential_energy
from numpyro.optim import _NumPyroOptim

from models.alignment import mean_of_draws, relabel_draws
from models.density import responsibilities
from models.params import GMMParams

from ._numpyro_common import (
    ChunkProgress,
    check_float_option,
    check_int_option,
    compiled_call,
    elbo_for,
    enumerated,
    key_array,
    make_model,
    missing_of,
    model_data,
    model_sites,
    params_from_site_draws,
    prior_items,
    site_supports,
    to_unconstrained,
    train_in_chunks,
    weight_info,
    with_checked_weights,
)
from .laplace_mass import basis_hvps
from .numpyro_map import adam_with_decay, starting_point
from .random_keys import split_key
from .result import FitResult
from .sharded_potential import devices_used, lapack_work, row_mesh
from .validate import check_num_components

PROGRESS_SEGMENTS = 20  # host calls of the training loop (the bar advances between them)

SVI_DEFAULTS = dict(
    init="map",
    num_steps=4000,
    learning_rate=0.01,
    final_learning_rate=1e-3,
    num_particles=4,
    init_scale="laplace",
    tol=1e-5,
    param_tol=0.1,
    check_every=200,
    num_draws=1000,
    progress=True,
    prior=None,
    map_options=None,
    sample_weight=None,
    batch_size=None,
    devices=None,
)


# The Laplace diagonal costs one Hessian-vector product per unconstrained parameter (P of them); above
# this many the guide starts at FIXED_INIT_SCALE instead (K = 8 components in D = 20 dimensions is 1,847).
LAPLACE_MAX_PARAMS = 2048
FIXED_INIT_SCALE = 0.02  # the former default (and the fallback where the curvature is not positive)
MAX_INIT_SCALE = 1.0  # the prior's scale in standardised units: no guide starts wider than that


def laplace_scales(model, start_sites: dict, x, sample_weight, supports: dict, missing=None):
    """Per-element guide scales ``1 / sqrt(H_ii)`` at ``start_sites`` (constrained values), H the Hessian of
    the negative log joint of ``model`` (z enumerated, weighted if ``sample_weight``) in NumPyro's
    unconstrained space, Jacobians included (what the guide's density targets).

    The diagonal comes from one Hessian-vector product per parameter (``jax.linearize`` of the gradient,
    so the model's forward pass is shared), never a dense inverse. Elements whose curvature is not
    positive and finite (a saddle, an overflow) get ``FIXED_INIT_SCALE``; all are capped at
    ``MAX_INIT_SCALE``.

    Returns
    -------
    ({site: scales}, number of elements that fell back)
    """
    flat, unravel = ravel_pytree(to_unconstrained(start_sites, supports))
    args = (x, sample_weight) if missing is None else (x, sample_weight, missing)
    energy = lambda v: potential_energy(enumerated(model), args, {}, unravel(v), enum=True)
    diag = basis_hvps(energy, flat, lambda i, row: row[i])
    ok = jnp.isfinite(diag) & (diag > 0)
    scales = jnp.where(ok, lax.rsqrt(jnp.where(ok, diag, 1.0)), FIXED_INIT_SCALE)
    return unravel(jnp.minimum(scales, MAX_INIT_SCALE)), jnp.sum(~ok)


def preconditioned_adam(learning_rate: float, final_learning_rate: float, num_steps: int, preconditioner: dict,
                        b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
    """Adam (the step size decaying as :func:`inference.numpyro_map.adam_with_decay`) whose step on each
    parameter is multiplied by ``preconditioner`` (same keys as the SVI params; arrays or 1.0).

    Equivalent to plain Adam on ``u / preconditioner``: Adam's direction is invariant to rescaling the
    gradient, so only the step length changes. With the guide's starting scales as the preconditioner a
    location moves ``learning_rate`` posterior sd per step at most, whatever its units.
    """
    decay = (final_learning_rate / learning_rate) ** (1.0 / max(num_steps, 1))

    def init_fn(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return params, zeros, zeros

    def update_fn(i, grads, state):
        params, m, v = state
        m = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, m)
        v = jax.tree.map(lambda g, v: (1 - b2) * jnp.square(g) + b2 * v, grads, v)
        step = learning_rate * decay**i
        bias1, bias2 = 1 - b1 ** (i + 1), 1 - b2 ** (i + 1)
        params = {name: params[name] - step * preconditioner.get(name, 1.0) * (m[name] / bias1) / (jnp.sqrt(v[name] / bias2) + eps)
                  for name in params}
        return params, m, v

    return _NumPyroOptim(lambda *fns: fns, init_fn, update_fn, lambda state: state[0])


def _svi_setup(num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale,
               start_sites, x, sample_weight, missing, scales=None):
    """``(model, guide, svi, supports, laplace, num_params, scales, fallbacks)`` for these options and shapes: the
    same objects in every program of a run (:func:`_build_svi_start`, ``_segment``, ``_finish``). ``scales``
    (the Laplace scales, from the start program) None: computed here at ``start_sites``."""
    model = make_model(num_components, prior)
    blocked = handlers.block(model, hide=["z"])
    supports = site_supports(num_components, x.shape[-1], prior)
    num_params = sum(int(np.prod(u.shape)) for u in jax.eval_shape(lambda s: to_unconstrained(s, supports), start_sites).values())
    laplace = init_scale == "laplace" and num_params <= LAPLACE_MAX_PARAMS
    fixed = FIXED_INIT_SCALE if init_scale == "laplace" else init_scale
    guide = AutoNormal(blocked, init_loc_fn=init_to_value(values=start_sites), init_scale=fixed)
    elbo = elbo_for(sample_weight, num_particles)
    fallbacks = jnp.asarray(0)
    if laplace:
        if scales is None:
            scales, fallbacks = laplace_scales(model, start_sites, x, sample_weight, supports, missing)
        optim = preconditioned_adam(learning_rate, final_learning_rate, num_steps,
                                    {f"{name}_auto_loc": scale for name, scale in scales.items()})
    else:
        scales, optim = {}, adam_with_decay(learning_rate, final_learning_rate, num_steps)
    return model, guide, SVI(model, guide, optim, elbo), supports, laplace, num_params, scales, fallbacks


def _track_fn(supports):
    """The guide itself, in the units the stopping rule compares: locations and log scales."""
    return lambda params: {name: (params[f"{name}_auto_loc"], jnp.log(params[f"{name}_auto_scale"])) for name in supports}


def _converged_fn(tol, param_tol, check_every):
    def chunk_converged(previous, chunk_losses, tracked):
        # The loss: consecutive chunk means differ by less than tol * (1 + |loss|) or by less than two
        # standard errors of that difference (the change is noise). The guide: no location moved by more
        # than param_tol of its scale, no scale by more than a factor exp(param_tol), between the chunks'
        # mean values (the noise rule alone stops a guide whose misfit makes the loss noisy: a wide one).
        previous_loss, previous_tracked, _, _ = previous
        mean = jnp.mean(chunk_losses)
        noise = 2.0 * jnp.sqrt(2.0 / check_every) * jnp.std(chunk_losses)
        loss_steady = jnp.abs(previous_loss - mean) <= jnp.maximum(tol * (1.0 + jnp.abs(mean)), noise)
        loc_drift = jnp.max(jnp.stack([jnp.max(jnp.abs(loc - previous_tracked[n][0]) * jnp.exp(-log_scale))
                                       for n, (loc, log_scale) in tracked.items()]))
        scale_drift = jnp.max(jnp.stack([jnp.max(jnp.abs(log_scale - previous_tracked[n][1]))
                                         for n, (_, log_scale) in tracked.items()]))
        steady = loss_steady & (loc_drift <= param_tol) & (scale_drift <= param_tol)
        return (mean, tracked, loc_drift, scale_drift), steady

    return chunk_converged


def _build_svi_start(num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale, tol,
                     param_tol, check_every, num_draws):
    """Compiled-once ``(train_key, start_sites, x, sample_weight, missing) -> dict``: the guide at the start
    point (Laplace scales) and the training loop's first carry (``inference._numpyro_common.train_in_chunks``)."""
    options = (num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale)
    num_checks = -(-num_steps // check_every)

    def start(train_key, start_sites, x, sample_weight, missing):
        margs = () if missing is None else (missing,)
        _, guide, svi, supports, laplace, num_params, scales, fallbacks = _svi_setup(*options, start_sites, x, sample_weight, missing)
        init = {f"{name}_auto_scale": s for name, s in scales.items()} if laplace else None
        state = svi.init(train_key, x, sample_weight, *margs, **({"init_params": init} if laplace else {}))
        params = svi.get_params(state)
        inf = jnp.asarray(jnp.inf, x.dtype)
        carry = (state, jnp.asarray(0, jnp.int32), (inf, _track_fn(supports)(params), inf, inf), jnp.asarray(False),
                 jnp.zeros((num_checks, check_every), x.dtype), jnp.zeros((num_checks,), x.dtype))
        return dict(carry=carry, scales=scales, laplace_fallbacks=fallbacks, laplace=jnp.asarray(laplace),
                    num_params=jnp.asarray(num_params),
                    init_scales={name[: -len("_auto_scale")]: v for name, v in params.items() if name.endswith("_auto_scale")})

    return start


def _build_svi_segment(num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale, tol,
                       param_tol, check_every, num_draws, chunks_per_call):
    """Compiled-once ``(carry, scales, start_sites, x, sample_weight, missing) -> carry``: up to
    ``chunks_per_call`` more chunks of ``check_every`` steps (fewer when the stopping rule is met)."""
    options = (num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale)
    num_checks = -(-num_steps // check_every)

    def segment(carry, scales, start_sites, x, sample_weight, missing):
        _, guide, svi, supports, _, _, _, _ = _svi_setup(*options, start_sites, x, sample_weight, missing, scales)
        svi.init(carry[0].rng_key, x, sample_weight, *(() if missing is None else (missing,)))  # sets svi up (compiled away)
        return train_in_chunks(svi, guide, None, x, num_checks=num_checks, check_every=check_every,
                               chunk_converged=_converged_fn(tol, param_tol, check_every), min_checks=2,
                               sample_weight=sample_weight, track=_track_fn(supports), missing=missing, carry=carry,
                               stop=jnp.minimum(carry[1] + chunks_per_call, num_checks))

    return segment


def _build_svi_finish(num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale, tol,
                      param_tol, check_every, num_draws):
    """Compiled-once ``(carry, scales, draw_key, start_sites, x, sample_weight, missing) -> dict``: the guide's
    draws and median."""
    options = (num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale)

    def finish(carry, scales, draw_key, start_sites, x, sample_weight, missing):
        margs = () if missing is None else (missing,)
        _, guide, svi, _, _, _, _, _ = _svi_setup(*options, start_sites, x, sample_weight, missing, scales)
        svi.init(draw_key, x, sample_weight, *margs)  # sets svi and the guide up (outputs unused: compiled away)
        state, chunks, summary, converged, losses, log_liks = carry
        params = svi.get_params(state)
        draws = guide.sample_posterior(draw_key, params, sample_shape=(num_draws,))
        median = guide.median(params)
        return dict(draws={name: draws[name] for name in median}, median=median, converged=converged, chunks=chunks,
                    losses=losses, log_liks=log_liks, guide_params=params, location_drift=summary[2],
                    scale_drift=summary[3])

    return finish


def _train(static, check_every, num_steps, keys, sites, x, weights, missing, mesh):
    """Start, segments (the bar advances between them), finish: three programs, none with a host callback, so
    that every one is written to JAX's persistent compilation cache. Returns (outputs, compile s, run s)."""
    num_checks = -(-num_steps // check_every)
    per_call = -(-num_checks // PROGRESS_SEGMENTS)
    seconds = [0.0, 0.0]

    def call(build, static_args, *args, rows):
        out, c, r = compiled_call(build, static_args, *args, mesh=mesh, rows=rows)
        seconds[0], seconds[1] = seconds[0] + c, seconds[1] + r
        return out

    train_key, draw_key = keys
    out = call(_build_svi_start, static, train_key, sites, x, weights, missing, rows=(2, 3))
    carry, scales, done = out.pop("carry"), out["scales"], 0
    while True:
        carry = call(_build_svi_segment, static + (per_call,), carry, scales, sites, x, weights, missing, rows=(3, 4))
        chunks, converged = int(carry[1]), bool(carry[3])
        ChunkProgress.advance((chunks - done) * check_every)
        done = chunks
        if chunks >= num_checks or (converged and chunks >= 2):
            break
    out.update(call(_build_svi_finish, static, carry, scales, draw_key, sites, x, weights, missing, rows=(4, 5)))
    return out, seconds[0], seconds[1]


def _check_init_scale(value):
    if isinstance(value, str):
        if value != "laplace":
            raise ValueError(f"init_scale must be 'laplace' or a positive number, got {value!r}")
        return value
    return check_float_option("init_scale", value)


def _convergence_warnings(out, num_steps: int, check_every: int, param_tol: float) -> list[str]:
    if bool(out["converged"]):
        return []
    loc, scale = float(out["location_drift"]), float(out["scale_drift"])
    return [f"SVI did not converge in {num_steps} steps: over its last {check_every} steps the guide still moved "
            f"(locations by up to {loc:.2g} of their posterior sd, scales by up to a factor {np.exp(scale):.3g}; "
            f"the rule asks for at most {param_tol:g} and a steady loss), so its posterior sd and intervals are not "
            "to be trusted (raise num_steps)"]


def fit_svi(key, x, num_components: int, **options) -> FitResult:
    """Variational posterior of ``models.gmm_model`` with z enumerated (TraceEnum_ELBO, AutoNormal guide).

    Parameters
    ----------
    key : PRNG key.
    x : (N, D) float32/float64 data; NaN marks a missing entry (marginalised out, ``models.gmm``).
    num_components : K.
    init : "map" (default: run :func:`inference.numpyro_map.fit_map`'s optimisation first) or a
        GMMParams (e.g. an EM solution); every global site starts there (``init_to_value``).
    num_steps : maximum SVI steps (default 4000); learning_rate -> final_learning_rate decays
        exponentially (0.01 -> 1e-3); num_particles : ELBO particles per step (default 4).
    init_scale : "laplace" (default: each guide scale starts at ``1 / sqrt(H_ii)``, H the Hessian of the
        negative log joint at the start point in the unconstrained space, and Adam's location steps are
        measured in those scales; module docstring; above ``LAPLACE_MAX_PARAMS`` unconstrained parameters
        the guide starts at ``FIXED_INIT_SCALE``) or one positive number: every guide standard deviation
        starts there, plain Adam (the former behaviour).
    tol, param_tol, check_every : stop when consecutive ``check_every``-step mean losses differ by less
        than ``tol * (1 + |loss|)`` or than two standard errors, AND the chunk means of the guide's
        locations moved by at most ``param_tol`` of their scales and its log scales by at most ``param_tol``
        (default 1e-5, 0.1, 200). Not met within ``num_steps``: ``converged`` False and a line in
        ``info["warnings"]``.
    num_draws : guide draws returned as ``samples`` (default 1000).
    progress : tqdm bar of the training steps on stderr (default True; never recompiles).
    prior : dict of ``gmm_model`` prior overrides; map_options : options for the MAP start.
    sample_weight : (N,) non-negative row weights (weighted likelihood, as :func:`fit_map`).
    devices : the devices the rows are split over (as :func:`inference.numpyro_map.fit_map`; the MAP start too).
    batch_size : None here; a number (or a ``.npy`` path as ``x``) makes ``inference.fit("svi", ...)`` run
        minibatch SVI (:mod:`inference.numpyro_minibatch`).

    Returns
    -------
    FitResult: ``samples`` has leading (chain=1, draw) dims, relabelled against the guide median
    (``relabel_draws``); ``params`` is the posterior mean of the aligned draws (covariances averaged);
    trace has ``loss`` and ``elbo`` per step, ``log_likelihood`` / ``log_likelihood_step`` at the guide
    median every ``check_every`` steps; ``info["guide_params"]`` holds the AutoNormal locs / scales,
    ``info["guide_init"]`` ("laplace" or "fixed"), ``info["guide_init_scales"]`` the scales it started from
    (both in the standardised, unconstrained space), ``info["laplace_fallbacks"]`` the elements whose
    curvature was not positive, ``info["guide_drift"]`` the last chunk's largest moves (``location`` in
    guide scales, ``log_scale``) and ``info["warnings"]`` a line when the stopping rule was not met.
    """
    start = time.perf_counter()
    x = model_data(x)
    num_components = check_num_components(num_components, x)
    opts = with_checked_weights({**SVI_DEFAULTS, **options}, x)
    unknown = sorted(set(opts) - set(SVI_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SVI option(s) {unknown}; allowed: {', '.join(SVI_DEFAULTS)}")
    if opts["batch_size"] is not None:  # inference.numpyro_engines.fit_svi sends these to the minibatch engine
        raise ValueError("batch_size: minibatch SVI is inference.numpyro_minibatch.fit_minibatch_svi (inference.fit routes it)")
    num_steps = check_int_option("num_steps", opts["num_steps"])
    check_every = min(check_int_option("check_every", opts["check_every"]), num_steps)
    static = (
        num_components,
        prior_items(opts["prior"]),
        num_steps,
        check_float_option("learning_rate", opts["learning_rate"]),
        check_float_option("final_learning_rate", opts["final_learning_rate"]),
        check_int_option("num_particles", opts["num_particles"]),
        _check_init_scale(opts["init_scale"]),
        float(check_float_option("tol", opts["tol"]) if opts["tol"] != 0 else 0.0),
        check_float_option("param_tol", opts["param_tol"]),
        check_every,
        check_int_option("num_draws", opts["num_draws"]),
    )
    map_key, svi_key = split_key(key_array(key))
    start_params, start_compile, start_run = starting_point(map_key, x, num_components, opts["init"], opts["prior"], opts["map_options"],
                                                         opts["sample_weight"], opts["devices"])
    missing = missing_of(x)
    mapped = max(static[5], 16 if static[6] == "laplace" else 1)  # particles; laplace_scales' Hessian batch
    mesh = row_mesh(opts["devices"], x.shape[0], missing, work=lapack_work(num_components, x.shape[1], mapped))
    if not isinstance(opts["progress"], (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {opts['progress']!r}")
    with ChunkProgress.shown(bool(opts["progress"]), num_steps, "svi (steps, stops early when converged)"):
        weights = None if opts["sample_weight"] is None else jnp.asarray(opts["sample_weight"])
        out, compile_seconds, run_seconds = _train(static, check_every, num_steps, split_key(svi_key),
                                                   model_sites(start_params, x.dtype), jnp.asarray(x), weights, missing, mesh)

    pivot = params_from_site_draws(out["median"])
    draws = params_from_site_draws(out["draws"])
    aligned, perms = relabel_draws(GMMParams(*(a[None] for a in draws)), pivot)
    params = mean_of_draws(aligned)
    chunks = int(out["chunks"])
    losses = np.asarray(out["losses"])[:chunks].reshape(-1)
    return FitResult(
        method="svi",
        params=params,
        trace=dict(
            loss=losses,
            elbo=-losses,
            log_likelihood=np.asarray(out["log_liks"])[:chunks],
            log_likelihood_step=np.arange(1, chunks + 1) * check_every,
        ),
        samples=aligned,
        responsibilities=np.asarray(responsibilities(params, x)),
        converged=bool(out["converged"]),
        num_iters=chunks * check_every,
        seconds=time.perf_counter() - start,
        info=dict(
            options={name: value for name, value in dict(opts, prior=dict(static[1]), devices=devices_used(mesh)).items()
                     if name != "sample_weight"},
            **weight_info(opts, x),
            guide="AutoNormal",
            guide_init="laplace" if bool(out["laplace"]) else "fixed",
            guide_init_scales={name: np.asarray(v) for name, v in out["init_scales"].items()},
            laplace_fallbacks=int(out["laplace_fallbacks"]),
            guide_drift=dict(location=float(out["location_drift"]), log_scale=float(out["scale_drift"])),
            warnings=_convergence_warnings(out, num_steps, check_every, static[8]),
            guide_params={name: np.asarray(v) for name, v in out["guide_params"].items()},
            guide_median=pivot,
            num_relabelled_draws=int(np.sum(np.any(perms != np.arange(num_components), axis=-1))),
            start_params=GMMParams(*(np.asarray(a) for a in start_params)),
            compile_seconds=compile_seconds + start_compile,
            run_seconds=run_seconds + start_run,
            start_seconds=start_compile + start_run,
        ),
    )

