"""Issue 10: convergence flags a user can rely on, the prior in the data's units, degenerate fits flagged.

References: ArviZ (rank R-hat, bulk/tail ESS, through analysis.arviz_io on either stack), exact affine
equivariance (a property of the model with a data-scaled prior), and data built to be degenerate.
"""

import jax
import numpy as np
import pytest

import models
from analysis import arviz_io
from inference import fit
from inference.diagnostics import convergence_warnings, diagnose, ess_bulk, ess_tail, parameter_draws, rank_rhat
from inference.result import FitResult

QUICK_NUTS = dict(num_warmup=150, num_samples=150, progress=False, num_assignment_draws=0)


@pytest.fixture(scope="module")
def seed_data():
    x, z = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 300)
    return np.asarray(x)


def _made_up_draws(seed, chains=2, draws=300):
    rng = np.random.default_rng(seed)
    w0 = np.clip(0.3 + 0.03 * np.cumsum(rng.normal(size=(chains, draws)), axis=1) / 10 + 0.02 * rng.normal(size=(chains, draws)), 0.05, 0.95)
    weights = np.stack([w0, 1 - w0], -1)
    means = np.array([[1.0, 1.0], [-1.0, -1.0]]) + 0.1 * rng.normal(size=(chains, draws, 2, 2))
    scale_tril = np.exp(0.1 * rng.normal(size=(chains, draws, 2, 1, 1))) * np.eye(2)
    return models.GMMParams(weights, means, scale_tril)


def test_rank_rhat_and_ess_equal_arviz():
    samples = _made_up_draws(0)
    result = FitResult(method="nuts", params=models.GMMParams(*(a[0, 0] for a in samples)), trace={}, samples=samples,
                       responsibilities=np.full((10, 2), 0.5), converged=True, num_iters=300, seconds=0.0)
    x = np.random.default_rng(1).normal(size=(10, 2))
    table = arviz_io.summary(arviz_io.to_inference_data(result, x))
    draws = parameter_draws(samples)
    assert len(draws) == 2 + 4 + 2 * 2  # off-diagonal covariances are constant 0 here: skipped
    for name, values in draws.items():
        row = table.loc[name]
        assert rank_rhat(values) == pytest.approx(row["r_hat"], rel=1e-10), name
        # ESS: NumPyro's autocorrelation estimator vs ArviZ's: the same definition, truncation details differ
        assert ess_bulk(values) == pytest.approx(row["ess_bulk"], rel=0.05), name
        assert ess_tail(values) == pytest.approx(row["ess_tail"], rel=0.05), name


def test_convergence_warnings_name_each_failed_condition():
    good = {"rhat_max": 1.003, "ess_bulk_min": 400.0, "ess_tail_min": 380.0, "worst_rhat": "means[0, 0]", "worst_ess": "w"}
    assert convergence_warnings(good, 2, 0, 1000) == []
    bad = dict(good, rhat_max=1.2, ess_tail_min=50.0)
    words = convergence_warnings(bad, 2, 3, 1000)
    assert len(words) == 3 and "R-hat 1.200" in words[0] and "tail ESS 50" in words[1] and "3 divergent" in words[2]
    assert "2 chains" in convergence_warnings(good, 1, 0, 500)[0]


def test_ordered_means_is_refused_with_the_reason(seed_data):
    with pytest.raises(ValueError, match="ordered_means was removed"):
        fit("nuts", jax.random.PRNGKey(0), seed_data, 2, ordered_means=True)


