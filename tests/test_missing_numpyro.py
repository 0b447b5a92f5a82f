"""Missing values (NaN) in the NumPyro model and engines, and multiple imputation (issue 22, parts 1 and 3).

References: scipy's multivariate normal on each row's observed sub-vector (brute force), ``models.missing``
(the observed-data density), a direct L-BFGS optimisation of NumPyro's own log joint, and Monte Carlo.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.stats
from jax.flatten_util import ravel_pytree

import inference
import models
from inference._numpyro_common import enumerated_log_joint, missing_of, site_supports, to_constrained, to_unconstrained
from inference.imputation import multiple_imputations
from inference.standardize import standardizer, to_data
from models.gmm import MaskedGaussianMixture, MaskedMultivariateNormal, params_from_sites, sites_from_params
from models.missing import missing_patterns, pattern_tables, sample_missing

from conftest import random_params


def with_holes(x, rate, seed, full_rows=()):
    """``x`` with MCAR NaN holes at ``rate`` (and rows ``full_rows`` entirely missing)."""
    x = np.array(x, np.float64)
    x[np.random.default_rng(seed).uniform(size=x.shape) < rate] = np.nan
    x[list(full_rows)] = np.nan
    return x


@pytest.fixture(scope="module")
def holes_data():
    """Random K=3, D=4 mixture, 60 rows with 35% holes, row 0 all missing, row 1 with one value."""
    params = random_params(np.random.default_rng(7), 3, 4)
    x, _ = models.sample(jax.random.PRNGKey(3), params, 60)
    x = with_holes(x, 0.35, 1, full_rows=[0])
    x[1, 1:] = np.nan
    return params, x


@pytest.fixture(scope="module")
def seed_holes():
    """The seed problem, 500 rows, 15% MCAR holes, 2 rows with nothing observed: (truth, x with NaN, x complete)."""
    truth = models.seed_problem()
    x, _ = models.sample(jax.random.PRNGKey(0), truth, 500)
    return truth, with_holes(x, 0.15, 11, full_rows=[5, 6]), np.asarray(x)


@pytest.fixture(scope="module")
def nuts_holes(seed_holes):
    _, x, _ = seed_holes
    return inference.fit("nuts", jax.random.PRNGKey(4), x, 2, progress=False)  # the defaults: 2 chains, 500 + 1000


def scipy_component_log_prob(params, x):
    """Brute force: log w_k + log N(x_o | mu_k,o, Sigma_k,oo) row by row (0 observed: log w_k)."""
    covs = np.asarray(models.covariances(params))
    out = np.zeros((x.shape[0], covs.shape[0]))
    for n, row in enumerate(x):
        o = ~np.isnan(row)
        for k in range(covs.shape[0]):
            out[n, k] = np.log(params.weights[k]) + (
                scipy.stats.multivariate_normal(params.means[k][o], covs[k][np.ix_(o, o)]).logpdf(row[o]) if o.any() else 0.0)
    return out


def test_masked_distributions_log_prob_is_the_observed_density(holes_data):
    params, x = holes_data
    found = missing_patterns(x)
    observed, pattern = jnp.asarray(found.observed), jnp.asarray(found.index)
    num_components = params.means.shape[0]
    enumerated_z = jnp.arange(num_components)[:, None]  # (K, 1), as funsor enumerates z
    dist = MaskedMultivariateNormal(jnp.asarray(params.means), jnp.asarray(params.scale_tril), observed, pattern, enumerated_z)
    assert dist.batch_shape == (num_components, x.shape[0]) and dist.event_shape == (x.shape[1],)
    table = np.asarray(dist.log_prob(jnp.asarray(x))).T + np.log(params.weights)  # (N, K)
    np.testing.assert_allclose(table, models.observed_component_log_prob(params, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(table, scipy_component_log_prob(params, x), rtol=1e-12, atol=1e-12)
    mixture = MaskedGaussianMixture(jnp.asarray(params.weights), jnp.asarray(params.means), jnp.asarray(params.scale_tril),
                                    observed, pattern)
    np.testing.assert_allclose(mixture.log_prob(jnp.asarray(x)), models.observed_pointwise_log_likelihood(params, x),
                               rtol=0, atol=1e-12)
    assert abs(mixture.log_prob(jnp.asarray(x))[0]) < 1e-15  # nothing observed: density 1
    draws = dist.sample(jax.random.PRNGKey(0))  # sampling generates complete rows
    assert draws.shape == (num_components, x.shape[0], x.shape[1]) and np.isfinite(draws).all()


@pytest.mark.parametrize("num_components, weighted", [(3, False), (3, True), (1, False)])
def test_enumerated_log_joint_with_holes_is_log_likelihood_plus_log_prior(holes_data, num_components, weighted):
    params, x = holes_data
    if num_components == 1:
        params = models.GMMParams(np.ones(1), params.means[:1], params.scale_tril[:1])
    weights = np.random.default_rng(0).uniform(0.2, 2.0, x.shape[0]) if weighted else None
    pointwise = np.asarray(models.pointwise_log_likelihood(params, x))
    expected = np.sum(pointwise if weights is None else weights * pointwise) + float(models.log_prior(params))
    got = enumerated_log_joint(params, x, None if weights is None else jnp.asarray(weights))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # the jitted potential the engines run: patterns passed as arrays, x a tracer
    missing = missing_of(x)
    jitted = jax.jit(lambda xx: enumerated_log_joint_with(params, xx, missing, weights))(jnp.asarray(x))
    np.testing.assert_allclose(jitted, expected, rtol=1e-12)


def enumerated_log_joint_with(params, x, missing, weights):
    from numpyro.contrib.funsor import log_density

    from inference._numpyro_common import enumerated, make_model

    model = enumerated(make_model(params.means.shape[0]))
    args = (x, None if weights is None else jnp.asarray(weights), missing)
    return log_density(model, args, {}, {k: jnp.asarray(v) for k, v in sites_from_params(params).items()})[0]


def test_complete_data_take_the_unmasked_path_and_the_masked_one_agrees(seed_holes):
    """No NaN: no patterns (the engines' programs get ``missing=None``, the path of before); the masked path on
    the same complete rows gives the same log joint to rounding."""
    truth, _, complete = seed_holes
    assert missing_of(complete) is None
    plain = enumerated_log_joint(truth, complete)
    found = missing_patterns(complete)
    masked = enumerated_log_joint_with(truth, jnp.asarray(complete), (jnp.asarray(found.observed), jnp.asarray(found.index)), None)
    np.testing.assert_allclose(masked, plain, rtol=1e-13)


def test_nan_aware_standardizer():
    x = with_holes(np.random.default_rng(0).normal(size=(300, 3)) * [1, 10, 100], 0.2, 2)
    st = standardizer(x)
    for d in range(3):
        column = x[~np.isnan(x[:, d]), d]
        np.testing.assert_allclose([st.loc[d], st.scale[d]], [column.mean(), column.std()], rtol=1e-12)
    with pytest.raises(ValueError, match="no observed value"):
        standardizer(np.where(np.arange(3) == 1, np.nan, x))


def test_map_with_holes_is_the_maximum_of_the_log_joint(seed_holes):
    """MAP with holes = the argmax of NumPyro's observed-data log joint (L-BFGS in standardised units, from the truth)."""
    truth, x, _ = seed_holes
    result = inference.fit("map", jax.random.PRNGKey(1), x, 2)
    assert result.converged and np.isfinite(result.responsibilities).all()
    np.testing.assert_allclose(result.trace["log_likelihood"][-1], models.log_likelihood(result.params, x), rtol=1e-12)
    np.testing.assert_allclose(result.responsibilities, models.responsibilities(result.params, x), atol=1e-12)
    np.testing.assert_allclose(result.responsibilities[5], result.params.weights, atol=1e-12)  # nothing observed

    st = standardizer(x)
    x_std = (x - st.loc) / st.scale
    supports = site_supports(2, 2)
    start = to_unconstrained({k: jnp.asarray(v) for k, v in sites_from_params(
        models.GMMParams(truth.weights, (truth.means - st.loc) / st.scale, truth.scale_tril / st.scale[:, None])).items()}, supports)
    flat, unravel = ravel_pytree(start)
    objective = jax.jit(jax.value_and_grad(
        lambda u: -enumerated_log_joint_with(params_from_sites(to_constrained(unravel(u), supports)), x_std, missing_of(x_std), None)))
    fun = lambda u: tuple(np.asarray(a, np.float64) for a in objective(jnp.asarray(u)))
    best = scipy.optimize.minimize(fun, np.asarray(flat), jac=True, method="L-BFGS-B", options=dict(gtol=1e-9, maxiter=2000))
    direct = to_data(params_from_sites(to_constrained(unravel(jnp.asarray(best.x)), supports)), st)
    by_mean = lambda p: models.permute(p, np.argsort(p.means[:, 0]))
    direct = by_mean(direct)
    # the weighted path (MaskedGaussianMixture, z summed out analytically): equal weights, the same optimum
    weighted = inference.fit("map", jax.random.PRNGKey(1), x, 2, sample_weight=np.full(x.shape[0], 3.0))
    # EM with holes (inference.missing_em): the maximum likelihood, a weak prior away (measured: 0.02)
    em = inference.fit("em", jax.random.PRNGKey(1), x, 2, tol=1e-10)
    for fitted, tol in [(result.params, 5e-3), (weighted.params, 5e-3), (em.params, 0.03)]:
        fitted = by_mean(fitted)
        np.testing.assert_allclose(fitted.weights, direct.weights, atol=tol / 2)
        np.testing.assert_allclose(fitted.means, direct.means, atol=tol)
        np.testing.assert_allclose(models.covariances(fitted), models.covariances(direct), atol=tol)


@pytest.mark.timeout(240)
def test_nuts_with_holes_converges_on_the_seed_problem(nuts_holes, seed_holes):
    truth, x, _ = seed_holes
    assert nuts_holes.converged, nuts_holes.info["warnings"]
    assert np.isfinite(nuts_holes.trace["log_likelihood"]).all() and np.isfinite(nuts_holes.responsibilities).all()
    aligned = models.permute(nuts_holes.params, models.match_components(nuts_holes.params, truth))
    np.testing.assert_allclose(aligned.means, truth.means, atol=0.25)
    # the trace is the observed-data log-likelihood of each draw
    first = models.GMMParams(*(np.asarray(a)[0, 0] for a in nuts_holes.samples))
    assert np.min(np.abs(nuts_holes.trace["log_likelihood"] - float(models.log_likelihood(first, x)))) < 1e-9
    # the posterior predictive still generates complete rows
    replicated, _ = models.sample_posterior_predictive(jax.random.PRNGKey(0), nuts_holes.samples, 50)
    assert np.isfinite(np.asarray(replicated)).all()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_svi_with_holes_recovers_and_its_imputations_cover(seed_holes):
    """Slow (SVI compiles for ~45 s on a loaded 2-core host): SVI runs unchanged on data with holes."""
    truth, x, complete = seed_holes
    result = inference.fit("svi", jax.random.PRNGKey(2), x, 2, progress=False)
    assert result.converged and np.isfinite(result.trace["log_likelihood"]).all()
    median = result.info["guide_median"]
    np.testing.assert_allclose(result.trace["log_likelihood"][-1], models.log_likelihood(median, x), rtol=1e-10)
    aligned = models.permute(result.params, models.match_components(result.params, truth))
    np.testing.assert_allclose(aligned.means, truth.means, atol=0.25)
    imputed = multiple_imputations(result, x, jax.random.PRNGKey(5), level=0.9)
    truth_values = complete[imputed.rows, imputed.columns]
    inside = np.mean((imputed.lower <= truth_values) & (truth_values <= imputed.upper))
    assert abs(inside - 0.9) < 3 * np.sqrt(0.9 * 0.1 / truth_values.size), inside


def test_nuts_imputation_intervals_cover_the_held_out_values(nuts_holes, seed_holes):
    _, x, complete = seed_holes
    imputed = multiple_imputations(nuts_holes, x, jax.random.PRNGKey(5), level=0.9)
    rows, columns = np.nonzero(np.isnan(x))
    np.testing.assert_array_equal(imputed.rows, rows)
    np.testing.assert_array_equal(imputed.columns, columns)
    assert imputed.num_draws == 200
    truth = complete[rows, columns]
    inside = (imputed.lower <= truth) & (truth <= imputed.upper)
    sigma = np.sqrt(0.9 * 0.1 / truth.size)
    assert abs(inside.mean() - 0.9) < 3 * sigma, (inside.mean(), truth.size)
    # the mean of the completed data sets: impute at the posterior mean, within Monte Carlo error (5 se) and
    # a little posterior spread (0.05)
    mean, std = (np.asarray(a)[rows, columns] for a in models.impute(nuts_holes.params, x, return_std=True))
    np.testing.assert_array_less(np.abs(imputed.mean - mean), 5 * std / np.sqrt(imputed.num_draws) + 0.05)


def test_point_estimate_imputations_are_conditional_draws(seed_holes):
    truth, x, _ = seed_holes
    result = inference.result.FitResult(method="em", params=truth, trace={}, samples=None, responsibilities=np.asarray(models.responsibilities(truth, x)),
                                        converged=True, num_iters=0, seconds=0.0, info={})
    imputed = multiple_imputations(result, x, jax.random.PRNGKey(0), level=0.5, max_draws=400)
    rows, columns = np.nonzero(np.isnan(x))
    mean, std = (np.asarray(a)[rows, columns] for a in models.impute(truth, x, return_std=True))
    np.testing.assert_allclose(imputed.mean, mean, atol=5 * np.max(std) / np.sqrt(400))
    assert np.all(imputed.lower <= imputed.mean) and np.all(imputed.mean <= imputed.upper)
    # at the true parameters the conditional draws are exactly calibrated: a tight binomial check
    x_big, _ = models.sample(jax.random.PRNGKey(8), truth, 4000)
    holes = with_holes(x_big, 0.2, 3)
    imputed = multiple_imputations(dataclasses.replace(result, responsibilities=np.zeros((4000, 2))), holes,
                                   jax.random.PRNGKey(9), level=0.9)
    held_out = np.asarray(x_big)[imputed.rows, imputed.columns]
    inside = np.mean((imputed.lower <= held_out) & (held_out <= imputed.upper))
    assert abs(inside - 0.9) < 3 * np.sqrt(0.9 * 0.1 / held_out.size), (inside, held_out.size)


def test_sample_missing_matches_the_conditional_moments():
    params = random_params(np.random.default_rng(3), 2, 4)
    row = np.array([0.3, np.nan, -1.0, np.nan])
    num_draws = 40_000
    draws = np.asarray(sample_missing(jax.random.PRNGKey(1), params, np.tile(row, (num_draws, 1))))
    assert np.all(draws[:, [0, 2]] == row[[0, 2]])
    missing = draws[:, [1, 3]]
    # the exact conditional: mixture over p(k | x_o) of N(fill + G y, cond_cov)
    tables = pattern_tables(params, np.array([[True, False, True, False]]))
    resp = np.asarray(models.observed_responsibilities(params, row[None]))[0]
    cond_means = []
    for k in range(2):
        single = models.GMMParams(np.ones(1), params.means[k:k + 1], params.scale_tril[k:k + 1])
        cond_means.append(np.asarray(models.impute(single, row[None]))[0, [1, 3]])
    cond_means = np.array(cond_means)
    cond_covs = np.asarray(tables.cond_cov)[0][:, [1, 3]][:, :, [1, 3]]
    mean = resp @ cond_means
    cov = np.einsum("k,kij->ij", resp, cond_covs + np.einsum("ki,kj->kij", cond_means, cond_means)) - np.outer(mean, mean)
    se = np.sqrt(np.diag(cov) / num_draws)
    np.testing.assert_array_less(np.abs(missing.mean(axis=0) - mean), 5 * se)
    np.testing.assert_allclose(np.cov(missing.T), cov, atol=5 * np.max(np.diag(cov)) * np.sqrt(2 / num_draws))
