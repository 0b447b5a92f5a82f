"""NUTS's chains: the compiled programs (start, a segment of transitions) and the loop that runs them.

A chain runs as ``num_segments`` calls of one compiled segment of ``length`` transitions (``lax.scan``), so that
a progress bar can move and the compiled program is cached across fits (``numpyro.infer.MCMC`` re-jits its loop
on every ``run``); chains run one after the other ("sequential", the CPU default), vmapped ("vectorized") or
pmapped ("parallel"). With a fixed (Laplace) metric the transition is our tree (``inference.robust_nuts``) under
our one-window step-size warm-up (``inference.step_size_warmup``); with a metric adapted from draws it is
NumPyro's ``hmc(algo="NUTS")`` with its windowed warm-up.

``run_chains`` can stop early: ``warmup_check`` sees each chain's warm-up (all chains' at once when they run
together) as soon as a segment completes it, and a reason it returns ends the run (``WarmupRejected``).
"""

from __future__ import annotations

import time

import jax
import numpy as np
from jax import lax
from numpyro import handlers
from numpyro.infer.hmc import hmc
from numpyro.infer.util import potential_energy

from ._numpyro_common import compiled_call, enumerated, make_model, site_supports, to_constrained
from .robust_nuts import robust_sample_kernel
from .step_size_warmup import single_window_step

__all__ = ["WarmupRejected", "kernel_settings", "run_chains"]


class WarmupRejected(Exception):
    """``run_chains`` stopped: ``reason`` (words), and the ``compile_seconds`` / ``run_seconds`` spent until then."""

    def __init__(self, reason: str, compile_seconds: float, run_seconds: float):
        super().__init__(reason)
        self.reason, self.compile_seconds, self.run_seconds = reason, compile_seconds, run_seconds


def _potential_fn_gen(num_components, prior):
    model = enumerated(make_model(num_components, prior))
    # a weighted model has no z to enumerate (models.gmm): its plain log density honours per-row scales
    return lambda x, w, m: (lambda unconstrained: potential_energy(model, (x, w, m), {}, unconstrained, enum=w is None))


def _prior_energy_fn(num_components, prior):
    """``(unconstrained, x, w, m) -> -(log prior + log |Jacobian|)``: the potential with the data sites hidden; a
    draw's log-likelihood is then ``prior energy - potential energy`` (to rounding), with no pass over the rows."""
    model = handlers.block(enumerated(make_model(num_components, prior)), hide=["x", "z"])
    return lambda unconstrained, x, w, m: potential_energy(model, (x, w, m), {}, unconstrained, enum=False)


def _nuts_kernel(num_components, prior):
    return hmc(potential_fn_gen=_potential_fn_gen(num_components, prior), algo="NUTS")


def kernel_settings(num_warmup, target_accept_prob, max_tree_depth, dense_mass, adapt_mass_matrix=True):
    return dict(num_warmup=num_warmup, target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                dense_mass=dense_mass, adapt_mass_matrix=adapt_mass_matrix)


def _hmc_settings(settings):
    """NumPyro's settings: with a fixed mass matrix its warm-up is ours (``step_size_warmup``), so it gets none."""
    return dict(settings, num_warmup=0) if not settings["adapt_mass_matrix"] else dict(settings)


def _build_chain_init(num_components, prior, settings, vectorized):
    """``(key, start_unconstrained, inverse_mass, x, sample_weight, missing) -> HMCState`` (vmapped over chains
    when ``vectorized``; ``inverse_mass`` None (adapted from draws) or the Laplace matrix
    (``inference.laplace_mass``); ``missing`` None or the holes' patterns, ``inference._numpyro_common.Missing``)."""
    settings = _hmc_settings(dict(settings))

    def init_chain(key, start, inverse_mass, x, w, m):
        init_kernel, _ = _nuts_kernel(num_components, prior)
        return init_kernel(start, model_args=(x, w, m), rng_key=key, inverse_mass_matrix=inverse_mass, **settings)

    return jax.vmap(init_chain, in_axes=(0, 0, None, None, None, None)) if vectorized else init_chain


