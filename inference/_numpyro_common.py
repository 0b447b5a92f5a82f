"""Shared pieces of the NumPyro engines: the model closure, z enumeration, site transforms,
initial points, ahead-of-time compilation with a cache, and posterior summaries.

Every engine here runs :func:`models.gmm_model` itself (never a copy), with ``z`` enumerated out
by funsor (``first_available_dim=-2``: the only plate that holds ``z`` is ``data`` at dim -1).

Missing values: the model's arguments are ``(x, sample_weight, missing)``; ``missing`` is None for
complete data (the programs are then exactly those of before) or a :class:`Missing` of the patterns
(:func:`missing_of`), found on the host. Everything computed from x inside a program goes through
:func:`data_component_log_prob` (the observed-data density when ``missing`` is given).
"""

from __future__ import annotations

import contextlib
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.contrib.funsor import config_enumerate, enum, infer_discrete
from numpyro.contrib.funsor import log_density as enumerated_log_density
from jax import lax
from numpyro.distributions.transforms import biject_to

import models  # noqa: F401  (x64 on before arrays are built)
from models.density import component_log_prob, log_likelihood, pointwise_log_likelihood, responsibilities
from models.missing import masked_component_log_prob, missing_patterns
from models.gmm import GLOBAL_SITES, gmm_model, params_from_sites, sites_from_params
from models.params import GMMParams

from . import executable_store
from .compiled_cache import remember_compiled
from .init import INIT_METHODS, stack_given_init
from .random_keys import split_key
from .sharded_potential import compile_on_mesh, place, rows_on_mesh
from .validate import check_choice, check_data, check_positive

FIRST_ENUM_DIM = -2  # max_plate_nesting = 1: z lives in the "data" plate only
PRIOR_KEYS = ("concentration", "mean_loc", "mean_scale", "scale_loc", "scale_log_sd", "lkj_concentration")


# --------------------------------------------------------------------------- the model


class Missing(NamedTuple):
    """Where the holes are, as the model's ``missing`` argument: observed (P, D) bool, pattern (N,) int32."""

    observed: jnp.ndarray
    pattern: jnp.ndarray


def missing_of(x) -> Missing | None:
    """The :class:`Missing` of host data ``x`` (N, D) with NaN, or None when it has none."""
    if not np.isnan(x).any():
        return None
    found = missing_patterns(x)
    return Missing(jnp.asarray(found.observed), jnp.asarray(found.index))


def mean_completed(x: np.ndarray) -> np.ndarray:
    """``x`` with each NaN replaced by its column's mean (0 for a column with none observed): the NaN-free
    rows the initialisers start from (they never read NaN)."""
    if not np.isnan(x).any():
        return x
    counts = np.sum(~np.isnan(x), axis=0)
    means = np.where(counts > 0, np.nansum(x, axis=0) / np.maximum(counts, 1), 0.0)
    return np.where(np.isnan(x), means.astype(x.dtype), x)


def data_component_log_prob(params: GMMParams, x, missing: Missing | None = None) -> jnp.ndarray:
    """Jit-able ``log w_k + log p(x_n | theta_k)`` (N, K): of each row's observed entries when ``missing``."""
    if missing is None:
        return component_log_prob(params, x)
    return masked_component_log_prob(params, x, missing.pattern, missing.observed)


def data_responsibilities(params: GMMParams, x, missing: Missing | None = None) -> jnp.ndarray:
    """Jit-able ``p(z_n = k | x_n)`` (N, K), observed entries only when ``missing``."""
    if missing is None:
        return responsibilities(params, x)
    return jax.nn.softmax(data_component_log_prob(params, x, missing), axis=-1)


def model_data(x) -> np.ndarray:
    """Validated data for the NumPyro engines, as float64 (NaN marks a missing entry).

    float32 input is accepted and upcast: with x64 on, NumPyro's LKJCholesky transform mixes float64
    constants into a float32 model and fails, so these engines always compute (and return) float64.
    """
    return check_data(x, allow_missing=True).astype(np.float64, copy=False)


