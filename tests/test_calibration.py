"""The calibration sweep (simulation-based calibration) and the prior/posterior predictive samplers."""

import jax
import numpy as np
import pytest

import models
from analysis.sweeps import run_sweep
from analysis.sweeps.calibration import CALIBRATION_PRIOR, NUM_RANK_DRAWS, _uniformity, scalar_parameters


def test_prior_draws_have_the_priors_moments():
    """Dirichlet(3) weights have mean 1/K; means ~ Normal(0.5, 2); scales ~ LogNormal(log 1, 0.3)."""
    params, x, z = models.sample_prior(jax.random.PRNGKey(0), 20000, 3, 2, 3, **dict(CALIBRATION_PRIOR, mean_loc=0.5))
    assert x.shape == (20000, 3, 2) and z.shape == (20000, 3) and params.means.shape == (20000, 3, 2)
    w = np.asarray(params.weights)
    se = np.sqrt(w.var(0) / w.shape[0])
    assert np.all(np.abs(w.mean(0) - 1 / 3) < 4 * se)
    # Dirichlet(3, 3, 3) variance of one coordinate: a_i (a0 - a_i) / (a0^2 (a0 + 1)) = 3 * 6 / (81 * 10)
    assert w[:, 0].var() == pytest.approx(18 / 810, rel=0.05)
    m = np.asarray(params.means).reshape(-1)
    assert abs(m.mean() - 0.5) < 4 * 2.0 / np.sqrt(m.size) and m.std() == pytest.approx(2.0, rel=0.02)
    scales = np.sqrt(np.diagonal(np.asarray(models.covariances(params)), axis1=-2, axis2=-1)).reshape(-1)
    assert np.log(scales).mean() == pytest.approx(0.0, abs=0.01) and np.log(scales).std() == pytest.approx(0.3, rel=0.03)


def test_posterior_predictive_at_a_point_has_the_mixtures_moments():
    truth = models.seed_problem()
    x, z = models.sample_posterior_predictive(jax.random.PRNGKey(1), truth, 200_000)
    x, z = np.asarray(x[0]), np.asarray(z[0])
    w, mu = np.asarray(truth.weights), np.asarray(truth.means)
    covs = np.asarray(models.covariances(truth))
    mean = w @ mu
    second = sum(w[k] * (covs[k] + np.outer(mu[k], mu[k])) for k in range(2))
    np.testing.assert_allclose(x.mean(0), mean, atol=4 * np.sqrt(np.diag(second - np.outer(mean, mean)).max() / 200_000))
    np.testing.assert_allclose(np.cov(x, rowvar=False), second - np.outer(mean, mean), atol=0.01)
    assert z.mean() == pytest.approx(0.7, abs=0.005)
    draws = models.GMMParams(*(np.broadcast_to(a, (2, 3) + a.shape) for a in truth))
    xs, zs = models.sample_posterior_predictive(jax.random.PRNGKey(2), draws, 10)
    assert xs.shape == (2, 3, 10, 2) and zs.shape == (2, 3, 10)


def test_uniformity_test_is_scipys_chisquare():
    from scipy import stats

    ranks = np.random.default_rng(0).integers(0, NUM_RANK_DRAWS + 1, size=500)
    counts = np.histogram(ranks, bins=10, range=(-0.5, NUM_RANK_DRAWS + 0.5))[0]
    assert _uniformity(ranks) == pytest.approx(tuple(stats.chisquare(counts)))
    assert _uniformity(np.zeros(200, int))[1] < 1e-10  # every rank 0: far from uniform


def test_scalar_parameters_lists_each_free_entry_once():
    names = list(scalar_parameters(models.seed_problem()))
    assert names[:2] == ["weights[0]", "weights[1]"] and len(names) == 2 + 4 + 6


@pytest.mark.timeout(600)
def test_calibration_sweep_quick_runs_end_to_end(tmp_path):
    tables = run_sweep("calibration", quick=True, repeats=6, out_dir=tmp_path / "cal")
    ranks = [r for r in tables["ranks"] if r["error"] is None]
    assert {r["method"] for r in ranks} == {"nuts", "svi"} and len(ranks) == 2 * 6 * 12
    assert all(0 <= r["rank"] <= NUM_RANK_DRAWS for r in ranks)
    nuts = next(r for r in tables["engines"] if r["method"] == "nuts")
    assert nuts["replicates"] == 6 and nuts["failed"] == 0
    assert 0.6 <= nuts["coverage_90"] <= 1.0  # nominal 0.9; 72 correlated checks
    for name in ("ranks.csv", "calibration.csv", "engines.csv", "sweep.html", "figures/calibration_ranks.png",
                 "figures/calibration_coverage.png"):
        assert (tmp_path / "cal" / name).stat().st_size > 0


def test_predictive_p_values_flag_a_one_component_fit_of_two_clusters():
    """Issue 13: on the seed data a K = 2 EM fit reproduces every per-dimension statistic (no extreme
    p-value); a K = 1 fit (one Gaussian for two clusters) misses the skewness (p-value at 0 or 1)."""
    from analysis.predictive import posterior_predictive, predictive_p_values
    from inference import fit

    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 500)
    x = np.asarray(x)
    good = fit("em", jax.random.PRNGKey(1), x, 2)
    bad = fit("em", jax.random.PRNGKey(1), x, 1)
    p_good = predictive_p_values(x, posterior_predictive(jax.random.PRNGKey(2), good, x.shape[0]))
    p_bad = predictive_p_values(x, posterior_predictive(jax.random.PRNGKey(2), bad, x.shape[0]))
    assert all(0.01 < p < 0.99 for name in ("mean", "sd", "skewness", "kurtosis") for p in p_good[name])
    assert any(p <= 0.01 or p >= 0.99 for p in p_bad["skewness"])
    # mean and sd are fitted exactly by one Gaussian: nothing to see there
    assert all(0.01 < p < 0.99 for p in p_bad["mean"])
