"""NUTS warm-up that adapts the step size only, in one dual-averaging window, for a fixed mass matrix.

NumPyro's ``warmup_adapter`` follows Stan's windowed schedule (75 / 25, 50, 100, ... / 50 iterations) and, at
the end of every mass-matrix window, re-finds a "reasonable" step size and restarts dual averaging from 10x it,
even when ``adapt_mass_matrix=False``. With the mass matrix fixed at the Laplace ``H^-1`` those restarts adapt
nothing and each costs tens of long, small-step trajectories (measured at (50,000, 8, 4): the warm-up took 16
leapfrog steps per iteration against 7 per draw). Here the kernel runs with ``num_warmup=0`` and this wrapper
does the step-size part of that schedule in a single window, as PyMC does for a fixed potential: dual averaging
(Hoffman & Gelman 2014, Alg. 5; NumPyro's ``dual_averaging``, t0 = 10, kappa = 0.75, gamma = 0.05) towards the
target acceptance, started from 10x the kernel's initial heuristic step size, the averaged step size from the
last warm-up iteration on.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.infer.hmc_util import dual_averaging


def single_window_step(sample_kernel, num_warmup: int, target_accept_prob: float):
    """``(state, model_args) -> state``: one NUTS transition of ``sample_kernel`` (built with ``num_warmup=0``),
    adapting ``state.adapt_state.step_size`` by dual averaging while ``state.i < num_warmup``.

    The kernel's ``init_kernel`` must have run with ``adapt_step_size=True`` (its ``adapt_state.ss_state`` is
    then dual averaging started at ``log(10 * heuristic step)``, as NumPyro's first window). Iteration ``t``
    uses the step size dual averaging proposed after ``t - 1``; after the last warm-up iteration the step size
    is the average's, fixed from then on. Mirrors ``numpyro.infer.hmc_util.warmup_adapter``'s step-size update
    (including its clip to the dtype's range) without its window restarts.
    """
    _, ss_update = dual_averaging()

    def step(state, model_args):
        adapt = state.adapt_state
        warm = state.i < num_warmup
        new = sample_kernel(state, model_args=model_args)
        ss = ss_update(target_accept_prob - new.accept_prob, adapt.ss_state)
        log_step, log_step_avg = ss[0], ss[1]
        adapted = jnp.exp(jnp.where(state.i == num_warmup - 1, log_step_avg, log_step))
        finfo = jnp.finfo(jnp.result_type(adapted))
        adapted = jnp.clip(adapted, finfo.tiny, finfo.max).astype(jnp.result_type(adapt.step_size))
        keep = lambda updated, old: jnp.where(warm, updated, old)
        return new._replace(adapt_state=new.adapt_state._replace(
            step_size=keep(adapted, new.adapt_state.step_size),
            ss_state=jax.tree.map(keep, tuple(ss), tuple(adapt.ss_state))))

    return step