def prior_items(prior: dict | None) -> tuple:
    """Validated, hashable ``((name, value), ...)`` of prior overrides for ``gmm_model``.

    Array-valued entries (e.g. a (D,) ``mean_loc``) become tuples so they can key a cache.
    """
    prior = dict(prior or {})
    unknown = sorted(set(prior) - set(PRIOR_KEYS))
    if unknown:
        raise ValueError(f"prior has unknown keys {unknown}; allowed: {', '.join(PRIOR_KEYS)}")
    items = []
    for name in sorted(prior):
        value = np.asarray(prior[name], dtype=np.float64)
        if not np.all(np.isfinite(value)):
            raise ValueError(f"prior[{name!r}] must be finite, got {prior[name]!r}")
        if name != "mean_loc" and np.any(value <= 0):
            raise ValueError(f"prior[{name!r}] must be > 0, got {prior[name]!r}")
        items.append((name, float(value) if value.ndim == 0 else tuple(value.ravel().tolist())))
    return tuple(items)


@functools.lru_cache(maxsize=None)
def make_model(num_components: int, prior: tuple = ()):
    """``model(x, sample_weight=None, missing=None)``: :func:`models.gmm_model` with K and the prior bound."""
    kwargs = {name: (jnp.asarray(value) if isinstance(value, tuple) else value) for name, value in prior}

    def model(x, sample_weight=None, missing=None):
        return gmm_model(x, num_components=num_components, sample_weight=sample_weight, missing=missing, **kwargs)

    return model


def enumerated(model):
    """``model`` with every ``enumerate``-marked site (``z``) enumerated in parallel by funsor."""
    return enum(config_enumerate(model), first_available_dim=FIRST_ENUM_DIM)


def enumerated_log_joint(params: GMMParams, x, sample_weight=None, **prior) -> jnp.ndarray:
    """NumPyro's log joint of ``gmm_model`` at ``params`` with ``z`` summed out (constrained space).

    Equals ``sum_n w_n log p(x_n | params) + models.log_prior(params, **prior)`` (w = 1 without weights).

    Parameters
    ----------
    params : GMMParams, weights (K,), means (K, D), scale_tril (K, D, D).
    x : (N, D) data, NaN where missing (the observed-data likelihood, ``models.missing``).
    sample_weight : (N,) row weights or None.
    """
    missing = missing_of(np.asarray(x))
    x = jnp.asarray(x)
    params = GMMParams(*(jnp.asarray(a, x.dtype) for a in params))
    model = make_model(params.means.shape[-2], prior_items(prior))
    log_joint, _ = enumerated_log_density(enumerated(model), (x, sample_weight, missing), {}, sites_from_params(params))
    return log_joint


def elbo_for(sample_weight, num_particles: int = 1):
    """The ELBO for ``model(x, sample_weight)``: ``TraceEnum_ELBO`` (z summed out by funsor) without weights;
    ``Trace_ELBO`` with them (the weighted model has no z site, ``models.gmm``; TraceEnum_ELBO mishandles a
    per-row ``handlers.scale`` on a non-enumerated site, returning an (N,) "loss")."""
    from numpyro.infer import Trace_ELBO, TraceEnum_ELBO

    if sample_weight is None:
        return TraceEnum_ELBO(num_particles=num_particles, max_plate_nesting=1)
    return Trace_ELBO(num_particles=num_particles)


def weighted_log_likelihood(params: GMMParams, x, sample_weight=None, missing: Missing | None = None) -> jnp.ndarray:
    """``sum_n w_n log p(x_n | params)``; ``models.log_likelihood`` when ``sample_weight`` is None (of the
    observed entries when ``missing``: jit-able, the patterns come with it)."""
    if missing is not None:
        pointwise = jax.scipy.special.logsumexp(data_component_log_prob(params, x, missing), axis=-1)
        return jnp.sum(pointwise if sample_weight is None else sample_weight * pointwise)
    if sample_weight is None:
        return log_likelihood(params, x)
    return jnp.sum(sample_weight * pointwise_log_likelihood(params, x))


