"""The NumPyro model's likelihood as one matmul (``models.gmm.ComponentNormal``, issue 24): the same numbers as
NumPyro's own ``MultivariateNormal``, the same enumerated log joint, the same gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

import models
from models.gmm import ComponentNormal, GaussianMixtureRows, log_prior
from inference._numpyro_common import enumerated_log_joint


def random_params(rng, num_components, num_features):
    a = rng.normal(size=(num_components, num_features, num_features)) * 0.5
    covs = a @ np.swapaxes(a, -1, -2) + 0.3 * np.eye(num_features)
    weights = rng.dirichlet(np.ones(num_components) * 2)
    return models.from_covariances(weights, rng.normal(size=(num_components, num_features)), covs)


def standardised_rows(rng, num_rows, num_features):
    x = rng.normal(size=(num_rows, num_features)) * 1.5 + 0.3
    return (x - x.mean(0)) / x.std(0)


@pytest.mark.parametrize("num_components", [1, 2, 3, 4])
@pytest.mark.parametrize("num_features", [1, 2, 3, 4, 5])
def test_log_prob_equals_numpyro_multivariate_normal(num_components, num_features):
    rng = np.random.default_rng(10 * num_components + num_features)
    params = random_params(rng, num_components, num_features)
    x = jnp.asarray(standardised_rows(rng, 60, num_features))
    means, lower = jnp.asarray(params.means), jnp.asarray(params.scale_tril)
    enumerated_z = jnp.arange(num_components)[:, None]  # what funsor's parallel enumeration passes
    drawn_z = jnp.asarray(rng.integers(0, num_components, 60))
    for z, shape in ((enumerated_z, (num_components, 60)), (drawn_z, (60,)), (drawn_z[None, :].repeat(3, 0), (3, 60))):
        got = ComponentNormal(means, lower, z).log_prob(x)
        reference = dist.MultivariateNormal(means[z], scale_tril=lower[z]).log_prob(x)
        assert got.shape == shape
        np.testing.assert_allclose(got, reference, rtol=1e-12, atol=1e-12)
    mixture = GaussianMixtureRows(jnp.asarray(params.weights), means, lower, 60).log_prob(x)
    reference = dist.MixtureSameFamily(dist.Categorical(jnp.asarray(params.weights)),
                                       dist.MultivariateNormal(means, scale_tril=lower)).log_prob(x)
    np.testing.assert_allclose(mixture, reference, rtol=1e-12, atol=1e-12)


def test_float32_rows_are_scored_in_float64():
    """float32 rows: the table is computed in float64 (the expanded quadratic form in float32 would lose a
    narrow component far from the origin) and returned in float32."""
    rng = np.random.default_rng(3)
    means = jnp.asarray([[0.0, 0.0], [3.0, -3.0]], jnp.float32)
    lower = jnp.asarray([np.eye(2), 1e-3 * np.eye(2)], jnp.float32)
    x = (means[1] + 1e-3 * rng.normal(size=(50, 2))).astype(np.float32)
    got = ComponentNormal(means, lower, jnp.arange(2)[:, None]).log_prob(jnp.asarray(x))
    reference = dist.MultivariateNormal(means.astype(jnp.float64), scale_tril=lower.astype(jnp.float64)).log_prob(
        jnp.asarray(x, np.float64)[:, None, :]).T
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, reference, rtol=1e-6)


@pytest.mark.parametrize("num_components, num_features", [(1, 3), (2, 1), (3, 2), (4, 5)])
@pytest.mark.parametrize("weighted", [False, True])
def test_enumerated_log_joint_and_gradient_unchanged(num_components, num_features, weighted):
    """NumPyro's enumerated log joint (z summed out by funsor) = models.log_likelihood + log_prior, and so are its
    gradients (the model's likelihood against the triangular-solve density of models.density)."""
    rng = np.random.default_rng(num_components + 7 * num_features)
    params = random_params(rng, num_components, num_features)
    x = standardised_rows(rng, 80, num_features)
    weights = jnp.asarray(rng.uniform(0.2, 2.0, 80)) if weighted else None

    def reference(p):
        pointwise = models.pointwise_log_likelihood(p, jnp.asarray(x))
        return jnp.sum(pointwise if weights is None else weights * pointwise) + log_prior(p)

    def model_joint(p):
        return enumerated_log_joint(p, x, weights)

    p = models.GMMParams(*(jnp.asarray(a) for a in params))
    np.testing.assert_allclose(model_joint(p), reference(p), rtol=1e-10)
    got, want = jax.grad(model_joint)(p), jax.grad(reference)(p)
    for name, g, w in zip(models.GMMParams._fields, got, want):
        if name == "weights" and num_components == 1:
            continue  # one component: the weight is 1, not a site of the model (the reference differentiates log w)
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9 * max(1.0, float(jnp.max(jnp.abs(w)))))
