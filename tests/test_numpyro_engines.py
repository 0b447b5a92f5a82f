"""NumPyro baselines (enumerated MAP, SVI, NUTS) on the same declared model as EM.

Fits are module-scoped fixtures: each engine compiles once for the whole file.
"""

from __future__ import annotations

import contextlib

import jax
import numpy as np
import pytest
from jax._src import monitoring

import models
from inference import fit
from inference.numpyro_engines import enumerated_log_joint, fit_map, fit_nuts, fit_svi
from models import align, from_covariances

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
NUTS_SMALL = dict(num_chains=2, num_warmup=300, num_samples=300, progress=False, num_assignment_draws=50)


@contextlib.contextmanager
def count_compiles():
    """Counts XLA backend compilations inside the block: ``with count_compiles() as n: ...; n[0]``."""
    count = [0]

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE_EVENT:
            count[0] += 1

    monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        monitoring.unregister_event_duration_listener(listener)


@pytest.fixture(scope="module")
def seed_data():
    x, z = models.sample(jax.random.PRNGKey(20240501), models.seed_problem(), 500)
    return np.asarray(x), np.asarray(z)


@pytest.fixture(scope="module")
def em_fit(seed_data):
    return fit("em", jax.random.PRNGKey(0), seed_data[0], 2)


@pytest.fixture(scope="module")
def map_fit(seed_data):
    return fit("map", jax.random.PRNGKey(1), seed_data[0], 2)


@pytest.fixture(scope="module")
def svi_fit(seed_data):
    return fit("svi", jax.random.PRNGKey(2), seed_data[0], 2)


@pytest.fixture(scope="module")
def nuts_fit(seed_data):
    return fit("nuts", jax.random.PRNGKey(3), seed_data[0], 2, **NUTS_SMALL)


# --------------------------------------------------------------------------- the model's own density


@pytest.mark.parametrize("num_components, num_features", [(1, 1), (3, 1), (2, 3)])
def test_enumerated_log_joint_is_log_likelihood_plus_log_prior(num_components, num_features):
    rng = np.random.default_rng(num_components * 10 + num_features)
    weights = rng.dirichlet(np.ones(num_components))
    means = rng.normal(size=(num_components, num_features)) * 2
    a = rng.normal(size=(num_components, num_features, num_features))
    covs = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(num_features)
    params = from_covariances(weights, means, covs)
    x, _ = models.sample(jax.random.PRNGKey(num_components), params, 40)
    prior = dict(mean_scale=3.0, scale_log_sd=1.5, concentration=2.0, lkj_concentration=1.5)
    expected = models.log_likelihood(params, x) + models.log_prior(params, **prior)
    np.testing.assert_allclose(enumerated_log_joint(params, x, **prior), expected, rtol=1e-9, atol=1e-6)


# --------------------------------------------------------------------------- MAP


def test_map_matches_em_on_well_separated_data():
    # same shapes as the seed problem (N=500, K=2, D=2) so the compiled programs are reused;
    # the default priors (Dirichlet(1), Normal(0, 10), LogNormal(0, 2), LKJ(1)) are weak here.
    truth = from_covariances([0.35, 0.65], [[-5.0, 0.0], [5.0, 1.0]], [[[1.0, 0.3], [0.3, 0.5]], 0.7 * np.eye(2)])
    x, _ = models.sample(jax.random.PRNGKey(7), truth, 500)
    em = fit("em", jax.random.PRNGKey(0), x, 2)
    map_result = fit_map(jax.random.PRNGKey(0), x, 2)
    aligned, _ = align(em.params, map_result.params)
    np.testing.assert_allclose(aligned.means, em.params.means, atol=0.05)
    np.testing.assert_allclose(aligned.weights, em.params.weights, atol=0.02)
    assert map_result.converged
    assert abs(map_result.trace["log_likelihood"][-1] - em.trace["log_likelihood"][-1]) < 1.0


def test_map_result_shape_and_assignments(map_fit, em_fit, seed_data):
    x = seed_data[0]
    assert map_fit.method == "map" and map_fit.samples is None
    assert map_fit.trace["loss"].shape == (map_fit.num_iters,)
    assert map_fit.trace["log_likelihood"].shape == map_fit.trace["log_likelihood_step"].shape
    assert map_fit.info["restart_losses"].shape == (4,)
    np.testing.assert_allclose(map_fit.trace["loss"][-1], map_fit.info["restart_losses"].min(), rtol=1e-6)
    # the MAP loss is -(log-lik + log-prior) at the point, with the prior in the data's units
    prior = {k: np.asarray(v) for k, v in map_fit.info["prior"].items() if k != "description"}
    np.testing.assert_allclose(
        -map_fit.trace["loss"][-1], models.log_likelihood(map_fit.params, x) + models.log_prior(map_fit.params, **prior),
        rtol=1e-5,
    )
    # infer_discrete (temperature 0) assignments agree with EM's argmax after alignment
    _, perm = align(em_fit.params, map_fit.params)
    relabelled = np.argsort(perm)[map_fit.info["assignments"]]
    assert np.mean(relabelled == em_fit.assignments) > 0.95


# --------------------------------------------------------------------------- SVI and NUTS on the seed problem


def _assert_recovers_truth(params):
    aligned, _ = align(models.seed_problem(), params)
    np.testing.assert_allclose(aligned.weights, models.seed_problem().weights, atol=0.06)
    np.testing.assert_allclose(aligned.means, models.seed_problem().means, atol=0.25)


