"""SVI on ``models.gmm_model``: AutoNormal (mean-field, real uncertainty) over the global sites,
z summed out by TraceEnum_ELBO, started at the MAP point, ``svi.update`` driven by a jitted scan.

AutoMultivariateNormal / AutoLowRankMultivariateNormal are not offered: with TraceEnum_ELBO they
raise KeyError (NumPyro issue 1713), and a correlated guide would need a second, marginalised
copy of the model, which this project avoids.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.initialization import init_to_value

from models.alignment import mean_of_draws, relabel_draws
from models.density import responsibilities
from models.params import GMMParams

from ._numpyro_common import (
    ChunkProgress,
    check_float_option,
    check_int_option,
    compiled_call,
    elbo_for,
    key_array,
    make_model,
    model_data,
    model_sites,
    params_from_site_draws,
    prior_items,
    train_in_chunks,
    weight_info,
    with_checked_weights,
)
from .numpyro_map import adam_with_decay, starting_point
from .result import FitResult
from .validate import check_num_components

SVI_DEFAULTS = dict(
    init="map",
    num_steps=4000,
    learning_rate=0.01,
    final_learning_rate=1e-3,
    num_particles=4,
    init_scale=0.02,
    tol=1e-5,
    check_every=200,
    num_draws=1000,
    progress=True,
    prior=None,
    map_options=None,
    sample_weight=None,
)


def _build_svi_runner(num_components, prior, num_steps, learning_rate, final_learning_rate, num_particles, init_scale, tol, check_every, num_draws):
    """Compiled-once ``(key, start_sites, x, sample_weight) -> dict`` training the guide and drawing from it."""
    model = make_model(num_components, prior)
    num_checks = -(-num_steps // check_every)

    def run(key, start_sites, x, sample_weight):
        train_key, draw_key = jax.random.split(key)
        guide = AutoNormal(handlers.block(model, hide=["z"]), init_loc_fn=init_to_value(values=start_sites), init_scale=init_scale)
        elbo = elbo_for(sample_weight, num_particles)
        svi = SVI(model, guide, adam_with_decay(learning_rate, final_learning_rate, num_steps), elbo)
        state = svi.init(train_key, x, sample_weight)

        def chunk_converged(previous, chunk_losses):
            # Converged when consecutive chunk-mean losses differ by less than tol * (1 + |loss|)
            # or by less than two standard errors of that difference (the change is noise).
            mean = jnp.mean(chunk_losses)
            noise = 2.0 * jnp.sqrt(2.0 / check_every) * jnp.std(chunk_losses)
            return mean, jnp.abs(previous - mean) <= jnp.maximum(tol * (1.0 + jnp.abs(mean)), noise)

        state, chunks, _, converged, losses, log_liks = train_in_chunks(
            svi, guide, state, x, num_checks=num_checks, check_every=check_every, chunk_converged=chunk_converged, min_checks=2,
            report_progress=True, sample_weight=sample_weight,
        )
        params = svi.get_params(state)
        draws = guide.sample_posterior(draw_key, params, sample_shape=(num_draws,))
        median = guide.median(params)
        return dict(
            draws={name: draws[name] for name in median},
            median=median,
            converged=converged,
            chunks=chunks,
            losses=losses,
            log_liks=log_liks,
            guide_params=params,
        )

    return run


def fit_svi(key, x, num_components: int, **options) -> FitResult:
    """Variational posterior of ``models.gmm_model`` with z enumerated (TraceEnum_ELBO, AutoNormal guide).

    Parameters
    ----------
    key : PRNG key.
    x : (N, D) float32/float64 data.
    num_components : K.
    init : "map" (default: run :func:`inference.numpyro_map.fit_map`'s optimisation first) or a
        GMMParams (e.g. an EM solution); every global site starts there (``init_to_value``).
    num_steps : maximum SVI steps (default 4000); learning_rate -> final_learning_rate decays
        exponentially (0.01 -> 1e-3); num_particles : ELBO particles per step (default 4).
    init_scale : initial guide standard deviation in unconstrained space (default 0.02).
    tol, check_every : stop when consecutive ``check_every``-step mean losses differ by less than
        ``tol * (1 + |loss|)`` or than two standard errors (default 1e-5, 200).
    num_draws : guide draws returned as ``samples`` (default 1000).
    progress : tqdm bar of the training steps on stderr (default True; never recompiles).
    prior : dict of ``gmm_model`` prior overrides; map_options : options for the MAP start.
    sample_weight : (N,) non-negative row weights (weighted likelihood, as :func:`fit_map`).

    Returns
    -------
    FitResult: ``samples`` has leading (chain=1, draw) dims, relabelled against the guide median
    (``relabel_draws``); ``params`` is the posterior mean of the aligned draws (covariances averaged);
    trace has ``loss`` and ``elbo`` per step, ``log_likelihood`` / ``log_likelihood_step`` at the guide
    median every ``check_every`` steps; ``info["guide_params"]`` holds the AutoNormal locs / scales.
    """
    start = time.perf_counter()
    x = model_data(x)
    num_components = check_num_components(num_components, x)
    opts = with_checked_weights({**SVI_DEFAULTS, **options}, x)
    unknown = sorted(set(opts) - set(SVI_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown SVI option(s) {unknown}; allowed: {', '.join(SVI_DEFAULTS)}")
    num_steps = check_int_option("num_steps", opts["num_steps"])
    check_every = min(check_int_option("check_every", opts["check_every"]), num_steps)
    static = (
        num_components,
        prior_items(opts["prior"]),
        num_steps,
        check_float_option("learning_rate", opts["learning_rate"]),
        check_float_option("final_learning_rate", opts["final_learning_rate"]),
        check_int_option("num_particles", opts["num_particles"]),
        check_float_option("init_scale", opts["init_scale"]),
        float(check_float_option("tol", opts["tol"]) if opts["tol"] != 0 else 0.0),
        check_every,
        check_int_option("num_draws", opts["num_draws"]),
    )
    map_key, svi_key = jax.random.split(key_array(key))
    start_params, start_compile, start_run = starting_point(map_key, x, num_components, opts["init"], opts["prior"], opts["map_options"],
                                                         opts["sample_weight"])
    if not isinstance(opts["progress"], (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {opts['progress']!r}")
    with ChunkProgress.shown(bool(opts["progress"]), num_steps, "svi (steps, stops early when converged)"):
        weights = None if opts["sample_weight"] is None else jnp.asarray(opts["sample_weight"])
        out, compile_seconds, run_seconds = compiled_call(_build_svi_runner, static, svi_key, model_sites(start_params, x.dtype),
                                                          jnp.asarray(x), weights)

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
            options={name: value for name, value in dict(opts, prior=dict(static[1])).items() if name != "sample_weight"},
            **weight_info(opts, x),
            guide="AutoNormal",
            guide_params={name: np.asarray(v) for name, v in out["guide_params"].items()},
            guide_median=pivot,
            num_relabelled_draws=int(np.sum(np.any(perms != np.arange(num_components), axis=-1))),
            start_params=GMMParams(*(np.asarray(a) for a in start_params)),
            compile_seconds=compile_seconds + start_compile,
            run_seconds=run_seconds + start_run,
            start_seconds=start_compile + start_run,
        ),
    )

