"""NUTS with the robust U-turn checks (inference.robust_nuts) and the single-window step-size warm-up
(inference.step_size_warmup).

References: a brute-force enumeration of every check of the recursive tree (Stan's ``build_tree`` after
stan-dev/stan#2800) for the iterative bookkeeping; exact Gaussian moments (within Monte Carlo error from the draws'
own ESS) for the sampler; NumPyro's kernel on the public report's case (stan-dev/stan#2799: an iid normal, a step
size whose subtrees span one orbit) for the missed U-turns.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer.hmc import hmc

from inference.robust_nuts import empty_checkpoints, leaf_checks, robust_sample_kernel
from inference.step_size_warmup import single_window_step


def _u_turn(v_a, v_b, r_a, r_b, r_span):
    rho = r_span - 0.5 * (r_a + r_b)
    return v_a @ rho <= 0 or v_b @ rho <= 0


def _reference_stop(r, v):
    """The first leaf at which any check of the recursive tree over leaves 0 .. L-1 fails (None if none does)."""
    length = len(r)
    completions = []
    k = 1
    while 2 ** k <= length:
        size = 2 ** k
        for a in range(0, length, size):
            b, m = a + size - 1, a + size // 2
            spans = [(a, b, b)] + ([(a, m, m), (m - 1, b, b)] if k >= 2 else [])
            for first, last, done in spans:
                if _u_turn(v[first], v[last], r[first], r[last], r[first:last + 1].sum(0)):
                    completions.append(done)
        k += 1
    return min(completions) if completions else None


def _rotating_momenta(seed, dim=3, length=32):
    """Momenta rotating slowly in a plane, with noise (U-turns after a few to many leaves), and their velocities."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(dim, dim))
    inverse_mass = a @ a.T + 0.5 * np.eye(dim)
    theta, radius = rng.uniform(0.05, 0.4), rng.uniform(0.5, 2.0)
    t = np.arange(length)
    r = np.zeros((length, dim))
    r[:, 0], r[:, 1], r[:, 2:] = radius * np.cos(theta * t), radius * np.sin(theta * t), rng.normal(size=dim - 2)
    r += 0.3 * rng.normal(size=(length, dim))
    return r, r @ inverse_mass


@pytest.mark.parametrize("seed", range(8))
def test_leaf_checks_make_every_check_of_the_recursive_tree_at_its_last_leaf(seed):
    r, v = _rotating_momenta(seed)
    want = _reference_stop(r, v)
    checks, cum, got = empty_checkpoints(6, jnp.zeros(r.shape[1])), np.zeros(r.shape[1]), None
    step = jax.jit(leaf_checks)
    for n in range(len(r)):
        cum = cum + r[n]
        turn, checks = step(checks, jnp.asarray(n), jnp.asarray(r[n]), jnp.asarray(v[n]), jnp.asarray(cum))
        if bool(turn):
            got = n
            break
    assert got == want


def test_the_reference_stops_vary_across_the_cases():
    """The case above is not trivial: its trajectories stop at different leaves, some late."""
    stops = [_reference_stop(*_rotating_momenta(seed)) for seed in range(8)]
    assert len(set(stops)) >= 3 and max(s for s in stops if s is not None) >= 4, stops


def _gaussian_chain(kernel, dim, step_size, num_draws, inverse_mass=None, potential=None, seed=0, num_warmup=0,
                    init_kernel=None):
    potential = potential or (lambda z: 0.5 * jnp.sum(z["x"] ** 2))
    init_kernel = init_kernel or hmc(potential_fn=potential, algo="NUTS")[0]
    state = init_kernel({"x": jnp.zeros(dim)}, num_warmup=0, step_size=step_size, adapt_step_size=num_warmup > 0,
                        inverse_mass_matrix=inverse_mass, dense_mass=inverse_mass is not None and inverse_mass.ndim == 2,
                        rng_key=jax.random.PRNGKey(seed))

    def step(state, _):
        state = kernel(state)
        return state, (state.z["x"], state.num_steps, state.accept_prob, state.adapt_state.step_size)

    _, out = jax.jit(lambda s: jax.lax.scan(step, s, None, length=num_draws))(state)
    return jax.tree.map(np.asarray, out)