def test_svi_recovers_truth(svi_fit):
    _assert_recovers_truth(svi_fit.params)
    assert svi_fit.converged
    assert svi_fit.samples.weights.shape == (1, 1000, 2)
    assert svi_fit.samples.scale_tril.shape == (1, 1000, 2, 2, 2)
    for array in (*svi_fit.samples, *svi_fit.params, *svi_fit.trace.values()):
        assert np.all(np.isfinite(array))
    assert np.all(svi_fit.info["guide_params"]["means_auto_scale"] > 0.01)  # real uncertainty


@pytest.mark.timeout(240)
def test_nuts_two_chains_recovers_truth_without_hanging(nuts_fit, em_fit):
    _assert_recovers_truth(nuts_fit.params)
    assert nuts_fit.info["chain_method"] == ("sequential" if jax.default_backend() == "cpu" else nuts_fit.info["chain_method"])
    assert nuts_fit.samples.means.shape == (2, 300, 2, 2)
    for name, value in nuts_fit.info["r_hat_after"].items():
        assert value < 1.05, name
    for array in (*nuts_fit.samples, *nuts_fit.params, *nuts_fit.trace.values()):
        assert np.all(np.isfinite(array))
    assert nuts_fit.trace["potential_energy"].shape == (600,)
    assert nuts_fit.trace["log_likelihood"].shape == (600,)
    assert nuts_fit.info["diverging"].shape == (2, 300)
    assert nuts_fit.info["num_divergences"] == nuts_fit.info["diverging"].sum()
    assert nuts_fit.info["assignment_draws"].shape == (50, 500)
    _, perm = align(em_fit.params, nuts_fit.params)
    assert np.mean(np.argsort(perm)[nuts_fit.info["assignments"]] == em_fit.assignments) > 0.95


def test_nuts_log_likelihood_trace_is_models_log_likelihood(nuts_fit, seed_data):
    first = models.GMMParams(*(np.asarray(a)[0, 0] for a in nuts_fit.samples))
    np.testing.assert_allclose(nuts_fit.trace["log_likelihood"][0], models.log_likelihood(first, seed_data[0]), rtol=1e-8)


# --------------------------------------------------------------------------- caching


def test_second_fit_with_same_shapes_compiles_nothing(seed_data, map_fit, svi_fit, nuts_fit):
    x = seed_data[0]
    with count_compiles() as compiles:
        second_map = fit_map(jax.random.PRNGKey(11), x, 2)
        second_svi = fit_svi(jax.random.PRNGKey(12), x, 2)
        second_nuts = fit_nuts(jax.random.PRNGKey(13), x, 2, **NUTS_SMALL)
    assert compiles[0] == 0
    for result in (second_map, second_svi, second_nuts):
        assert result.info["compile_seconds"] == 0.0


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "engine, options, name",
    [
        (fit_nuts, dict(num_chains=0), "num_chains"),
        (fit_nuts, dict(num_samples=-5), "num_samples"),
        (fit_nuts, dict(chain_method="threads"), "chain_method"),
        (fit_nuts, dict(target_accept_prob=1.5), "target_accept_prob"),
        (fit_map, dict(num_steps=-1), "num_steps"),
        (fit_map, dict(n_init=0), "n_init"),
        (fit_map, dict(init="nonsense"), "init"),
        (fit_map, dict(prior=dict(mean_scale=-1.0)), "mean_scale"),
        (fit_svi, dict(num_draws=0), "num_draws"),
        (fit_svi, dict(learning_rate=float("nan")), "learning_rate"),
        (fit_svi, dict(bogus=1), "bogus"),
    ],
)
def test_bad_options_raise_value_error_naming_them(engine, options, name):
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=name):
        engine(jax.random.PRNGKey(0), x, 2, **options)


def test_bad_data_and_components_raise_value_error():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="x"):
        fit_map(jax.random.PRNGKey(0), np.where(np.arange(20)[:, None] == 3, np.nan, x), 2)
    with pytest.raises(ValueError, match="num_components"):
        fit_nuts(jax.random.PRNGKey(0), x, 0)


# --------------------------------------------------------------------------- heavier runs


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_nuts_vectorized_chains(seed_data):
    result = fit_nuts(
        jax.random.PRNGKey(5), seed_data[0], 2, chain_method="vectorized",
        num_chains=2, num_warmup=200, num_samples=200, progress=False, num_assignment_draws=0,
    )
    _assert_recovers_truth(result.params)
    assert max(result.info["r_hat_after"].values()) < 1.05


def test_single_component_map_and_nuts_match_the_sample_moments():
    """K = 1 (a model-selection sweep starts there): no enumeration of a size-1 z, exact answers."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 2)) @ np.array([[1.0, 0.0], [0.6, 0.5]]) + [2.0, -1.0]
    m = fit("map", jax.random.PRNGKey(0), x, 1)
    np.testing.assert_allclose(m.params.weights, [1.0])
    np.testing.assert_allclose(m.params.means[0], x.mean(0), atol=0.01)
    np.testing.assert_allclose(np.asarray(models.covariances(m.params))[0], np.cov(x.T, bias=True), atol=0.02)
    n = fit("nuts", jax.random.PRNGKey(1), x, 1, num_warmup=150, num_samples=150, progress=False)
    np.testing.assert_allclose(n.params.means[0], x.mean(0), atol=0.1)
    assert np.all(n.responsibilities == 1.0)


def test_float32_data_is_accepted_and_upcast():
    """With x64 on, LKJ's transform fails on a float32 model: the engines compute in float64."""
    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 300)
    x64 = np.asarray(x)
    r32 = fit("map", jax.random.PRNGKey(0), x64.astype(np.float32), 2)
    r64 = fit("map", jax.random.PRNGKey(0), x64.astype(np.float32).astype(np.float64), 2)
    assert r32.params.means.dtype == np.float64
    np.testing.assert_allclose(r32.params.means, r64.params.means, rtol=1e-10)
