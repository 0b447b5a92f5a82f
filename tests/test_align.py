"""analysis.align: alignment undoes any permutation; whole FitResults are aligned consistently."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import models
from analysis.align import align_params, align_result, align_results, inverse_permutation, relabel_labels
from fakes import fake_result
from conftest import random_params
from models.params import permute, to_numpy


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 5), d=st.integers(1, 3), data=st.data())
def test_alignment_undoes_any_permutation(seed, k, d, data):
    rng = np.random.default_rng(seed)
    truth = to_numpy(random_params(rng, k, d))
    perm = np.array(data.draw(st.permutations(range(k))))
    shuffled = to_numpy(permute(truth, perm))
    aligned, found = align_params(truth, shuffled)
    np.testing.assert_array_equal(shuffled.weights[found], truth.weights)
    for a, b in zip(aligned, truth):
        np.testing.assert_allclose(a, b)
    # the labels of the shuffled estimate map back to the truth's labels
    labels = rng.integers(0, k, size=20)
    shuffled_labels = inverse_permutation(perm)[labels]  # label j of truth is label inv[j] of shuffled
    np.testing.assert_array_equal(relabel_labels(shuffled_labels, found), labels)


@pytest.fixture(scope="module")
def problem():
    truth = models.to_numpy(models.seed_problem())
    rng = np.random.default_rng(0)
    z = (rng.uniform(size=150) < 0.7).astype(int)
    x = np.asarray(truth.means)[z] + rng.normal(size=(150, 2)) * np.where(z[:, None] == 1, np.sqrt(0.5), 1.0)
    return truth, x, z


def test_align_result_permutes_params_responsibilities_and_assignments(problem):
    truth, x, _ = problem
    r = fake_result("hard_em", truth, x, perm=[1, 0])
    a = align_result(r, truth)
    np.testing.assert_array_equal(a.info["alignment_perm"], [1, 0])
    np.testing.assert_allclose(a.params.means, np.asarray(r.params.means)[::-1])
    np.testing.assert_allclose(a.responsibilities, r.responsibilities[:, ::-1])
    np.testing.assert_array_equal(a.info["assignments"], 1 - r.info["assignments"])
    assert a.method == r.method and a.trace is r.trace
    # close to the truth after alignment, far before
    assert np.abs(a.params.means - truth.means).max() < 0.3 < np.abs(r.params.means - truth.means).max()


def test_label_switched_draws_are_relabelled_and_rhat_drops(problem):
    truth, x, _ = problem
    r = fake_result("nuts", truth, x, perm=[1, 0], switch_chain=True, num_draws=60)
    a = align_result(r, truth)
    assert a.info["rhat_before"]["means"] > 1.5
    assert a.info["rhat_after"]["means"] < 1.1
    assert a.info["relabelled_fraction"] == pytest.approx(0.5)
    # every aligned draw is near the truth
    assert np.abs(a.samples.means - truth.means).max() < 0.5
    # the point estimate is the mean of the aligned draws
    np.testing.assert_allclose(a.params.means, a.samples.means.mean((0, 1)))


def test_engine_relabelling_is_undone_for_rhat_before(problem):
    truth, x, _ = problem
    r = fake_result("nuts", truth, x, switch_chain=True, num_draws=60)
    # the engine already relabelled the second chain and reports its permutations
    perms = np.zeros(r.samples.weights.shape, int) + np.arange(2)
    perms[1] = [1, 0]
    engine_aligned = to_numpy(permute(r.samples, perms))
    r2 = type(r)(**{**r.__dict__, "samples": engine_aligned, "info": {**r.info, "permutations": perms}})
    a = align_result(r2, truth)
    assert a.info["rhat_before"]["means"] > 1.5  # measured on the draws as sampled
    assert a.info["rhat_after"]["means"] < 1.1


def test_align_results_without_truth_uses_em_as_reference(problem):
    truth, x, _ = problem
    results = {"hard_em": fake_result("hard_em", truth, x, perm=[1, 0]), "em": fake_result("em", truth, x, seed=1)}
    aligned, ref = align_results(results)
    np.testing.assert_allclose(ref.means, results["em"].params.means)
    np.testing.assert_allclose(aligned["hard_em"].params.means, results["hard_em"].params.means[::-1])


def test_degenerate_components_and_warnings_are_renamed_to_the_aligned_labels(problem):
    """Issue 19 part 5: an engine's 'component k' (its own numbering) becomes the aligned component."""
    from analysis.align import relabel_text

    truth, x, _ = problem
    r = fake_result("em", truth, x, perm=[1, 0])
    info = dict(r.info, degenerate_components=[{"component": 0, "reasons": ["collapsed"]}],
                warnings=["component 0 is degenerate: collapsed", "R-hat 1.2 (worst: means[0, 1]): ..."],
                final_counts=np.array([10.0, 140.0]), diagnostics={"worst_rhat": "covariances[1, 0, 1]", "rhat_max": 1.2})
    a = align_result(type(r)(**{**r.__dict__, "info": info}), truth)
    # the engine's component 0 is the estimate of the truth's component 1
    np.testing.assert_allclose(a.params.means[1], np.asarray(r.params.means)[0])
    assert a.info["degenerate_components"] == [{"component": 1, "reasons": ["collapsed"]}]
    assert a.info["warnings"] == ["component 1 is degenerate: collapsed", "R-hat 1.2 (worst: means[1, 1]): ..."]
    np.testing.assert_array_equal(a.info["final_counts"], [140.0, 10.0])
    assert a.info["diagnostics"] == {"worst_rhat": "covariances[0, 0, 1]", "rhat_max": 1.2}
    assert info["degenerate_components"] == [{"component": 0, "reasons": ["collapsed"]}]  # the engine's info untouched
    # columns, other numbers and components out of range are left alone
    assert relabel_text("column 0 of component 5; 0 rows", [1, 0]) == "column 0 of component 5; 0 rows"
