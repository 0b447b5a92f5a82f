"""models/density vs scipy.stats.multivariate_normal (a reference no one here wrote)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import models
from conftest import random_params


def scipy_joint(params, x):
    covs = np.asarray(models.covariances(params))
    return np.stack(
        [np.log(params.weights[k]) + np.atleast_1d(multivariate_normal.logpdf(x, params.means[k], covs[k])) for k in range(len(params.weights))],
        axis=1,
    ).reshape(len(x), -1)


@pytest.mark.parametrize(
    "num_components,num_features,condition",
    [(1, 1, 1.0), (3, 1, 1.0), (2, 2, 10.0), (4, 5, 1e3), (3, 8, 1e6), (2, 3, 1e9)],
)
def test_density_matches_scipy(rng, num_components, num_features, condition):
    params = random_params(rng, num_components, num_features, condition)
    x = rng.normal(scale=3.0, size=(50, num_features))
    ref = scipy_joint(params, x)
    joint = np.asarray(models.component_log_prob(params, x))
    assert joint.shape == (50, num_components)
    # relative to the magnitude of the log density (ill-conditioned covariances give huge Mahalanobis terms)
    np.testing.assert_allclose(joint, ref, rtol=1e-8 * max(1.0, condition**0.5 / 1e3), atol=1e-8)
    np.testing.assert_allclose(models.pointwise_log_likelihood(params, x), logsumexp(ref, axis=1), rtol=1e-8 * max(1.0, condition**0.5 / 1e3))
    np.testing.assert_allclose(models.log_likelihood(params, x), logsumexp(ref, axis=1).sum(), rtol=1e-8 * max(1.0, condition**0.5 / 1e3))
    resp = np.asarray(models.responsibilities(params, x))
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(resp, np.exp(ref - logsumexp(ref, axis=1, keepdims=True)), atol=1e-8)


def test_density_far_from_every_component_is_finite(rng):
    """The seed added 1e-10 inside the log; log-space must stay exact where densities underflow."""
    params = random_params(rng, 3, 2)
    x = np.array([[1e3, -1e3]])
    ref = scipy_joint(params, x)
    np.testing.assert_allclose(models.pointwise_log_likelihood(params, x), logsumexp(ref, axis=1), rtol=1e-10)
    assert np.all(np.isfinite(np.asarray(models.responsibilities(params, x))))


def test_density_is_jittable_and_float32(rng):
    params = random_params(rng, 3, 4, 10.0)
    x = rng.normal(size=(20, 4))
    ref = np.asarray(models.log_likelihood(params, x))
    params32 = models.GMMParams(*(jnp.asarray(a, jnp.float32) for a in params))
    out32 = jax.jit(models.log_likelihood)(params32, x.astype(np.float32))
    assert out32.dtype == jnp.float32
    np.testing.assert_allclose(out32, ref, rtol=1e-5)


def test_gaussian_kl_matches_closed_form(rng):
    p = random_params(rng, 2, 3, 100.0)
    s0, s1 = np.asarray(models.covariances(p))
    m0, m1 = np.asarray(p.means)
    ref = 0.5 * (np.trace(np.linalg.solve(s1, s0)) + (m1 - m0) @ np.linalg.solve(s1, m1 - m0) - 3 + np.log(np.linalg.det(s1) / np.linalg.det(s0)))
    np.testing.assert_allclose(models.gaussian_kl(p.means[0], p.scale_tril[0], p.means[1], p.scale_tril[1]), ref, rtol=1e-9)


def test_small_lapack_batches_equal_one_call():
    """models.linalg: a batch above the inline limit, mapped in small LAPACK calls, equals one batched call
    (and numpy) to 1e-12; below the limit it IS one call."""
    import jax.numpy as jnp
    from jax.scipy.linalg import solve_triangular

    from models import linalg

    rng = np.random.default_rng(0)
    a = rng.normal(size=(11, 13, 6, 6))
    spd = a @ np.swapaxes(a, -1, -2) + 6 * np.eye(6)
    assert 11 * 13 > linalg.SMALL_WORK // 6**3
    lower = np.asarray(linalg.cholesky(jnp.asarray(spd)))
    np.testing.assert_allclose(lower, np.linalg.cholesky(spd), rtol=1e-12, atol=1e-12)
    whiten = np.asarray(linalg.inverse_lower(jnp.asarray(lower)))
    direct = np.asarray(solve_triangular(lower, np.broadcast_to(np.eye(6), lower.shape), lower=True))
    np.testing.assert_allclose(whiten, direct, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whiten @ lower, np.broadcast_to(np.eye(6), lower.shape), atol=1e-12)
    assert linalg.vmap_is_safe(1, 8) and not linalg.vmap_is_safe(10, 8) and not linalg.vmap_is_safe(1, 64)


def _draws(rng, num_draws, num_components, num_features, condition=10.0, scale=1.0, offset=0.0):
    params = [random_params(rng, num_components, num_features, condition) for _ in range(num_draws)]
    return models.GMMParams(np.stack([p.weights for p in params]), scale * np.stack([p.means for p in params]) + offset,
                            scale * np.stack([p.scale_tril for p in params]))


@pytest.mark.parametrize("num_components,num_features", [(1, 1), (3, 2), (4, 5)])
def test_draws_pointwise_matches_scipy_on_ordinary_and_hostile_draws(rng, num_components, num_features):
    """The report's batched pointwise density (one matmul of quadratic features) equals the whitened density and
    scipy per draw and row; where the expansion would cancel (components 1e-4 wide at 1e3 from the rows' centre)
    its rounding bound says so and the draw is recomputed by the whitened difference."""
    from models.density import QUADRATIC_MAX_ERROR, _draws_quadratic, draws_pointwise_log_likelihood

    x = rng.normal(scale=2.0, size=(300, num_features)) + 5.0
    ordinary = _draws(rng, 7, num_components, num_features)
    hostile = _draws(rng, 3, num_components, num_features, scale=1e-4, offset=1e3)
    x_hostile = np.concatenate([x[:150], hostile.means[0, 0] + 1e-4 * rng.normal(size=(150, num_features))])
    # scipy centres each row on the mean; the whitened W x - W mu loses ~eps |W x| there (1e-8 nats at |W x| ~ 1e7)
    for params, rows, atol in ((ordinary, x, 1e-9), (hostile, x_hostile, 1e-6)):
        blocks = list(draws_pointwise_log_likelihood(params, rows, max_values=3 * rows.shape[0] * num_components))
        assert [start for start, _ in blocks] == list(range(0, len(params.weights), 3))  # blocks of 3, the last padded
        got = np.concatenate([values for _, values in blocks])
        assert got.shape == (len(params.weights), rows.shape[0])
        for i in range(len(params.weights)):
            draw = models.GMMParams(*(a[i] for a in params))
            np.testing.assert_allclose(got[i], models.pointwise_log_likelihood(draw, rows), rtol=1e-12, atol=QUADRATIC_MAX_ERROR)
            np.testing.assert_allclose(got[i], logsumexp(scipy_joint(draw, rows), axis=1), rtol=1e-10, atol=atol)
    def bound(params, rows):
        center = rows.mean(0)
        features = models.quadratic.quadratic_features(jnp.asarray(rows - center), True)
        return np.asarray(_draws_quadratic(params, features, jnp.max(jnp.abs(features), 0), jnp.asarray(center))[1])

    assert np.all(bound(ordinary, x) < QUADRATIC_MAX_ERROR)  # the one-matmul path answered
    assert np.all(bound(hostile, x_hostile) > QUADRATIC_MAX_ERROR)  # the fallback was needed, and taken
    with pytest.raises(ValueError, match="x: rows with NaN"):
        next(draws_pointwise_log_likelihood(ordinary, np.where(np.eye(300, num_features) > 0, np.nan, x)))
