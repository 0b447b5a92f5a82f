"""Hand-written EM / hard EM against sklearn's GaussianMixture, brute force and properties."""

import warnings

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment
from sklearn.mixture import GaussianMixture

import models
from inference import FitResult, fit
from inference.em import _COMPILED


def precisions_for_sklearn(params, covariance_type):
    covs = np.asarray(models.covariances(params))
    if covariance_type == "full":
        return np.linalg.inv(covs)
    if covariance_type == "tied":
        return np.linalg.inv(covs[0])
    if covariance_type == "diag":
        return 1.0 / np.diagonal(covs, axis1=1, axis2=2)
    return 1.0 / covs[:, 0, 0]


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_em_matches_sklearn_lower_bound_per_iteration(rng, covariance_type):
    """Same init, tol=0, same max_iter: identical per-iteration lower bound (rtol 1e-8, float64)."""
    x = np.concatenate([rng.normal(size=(150, 3)) + [3, 0, 0], rng.normal(size=(200, 3)) * [1, 2, 0.5], rng.normal(size=(100, 3)) - 3])
    first = fit("em", jax.random.PRNGKey(0), x, 3, covariance_type=covariance_type, init="random_from_data", max_iters=1)
    init = models.GMMParams(*(np.asarray(a[0]) for a in first.info["snapshots"]))
    max_iter = 25
    ours = fit("em", jax.random.PRNGKey(0), x, 3, covariance_type=covariance_type, init=init, tol=0.0, max_iters=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sk = GaussianMixture(
            3, covariance_type=covariance_type, weights_init=np.asarray(init.weights), means_init=np.asarray(init.means),
            precisions_init=precisions_for_sklearn(init, covariance_type), tol=0.0, max_iter=max_iter, reg_covar=1e-6,
        ).fit(x)
    assert ours.num_iters == max_iter == sk.n_iter_
    lower_bounds = np.concatenate([[ours.info["initial_log_likelihood"]], ours.trace["log_likelihood"][:-1]]) / len(x)
    np.testing.assert_allclose(lower_bounds, sk.lower_bounds_, rtol=1e-8)
    np.testing.assert_allclose(ours.params.weights, sk.weights_, rtol=1e-8)
    np.testing.assert_allclose(ours.params.means, sk.means_, rtol=1e-8, atol=1e-10)
    sk_covs = sk.covariances_
    ours_covs = np.asarray(models.covariances(ours.params))
    expected = {"full": sk_covs, "tied": np.broadcast_to(sk_covs, ours_covs.shape),
                "diag": np.stack([np.diag(c) for c in np.atleast_2d(sk_covs)]),
                "spherical": np.stack([np.eye(3) * c for c in sk_covs])}[covariance_type]
    np.testing.assert_allclose(ours_covs, expected, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(ours.responsibilities, sk.predict_proba(x), atol=1e-8)


def test_elbo_and_kl_are_the_seed_quantities_brute_force(rng):
    """ELBO(q_t, theta_t) and KL = loglik - ELBO recomputed by brute force from the definitions."""
    x = rng.normal(size=(60, 2)) * [1.0, 2.0]
    res = fit("em", jax.random.PRNGKey(1), x, 2, tol=0.0, max_iters=6, init="random_from_data")
    snaps = res.info["snapshots"]
    iters = list(res.info["snapshot_iters"])
    for t in range(1, 6):
        if t not in iters or t - 1 not in iters:
            continue
        prev = models.GMMParams(*(np.asarray(a[iters.index(t - 1)]) for a in snaps))
        curr = models.GMMParams(*(np.asarray(a[iters.index(t)]) for a in snaps))
        q = np.asarray(models.responsibilities(prev, x))
        joint = np.asarray(models.component_log_prob(curr, x))
        elbo = np.sum(q * (joint - np.log(q)))
        np.testing.assert_allclose(res.trace["elbo"][t - 1], elbo, rtol=1e-10)
        np.testing.assert_allclose(res.trace["log_likelihood"][t - 1], models.log_likelihood(curr, x), rtol=1e-12)
    assert np.all(res.trace["kl"] >= -1e-8 * np.abs(res.trace["log_likelihood"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    num_components=st.integers(1, 4),
    num_features=st.integers(1, 3),
    covariance_type=st.sampled_from(["full", "diag", "spherical", "tied"]),
)
def test_em_log_likelihood_never_decreases(seed, num_components, num_features, covariance_type):
    rng = np.random.default_rng(seed)
    x = rng.standard_t(df=3, size=(80, num_features)) * rng.uniform(0.1, 10, size=num_features)
    res = fit("em", jax.random.PRNGKey(seed % 1000), x, num_components, covariance_type=covariance_type, tol=0.0, max_iters=30,
              init="random_from_data")
    ll = np.concatenate([[res.info["initial_log_likelihood"]], res.trace["log_likelihood"]])
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:])), np.diff(ll).min()


def align_to_truth(truth, params):
    """Hungarian matching on mean distances (scipy) -- never raw order."""
    cost = np.linalg.norm(np.asarray(truth.means)[:, None] - np.asarray(params.means)[None], axis=-1)
    _, perm = linear_sum_assignment(cost)
    return models.permute(params, perm)


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("init", ["random_from_data", "kmeans++", "kmeans"])
def test_recovers_seed_truth_after_alignment(seed_data, method, init):
    truth, x, _ = seed_data
    res = fit(method, jax.random.PRNGKey(7), x, 2, init=init, n_init=3)
    est = align_to_truth(truth, res.params)
    tol = {"em": (0.02, 0.06, 0.1), "hard_em": (0.06, 0.2, 0.3)}[method]
    np.testing.assert_allclose(est.weights, truth.weights, atol=tol[0])
    np.testing.assert_allclose(est.means, truth.means, atol=tol[1])
    np.testing.assert_allclose(models.covariances(est), models.covariances(truth), atol=tol[2])
    assert res.converged and isinstance(res, FitResult)


def test_hard_em_is_biased_on_overlap_but_agrees_with_em_when_separated(rng):
    """Sanity of the hard E-step: on well separated data hard EM and EM coincide."""
    x = np.concatenate([rng.normal(size=(300, 2)) - 8, rng.normal(size=(300, 2)) + 8])
    soft = fit("em", jax.random.PRNGKey(0), x, 2)
    hard = fit("hard_em", jax.random.PRNGKey(0), x, 2)
    np.testing.assert_allclose(align_to_truth(soft.params, hard.params).means, soft.params.means, atol=1e-6)
    assert set(np.unique(hard.responsibilities)) <= {0.0, 1.0}


def test_hard_em_survives_an_emptied_cluster_and_reports_it(rng):
    """A component placed far from every point gets no assignment: re-seeded, counted, no NaN."""
    x = np.concatenate([rng.normal(size=(200, 2)) - 3, rng.normal(size=(200, 2)) + 3])
    init = models.from_covariances([0.45, 0.45, 0.1], [[-3, -3], [3, 3], [1e3, 1e3]], np.stack([np.eye(2)] * 2 + [np.eye(2) * 1e-2]))
    res = fit("hard_em", jax.random.PRNGKey(0), x, 3, init=init)
    assert res.info["empty_cluster_events"] >= 1
    assert np.all(np.isfinite(res.params.means)) and np.all(np.isfinite(res.trace["log_likelihood"]))
    assert np.abs(res.params.means).max() < 20  # the far component was moved onto the data
    assert np.all(res.params.weights > 0)


def test_float32_and_jax_input(seed_data):
    truth, x, _ = seed_data
    # Run both to the fixed point (tol=0): float32 then agrees with float64 to float32 accuracy.
    res32 = fit("em", jax.random.PRNGKey(0), jax.numpy.asarray(x, jax.numpy.float32), 2, tol=0.0, max_iters=200)
    res64 = fit("em", jax.random.PRNGKey(0), x, 2, tol=0.0, max_iters=200)
    assert res32.params.means.dtype == np.float32 and res64.params.means.dtype == np.float64
    assert res32.responsibilities.dtype == np.float32
    np.testing.assert_allclose(align_to_truth(res64.params, res32.params).means, res64.params.means, atol=1e-4)
    np.testing.assert_allclose(res32.trace["log_likelihood"][-1], res64.trace["log_likelihood"][-1], rtol=1e-6)


def test_chunking_does_not_change_the_answer(rng):
    x = rng.normal(size=(1003, 3))
    a = fit("em", jax.random.PRNGKey(0), x, 3, chunk_size=100, tol=0.0, max_iters=10)
    b = fit("em", jax.random.PRNGKey(0), x, 3, chunk_size=4096, tol=0.0, max_iters=10)
    np.testing.assert_allclose(a.trace["log_likelihood"], b.trace["log_likelihood"], rtol=1e-12)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-9, atol=1e-12)