def test_nuts_on_a_trap_is_not_flagged_converged():
    """Two equal-weight, heavily overlapping components: the posterior of the labels is multimodal and
    slow to mix; with short chains from dispersed starts the flag must say no, and say why."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(-0.4, 1.0, size=(100, 2)), rng.normal(0.4, 1.0, size=(100, 2))])
    r = fit("nuts", jax.random.PRNGKey(2), x, 2, num_warmup=40, num_samples=40, init_jitter=2.0, progress=False,
            num_assignment_draws=0)
    assert r.converged is False
    assert r.info["warnings"] and any("ESS" in w or "R-hat" in w for w in r.info["warnings"])
    d = r.info["diagnostics"]
    assert d["rhat_max"] > 1.01 or min(d["ess_bulk_min"], d["ess_tail_min"]) < 200


def test_nuts_default_start_is_dispersed_and_flag_matches_the_diagnostics(seed_data):
    r = fit("nuts", jax.random.PRNGKey(1), seed_data, 2, **QUICK_NUTS)
    d = diagnose(r.samples)
    # the engine diagnoses its standardised draws; rank statistics are affine-invariant up to rounding ties
    assert r.info["diagnostics"]["rhat_max"] == pytest.approx(d["rhat_max"], rel=1e-3)
    assert r.converged == (not r.info["warnings"])
    assert r.info["options"]["init_jitter"] == 0.5


def test_affine_equivariance_em_map_nuts(seed_data):
    """Fitting a * x + b gives a * mean + b and a^2 * covariance (per column a)."""
    a, b = np.array([3.0, 0.01]), np.array([80.0, -5.0])
    y = seed_data * a + b

    def check(r1, r2, rtol_mean, rtol_cov):
        mean1, mean2 = np.asarray(r1.params.means), np.asarray(r2.params.means)
        cov1, cov2 = np.asarray(models.covariances(r1.params)), np.asarray(models.covariances(r2.params))
        np.testing.assert_allclose(mean2, mean1 * a + b, rtol=rtol_mean)
        np.testing.assert_allclose(cov2, cov1 * np.outer(a, a), rtol=rtol_cov, atol=rtol_cov * np.abs(cov1 * np.outer(a, a)).max())

    key = jax.random.PRNGKey(4)
    # EM: k-means++ picks its seeds by Euclidean distance, which a per-column scaling changes; with one
    # scale for every column the same key picks the same rows and EM is equivariant to rounding.
    scalar = 3.0
    e1, e2 = fit("em", key, seed_data, 2, reg_covar=0.0), fit("em", key, seed_data * scalar + b, 2, reg_covar=0.0)
    np.testing.assert_allclose(e2.params.means, e1.params.means * scalar + b, rtol=1e-8)
    np.testing.assert_allclose(models.covariances(e2.params), np.asarray(models.covariances(e1.params)) * scalar**2,
                               rtol=1e-7, atol=1e-9)
    check(fit("map", key, seed_data, 2), fit("map", key, y, 2), 1e-4, 1e-4)
    n1, n2 = fit("nuts", key, seed_data, 2, **QUICK_NUTS), fit("nuts", key, y, 2, **QUICK_NUTS)
    sd = np.asarray(n1.samples.means).reshape(-1, 2, 2).std(axis=0)
    mc_error = 4 * sd / np.sqrt(n1.info["diagnostics"]["ess_bulk_min"])
    assert np.all(np.abs(np.asarray(n2.params.means) - (np.asarray(n1.params.means) * a + b)) <= mc_error * a + 1e-12)
    prior = n2.info["prior"]
    np.testing.assert_allclose(prior["mean_loc"], y.mean(0))
    np.testing.assert_allclose(prior["mean_scale"], 10 * y.std(0))
    np.testing.assert_allclose(prior["scale_loc"], y.std(0))


def test_prior_in_data_units_removes_the_pull_towards_zero():
    """Old Faithful-like waiting times (~80 min): a prior fixed at Normal(0, 10) pulled the means down."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([2.0, 54.0], [0.3, 6.0], size=(100, 2)), rng.normal([4.3, 80.0], [0.4, 6.0], size=(172, 2))])
    em = fit("em", jax.random.PRNGKey(0), x, 2)
    mp = fit("map", jax.random.PRNGKey(0), x, 2)
    order_em, order_map = np.argsort(em.params.means[:, 1]), np.argsort(mp.params.means[:, 1])
    np.testing.assert_allclose(mp.params.means[order_map], em.params.means[order_em], atol=0.05)


def test_collinear_rows_give_a_flagged_degenerate_component():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)) * 3
    line = np.outer(np.linspace(-1, 1, 8), [1.0, 2.0, -1.0]) + [12.0, 12.0, 12.0]  # 8 collinear rows, far away
    x = np.concatenate([x, line])
    r = fit("em", jax.random.PRNGKey(0), x, 2, n_init=4)
    degenerate = r.info["degenerate_components"]
    assert len(degenerate) == 1 and degenerate[0]["effective_count"] == pytest.approx(8, abs=0.5)
    assert any("reg_covar floor" in reason for reason in degenerate[0]["reasons"])
    assert any("degenerate" in w for w in r.info["warnings"])
    clean = fit("em", jax.random.PRNGKey(0), rng.normal(size=(200, 3)), 2)
    assert clean.info["degenerate_components"] == []


def test_complex_input_is_a_one_line_error():
    with pytest.raises(ValueError, match="real-valued"):
        fit("em", jax.random.PRNGKey(0), np.ones((10, 2), complex), 2)


def test_model_selection_skips_k_with_degenerate_fits_on_iris():
    """Iris: EM at larger K puts a component on the 29 flowers that share petal width 0.2 (a flat
    direction, likelihood unbounded): BIC then rewards that K. Excluding degenerate fits gives K = 2,
    the choice mclust's BIC makes on iris."""
    from sklearn.datasets import load_iris

    from analysis.selection import select_num_components

    x = load_iris().data
    raw = select_num_components(x, ks=range(1, 7), exclude_degenerate=False)
    rows = {r["k"]: r for r in raw.table}
    assert rows[raw.selected["bic"]]["degenerate"] > 0  # the trap: BIC alone picks a degenerate fit
    assert rows[2]["degenerate"] == 0 and rows[3]["degenerate"] == 0
    clean = select_num_components(x, ks=range(1, 7))
    assert clean.selected["bic"] == 2


def test_compiled_program_caches_are_bounded():
    """Each executable holds hundreds of memory mappings; the caches keep the newest MAX_COMPILED."""
    from inference.compiled_cache import MAX_COMPILED, remember_compiled

    cache = {}
    for i in range(MAX_COMPILED + 5):
        remember_compiled(cache, i, object())
    assert len(cache) == MAX_COMPILED and min(cache) == 5 and max(cache) == MAX_COMPILED + 4
