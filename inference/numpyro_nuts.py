"""NUTS on ``models.gmm_model`` with z enumerated out (funsor), started at the MAP point.

The sampler is NumPyro's functional NUTS (``numpyro.infer.hmc.hmc``) on the enumerated model's
potential energy, driven by our own jitted ``lax.scan`` (``inference.nuts_chains``) so that the compiled program is
cached across fits (``numpyro.infer.MCMC`` re-jits its loop on every ``run``). The metric: the Laplace
``H^-1`` at the start where the posterior is the Gaussian it assumes (always above 100 parameters; below,
kept when the chains' warm-ups confirm it), else adapted from draws. Chains run sequentially
on CPU (``set_host_device_count`` + parallel chains deadlocked on a 2-core host), vectorised or
pmapped on accelerators. Label switching: every draw is relabelled against a pivot (the MAP
point, then the aligned mean) with ``models.alignment.relabel_draws``.

Chains start from dispersed points (chain 1 at the MAP point, the others at the MAP point jittered on
the unconstrained scale, ``init_jitter``) so that R-hat can see chains that disagree, and
``converged`` is ``inference.diagnostics``' verdict: rank-normalised R-hat <= 1.01 after relabelling,
bulk and tail ESS >= 100 per chain, no divergent transitions; ``info["warnings"]`` says which failed.

There is no ordered-means option: the ordering constraint as a hard -inf wall in the potential gave
wrong, over-confident posteriors with divergences that R-hat did not flag (issue 10); relabelling the
draws against a pivot answers label switching without changing the posterior.
"""

from __future__ import annotations

import math
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from models.alignment import mean_of_draws, relabel_draws
from models.density import responsibilities
from models.params import GMMParams

from ._numpyro_common import (
    model_data,
    check_float_option,
    check_int_option,
    compiled_call,
    key_array,
    missing_of,
    model_sites,
    params_from_site_draws,
    prior_items,
    unconstrain_fn,
    weight_info,
    with_checked_weights,
)
from .assignment_draws import assignment_draws as draw_assignments
from .assignment_draws import posterior_mode
from .diagnostics import convergence_warnings, diagnose, min_ess, split_r_hat, tree_depth
from .laplace_mass import build_laplace_inverse_mass, laplace_warmup_verdict
from .numpyro_map import starting_point
from .nuts_chains import WarmupRejected, kernel_settings, run_chains
from .random_keys import split_key
from .result import FitResult
from .sharded_potential import devices_used, lapack_work, row_mesh
from .validate import check_choice, check_num_components

CHAIN_METHODS = ("auto", "sequential", "vectorized", "parallel")
# dense_mass="auto": a dense mass matrix up to this many unconstrained parameters. Measured at (5,000, 5, 3), 62
# parameters (benchmarks/bench_bayes.py, 3 keys): 76-84 min bulk ESS per 1,000 gradients against 57-60 diagonal,
# 1.4-2.4x the ESS per second; its warm-up estimates dim^2 / 2 covariances from a few hundred draws, so larger
# models keep the diagonal until measured.
DENSE_MASS_MAX_DIM = 100
LAPLACE_JITTER_SDS = 4.0  # with a Laplace mass matrix, init_jitter = 0.5 starts the other chains ~2 posterior sds out
PROGRESS_SEGMENTS = 20
LAPLACE_TRIAL_MIN_WARMUP = 100  # the trial's verdict reads the warm-up's second half
R_HAT_KIND = "split R-hat (numpyro.diagnostics.split_gelman_rubin), max over the elements of each field"

NUTS_DEFAULTS = dict(
    init="map",
    num_chains=2,
    num_warmup=500,
    num_samples=1000,
    chain_method="auto",
    progress=True,
    init_jitter=0.5,
    relabel=True,
    target_accept_prob=0.8,
    max_tree_depth=10,
    dense_mass="auto",
    laplace_mass="auto",
    num_assignment_draws=100,
    prior=None,
    map_options=None,
    sample_weight=None,
    devices=None,
)


