"""Sample weights in the NumPyro engines (map, svi, nuts): the weighted model, and weights == repeated rows.

References: repeated rows (integer weights, every engine), a brute-force weighted log joint (scipy
densities + ``models.log_prior``). EM and hard EM's weights are tested in tests/test_scale.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.contrib.funsor import config_enumerate, enum, log_density
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import models
from inference import fit
from inference._numpyro_common import enumerated_log_joint
from models.gmm import log_prior


def two_blobs(rng, n=60, shift=(4.0, 1.0)):
    x = rng.normal(size=(n, 2))
    x[: n // 2] += shift
    return x


def weights_and_repeats(rng, x):
    counts = rng.integers(0, 4, size=len(x))
    counts[:2] = [2, 3]
    return counts.astype(float), np.repeat(x, counts, axis=0)


@pytest.fixture
def point(rng):
    x = two_blobs(rng)
    return x, fit("em", jax.random.PRNGKey(0), x, 2).params


def test_weighted_log_joint_is_the_weighted_likelihood_plus_prior(rng, point):
    x, params = point
    w, repeated = weights_and_repeats(rng, x)
    got = float(enumerated_log_joint(params, x, sample_weight=w))
    covs = models.covariances(params)
    per_row = logsumexp(np.stack([np.log(params.weights[k]) + multivariate_normal(params.means[k], covs[k]).logpdf(x)
                                  for k in range(2)], axis=1), axis=1)
    brute = float(w @ per_row + log_prior(params))
    assert got == pytest.approx(brute, rel=1e-12)
    assert got == pytest.approx(float(enumerated_log_joint(params, repeated)), rel=1e-12)
    assert float(enumerated_log_joint(params, x, sample_weight=np.ones(len(x)))) == pytest.approx(
        float(enumerated_log_joint(params, x)), rel=1e-13)


def test_scale_inside_enumeration_is_not_a_weighted_likelihood(rng, point):
    """Why the weighted model sums z out analytically (models/gmm.py): NumPyro applies handlers.scale to
    the factor inside funsor's sum over z, giving log sum_z exp(w a_z) instead of w log sum_z exp(a_z).
    If this starts to fail, NumPyro handles scales under enumeration and the workaround can go."""
    x, params = point
    w = np.where(rng.integers(0, 3, size=len(x)) > 0, 2.0, 1.0)

    def naive(x, w):
        weights = numpyro.sample("weights", dist.Dirichlet(jnp.ones(2)))
        means = numpyro.sample("means", dist.Normal(jnp.zeros((2, 2)), 10.0).to_event(2))
        with numpyro.plate("data", x.shape[0]), handlers.scale(scale=w):
            z = numpyro.sample("z", dist.Categorical(weights), infer={"enumerate": "parallel"})
            numpyro.sample("x", dist.MultivariateNormal(means[z], jnp.eye(2)), obs=x)

    sites = {"weights": jnp.asarray(params.weights), "means": jnp.asarray(params.means)}
    run = lambda data, weights: float(log_density(enum(config_enumerate(naive), first_available_dim=-2), (data, weights), {}, sites)[0])
    repeated = np.repeat(x, w.astype(int), axis=0)
    assert abs(run(x, w) - run(repeated, np.ones(len(repeated)))) > 1e-3


def given_start(x):
    first = fit("em", jax.random.PRNGKey(1), x, 2, max_iters=2)
    return first.params


def test_map_zero_one_weights_equal_the_kept_rows(rng):
    """Weights are relative (inference.rows.normalize_sample_weight): 0/1 weights keep their sum, so the
    weighted fit is the fit of the rows with weight 1, exactly."""
    x = two_blobs(rng)
    w = (rng.random(len(x)) > 0.3).astype(float)
    opts = dict(init=given_start(x), n_init=1, num_steps=600, tol=0.0)
    a = fit("map", jax.random.PRNGKey(0), x, 2, sample_weight=w, **opts)
    b = fit("map", jax.random.PRNGKey(0), x[w > 0], 2, **opts)
    # the same objective to rounding (the weighted model sums z analytically, the other by funsor), so
    # the optimiser's stopping rule may fire a few steps apart: compare the common steps and the optimum
    n = min(len(a.trace["loss"]), len(b.trace["loss"]))
    np.testing.assert_allclose(a.trace["loss"][:n], b.trace["loss"][:n], rtol=1e-9)
    m = min(len(a.trace["log_likelihood"]), len(b.trace["log_likelihood"]))
    np.testing.assert_allclose(a.trace["log_likelihood"][:m], b.trace["log_likelihood"][:m], rtol=1e-9)
    for got, want in zip(a.params, b.params):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert a.info["weighted"] and a.info["total_weight"] == w.sum() and not b.info["weighted"]
    assert "sample_weight" not in a.info["options"]
    # assignments of the weighted fit: Bayes' rule at the MAP point (its model has no z site)
    np.testing.assert_array_equal(a.info["assignments"], np.argmax(models.responsibilities(a.params, x), axis=1))
    assert a.responsibilities.shape == (len(x), 2)


@pytest.mark.parametrize("optimizer", ["ecm", "adam"])
def test_map_integer_weights_are_relative_to_the_rows(rng, optimizer):
    """Integer weights w: the MAP of sum_n (w_n N+ / sum w) log p(x_n) + log prior (a brute-force optimum
    check: the objective at the fit beats small moves), not of the repeated rows (sum w rows). Adam runs a fixed
    1,500 steps; the ECM to its own convergence (with tol=0 its SQUAREM steps at the optimum are rounding, and
    the two runs' rounding picks points 1e-7 apart)."""
    x = two_blobs(rng)
    w, repeated = weights_and_repeats(rng, x)
    opts = dict(init=given_start(x), n_init=1, optimizer=optimizer)
    if optimizer == "adam":
        opts.update(num_steps=1500, tol=0.0)
    a = fit("map", jax.random.PRNGKey(0), x, 2, sample_weight=w, **opts)
    b = fit("map", jax.random.PRNGKey(0), x, 2, sample_weight=w * 1e-3, **opts)
    for got, want in zip(a.params, b.params):
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9)
    normalised = w * np.count_nonzero(w) / w.sum()
    assert a.info["total_weight"] == pytest.approx(np.count_nonzero(w))
    best = float(enumerated_log_joint(a.params, x, sample_weight=normalised))
    for scale in (0.98, 1.02):
        moved = a.params._replace(scale_tril=a.params.scale_tril * scale)
        assert float(enumerated_log_joint(moved, x, sample_weight=normalised)) < best


