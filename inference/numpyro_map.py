"""Enumerated MAP on ``models.gmm_model``: the mode of the posterior of the global sites with z summed out, from
vmapped restarts (stopped together once the best has converged and the others are hopeless).

Two optimisers of the same objective (AutoDelta's: log p(x | theta) + log p(theta), constrained sites):

* ``"ecm"`` (the default up to D = 20, ``map_ecm.MAX_COORDINATES``): EM's E-step and a conditional M-step from the
  moments (:mod:`inference.map_ecm`), so a pass costs what EM's does;
* ``"adam"``: AutoDelta + TraceEnum_ELBO, Adam with an exponentially decaying learning rate (the engine before
  session 17, and the default above D = 20, where a component's Newton system outgrows the E-step).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import lax
from numpyro import handlers
from numpyro.infer import SVI
from numpyro.infer.autoguide import AutoDelta
from numpyro.infer.initialization import init_to_value

from models.gmm import params_from_sites, sites_from_params
from models.params import GMMParams

from ._numpyro_common import (
    check_float_option,
    check_int_option,
    bayes_assignments,
    compiled_call,
    data_responsibilities,
    discrete_assignments,
    elbo_for,
    initial_params,
    key_array,
    make_model,
    missing_of,
    model_data,
    model_sites,
    prior_items,
    train_in_chunks,
    weight_info,
    with_checked_weights,
)
from .random_keys import split_key
from .restarts import TRAIL_LOOKBACK, TRAIL_MARGIN, trailing_restarts  # noqa: F401  (re-exported)
from .result import FitResult
from .em_rows import in_memory_rows
from .map_ecm import MAX_COORDINATES, coordinates, prior_arrays, run_ecm
from .rows import make_mesh
from .sharded_potential import devices_used, lapack_work, row_mesh
from .validate import check_choice, check_num_components

MAP_DEFAULTS = dict(
    init="kmeans++",
    n_init=4,
    num_steps=3000,
    learning_rate=0.05,
    final_learning_rate=5e-4,
    tol=1e-8,
    check_every=50,
    stop_trailing=True,
    prior=None,
    sample_weight=None,
    devices=None,
    optimizer="auto",
)
OPTIMIZERS = ("auto", "ecm", "adam")
TIE = 1e-10  # relative: restarts' losses this close (or within tol) are one optimum
DEGENERATE_WARNING = ("MAP: every restart collapsed a component onto a few rows (a conditional sd below 1e-7 of the "
                      "data's): the posterior is unbounded there and this point is not a mode; use fewer components")


def adam_with_decay(learning_rate: float, final_learning_rate: float, num_steps: int):
    """NumPyro Adam whose step size decays exponentially from ``learning_rate`` to ``final_learning_rate``."""
    decay = (final_learning_rate / learning_rate) ** (1.0 / max(num_steps, 1))
    return numpyro.optim.Adam(lambda step: learning_rate * decay**step)


def _build_map_runner(num_components, prior, num_steps, learning_rate, final_learning_rate, tol, check_every, stop_trailing=True):
    """Compiled-once function ``(keys (R,), starts (R, ...), assign_key, x, sample_weight, missing) -> dict`` of
    the best restart (``sample_weight`` None or (N,): the weighted model, ``models.gmm``; ``missing`` None or the
    holes' patterns, ``inference._numpyro_common.Missing``). The restarts advance a chunk of ``check_every`` steps
    at a time, together, until each has converged or reached ``num_steps``, or (``stop_trailing``) until those
    left are hopeless (:func:`trailing_restarts`)."""
    model = make_model(num_components, prior)
    num_checks = -(-num_steps // check_every)

    def chunk_converged(previous, chunk_losses):
        loss = chunk_losses[-1]
        return loss, jnp.abs(previous - loss) <= tol * (1.0 + jnp.abs(loss))

    def run(keys, starts, assign_key, x, sample_weight, missing):
        margs = () if missing is None else (missing,)

        def pieces(start_sites):
            """This restart's SVI and guide."""
            guide = AutoDelta(handlers.block(model, hide=["z"]), init_loc_fn=init_to_value(values=start_sites))
            return SVI(model, guide, adam_with_decay(learning_rate, final_learning_rate, num_steps), elbo_for(sample_weight)), guide

        # The SVI and guide that advance the restarts and read their medians, set up once by an init whose values XLA
        # drops (nothing runs): their steps read the parameters from each restart's carry, never the init values, so
        # one set-up (restart 0's start) serves every restart and both uses (tracing NumPyro's init is most of the
        # compile time; set up per use, it was traced twice more).
        shared = pieces(jax.tree.map(lambda a: a[0], starts))
        shared[0].init(jax.random.PRNGKey(0), x, sample_weight, *margs)

        common = dict(num_checks=num_checks, check_every=check_every, chunk_converged=chunk_converged,
                      sample_weight=sample_weight, missing=missing)

        def begin(key, start_sites):  # the initial carry: nothing run yet
            svi, guide = pieces(start_sites)
            return train_in_chunks(svi, guide, svi.init(key, x, sample_weight, *margs), x, stop=0, **common)

        def advance(carry, start_sites):  # one more chunk, unless this restart is done
            svi, guide = shared
            return train_in_chunks(svi, guide, None, x, carry=carry, stop=carry[1] + 1, **common)

        def status(carry):
            return trailing_restarts(carry[1], carry[2], carry[3], carry[4], num_checks)

        def keep_going(carry):
            running, hopeless = status(carry)
            return jnp.any(running) & ~(hopeless & stop_trailing)

        carry = lax.while_loop(keep_going, lambda c: jax.vmap(advance)(c, starts), jax.vmap(begin)(keys, starts))
        state, chunks, loss, converged, losses, log_liks = carry
        running, _ = status(carry)

        def median(state, start_sites):
            svi, guide = shared
            return guide.median(svi.get_params(state))

        sites = jax.vmap(median)(state, starts)
        best = jnp.argmin(jnp.where(jnp.isfinite(loss), loss, jnp.inf))
        pick = lambda a: a[best]
        best_sites = jax.tree.map(pick, sites)
        params = params_from_sites(best_sites)
        return dict(
            sites=best_sites,
            params=params,
            restart_losses=loss,
            restart_steps=chunks * check_every,
            restarts_stopped=jnp.sum(running),
            converged=converged[best],
            chunks=chunks[best],
            losses=losses[best],
            log_liks=log_liks[best],
            responsibilities=data_responsibilities(params, x, missing),
            assignments=(discrete_assignments(assign_key, model, best_sites, x, temperature=0, missing=missing)
                         if sample_weight is None else bayes_assignments(assign_key, params, x, temperature=0, missing=missing)),
        )

    return run


def map_point(key, x: np.ndarray, num_components: int, **options):
    """The MAP optimisation itself (used by :func:`fit_map` and to start SVI / NUTS).

    Returns
    -------
    (outputs dict of device arrays, options used, compile_seconds, run_seconds)
    """
    opts = {**MAP_DEFAULTS, **options}
    unknown = sorted(set(opts) - set(MAP_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown MAP option(s) {unknown}; allowed: {', '.join(MAP_DEFAULTS)}")
    n_init = check_int_option("n_init", opts["n_init"])
    num_steps = check_int_option("num_steps", opts["num_steps"])
    check_every = min(check_int_option("check_every", opts["check_every"]), num_steps)
    learning_rate = check_float_option("learning_rate", opts["learning_rate"])
    final_learning_rate = check_float_option("final_learning_rate", opts["final_learning_rate"])
    tol = float(check_float_option("tol", opts["tol"]) if opts["tol"] != 0 else 0.0)
    prior = prior_items(opts["prior"])
    weights = opts["sample_weight"]
    init_key, run_key, assign_key = split_key(key_array(key), 3)
    starts, init_compile = initial_params(init_key, x, num_components, opts["init"], n_init, weights)
    start_sites = model_sites(GMMParams(*starts), x.dtype)
    if not isinstance(opts["stop_trailing"], (bool, np.bool_)):
        raise ValueError(f"stop_trailing must be True or False, got {opts['stop_trailing']!r}")
    optimizer = check_choice("optimizer", opts["optimizer"], OPTIMIZERS)
    if optimizer == "auto":
        optimizer = "ecm" if coordinates(x.shape[1]) <= MAX_COORDINATES else "adam"
    missing = missing_of(x)
    if optimizer == "ecm":
        mesh = row_mesh(opts["devices"], x.shape[0], missing)
        out, compile_seconds, run_seconds = _ecm_point(starts, x, num_components, prior, weights, missing, mesh,
                                                       tol, num_steps, bool(opts["stop_trailing"]), assign_key)
        check_every = 1  # a log-likelihood per pass
    else:
        static = (num_components, prior, num_steps, learning_rate, final_learning_rate, tol, check_every, bool(opts["stop_trailing"]))
        mesh = row_mesh(opts["devices"], x.shape[0], missing, work=lapack_work(num_components, x.shape[1], n_init))
        out, compile_seconds, run_seconds = compiled_call(
            _build_map_runner, static, split_key(run_key, n_init), start_sites, assign_key, jnp.asarray(x),
            None if weights is None else jnp.asarray(weights, x.dtype), missing, mesh=mesh, rows=(3, 4),
        )
    used = dict(opts, n_init=n_init, num_steps=num_steps, check_every=check_every, prior=dict(prior), devices=devices_used(mesh),
                optimizer=optimizer)
    del used["sample_weight"]
    return out, used, compile_seconds + init_compile, run_seconds


def _ecm_point(starts: GMMParams, x, num_components: int, prior: tuple, weights, missing, mesh, tol: float,
               max_iters: int, stop_trailing: bool, assign_key):
    """:func:`map_point` by ECM (:mod:`inference.map_ecm`): the restarts on EM's rows, then the best one's
    responsibilities and assignments. Returns (outputs as :func:`_build_map_runner`'s, compile s, run s)."""
    rows = in_memory_rows(x, weights, num_components, None, make_mesh(jax.devices()[:1]) if mesh is None else mesh)
    center = np.asarray(rows.center, np.float64)
    starts = GMMParams(*(np.asarray(a, np.float64) for a in starts))
    starts = starts._replace(means=starts.means - center)
    state, running, compile_seconds, run_seconds = run_ecm(
        starts, rows, prior_arrays(prior, x.shape[1], center), tol, max_iters=max_iters, stop_trailing=stop_trailing)
    loss, degenerate = np.asarray(state.loss), np.asarray(state.degenerate)
    if not np.isfinite(loss).any():
        raise FloatingPointError("MAP (ECM) reached a non-finite log posterior from every start; check the scale of x")
    eligible = np.isfinite(loss) & (~degenerate if not degenerate.all() else True)
    lowest = np.min(np.where(eligible, loss, np.inf))
    # the first restart within the convergence tolerance of the lowest loss: restarts that reach one optimum (often
    # with their labels permuted) differ there by less, which must not pick the labels (weights x 1e-6 gave the other
    # order, and NUTS started from the permuted point drew other trajectories)
    best = int(np.flatnonzero(eligible & (loss <= lowest + max(TIE, tol) * (1 + abs(lowest))))[0])
    point = GMMParams(*(np.asarray(a)[best] for a in state.point))
    params = point._replace(means=point.means + center)
    finish, finish_compile, finish_run = compiled_call(
        _build_finish, (num_components, prior, weights is not None), params, assign_key, jnp.asarray(x), missing)
    iterations = np.asarray(state.iteration)
    return dict(
        sites=finish[0], params=params, restart_losses=loss, restart_steps=iterations,
        restarts_stopped=int(np.sum(np.asarray(running))), restarts_degenerate=int(degenerate.sum()),
        degenerate=bool(degenerate[best]),
        converged=bool(np.asarray(state.converged)[best]) and not degenerate[best],
        chunks=int(iterations[best]), losses=np.asarray(state.losses)[best][:, None],
        log_liks=np.asarray(state.log_liks)[best], responsibilities=finish[1], assignments=finish[2],
    ), compile_seconds + finish_compile, run_seconds + finish_run


def _build_finish(num_components: int, prior: tuple, weighted: bool):
    """``(params, assign_key, x, missing) -> (sites, responsibilities, assignments)`` of an ECM point, as the Adam
    runner gives them."""
    model = make_model(num_components, prior)

    def finish(params, assign_key, x, missing):
        sites = sites_from_params(params)
        assign = (bayes_assignments(assign_key, params, x, temperature=0, missing=missing) if weighted
                  else discrete_assignments(assign_key, model, sites, x, temperature=0, missing=missing))
        return sites, data_responsibilities(params, x, missing), assign

    return finish


def starting_point(key, x: np.ndarray, num_components: int, init, prior, map_options,
                   sample_weight=None, devices=None) -> tuple[GMMParams, float, float]:
    """The point SVI and NUTS start from: the MAP (``init="map"``, on ``devices`` unless ``map_options`` say) or a
    user GMMParams.

    Returns
    -------
    (params, compile_seconds, run_seconds) of the MAP optimisation (zeros for a given GMMParams).
    """
    if isinstance(init, GMMParams):
        starts, _ = initial_params(key, x, num_components, init, 1)
        return GMMParams(*(a[0] for a in starts)), 0.0, 0.0
    if init != "map":
        raise ValueError(f"init must be 'map' or a GMMParams, got {init!r}")
    map_options = dict(map_options or {})
    map_options.setdefault("prior", prior)
    if "sample_weight" in map_options:
        raise ValueError("map_options cannot hold sample_weight: pass sample_weight to the fit itself")
    map_options["sample_weight"] = sample_weight
    map_options.setdefault("devices", devices)
    out, _, compile_seconds, run_seconds = map_point(key, x, num_components, **map_options)
    return out["params"], compile_seconds, run_seconds


def fit_map(key, x, num_components: int, **options) -> FitResult:
    """Enumerated MAP of ``models.gmm_model`` (z summed out; AutoDelta over the global sites).

    Parameters
    ----------
    key : PRNG key (restarts' initial points).
    x : (N, D) float32/float64 data; NaN marks a missing entry (marginalised out, ``models.gmm``).
    num_components : K.
    init : "kmeans++" (default) | "random_from_data" | "kmeans" (``inference.init``, as EM) | a GMMParams.
    n_init : restarts, vmapped; the lowest final loss is kept (default 4).
    num_steps : maximum Adam steps (default 3000).
    learning_rate, final_learning_rate : exponential step-size decay over ``num_steps`` (0.05 -> 5e-4).
    tol : stop when the loss changes by <= tol * (1 + |loss|) between checks (default 1e-8).
    check_every : steps between convergence checks and log-likelihood records (default 50).
    stop_trailing : end the run once the best restart has converged and every restart still running could not
        reach its loss before ``num_steps`` even at 4x its recent rate (default True; :func:`trailing_restarts`).
    prior : dict of ``gmm_model`` prior overrides (concentration, mean_loc, mean_scale, ...).
    sample_weight : (N,) non-negative row weights (row n's log-likelihood counts w_n times; integer
        weights = repeated rows); the loss and log-likelihoods are then weighted.
    optimizer : "auto" (default: "ecm" up to D = 20, else "adam") | "ecm" (:mod:`inference.map_ecm`: ``num_steps``
        caps its passes, ``tol`` its Aitken stop; ``learning_rate``, ``final_learning_rate``, ``check_every`` unused;
        ``info["restarts_degenerate"]`` counts restarts stopped on a collapsed component) | "adam".
    devices : the devices the rows are split over (``inference.sharded_potential.row_mesh``: None = every device
        from ``AUTO_MIN_ROWS`` rows, a list of ``jax.Device`` or a mesh); ``info["options"]["devices"]`` says which.

    Returns
    -------
    FitResult: ``trace`` has ``loss`` (-ELBO = -log joint, per step), ``log_likelihood`` and
    ``log_likelihood_step`` (every ``check_every`` steps); ``info["assignments"]`` (N,) is the
    ``infer_discrete`` MAP (temperature 0) assignment; ``info["restart_losses"]`` (n_init,),
    ``info["restart_steps"]`` (n_init,) the steps each ran, ``info["restarts_stopped"]`` how many were stopped
    trailing (``stop_trailing``).
    """
    start = time.perf_counter()
    x = model_data(x)
    num_components = check_num_components(num_components, x)
    options = with_checked_weights(options, x)
    out, used, compile_seconds, run_seconds = map_point(key, x, num_components, **options)
    chunks = int(out["chunks"])
    check_every = used["check_every"]
    return FitResult(
        method="map",
        params=GMMParams(*(np.asarray(a) for a in out["params"])),
        trace=dict(
            loss=np.asarray(out["losses"])[:chunks].reshape(-1),
            log_likelihood=np.asarray(out["log_liks"])[:chunks],
            log_likelihood_step=np.arange(1, chunks + 1) * check_every,
        ),
        samples=None,
        responsibilities=np.asarray(out["responsibilities"]),
        converged=bool(out["converged"]),
        num_iters=chunks * check_every,
        seconds=time.perf_counter() - start,
        info=dict(
            options=used,
            assignments=np.asarray(out["assignments"]),
            restart_losses=np.asarray(out["restart_losses"]),
            restart_steps=np.asarray(out["restart_steps"]),
            restarts_stopped=int(out["restarts_stopped"]),
            **({"restarts_degenerate": out["restarts_degenerate"]} if "restarts_degenerate" in out else {}),
            **({"warnings": [DEGENERATE_WARNING]} if out.get("degenerate") else {}),
            compile_seconds=compile_seconds,
            run_seconds=run_seconds,
            **weight_info(options, x),
        ),
    )
