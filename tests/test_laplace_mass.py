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
    common = dict(num_warmup=300, num_samples=600, progress=False, num_assignment_draws=0)
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
        assert 2 * 300 <= result.info["warmup_leapfrog_steps"] <= 2 * 300 * 1023


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
