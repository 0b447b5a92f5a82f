"""GMMParams construction/validation and sampling from the declared NumPyro model."""

import jax
import numpy as np
import pytest

import models


def test_from_covariances_round_trip(rng):
    covs = np.array([[[2.0, 0.3], [0.3, 1.0]], [[0.5, -0.1], [-0.1, 0.4]]])
    params = models.from_covariances([0.4, 0.6], [[0, 1], [2, 3]], covs)
    np.testing.assert_allclose(models.covariances(params), covs, rtol=1e-12)
    np.testing.assert_allclose(np.triu(params.scale_tril[0], 1), 0)


@pytest.mark.parametrize(
    "weights,means,covs,match",
    [
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights"),
        ([0.5, 0.5], [[0.0], [1.0], [2.0]], [[[1.0]], [[1.0]]], "means"),
        ([0.5, 0.5], [[0.0], [1.0]], [[[1.0]]], "covariances"),
        ([0.5, 0.5], [[0.0], [np.nan]], [[[1.0]], [[1.0]]], "means"),
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), [[1.0, 2.0], [2.0, 1.0]]], "positive definite"),
        ([0.5, 0.5], [[0.0, 0.0], [1.0, 1.0]], [np.eye(2), [[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([-0.5, 1.5], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "weights"),
    ],
)
def test_from_covariances_rejects_bad_params(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        models.from_covariances(weights, means, covs)


def test_permute_reorders_every_field(rng):
    params = models.from_covariances([0.2, 0.3, 0.5], rng.normal(size=(3, 2)), np.stack([np.eye(2) * s for s in (1, 2, 3)]))
    out = models.permute(params, np.array([2, 0, 1]))
    np.testing.assert_allclose(out.weights, [0.5, 0.2, 0.3])
    np.testing.assert_allclose(out.means[0], params.means[2])
    np.testing.assert_allclose(out.scale_tril[1], params.scale_tril[0])


def test_sites_round_trip(rng):
    covs = np.array([[[2.0, 0.3, 0.1], [0.3, 1.0, 0.2], [0.1, 0.2, 0.7]]] * 2)
    params = models.from_covariances([0.5, 0.5], rng.normal(size=(2, 3)), covs)
    sites = models.sites_from_params(params)
    np.testing.assert_allclose(np.linalg.norm(sites["corr_chol"], axis=-1), 1.0)
    back = models.params_from_sites(sites)
    np.testing.assert_allclose(back.scale_tril, params.scale_tril, atol=1e-12)


def test_sample_moments_match_truth():
    """200k draws from the model run forward match the true weights, means and covariances."""
    truth = models.from_covariances(
        [0.2, 0.5, 0.3],
        [[0.0, 0.0, 0.0], [4.0, -1.0, 2.0], [-3.0, 3.0, 1.0]],
        [np.eye(3), [[2.0, 0.6, 0.0], [0.6, 1.0, -0.3], [0.0, -0.3, 0.5]], np.diag([0.3, 2.0, 1.0])],
    )
    n = 200_000
    x, z = models.sample(jax.random.PRNGKey(42), truth, n)
    x, z = np.asarray(x), np.asarray(z)
    assert x.shape == (n, 3) and z.shape == (n,)
    counts = np.bincount(z, minlength=3)
    w = np.asarray(truth.weights)
    # 4 binomial standard errors
    np.testing.assert_array_less(np.abs(counts / n - w), 4 * np.sqrt(w * (1 - w) / n))
    covs = np.asarray(models.covariances(truth))
    for k in range(3):
        xs = x[z == k]
        se = np.sqrt(np.diag(covs[k]) / len(xs))
        np.testing.assert_array_less(np.abs(xs.mean(0) - truth.means[k]), 4 * se)
        np.testing.assert_allclose(np.cov(xs.T), covs[k], atol=0.03 * np.abs(covs[k]).max())


def test_sample_is_reproducible_and_one_dimensional():
    truth = models.from_covariances([0.5, 0.5], [[-2.0], [2.0]], [[[1.0]], [[0.25]]])
    x1, z1 = models.sample(jax.random.PRNGKey(3), truth, 1000)
    x2, z2 = models.sample(jax.random.PRNGKey(3), truth, 1000)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(z1, z2)
    assert x1.shape == (1000, 1)
    assert abs(np.asarray(x1)[np.asarray(z1) == 1].std() - 0.5) < 0.05