def bayes_assignments(key, params: GMMParams, x, temperature: int, missing: Missing | None = None) -> jnp.ndarray:
    """``z`` (N,) from ``p(z_n | x_n, params)`` by Bayes' rule: the argmax (``temperature=0``) or a draw
    (``temperature=1``); what ``infer_discrete`` gives on the unweighted model, for the weighted one
    (which has no ``z`` site, ``models.gmm``)."""
    joint = data_component_log_prob(params, x, missing)
    if temperature == 0:
        return jnp.argmax(joint, axis=-1)
    return jax.random.categorical(key, joint, axis=-1)


@functools.lru_cache(maxsize=None)
def site_supports(num_components: int, num_features: int, prior: tuple = ()) -> dict:
    """``{site: constraint}`` of the global sites, read from an abstract forward run of the model.

    The run happens under ``jax.eval_shape``: nothing executes (an eager run compiled every
    primitive on first use, ~5 s of a cold NUTS fit).
    """
    model = make_model(num_components, prior)
    supports = {}

    def read(fake):
        trace = handlers.trace(handlers.seed(handlers.block(model, hide=["z", "x"]), 0)).get_trace(fake)
        supports.update({name: trace[name]["fn"].support for name in GLOBAL_SITES if name in trace})
        return fake

    jax.eval_shape(read, jax.ShapeDtypeStruct((1, num_features), jnp.result_type(float)))
    return dict(supports)


def to_unconstrained(sites: dict, supports: dict) -> dict:
    """Map constrained global-site values to NumPyro's unconstrained space (leading dims allowed)."""
    return {name: biject_to(supports[name]).inv(sites[name]) for name in supports}


@functools.lru_cache(maxsize=None)
def unconstrain_fn(num_components: int, num_features: int, prior: tuple = ()):
    """Jitted :func:`to_unconstrained` for the model's supports (cached: no eager op-by-op compiles)."""
    supports = site_supports(num_components, num_features, prior)
    return jax.jit(lambda sites: to_unconstrained(sites, supports))


def to_constrained(unconstrained: dict, supports: dict) -> dict:
    """Inverse of :func:`to_unconstrained`."""
    return {name: biject_to(supports[name])(unconstrained[name]) for name in supports}


def model_sites(params: GMMParams, dtype) -> dict:
    """Global-site values of ``gmm_model`` reproducing ``params``, cast to the model dtype."""
    return {name: jnp.asarray(value, dtype) for name, value in sites_from_params(params).items()}


def discrete_assignments(key, model, sites: dict, x, temperature: int, missing: Missing | None = None) -> jnp.ndarray:
    """``z`` (N,) from ``infer_discrete`` with the global sites fixed at ``sites``.

    ``temperature=0`` gives the MAP assignment, ``temperature=1`` a posterior draw.
    """
    conditioned = handlers.condition(model, data=sites)
    sampler = infer_discrete(
        config_enumerate(conditioned), first_available_dim=FIRST_ENUM_DIM, temperature=temperature, rng_key=key
    )
    args = (x,) if missing is None else (x, None, missing)
    return handlers.trace(sampler).get_trace(*args)["z"]["value"]


# --------------------------------------------------------------------------- training loop


class ChunkProgress:
    """A tqdm bar on stderr for a training loop, advanced from the host between compiled segments (a host
    callback inside the program would keep JAX from writing it to the persistent compilation cache:
    ``jax._src.compiler._cache_write`` skips executables with host callbacks)."""

    bar = None

    @classmethod
    def advance(cls, steps) -> None:
        if cls.bar is not None:
            cls.bar.update(int(steps))

    @classmethod
    @contextlib.contextmanager
    def shown(cls, enabled: bool, total: int, desc: str):
        if not enabled:
            yield
            return
        from tqdm.auto import tqdm

        cls.bar = tqdm(total=total, desc=desc, leave=False)
        try:
            yield
        finally:
            cls.bar.close()
            cls.bar = None