def resolve_chain_method(chain_method: str, num_chains: int) -> str:
    """``"auto"`` -> sequential on CPU; parallel on accelerators with enough devices, else vectorised."""
    check_choice("chain_method", chain_method, CHAIN_METHODS)
    if chain_method != "auto":
        if chain_method == "parallel" and jax.local_device_count() < num_chains:
            raise ValueError(f"chain_method='parallel' needs >= {num_chains} devices, found {jax.local_device_count()}")
        return chain_method
    if num_chains == 1 or jax.default_backend() == "cpu":
        return "sequential"
    return "parallel" if jax.local_device_count() >= num_chains else "vectorized"


def tries_laplace_mass(laplace_mass, num_params: int, num_warmup: int) -> bool:
    """Whether NUTS first tries the Laplace metric and keeps it only if its warm-up looks Gaussian
    (``inference.laplace_mass.laplace_warmup_verdict``; else the metric is adapted from draws): ``laplace_mass``
    "auto" at most ``DENSE_MASS_MAX_DIM`` parameters, with a warm-up of at least ``LAPLACE_TRIAL_MIN_WARMUP``."""
    return isinstance(laplace_mass, str) and num_params <= DENSE_MASS_MAX_DIM and num_warmup >= LAPLACE_TRIAL_MIN_WARMUP


def uses_laplace_mass(laplace_mass, num_params: int) -> bool:
    """Whether NUTS fixes its metric at the Laplace ``H^-1``: ``laplace_mass`` "auto" above ``DENSE_MASS_MAX_DIM``
    unconstrained parameters (where a dense matrix from draws is not reliable), else as given. Also the budget's
    rule (``analysis.budget``)."""
    return num_params > DENSE_MASS_MAX_DIM if isinstance(laplace_mass, str) and laplace_mass == "auto" else bool(laplace_mass)


def _dispersed_starts(key, start: dict, num_chains: int, jitter: float, inverse_mass=None) -> dict:
    """Unconstrained starts (chain, ...) as host arrays: chain 0 at ``start``, the others at ``start + N(0, jitter)``,
    or with a Laplace matrix at ``start + N(0, (LAPLACE_JITTER_SDS * jitter)^2 H^-1)``: overdispersed by a few
    posterior sds whatever N (a fixed unconstrained jitter is ~100 posterior sds at N = 50,000). One compiled
    program (as ~20 eager operations it cost ~0.15 s of small compiles in every new process)."""
    return jax.device_get(_dispersed_starts_program(key, start, int(num_chains), float(jitter), inverse_mass))


@partial(jax.jit, static_argnums=(2, 3))
def _dispersed_starts_program(key, start: dict, num_chains: int, jitter: float, inverse_mass) -> dict:
    if inverse_mass is not None:
        flat, unravel = ravel_pytree(start)
        noise = jax.random.normal(key, (num_chains, flat.size), flat.dtype) @ jnp.linalg.cholesky(inverse_mass).T
        return jax.vmap(unravel)(flat + (LAPLACE_JITTER_SDS * jitter * noise).at[0].set(0.0))
    keys = jax.random.split(key, len(start))
    out = {}
    for sub, (name, value) in zip(keys, sorted(start.items())):
        noise = jitter * jax.random.normal(sub, (num_chains,) + value.shape, value.dtype)
        out[name] = value + noise.at[0].set(0.0)
    return out