def test_the_missed_u_turn_of_stan_2799_is_caught():
    """iid normal in 179 dimensions (the size of the (50,000, 8, 4) posterior), identity metric, step 0.42: a
    15-step subtree spans one orbit. NumPyro's criterion misses the turn (measured 71 steps per draw); ours stops
    at 15 or fewer, and both sample the same standard normal."""
    dim = 179
    potential = lambda z: 0.5 * jnp.sum(z["x"] ** 2)
    numpyro_init, numpyro_kernel = hmc(potential_fn=potential, algo="NUTS")
    ours = robust_sample_kernel(lambda: potential, 10)
    theirs_draws, theirs_steps, _, _ = _gaussian_chain(numpyro_kernel, dim, 0.42, 300, init_kernel=numpyro_init)
    our_draws, our_steps, _, _ = _gaussian_chain(ours, dim, 0.42, 300)
    assert theirs_steps.mean() > 40
    assert our_steps.mean() <= 15
    for draws in (theirs_draws[50:], our_draws[50:]):
        assert abs(draws.mean()) < 0.02 and abs(draws.var() - 1) < 0.03  # 250 x 179 values


@pytest.mark.parametrize("metric", ["dense", "diagonal"])
def test_draws_have_the_target_moments(metric):
    """A correlated Gaussian (sds 0.3 .. 3, correlation 0.8) under a metric that does not match it."""
    rng = np.random.default_rng(1)
    dim = 5
    sds = np.array([0.3, 0.7, 1.0, 2.0, 3.0])
    corr = 0.8 * np.ones((dim, dim)) + 0.2 * np.eye(dim)
    cov = corr * np.outer(sds, sds)
    precision = jnp.asarray(np.linalg.inv(cov))
    mean = rng.normal(size=dim)
    potential = lambda z: 0.5 * (z["x"] - mean) @ precision @ (z["x"] - mean)
    inverse_mass = jnp.asarray(np.diag(sds ** 2) if metric == "dense" else 0.5 * np.ones(dim))
    kernel = robust_sample_kernel(lambda: potential, 10)
    draws, _, _, _ = _gaussian_chain(kernel, dim, 0.15, 4000, inverse_mass=inverse_mass, potential=potential, seed=2)
    draws = draws[200:]
    halves = np.stack([draws[: len(draws) // 2], draws[len(draws) // 2:]])
    ess = effective_sample_size(halves)
    se = np.sqrt(np.diag(cov) / ess)
    assert np.all(np.abs(draws.mean(0) - mean) < 4.5 * se), (draws.mean(0) - mean) / se
    centred = draws - mean
    second = centred[:, :, None] * centred[:, None, :]
    ess2 = effective_sample_size(np.stack([second[: len(second) // 2], second[len(second) // 2:]]).reshape(2, -1, dim * dim))
    se2 = second.reshape(len(second), -1).std(0) / np.sqrt(ess2)
    assert np.all(np.abs(second.mean(0).ravel() - cov.ravel()) < 4.5 * se2)


def test_single_window_warmup_reaches_the_target_and_then_holds_the_step():
    """Dual averaging in one window from NumPyro's heuristic start: the draws' mean acceptance is near the target,
    the step size is constant after the warm-up, and no restart sends it back up in the warm-up's later part."""
    dim, warmup = 50, 300
    potential = lambda z: 0.5 * jnp.sum(z["x"] ** 2)
    kernel = single_window_step(robust_sample_kernel(lambda: potential, 10), warmup, 0.8)
    _, steps, accept, step_size = _gaussian_chain(lambda s: kernel(s, model_args=()), dim, 1.0, warmup + 600, num_warmup=warmup)
    assert np.all(step_size[warmup:] == step_size[warmup])
    assert 0.72 < accept[warmup:].mean() < 0.88
    assert np.all(step_size[50:warmup] < 3 * step_size[warmup])  # no restart from 10x a heuristic step