def train_in_chunks(svi, guide, state, x, *, num_checks: int, check_every: int, chunk_converged, min_checks: int = 1,
                    sample_weight=None, track=None, initial_summary=None, missing=None, carry=None, stop=None):
    """Drive ``svi.update`` in ``lax.scan`` chunks of ``check_every`` steps inside ``lax.while_loop``.

    After each chunk ``chunk_converged(previous_summary, chunk_losses) -> (summary, converged)`` decides
    whether to stop (never before ``min_checks`` chunks, never after ``num_checks``), and the models/
    (weighted, observed-data when ``missing``) log-likelihood of the guide's median is recorded. Jit-able (the whole loop is one program).
    ``carry`` (a previous call's output, ``state`` then unused) resumes a run; ``stop`` (traced) ends this call
    after chunk ``stop`` (default ``num_checks``), so a host loop can drive the run in segments.

    ``track(params) -> pytree`` (optional, e.g. the guide's locations and log scales): its mean over the
    chunk's steps is passed as a third argument, ``chunk_converged(previous, chunk_losses, tracked_mean)``,
    so the rule can ask whether the parameters themselves have stopped moving (not only the loss); the
    first ``previous`` is then ``initial_summary`` (any pytree of the summary's structure).

    Returns
    -------
    (state, chunks_run, last_summary, converged, losses (num_checks, check_every), log_liks (num_checks,))
    """
    margs = () if missing is None else (missing,)  # no missing: the very same calls as before
    losses = jnp.zeros((num_checks, check_every), x.dtype)
    log_liks = jnp.zeros((num_checks,), x.dtype)

    def tracked_step(carry, _):
        state, total = carry
        state, loss = svi.update(state, x, sample_weight, *margs)
        total = jax.tree.map(jnp.add, total, track(svi.get_params(state)))
        return (state, total), loss

    def run_chunk(carry):
        state, chunk, previous, _, losses, log_liks = carry
        if track is None:
            state, chunk_losses = lax.scan(lambda s, _: svi.update(s, x, sample_weight, *margs), state, None, length=check_every)
            summary, converged = chunk_converged(previous, chunk_losses)
        else:
            zeros = jax.tree.map(jnp.zeros_like, track(svi.get_params(state)))
            (state, total), chunk_losses = lax.scan(tracked_step, (state, zeros), None, length=check_every)
            summary, converged = chunk_converged(previous, chunk_losses, jax.tree.map(lambda t: t / check_every, total))
        point = params_from_sites(guide.median(svi.get_params(state)))
        return (state, chunk + 1, summary, converged, losses.at[chunk].set(chunk_losses), log_liks.at[chunk].set(weighted_log_likelihood(point, x, sample_weight, missing)))

    last = num_checks if stop is None else stop
    keep_going = lambda carry: (carry[1] < last) & ((carry[1] < min_checks) | ~carry[3])
    first = jnp.asarray(jnp.inf, x.dtype) if initial_summary is None else initial_summary
    init = (state, jnp.asarray(0, jnp.int32), first, jnp.asarray(False), losses, log_liks) if carry is None else carry
    if isinstance(stop, int) and stop <= 0 and carry is None:
        return init  # the first carry alone: the loop would run no chunk, so it is not traced (compile time)
    return lax.while_loop(keep_going, run_chunk, init)


# --------------------------------------------------------------------------- initial points


def initial_params(key, x, num_components: int, init, n_init: int, sample_weight=None) -> tuple[GMMParams, float]:
    """Stacked starting points, GMMParams with a leading (n_init,) dim, dtype of ``x``; data with NaN
    holes are initialised from their column-mean-completed rows (:func:`mean_completed`).

    ``init`` is a method name understood by ``inference.init.initialize`` (the initialisers EM
    uses, weighted by ``sample_weight``; vmapped over restarts and compiled once per shape) or a
    GMMParams (used for every restart).

    Returns
    -------
    (starts, compile_seconds)
    """
    if isinstance(init, GMMParams):
        return stack_given_init(init, x, num_components, n_init), 0.0
    check_choice("init", init, INIT_METHODS)
    x = mean_completed(np.asarray(x))
    keys = split_key(key, n_init)
    starts, compile_seconds, _ = compiled_call(_build_initializer, (num_components, init), keys, x, sample_weight)
    return starts, compile_seconds


def _build_initializer(num_components: int, method: str):
    from inference.init import initialize

    def initialize_all(keys, x, sample_weight):
        return jax.vmap(lambda k: initialize(k, x, num_components, method=method, sample_weight=sample_weight))(keys)

    return initialize_all


# --------------------------------------------------------------------------- compilation