def _check_options(options):
    if "ordered_means" in options:
        raise ValueError("ordered_means was removed: a hard ordering wall gave wrong posteriors that looked converged; "
                         "label switching is undone by relabelling the draws (relabel=True)")
    opts = {**NUTS_DEFAULTS, **options}
    unknown = sorted(set(opts) - set(NUTS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown NUTS option(s) {unknown}; allowed: {', '.join(NUTS_DEFAULTS)}")
    opts["num_chains"] = check_int_option("num_chains", opts["num_chains"])
    opts["num_warmup"] = check_int_option("num_warmup", opts["num_warmup"], allow_zero=True)
    opts["num_samples"] = check_int_option("num_samples", opts["num_samples"])
    opts["max_tree_depth"] = check_int_option("max_tree_depth", opts["max_tree_depth"])
    opts["num_assignment_draws"] = check_int_option("num_assignment_draws", opts["num_assignment_draws"], allow_zero=True)
    opts["target_accept_prob"] = check_float_option("target_accept_prob", opts["target_accept_prob"])
    if not opts["target_accept_prob"] < 1:
        raise ValueError(f"target_accept_prob must be in (0, 1), got {opts['target_accept_prob']!r}")
    jitter = opts["init_jitter"]
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float, np.number)) or not (np.isfinite(jitter) and jitter >= 0):
        raise ValueError(f"init_jitter must be a finite number >= 0, got {jitter!r}")
    opts["init_jitter"] = float(jitter)
    for name in ("dense_mass", "laplace_mass"):
        if opts[name] != "auto" and not isinstance(opts[name], (bool, np.bool_)):
            raise ValueError(f"{name} must be True, False or 'auto', got {opts[name]!r}")
    for name in ("progress", "relabel"):
        if not isinstance(opts[name], (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {opts[name]!r}")
    opts["chain_method"] = resolve_chain_method(opts["chain_method"], opts["num_chains"])
    return opts


def fit_nuts(key, x, num_components: int, **options) -> FitResult:
    """NUTS on ``models.gmm_model`` with z enumerated out.

    Parameters
    ----------
    key : PRNG key.
    x : (N, D) float32/float64 data; NaN marks a missing entry (marginalised out, ``models.gmm``).
    num_components : K.
    init : "map" (default; chains start at the MAP point, ALL global sites) or a GMMParams.
    init_jitter : sd of the N(0, sd) jitter added on the unconstrained scale to the start of every chain
        but the first (default 0.5; 0 starts all chains at one point, which R-hat cannot check).
    num_chains, num_warmup, num_samples : default 2, 500, 1000 (1000 draws per chain keep the R-hat <= 1.01
        verdict out of its own Monte Carlo noise on well-behaved posteriors).
    chain_method : "auto" (default: sequential on CPU) | "sequential" | "vectorized" | "parallel".
    progress : tqdm progress bar (default True; the run is then cut into segments).
    relabel : relabel every draw against a pivot with ``relabel_draws`` (default True).
    target_accept_prob, max_tree_depth : NUTS settings (0.8, 10).
    dense_mass : "auto" (default: dense up to ``DENSE_MASS_MAX_DIM`` unconstrained parameters, else diagonal),
        True or False; ``info["options"]["dense_mass"]`` says which ran.
    laplace_mass : "auto" (default), True or False: the dense inverse mass matrix fixed at the Laplace ``H^-1`` at
        the start (``inference.laplace_mass``), warm-up adapting the step size only, in one dual-averaging window
        (``inference.step_size_warmup``), and trees with the robust U-turn checks (``inference.robust_nuts``).
        "auto": always above ``DENSE_MASS_MAX_DIM`` parameters; at or below it tried, and kept only if every
        chain's warm-up looks Gaussian (``laplace_warmup_verdict``: no divergence in its second half, a step size
        and trees near a Gaussian's); otherwise every chain runs again with the metric adapted from draws, as
        ``laplace_mass=False`` would (same keys: the same draws), the trial's seconds counted. Where H is not
        positive definite the mass matrix is adapted from draws. ``info["options"]["laplace_mass"]`` says which
        ran and why.
    num_assignment_draws : draws of z by ``infer_discrete`` (temperature 1), default 100.
    prior : dict of ``gmm_model`` prior overrides; map_options : options for the MAP start.
    sample_weight : (N,) non-negative row weights (weighted likelihood, as ``fit_map``); assignment draws
        then come from Bayes' rule at each parameter draw.
    devices : the devices the rows are split over (as ``fit_map``; not with chain_method "parallel").

    Returns
    -------
    FitResult: ``samples`` (chain, draw) aligned draws; ``params`` their posterior mean (covariances
    averaged then Cholesky); trace ``potential_energy``, ``log_likelihood``, ``accept_prob``,
    ``num_steps``, ``energy`` (the Hamiltonian: BFMI), ``step_size`` (after warm-up: constant per chain),
    ``tree_depth`` per draw (chain-major); info ``diverging`` (chain, draw), ``num_divergences``,
    ``r_hat_before`` / ``r_hat_after`` relabelling (see ``info["r_hat_kind"]``), ``ess_min``,
    ``ess_per_second``, ``assignment_draws`` (M, N), ``assignments`` (N,) (posterior mode over the
    draws), ``chain_method``, ``diagnostics`` (rank R-hat, bulk/tail ESS of the aligned draws, the
    worst elements), ``warnings`` (each failed convergence condition in words). ``converged``: no warning.
    """
    start = time.perf_counter()
    x = model_data(x)
    num_components = check_num_components(num_components, x)
    opts = with_checked_weights(_check_options(options), x)
    weights = None if opts["sample_weight"] is None else jnp.asarray(opts["sample_weight"])
    num_chains, num_warmup, num_samples = opts["num_chains"], opts["num_warmup"], opts["num_samples"]
    prior = prior_items(opts["prior"])
    num_features = x.shape[1]

    map_key, chain_key, assign_key, jitter_key = split_key(key_array(key), 4)
    start_params, start_compile, start_run = starting_point(map_key, x, num_components, opts["init"], opts["prior"], opts["map_options"],
                                                         opts["sample_weight"], opts["devices"])
    start_unconstrained = unconstrain_fn(num_components, num_features, prior)(model_sites(start_params, x.dtype))
    num_params = sum(np.size(v) for v in start_unconstrained.values())
    if opts["dense_mass"] == "auto":
        opts["dense_mass"] = num_params <= DENSE_MASS_MAX_DIM
    adapted_dense, trial = opts["dense_mass"], tries_laplace_mass(opts["laplace_mass"], num_params, num_warmup)
    opts["laplace_mass"] = uses_laplace_mass(opts["laplace_mass"], num_params)
    inverse_mass, laplace_seconds = None, 0.0
    if opts["laplace_mass"] or trial:
        (matrix, ok), c, r = compiled_call(build_laplace_inverse_mass, (num_components, prior), start_unconstrained,
                                           jnp.asarray(x), weights, missing_of(x))
        laplace_seconds = c + r
        if bool(ok):
            inverse_mass, opts["dense_mass"], opts["laplace_mass"] = jnp.asarray(matrix), True, True
        elif opts["laplace_mass"]:
            opts["laplace_mass"] = "not positive definite at the start: adapted from draws"
    trial = trial and inverse_mass is not None

    total = num_warmup + num_samples
    length = math.ceil(total / PROGRESS_SEGMENTS) if opts["progress"] or trial else total
    vectorized = opts["chain_method"] == "vectorized"

    def run(inverse_mass, dense_mass, check):
        settings = tuple(sorted(kernel_settings(num_warmup, opts["target_accept_prob"], opts["max_tree_depth"], dense_mass,
                                                adapt_mass_matrix=inverse_mass is None).items()))
        mesh = row_mesh(opts["devices"], x.shape[0], missing_of(x), opts["chain_method"],
                        lapack_work(num_components, num_features, num_chains if vectorized else 1, num_params if dense_mass else 0))
        out = run_chains(split_key(chain_key, num_chains),
                         _dispersed_starts(jitter_key, start_unconstrained, num_chains, opts["init_jitter"], inverse_mass),
                         (jnp.asarray(x), weights, missing_of(x)), opts["chain_method"], (num_components, prior, settings),
                         (num_components, num_features, prior, settings, length, vectorized), math.ceil(total / length),
                         opts["progress"], mesh, inverse_mass, warmup_check=check, num_warmup=num_warmup)
        return out, mesh

    trial_seconds = 0.0
    try:
        (records, compile_seconds, run_seconds), mesh = run(inverse_mass, opts["dense_mass"],
                                                       partial(laplace_warmup_verdict, num_params=num_params) if trial else None)
    except WarmupRejected as rejected:  # the Laplace metric did not fit this posterior: the adapted metric, as without it
        trial_seconds = rejected.compile_seconds + rejected.run_seconds
        opts["laplace_mass"], opts["dense_mass"] = f"tried; adapted from draws instead: {rejected.reason}", adapted_dense
        (records, compile_seconds, run_seconds), mesh = run(None, adapted_dense, None)
        compile_seconds, run_seconds = compile_seconds + rejected.compile_seconds, run_seconds + rejected.run_seconds
    sampling_seconds, kept = run_seconds, slice(num_warmup, total)
    warmup_steps = int(np.asarray(records["num_steps"])[:, :num_warmup].sum())
    records = jax.tree.map(lambda a: np.asarray(a)[:, kept], records)
    raw = params_from_site_draws(records["sites"])
    pivot = GMMParams(*(np.asarray(a) for a in start_params))
    aligned, perms = relabel_draws(raw, pivot) if opts["relabel"] else (raw, None)
    params = mean_of_draws(aligned)

    assignment_draws, c, r = draw_assignments(assign_key, aligned, x, num_components, prior, opts["num_assignment_draws"],
                                              weighted=weights is not None)
    compile_seconds, run_seconds = compile_seconds + c + start_compile, run_seconds + r + start_run
    r_hat_before, r_hat_after = split_r_hat(raw), split_r_hat(aligned)
    ess = min_ess(aligned)
    diverging = records["diverging"].astype(bool)
    diagnostics = diagnose(aligned)
    warnings = convergence_warnings(diagnostics, num_chains, int(diverging.sum()), diverging.size)
    chain_major = lambda a: np.asarray(a).reshape(-1)
    return FitResult(
        method="nuts",
        params=params,
        trace=dict(
            potential_energy=chain_major(records["potential_energy"]),
            log_likelihood=chain_major(records["log_likelihood"]),
            accept_prob=chain_major(records["accept_prob"]),
            num_steps=chain_major(records["num_steps"]),
            energy=chain_major(records["energy"]),
            step_size=chain_major(records["step_size"]),
            tree_depth=tree_depth(chain_major(records["num_steps"])),
        ),
        samples=aligned,
        responsibilities=np.asarray(responsibilities(params, x)),
        converged=not warnings,
        num_iters=num_samples,
        seconds=time.perf_counter() - start,
        info=dict(
            options={name: value for name, value in dict(opts, prior=dict(prior), devices=devices_used(mesh)).items() if name != "sample_weight"},
            **weight_info(opts, x),
            chain_method=opts["chain_method"],
            diverging=diverging,
            num_divergences=int(diverging.sum()),
            divergences=int(diverging.sum()),
            r_hat_kind=R_HAT_KIND,
            r_hat_before=r_hat_before,
            r_hat_after=r_hat_after,
            r_hat=r_hat_after,
            diagnostics=diagnostics,
            warnings=warnings,
            ess_min=ess,
            ess_per_second=ess / max(run_seconds, 1e-9),
            permutations=perms,
            num_relabelled_draws=0 if perms is None else int(np.sum(np.any(perms != np.arange(num_components), axis=-1))),
            assignment_draws=assignment_draws,
            assignments=posterior_mode(assignment_draws, num_components) if assignment_draws.size else np.argmax(np.asarray(responsibilities(params, x)), -1),
            start_params=pivot,
            compile_seconds=compile_seconds,
            run_seconds=run_seconds,
            sampling_seconds=sampling_seconds,  # the chains' own run (warm-up and draws), compile excluded
            warmup_leapfrog_steps=warmup_steps,  # every chain's, with trace["num_steps"] the run's gradients
            start_seconds=start_compile + start_run,
            laplace_mass_seconds=laplace_seconds,
            laplace_trial_seconds=trial_seconds,  # the rejected trial's chain under the Laplace metric (in run_seconds)
        ),
    )