def test_n_init_keeps_the_best_and_is_reproducible(rng):
    x = np.concatenate([rng.normal(size=(100, 2)) + c for c in ([0, 0], [6, 0], [0, 6], [6, 6])])
    many = fit("em", jax.random.PRNGKey(3), x, 4, init="random_from_data", n_init=8)
    assert many.info["log_likelihood_per_init"].shape == (8,)
    assert many.info["log_likelihood_per_init"][many.info["best_init"]] == many.info["log_likelihood_per_init"].max()
    again = fit("em", jax.random.PRNGKey(3), x, 4, init="random_from_data", n_init=8)
    np.testing.assert_array_equal(many.params.means, again.params.means)


def test_second_fit_of_same_shapes_compiles_nothing(rng):
    x = rng.normal(size=(123, 2))
    fit("em", jax.random.PRNGKey(0), x, 2, max_iters=17)
    size = len(_COMPILED)
    res = fit("em", jax.random.PRNGKey(1), x + 1.0, 2, max_iters=17)
    assert len(_COMPILED) == size and res.info["compile_seconds"] == 0.0


BAD_X = [
    (np.array([[0.0, np.nan], [1.0, np.nan], [3.0, np.nan]]), "column 1 has no observed value"),  # NaN alone: missing
    (np.array([[0.0, np.inf], [1.0, 2.0], [3.0, 4.0]]), "inf"),
    (np.zeros(5), "2-D"),
    (np.zeros((2, 2, 2)), "2-D"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
]


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("x,match", BAD_X)
def test_bad_x_raises_one_line_value_error(method, x, match):
    with pytest.raises(ValueError, match=match) as info:
        fit(method, jax.random.PRNGKey(0), x, 2)
    assert "x" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "num_components,x,match",
    [
        (0, np.arange(10.0).reshape(5, 2), "num_components must be >= 1"),
        (6, np.arange(10.0).reshape(5, 2), "exceeds the number of rows"),
        (3, np.array([[1.0, 1.0]] * 4 + [[2.0, 2.0]] * 4), "distinct rows"),
        (2.5, np.arange(10.0).reshape(5, 2), "num_components must be an integer"),
    ],
)
def test_bad_num_components(num_components, x, match):
    with pytest.raises(ValueError, match=match):
        fit("em", jax.random.PRNGKey(0), x, num_components)


@pytest.mark.parametrize(
    "options,match",
    [
        ({"covariance_type": "banana"}, "covariance_type"),
        ({"reg_covar": -1.0}, "reg_covar"),
        ({"tol": float("nan")}, "tol"),
        ({"max_iters": 0}, "max_iters"),
        ({"n_init": 0}, "n_init"),
        ({"init": "magic"}, "init"),
        ({"init": models.GMMParams(np.array([0.5, 0.5]), np.zeros((2, 3)), np.stack([np.eye(3)] * 2))}, "init.means has 3 features"),
        ({"init": models.GMMParams(np.array([0.5, 0.5]), np.array([[0.0, np.nan], [1, 1]]), np.stack([np.eye(2)] * 2))}, "init contains NaN"),
        ({"init": models.GMMParams(np.array([0.9, 0.5]), np.zeros((2, 2)), np.stack([np.eye(2)] * 2))}, "init.weights"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        fit("em", jax.random.PRNGKey(0), np.random.default_rng(0).normal(size=(20, 2)), 2, **options)


def test_unknown_method():
    with pytest.raises(ValueError, match="method must be one of"):
        fit("kmeans_magic", jax.random.PRNGKey(0), np.zeros((4, 2)), 2)
