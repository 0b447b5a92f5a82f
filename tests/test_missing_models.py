"""models.missing: the observed-data density, responsibilities and imputation against scipy brute force."""

import jax
import numpy as np
import pytest
import scipy.stats as st
from scipy.special import logsumexp

import models
from models.missing import missing_patterns, observed_component_log_prob


def _problem(seed, num_components=3, num_features=4):
    rng = np.random.default_rng(seed)
    covs = []
    for _ in range(num_components):
        a = rng.normal(size=(num_features, num_features))
        covs.append(a @ a.T + 0.3 * np.eye(num_features))
    params = models.from_covariances(rng.dirichlet(np.ones(num_components)), 3 * rng.normal(size=(num_components, num_features)),
                                     np.array(covs))
    return params, rng


def _brute_joint(params, x):
    """log w_k + log N(x_o | mu_o, Sigma_oo) row by row with scipy (each row's own sub-vector)."""
    w, mu, cov = np.asarray(params.weights), np.asarray(params.means), np.asarray(models.covariances(params))
    out = np.zeros((x.shape[0], w.size))
    for n, row in enumerate(x):
        o = ~np.isnan(row)
        for k in range(w.size):
            dens = st.multivariate_normal(mu[k, o], cov[k][np.ix_(o, o)]).logpdf(row[o]) if o.any() else 0.0
            out[n, k] = np.log(w[k]) + dens
    return out


def _holes(rng, x, fraction):
    x = x.copy()
    x[rng.random(x.shape) < fraction] = np.nan
    return x


def test_observed_density_equals_scipy_row_by_row():
    params, rng = _problem(0)
    x = _holes(rng, 3 * rng.normal(size=(300, 4)), 0.3)
    x[0] = np.nan  # nothing observed: density 1
    x[1] = [np.nan, np.nan, 0.7, np.nan]  # one observed column
    ref = _brute_joint(params, x)
    np.testing.assert_allclose(np.asarray(observed_component_log_prob(params, x)), ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(float(models.log_likelihood(params, x)), logsumexp(ref, axis=1).sum(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(models.pointwise_log_likelihood(params, x)), logsumexp(ref, axis=1), atol=1e-10)
    np.testing.assert_allclose(np.asarray(models.responsibilities(params, x)),
                               np.exp(ref - logsumexp(ref, axis=1, keepdims=True)), atol=1e-12)
    assert float(models.pointwise_log_likelihood(params, x)[0]) == pytest.approx(0.0, abs=1e-12)


def test_complete_rows_take_the_complete_formula_unchanged():
    params, rng = _problem(1)
    x = rng.normal(size=(50, 4))
    complete = models.density._component_log_prob(params, x)
    assert np.array_equal(np.asarray(models.component_log_prob(params, x)), np.asarray(complete))
    # the masked formula agrees on complete rows too (to rounding)
    np.testing.assert_allclose(np.asarray(observed_component_log_prob(params, x)), np.asarray(complete), atol=1e-10)


def test_vmapped_over_parameter_draws_with_holes():
    params, rng = _problem(2, num_features=3)
    x = _holes(rng, rng.normal(size=(40, 3)), 0.3)
    means = np.stack([np.asarray(params.means) + d for d in (0.0, 0.5)])
    got = jax.vmap(lambda m: models.pointwise_log_likelihood(params._replace(means=m), x))(means)
    for i, m in enumerate(means):
        ref = logsumexp(_brute_joint(params._replace(means=m), x), axis=1)
        np.testing.assert_allclose(np.asarray(got[i]), ref, atol=1e-10)


def test_impute_is_the_mixture_weighted_conditional_mean_and_sd():
    params, rng = _problem(3)
    x = _holes(rng, 3 * rng.normal(size=(60, 4)), 0.4)
    mean, sd = models.impute(params, x, return_std=True)
    mean, sd = np.asarray(mean), np.asarray(sd)
    w, mu, cov = np.asarray(params.weights), np.asarray(params.means), np.asarray(models.covariances(params))
    joint = _brute_joint(params, x)
    for n, row in enumerate(x):
        o, m = ~np.isnan(row), np.isnan(row)
        np.testing.assert_array_equal(mean[n, o], row[o])
        assert np.all(sd[n, o] == 0)
        if not m.any():
            continue
        r = np.exp(joint[n] - logsumexp(joint[n]))
        cm, cv = [], []
        for k in range(w.size):
            if o.any():
                gain = np.linalg.solve(cov[k][np.ix_(o, o)], cov[k][np.ix_(o, m)]).T
                cm.append(mu[k, m] + gain @ (row[o] - mu[k, o]))
                cv.append(np.diag(cov[k][np.ix_(m, m)] - gain @ cov[k][np.ix_(o, m)]))
            else:
                cm.append(mu[k, m])
                cv.append(np.diag(cov[k])[m])
        ref_mean = sum(r[k] * cm[k] for k in range(w.size))
        ref_var = sum(r[k] * (cv[k] + cm[k] ** 2) for k in range(w.size)) - ref_mean**2
        np.testing.assert_allclose(mean[n, m], ref_mean, atol=1e-10)
        np.testing.assert_allclose(sd[n, m], np.sqrt(ref_var), atol=1e-8)


def test_impute_recovers_a_strongly_correlated_coordinate():
    """One component, correlation 0.99: the missing coordinate is predicted from the other within
    its conditional sd sqrt(1 - 0.99^2) ~ 0.14 (regression to the mean, not the column mean)."""
    params = models.from_covariances([1.0], [[0.0, 0.0]], [[[1.0, 0.99], [0.99, 1.0]]])
    x = np.array([[2.0, np.nan], [np.nan, -1.5]])
    mean, sd = models.impute(params, x, return_std=True)
    np.testing.assert_allclose(np.asarray(mean), [[2.0, 1.98], [-1.485, -1.5]], atol=1e-12)
    np.testing.assert_allclose(np.asarray(sd)[[0, 1], [1, 0]], np.sqrt(1 - 0.99**2), atol=1e-12)


def test_patterns_are_found_in_first_seen_order():
    x = np.array([[1.0, 2.0], [np.nan, 1.0], [3.0, 4.0], [np.nan, np.nan], [np.nan, 5.0]])
    found = missing_patterns(x)
    np.testing.assert_array_equal(found.observed, [[True, True], [False, True], [False, False]])
    np.testing.assert_array_equal(found.index, [0, 1, 0, 2, 1])
    np.testing.assert_array_equal(found.counts, [2, 2, 1])


def test_float32_parameters_stay_float32_with_holes():
    params, rng = _problem(4, num_features=2)
    p32 = models.GMMParams(*(np.asarray(a, np.float32) for a in params))
    x = _holes(rng, rng.normal(size=(30, 2)), 0.3).astype(np.float32)
    got = models.log_likelihood(p32, x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(float(got), float(models.log_likelihood(params, x.astype(np.float64))), rtol=1e-5)
