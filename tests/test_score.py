"""analysis.score: hand-computed scorecard on a tiny case; ARI against sklearn."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import models
from analysis.score import adjusted_rand_index, bic, component_errors, num_free_parameters, posterior_intervals, scorecard
from inference.result import FitResult
from models.params import GMMParams


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4)), min_size=1, max_size=40))
def test_ari_matches_sklearn(pairs):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    a, b = map(np.array, zip(*pairs))
    assert adjusted_rand_index(a, b) == pytest.approx(sklearn_metrics.adjusted_rand_score(a, b), abs=1e-12)


def test_ari_known_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == 0.0
    # hand computed: table [[2,0,0],[0,1,1]]: index 1, expected 2*1/6, max (2+1)/2
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx((1 - 1 / 3) / (1.5 - 1 / 3))


def _tiny():
    truth = models.to_numpy(models.from_covariances([0.5, 0.5], [[0.0, 0.0], [3.0, 0.0]], [np.eye(2), np.eye(2)]))
    est = models.to_numpy(models.from_covariances([0.4, 0.6], [[0.0, 1.0], [3.0, 0.0]], [np.eye(2), 4 * np.eye(2)]))
    return truth, est


def test_component_errors_hand_computed():
    truth, est = _tiny()
    e = component_errors(truth, est)
    np.testing.assert_allclose(e["weight_abs_error"], [0.1, 0.1])
    np.testing.assert_allclose(e["mean_l2_error"], [1.0, 0.0])
    np.testing.assert_allclose(e["cov_frobenius_error"], [0.0, np.sqrt(2 * 9.0)])
    # KL(N(m0,I)||N(m1,I)) = |m1-m0|^2/2 ; KL(N(0,I)||N(0,4I)) = 0.5 (2/4 + 0 - 2) + 2 log 2
    np.testing.assert_allclose(e["kl_true_to_estimate"], [0.5, 0.5 * (0.5 - 2) + 2 * np.log(2)])


def test_bic_and_parameter_count():
    assert num_free_parameters(2, 2) == 1 + 4 + 6
    assert bic(-100.0, 100, 2, 2) == pytest.approx(200 + 11 * np.log(100))


def test_scorecard_tiny_case():
    truth, est = _tiny()
    x = np.array([[0.0, 0.0], [0.1, 0.2], [3.0, 0.0], [2.9, -0.1]])
    z = np.array([0, 0, 1, 1])
    resp = np.array(models.responsibilities(est, x))
    r = FitResult("em", est, {"log_likelihood": np.array([-10.0, -9.0])}, None, resp, True, 2, 0.5,
                  {"compile_seconds": 0.4, "run_seconds": 0.1})
    c = scorecard(r, x, truth, z)
    assert c["log_likelihood"] == pytest.approx(float(models.log_likelihood(est, x)))
    assert c["log_likelihood_truth"] == pytest.approx(float(models.log_likelihood(truth, x)))
    assert c["ari"] == 1.0 and c["cluster_sizes"] == [2, 2]
    assert c["summary"]["weight_abs_error_max"] == pytest.approx(0.1)
    assert c["summary"]["mean_l2_error_max"] == pytest.approx(1.0)
    assert (c["num_iters"], c["converged"], c["seconds"], c["compile_seconds"]) == (2, True, 0.5, 0.4)
    assert c["posterior"] is None
    # without truth only what can be shown
    c2 = scorecard(r, x)
    assert c2["components"] is None and c2["ari"] is None and c2["log_likelihood_truth"] is None
    assert c2["bic"] == pytest.approx(bic(c2["log_likelihood"], 4, 2, 2))


def test_posterior_intervals_coverage():
    truth, _ = _tiny()
    rng = np.random.default_rng(0)
    draws = GMMParams(
        np.broadcast_to(truth.weights, (1, 200, 2)).copy(),
        truth.means + 0.1 * rng.normal(size=(1, 200, 2, 2)),
        np.broadcast_to(truth.scale_tril, (1, 200, 2, 2, 2)).copy() * (1 + 0.01 * rng.normal(size=(1, 200, 1, 1, 1))),
    )
    shifted = draws._replace(means=draws.means + 5.0)
    p = posterior_intervals(draws, truth)
    assert p["num_draws"] == 200 and p["level"] == 0.9
    assert np.all(p["means"]["covered"])
    np.testing.assert_allclose(p["means"]["sd"], 0.1, rtol=0.25)
    q = posterior_intervals(shifted, truth)
    assert not np.any(q["means"]["covered"]) and q["coverage"] < p["coverage"]