@pytest.mark.parametrize("optimizer", ["ecm", "adam"])
def test_map_unit_weights_equal_no_weights(rng, optimizer):
    x = two_blobs(rng)
    opts = dict(init=given_start(x), n_init=1, optimizer=optimizer)
    if optimizer == "adam":  # a fixed run; the ECM to its convergence (as above)
        opts.update(num_steps=300, tol=0.0)
    a = fit("map", jax.random.PRNGKey(0), x, 2, sample_weight=np.ones(len(x)), **opts)
    b = fit("map", jax.random.PRNGKey(0), x, 2, **opts)
    np.testing.assert_allclose(a.trace["loss"], b.trace["loss"], rtol=1e-10)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-8)


def test_svi_zero_one_weights_equal_the_kept_rows(rng):
    """Same key: the guide draws the same global-site noise, the ELBOs agree per draw."""
    x = two_blobs(rng)
    w = (rng.random(len(x)) > 0.3).astype(float)
    opts = dict(init=given_start(x), num_steps=400, check_every=100, tol=0.0, num_draws=200, progress=False)
    a = fit("svi", jax.random.PRNGKey(0), x, 2, sample_weight=w * 7.0, **opts)
    b = fit("svi", jax.random.PRNGKey(0), x[w > 0], 2, **opts)
    assert a.num_iters == b.num_iters
    np.testing.assert_allclose(a.trace["loss"], b.trace["loss"], rtol=1e-7)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(a.samples.means, b.samples.means, rtol=1e-6, atol=1e-8)


def test_nuts_integer_weights_are_relative(rng):
    """Weights 3 on one blob and 1 on the other move the mixture weight from 1/2 to 3/4, ~10 posterior sd:
    ignoring the weights could not pass. The repeated rows (sum w = 2 N+ rows) give the same posterior
    means in distribution, but a posterior sqrt(2) narrower: relative weights count N+ rows of evidence."""
    x = two_blobs(rng, n=80, shift=(8.0, 0.0))
    counts = np.r_[np.full(40, 3), np.ones(40, int)]
    counts[[5, 50]] = 0
    w, repeated = counts.astype(float), np.repeat(x, counts, axis=0)
    opts = dict(init=given_start(x), num_chains=1, num_warmup=300, num_samples=300, progress=False, num_assignment_draws=20)
    a = fit("nuts", jax.random.PRNGKey(0), x, 2, sample_weight=w, **opts)
    b = fit("nuts", jax.random.PRNGKey(0), repeated, 2, **opts)
    blob = int(np.argmax(b.params.means[:, 0]))  # the component of the (8, 0) blob
    for field in ("weights", "means"):
        draws_a, draws_b = np.asarray(getattr(a.samples, field)), np.asarray(getattr(b.samples, field))
        sd = draws_a.std(axis=(0, 1))
        # 0.6 sd ~ 3 standard errors of a difference of two means with ESS >= 50 each
        np.testing.assert_allclose(draws_a.mean(axis=(0, 1)), draws_b.mean(axis=(0, 1)), atol=0.6 * sd.max())
    ratio = np.asarray(a.samples.means).std(axis=(0, 1)) / np.asarray(b.samples.means).std(axis=(0, 1))
    assert 1.1 < np.median(ratio) < 1.9, ratio  # sqrt(sum w / N+) = sqrt(2)
    assert abs(a.params.weights[blob] - 0.75) < 0.1
    relative = w * np.count_nonzero(w) / w.sum()  # the weights as fitted: summing to the rows with a positive one
    for draw in (0, 299):  # the trace (potential minus its prior part) is the weighted log-likelihood of the draw
        params = models.GMMParams(*(np.asarray(p)[0, draw] for p in a.samples))
        reference = np.sum(relative * np.asarray(models.pointwise_log_likelihood(params, x)))
        assert a.trace["log_likelihood"][draw] == pytest.approx(reference, rel=1e-10)
    assert a.info["assignment_draws"].shape == (20, len(x))
    # the weighted fit's z draws follow p(z | x, theta): rows deep inside a blob are (almost) always that blob
    likely = np.argmax(models.responsibilities(a.params, x), axis=1)
    assert np.mean(a.info["assignment_draws"] == likely[None]) > 0.9


@pytest.mark.parametrize(
    "weights,match",
    [
        (-np.ones(20), "sample_weight must be >= 0"),
        (np.r_[np.nan, np.ones(19)], "sample_weight contains NaN"),
        (np.ones(19), "sample_weight has length 19 but x has 20 rows"),
        (np.zeros(20), "sample_weight is zero for every row"),
    ],
)
@pytest.mark.parametrize("method", ["map", "svi", "nuts"])
def test_bad_weights_one_line_value_error(method, weights, match):
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=match) as info:
        fit(method, jax.random.PRNGKey(0), x, 2, sample_weight=weights)
    assert "\n" not in str(info.value)