_COMPILED: dict = {}
OPTIMIZED_OPTIONS = {"xla_backend_optimization_level": 3}  # XLA's default level, set per program (README, "Latency")


def compiled_call(build, static: tuple, *args, mesh=None, rows: tuple = (), optimized: bool = False):
    """Run ``jax.jit(build(*static))(*args)``, compiling ahead of time once per static options and shapes.

    ``mesh`` (``inference.sharded_potential.row_mesh``; None: one device, the plain program): the arguments at
    positions ``rows`` are split over its devices by rows, the others replicated; outputs come back as numpy.
    ``optimized``: XLA's full backend optimisation (``OPTIMIZED_OPTIONS``) even where ``XLA_FLAGS`` ask for level 0
    (``analysis.cli.prefer_fast_compile``): NUTS's segment at N = 500 ran 1.02 s at level 0, 0.47 s so, for +0.7 s compile.

    Returns
    -------
    (outputs, compile_seconds, run_seconds); ``compile_seconds`` is 0.0 on a cache hit, so a
    second fit with the same shapes and options compiles nothing.
    """
    key = (build.__module__, build.__qualname__, static, executable_store.signature(args)) + (
        (mesh, rows, tuple(int(d.id) for d in mesh.devices.flat)) if mesh is not None else ()) + (  # a Mesh's repr has no device ids
        ("optimized",) if optimized else ())
    executable = _COMPILED.get(key)
    compile_seconds = 0.0
    if executable is None:
        start = time.perf_counter()
        placed = []

        def compile_program(options):
            program = build(*static) if mesh is None else rows_on_mesh(build(*static), mesh, rows)
            executable, on_mesh = compile_on_mesh(program, mesh, args, {**(options or {}), **(OPTIMIZED_OPTIONS if optimized else {})})
            placed.append(on_mesh)
            return executable

        # a new process: no tracing either
        executable, _ = executable_store.load_or_compile(key, compile_program, None if mesh is None else mesh.devices.flat)
        args = placed[0] if placed else place(args, mesh)
        remember_compiled(_COMPILED, key, executable)
        compile_seconds = time.perf_counter() - start
    else:
        args = place(args, mesh)
    start = time.perf_counter()
    out = jax.block_until_ready(executable(*args))
    out = out if mesh is None else jax.device_get(out)
    return out, compile_seconds, time.perf_counter() - start


def clear_compiled_cache() -> None:
    """Forget every compiled executable (tests use this to measure a cold fit)."""
    _COMPILED.clear()


# --------------------------------------------------------------------------- summaries


def params_from_site_draws(sites: dict) -> GMMParams:
    """GMMParams (numpy) from global-site draws with leading dims."""
    return GMMParams(*(np.asarray(a) for a in params_from_sites(sites)))


def check_int_option(name: str, value, *, allow_zero: bool = False) -> int:
    """A positive (or non-negative) integer option, else ``ValueError`` naming it."""
    return int(check_positive(name, value, integer=True, allow_zero=allow_zero))


def with_checked_weights(options: dict, x) -> dict:
    """``options`` with ``sample_weight`` validated (``inference.rows.check_sample_weight``: (N,), finite,
    >= 0, not all zero; one-line ValueError naming it) and normalised to sum to the number of rows with a
    positive weight (``inference.rows.normalize_sample_weight``: relative weights, scale-free) as x's
    dtype, or None."""
    from .rows import check_sample_weight, normalize_sample_weight

    weights = options.get("sample_weight")
    if weights is None:
        return options
    weights = normalize_sample_weight(check_sample_weight(weights, x.shape[0], np.float64))
    return dict(options, sample_weight=weights.astype(x.dtype))


def weight_info(options: dict, x) -> dict:
    """``info`` entries describing the weights: ``weighted`` and ``total_weight`` (sum of the normalised
    weights: the number of rows with a positive weight; N without)."""
    weights = options.get("sample_weight")
    return dict(weighted=weights is not None, total_weight=float(x.shape[0] if weights is None else np.sum(weights)))


def check_float_option(name: str, value) -> float:
    return float(check_positive(name, value))


def key_array(key):
    """A raw uint32 key (new-style typed keys are unwrapped), so compiled signatures are stable."""
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key
