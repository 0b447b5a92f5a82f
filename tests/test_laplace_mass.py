"""NUTS's Laplace mass matrix (inference.laplace_mass): the matrix is the inverse of the potential's Hessian at the
start (reference: central finite differences of NumPyro's gradient), and NUTS with it samples the same posterior as
NUTS with its mass matrix adapted from draws (reference: the default run, within Monte Carlo error)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

import models
from inference import fit
from inference._numpyro_common import enumerated, make_model, model_sites, unconstrain_fn
from inference.laplace_mass import build_laplace_inverse_mass


def _data(n=400, seed=0):
    truth = models.seed_problem()
    x, _ = models.sample(jax.random.PRNGKey(seed), truth, n)
    return np.asarray(x, np.float64), truth


def test_inverse_mass_is_the_inverse_hessian_of_the_potential():
    x, truth = _data()
    start = unconstrain_fn(2, 2)(model_sites(truth, x.dtype))
    inverse_mass, ok = jax.jit(build_laplace_inverse_mass(2, ()))(start, jnp.asarray(x), None, None)
    assert bool(ok)
    flat, unravel = ravel_pytree(start)
    grad = jax.jit(jax.grad(lambda v: potential_energy(enumerated(make_model(2)), (jnp.asarray(x), None, None), {},
                                                       unravel(v), enum=True)))
    step = 1e-5
    eye = np.eye(flat.size)
    hessian_fd = np.stack([(np.asarray(grad(flat + step * e)) - np.asarray(grad(flat - step * e))) / (2 * step) for e in eye])
    hessian_fd = 0.5 * (hessian_fd + hessian_fd.T)
    np.testing.assert_allclose(np.linalg.inv(np.asarray(inverse_mass)), hessian_fd, rtol=1e-5,
                               atol=1e-6 * np.abs(hessian_fd).max())
    np.testing.assert_allclose(np.asarray(inverse_mass), np.asarray(inverse_mass).T, atol=1e-12)


def test_an_indefinite_hessian_is_refused():
    """At a point that is not a mode in every direction the matrix is not used (ok False)."""
    x, truth = _data()
    far = truth._replace(means=np.asarray(truth.means) + 40.0)  # both components far from every row: not a mode
    start = unconstrain_fn(2, 2)(model_sites(far, x.dtype))
    flat, unravel = ravel_pytree(start)
    hessian = jax.hessian(lambda v: potential_energy(enumerated(make_model(2)), (jnp.asarray(x), None, None), {},
                                                     unravel(v), enum=True))(flat)
    positive = bool(np.all(np.linalg.eigvalsh(np.asarray(hessian)) > 0))
    _, ok = jax.jit(build_laplace_inverse_mass(2, ()))(start, jnp.asarray(x), None, None)
    assert bool(ok) == positive


@pytest.mark.parametrize("seed", [0])
def test_nuts_with_the_laplace_mass_samples_the_same_posterior(seed):
    x, _ = _data(500, seed)
    # the engine's defaults: with 2 x (300 + 600) the adapted run's R-hat came out 1.011 on an AMD EPYC host
    common = dict(num_warmup=500, num_samples=1000, progress=False, num_assignment_draws=0)
    laplace = fit("nuts", jax.random.PRNGKey(seed), x, 2, laplace_mass=True, **common)
    adapted = fit("nuts", jax.random.PRNGKey(seed), x, 2, laplace_mass=False, dense_mass=True, **common)  # same MAP start and pivot
    assert laplace.info["options"]["laplace_mass"] is True and laplace.info["options"]["dense_mass"] is True
    assert adapted.info["options"]["laplace_mass"] is False
    assert laplace.converged and adapted.converged
    for got, want, draws_a, draws_b in zip(laplace.params, adapted.params, laplace.samples, adapted.samples):
        sd = np.sqrt(np.var(np.asarray(draws_a), axis=(0, 1)) + np.var(np.asarray(draws_b), axis=(0, 1)))
        # posterior means of two independent runs differ by ~ sd * sqrt(1/ESS_a + 1/ESS_b); min ESS >= 100 each
        np.testing.assert_array_less(np.abs(np.asarray(got) - np.asarray(want)), 0.5 * sd + 1e-12)
    assert np.mean(laplace.trace["num_steps"]) <= np.mean(adapted.trace["num_steps"]) + 2
    for result in (laplace, adapted):  # every warm-up iteration takes 1 .. 2^max_tree_depth - 1 leapfrog steps
        assert 2 * 500 <= result.info["warmup_leapfrog_steps"] <= 2 * 500 * 1023


def test_chains_start_a_few_posterior_sds_apart_with_the_laplace_matrix():
    """With a Laplace matrix the other chains start at ``start + N(0, (4 x init_jitter)^2 H^-1)``: their whitened
    distance from the first start is ~2 sqrt(P) at the default jitter 0.5, whatever the posterior's scale (a fixed
    unconstrained jitter of 0.5 is ~100 posterior sds at N = 50,000)."""
    from inference.numpyro_nuts import LAPLACE_JITTER_SDS, _dispersed_starts

    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 60))
    inverse_mass = 1e-6 * (a @ a.T / 60 + np.eye(60))  # a tight posterior, correlated
    start = {"locs": jnp.asarray(rng.normal(size=(20, 2))), "scale": jnp.asarray(rng.normal(size=20))}
    starts = _dispersed_starts(jax.random.PRNGKey(1), start, 3, 0.5, jnp.asarray(inverse_mass))
    flat0, _ = ravel_pytree(start)
    lower = np.linalg.cholesky(inverse_mass)
    for chain in range(3):
        flat, _ = ravel_pytree(jax.tree.map(lambda v: v[chain], starts))
        distance = np.linalg.norm(np.linalg.solve(lower, np.asarray(flat - flat0))) / np.sqrt(60)
        if chain == 0:
            assert distance == 0.0
        else:
            assert abs(distance - LAPLACE_JITTER_SDS * 0.5) < 0.6


def _warmup(steps, step_size, divergent_at=(), chains=None):
    """Warm-up records of 200 iterations (iterations on the last axis when ``chains`` is given)."""
    diverging = np.zeros(200, bool)
    diverging[list(divergent_at)] = True
    record = dict(num_steps=np.full(200, steps), diverging=diverging, step_size=np.full(200, step_size))
    return record if chains is None else {name: np.stack([value] * chains) for name, value in record.items()}


def test_the_laplace_warmup_verdict_reads_divergences_and_tree_sizes_in_the_second_half():
    from functools import partial

    from inference.laplace_mass import ORBIT_MARGIN, STEP_MARGIN, gaussian_step_size, laplace_warmup_verdict

    verdict = partial(laplace_warmup_verdict, num_params=100)  # a standard normal's step there: 0.52
    assert gaussian_step_size(100) == pytest.approx(0.52, abs=0.005) and gaussian_step_size(179) == 0.45
    assert verdict(_warmup(7, 0.5), 0) is None  # a Gaussian's trees at step 0.5: ~pi / 0.5 steps
    assert verdict(_warmup(7, 0.5, divergent_at=(3, 40)), 0) is None  # early, while the step is found
    assert "1 divergent" in verdict(_warmup(7, 0.5, divergent_at=(150,)), 0)
    bar = ORBIT_MARGIN * np.pi / 0.5
    assert verdict(_warmup(int(bar) - 1, 0.5), 0) is None
    assert "leapfrog steps" in verdict(_warmup(int(bar) + 1, 0.5), 0)
    # a step that had to shrink far below a Gaussian's (12 rows fitted with K = 4: 0.02 of it), trees under its bar
    low = STEP_MARGIN * gaussian_step_size(100)
    assert verdict(_warmup(30, 1.05 * low), 0) is None
    assert "step size fell" in verdict(_warmup(30, 0.95 * low), 0)
    # every chain's warm-up at once (vectorised chains: iterations on axis 1)
    assert verdict(_warmup(7, 0.5, chains=2), 1) is None
    both = _warmup(7, 0.5, chains=2)
    both["diverging"][1, 199] = True
    assert "1 divergent" in verdict(both, 1)


def test_auto_keeps_the_laplace_metric_where_the_posterior_is_gaussian():
    """The seed problem (14 parameters): "auto" tries the Laplace metric on the first chain, its warm-up passes,
    and the run is the ``laplace_mass=True`` run draw for draw (same keys, same starts)."""
    x, _ = _data(500, 0)
    # One divergent transition in the trial's warm-up flips "auto" to the adapted metric, so the outcome is a draw:
    # with the Adam MAP start 19 of keys 0-19 kept the Laplace metric, with the ECM start (the default since session
    # 17, the same mode to 1e-6 nats) 15 of 20 (Fisher's exact p ~ 0.18). This test pins the start it was written on.
    common = dict(num_warmup=200, num_samples=300, progress=False, num_assignment_draws=0,
                  map_options=dict(optimizer="adam"))
    auto = fit("nuts", jax.random.PRNGKey(3), x, 2, **common)
    forced = fit("nuts", jax.random.PRNGKey(3), x, 2, laplace_mass=True, **common)
    assert auto.info["options"]["laplace_mass"] is True and auto.info["laplace_trial_seconds"] == 0.0
    for a, b in zip(auto.samples, forced.samples):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_auto_falls_back_to_the_adapted_metric_where_the_posterior_is_not_gaussian():
    """400 rows of one Gaussian fitted with K = 2: the posterior has a ridge (the second component has no data of
    its own) that the curvature at the mode does not describe; under the Laplace metric the first chain's warm-up
    builds trees of 130-270 leapfrog steps against the ~17 a Gaussian needs. "auto" sees it and runs every chain
    again with the adapted metric: the same draws as ``laplace_mass=False``, the trial's seconds counted."""
    x = np.random.default_rng(0).normal(size=(400, 2))
    common = dict(num_warmup=200, num_samples=200, progress=False, num_assignment_draws=0)
    auto = fit("nuts", jax.random.PRNGKey(0), x, 2, **common)
    adapted = fit("nuts", jax.random.PRNGKey(0), x, 2, laplace_mass=False, **common)
    reason = auto.info["options"]["laplace_mass"]
    assert isinstance(reason, str) and reason.startswith("tried; adapted from draws instead"), reason
    assert auto.info["options"]["dense_mass"] is True and auto.info["laplace_trial_seconds"] > 0
    assert auto.info["run_seconds"] > auto.info["laplace_trial_seconds"] - auto.info["compile_seconds"]
    for a, b in zip(auto.samples, adapted.samples):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert auto.converged == adapted.converged and auto.info["warnings"] == adapted.info["warnings"]