def _build_chain_segment(num_components, num_features, prior, settings, length, vectorized):
    """``(state, x, sample_weight, missing) -> (state, draws)``: ``length`` NUTS transitions, collecting constrained
    sites, potential and Hamiltonian energy, step size, divergences, tree sizes, acceptance and the
    (weighted) log-likelihood."""
    settings = dict(settings)
    own_warmup = not settings["adapt_mass_matrix"]
    supports = site_supports(num_components, num_features, prior)
    prior_energy = _prior_energy_fn(num_components, prior)

    def segment(state, x, w, m):
        if own_warmup:  # a fixed metric: our tree (robust U-turn checks) and our single-window step-size warm-up
            transition = single_window_step(robust_sample_kernel(_potential_fn_gen(num_components, prior), settings["max_tree_depth"]),
                                            settings["num_warmup"], settings["target_accept_prob"])
        else:
            init_kernel, transition = _nuts_kernel(num_components, prior)
            # hmc() keeps the adaptation schedule and tree depth in closure variables set by
            # init_kernel; an abstract evaluation sets them without running anything.
            jax.eval_shape(lambda s, data, wd, md: init_kernel(s.z, model_args=(data, wd, md), rng_key=s.rng_key, **settings),
                           state, x, w, m)

        def step(state, _):
            state = transition(state, model_args=(x, w, m))
            sites = to_constrained(state.z, supports)
            record = dict(
                sites=sites,
                potential_energy=state.potential_energy,
                energy=state.energy,
                step_size=state.adapt_state.step_size,
                diverging=state.diverging,
                num_steps=state.num_steps,
                accept_prob=state.accept_prob,
                # the potential holds it: no pass over the rows (~1/3 of a gradient's work) per iteration
                log_likelihood=prior_energy(state.z, x, w, m) - state.potential_energy,
            )
            return state, record

        return lax.scan(step, state, None, length=length)

    return jax.vmap(segment, in_axes=(0, None, None, None)) if vectorized else segment


def run_chains(keys, starts, data, chain_method, init_static, segment_static, num_segments, progress, mesh=None,
               inverse_mass=None, warmup_check=None, num_warmup=0):
    """Run every chain; returns (records with leading (chain, step), compile_seconds, run_seconds).

    ``warmup_check`` (None: none) ``(records of the warm-up, step axis) -> reason or None`` is called on every
    chain's first ``num_warmup`` iterations (on all chains at once when vectorised or parallel), after the segment
    that completes them; a reason raises ``WarmupRejected`` and nothing more runs."""
    compile_seconds = run_seconds = 0.0
    length = segment_static[-2]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_segments * length * keys.shape[0], desc=f"nuts ({chain_method})", leave=False)

    def advance(build, static, *args):
        nonlocal compile_seconds, run_seconds
        out, c, r = compiled_call(build, static, *args, mesh=mesh, rows=(len(args) - 3, len(args) - 2),  # x, w of (..., x, w, m)
                                  optimized=build is _build_chain_segment)  # thousands of steps: worth XLA's optimisation
        compile_seconds, run_seconds = compile_seconds + c, run_seconds + r
        return out

    def check(records, step_axis):
        """``warmup_check`` on the warm-up in ``records``; a reason ends the run."""
        warm = jax.tree.map(lambda *r: np.concatenate([np.asarray(a) for a in r], axis=step_axis), *records)
        reason = warmup_check(jax.tree.map(lambda a: np.take(a, np.arange(num_warmup), axis=step_axis), warm), step_axis)
        if reason is not None:
            if bar is not None:
                bar.close()
            raise WarmupRejected(reason, compile_seconds, run_seconds)

    def run_segments(state, chains, segment=None):
        step_axis = 0 if chain_method == "sequential" else 1
        records, checked = [], warmup_check is None
        for index in range(num_segments):
            if segment is None:
                state, record = advance(_build_chain_segment, segment_static, state, *data)
            else:
                state, record = segment(state, *data)
            records.append(record)
            if bar is not None:
                bar.update(length * chains)
            if not checked and (index + 1) * length >= num_warmup:
                check(records, step_axis)
                checked = True
        return jax.tree.map(lambda *r: np.concatenate([np.asarray(a) for a in r], axis=step_axis), *records)

    if chain_method == "vectorized":
        state = advance(_build_chain_init, init_static + (True,), keys, starts, inverse_mass, *data)
        records = run_segments(state, keys.shape[0])
    elif chain_method == "parallel":
        start = time.perf_counter()
        init = jax.pmap(_build_chain_init(*init_static, False), in_axes=(0, 0, None, None, None, None))
        segment = jax.pmap(_build_chain_segment(*segment_static, False), in_axes=(0, None, None, None))
        state = init(keys, starts, inverse_mass, *data)
        try:
            records = jax.block_until_ready(run_segments(state, keys.shape[0], segment))
        except WarmupRejected as rejected:
            rejected.run_seconds = time.perf_counter() - start
            raise
        run_seconds = time.perf_counter() - start  # pmap compiles inside; not separated
    else:
        per_chain = []
        for chain in range(keys.shape[0]):
            state = advance(_build_chain_init, init_static + (False,), keys[chain], jax.tree.map(lambda a: a[chain], starts),
                            inverse_mass, *data)
            per_chain.append(run_segments(state, 1))
        records = jax.tree.map(lambda *r: np.stack(r), *per_chain)
    if bar is not None:
        bar.close()
    return records, compile_seconds, run_seconds
