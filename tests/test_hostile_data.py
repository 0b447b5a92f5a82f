"""Ordinary data that once broke the core (issue 19): each input with its right value.

References: the float64 fit of the same rows (float32 precision), scikit-learn's BIC (model selection),
the unweighted fit (relative sample weights), the component's own rows (degeneracy).
"""

import jax
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import analysis.selection
from inference import fit
from inference.diagnostics import degenerate_components
from models.params import covariances

K0 = jax.random.PRNGKey(0)


# --------------------------------------------------------------------------- float32


def test_float32_tight_clusters_far_apart_equal_the_float64_fit():
    """Public reports: sklearn/pomegranate float32 fits of narrow clusters far from the data's centre.
    The expanded-form E-step and raw-moment M-step lost every digit in float32 (EM raised
    FloatingPointError, hard EM put both means at 50)."""
    r = np.random.default_rng(0)
    x = np.concatenate([r.normal(0, .01, (100, 1)), r.normal(100, .01, (100, 1))]).astype(np.float32)
    for method in ("em", "hard_em"):
        a = fit(method, K0, x, 2)
        b = fit(method, K0, x.astype(np.float64), 2)
        assert a.params.means.dtype == np.float32 and a.responsibilities.dtype == np.float32
        order_a, order_b = np.argsort(a.params.means[:, 0]), np.argsort(b.params.means[:, 0])
        np.testing.assert_allclose(a.params.means[order_a], b.params.means[order_b], rtol=1e-6, atol=1e-7)
        var_a = covariances(a.params)[order_a, 0, 0]
        var_b = covariances(b.params)[order_b, 0, 0]
        np.testing.assert_allclose(var_a, var_b, rtol=1e-4)
        np.testing.assert_allclose(var_b, [9.2e-5, 9.4e-5], rtol=0.02)
        assert a.trace["log_likelihood"][-1] == pytest.approx(507.0, abs=0.01)
        assert a.trace["log_likelihood"][-1] == pytest.approx(b.trace["log_likelihood"][-1], rel=1e-6)


def _two_clusters(rng, separation, offset, n=150):
    """Two unit-sd 2-D clusters ``separation`` sds apart, both ``offset`` from the origin, rounded to
    float32 (the rows both fits see)."""
    x = np.concatenate([rng.normal(0, 1, (n, 2)), rng.normal(0, 1, (n, 2)) * 0.5 + [separation, 0.0]]) + offset
    return x.astype(np.float32)


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("method", ["em", "hard_em"])
def test_float32_equals_float64_over_separations_and_offsets(method, covariance_type):
    """The grid of the issue: separations 0.1 .. 1e4 cluster sds, offsets 0 .. 1e3, every covariance type:
    float32 rows give the float64 fit of the same rows (same key: the same start) to ~1e-4."""
    rng = np.random.default_rng(1)
    for separation in (0.1, 1.0, 10.0, 100.0, 1e3, 1e4):
        for offset in (0.0, 1e3):
            x32 = _two_clusters(rng, separation, offset)
            a = fit(method, K0, x32, 2, covariance_type=covariance_type, max_iters=200)
            b = fit(method, K0, x32.astype(np.float64), 2, covariance_type=covariance_type, max_iters=200)
            where = f"separation {separation}, offset {offset}"
            assert a.num_iters == b.num_iters, where
            np.testing.assert_allclose(a.params.weights, b.params.weights, rtol=1e-4, atol=1e-6, err_msg=where)
            # means to 1e-4 of a cluster's sd, or float32's own spacing at their size (1e4: 1e-3)
            atol = 1e-4 * 0.5 + np.spacing(np.abs(b.params.means).astype(np.float32)).astype(np.float64)
            assert np.all(np.abs(a.params.means - b.params.means) <= atol), where
            np.testing.assert_allclose(covariances(a.params), covariances(b.params), rtol=1e-4, atol=1e-6, err_msg=where)
            assert a.trace["log_likelihood"][-1] == pytest.approx(b.trace["log_likelihood"][-1], rel=1e-6, abs=1e-6), where


def test_float32_values_beyond_its_precision_are_refused_in_one_line():
    r = np.random.default_rng(0)
    x = (1e6 + r.normal(0, 1, (200, 2))).astype(np.float32)  # float32 steps by 0.0625 at 1e6
    for method in ("em", "hard_em"):
        with pytest.raises(ValueError, match=r"x \(float32\) cannot resolve column 0.*float64") as info:
            fit(method, K0, x, 2)
        assert "\n" not in str(info.value)
    fit("em", K0, x.astype(np.float64) - 1e6, 2)  # the same rows as float64 minus the offset: fine
    # float32 at ordinary offsets passes (1e3: steps of 6e-5 against an sd of 1)
    fit("em", K0, (1e3 + r.normal(0, 1, (200, 2))).astype(np.float32), 2)


# --------------------------------------------------------------------------- degeneracy and selection


@pytest.mark.parametrize("num_features", [1, 2])
def test_separated_clusters_are_not_degenerate_and_bic_picks_three(num_features):
    """Public reports: well-separated clusters flagged degenerate made selection pick K = 1."""
    r = np.random.default_rng(0)
    x = np.concatenate([r.normal(m, 1, (100, num_features)) for m in (0, 500, 1000)])
    result = fit("em", K0, x, 3, n_init=2)
    assert result.info["degenerate_components"] == []
    selection = analysis.selection.select_num_components(x, ks=range(1, 5))
    assert selection.selected["bic"] == 3 and selection.selected["icl"] == 3
    sk_bic = [GaussianMixture(k, n_init=2, random_state=0).fit(x).bic(x) for k in range(1, 5)]
    assert int(np.argmin(sk_bic)) + 1 == 3


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e6])
def test_degeneracy_rule_is_scale_free_on_healthy_fits(scale):
    """Tiny and huge scales, columns in different units (x 1 and x 1000): no component is degenerate.
    (reg_covar scales with the data, as sklearn's users are told to do.)"""
    r = np.random.default_rng(2)
    x = np.concatenate([r.normal(0, 1, (150, 2)), r.normal(6, 0.5, (150, 2))]) * [1.0, 1000.0] * scale
    result = fit("em", K0, x, 2, reg_covar=1e-6 * scale**2)
    assert result.info["degenerate_components"] == []


def test_heavily_overlapping_clusters_are_not_degenerate():
    r = np.random.default_rng(3)
    x = np.concatenate([r.normal(0, 1, (200, 2)), r.normal(0.3, 1.2, (200, 2))])
    assert fit("em", K0, x, 2).info["degenerate_components"] == []
    # hard EM really collapses here (a cluster of 2 rows): flagged, and the flag matches its own rows
    hard = fit("hard_em", K0, x, 2)
    sizes = np.bincount(np.argmax(hard.responsibilities, axis=1), minlength=2)
    flagged = {d["component"] for d in hard.info["degenerate_components"]}
    assert flagged == {k for k in range(2) if sizes[k] < 3}


def test_rows_sharing_one_value_are_degenerate():
    """Integer ratings: a component whose rows share one value of a column has an unbounded likelihood;
    the rule names it, from the component's own spread against the column's gap between values (1)."""
    r = np.random.default_rng(0)
    x = np.concatenate([r.normal(0, 1, (100, 2)), np.c_[np.full(50, 3.0), r.integers(1, 6, 50)]])
    x[:100] = np.round(x[:100])
    result = fit("em", K0, x, 2, init="kmeans")
    flagged = result.info["degenerate_components"]
    assert len(flagged) >= 1
    k = flagged[0]["component"]
    assert covariances(result.params)[k, 0, 0] < 1e-3  # the collapsed column
    # the same rule on MAP's point estimate (no reg_covar floor): rows sharing one value
    params = result.params
    assert degenerate_components(params, x, result.responsibilities, None)[0]["component"] == k


def test_k_near_n_is_degenerate_by_effective_points():
    r = np.random.default_rng(4)
    x = r.normal(size=(12, 2))
    result = fit("em", K0, x, 10)
    assert any("effective points" in " ".join(d["reasons"]) for d in result.info["degenerate_components"])


# --------------------------------------------------------------------------- sample weights


def _blobs():
    r = np.random.default_rng(0)
    return np.concatenate([r.normal(-2, 1, (150, 2)), r.normal(2, .7, (100, 2))])


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("init", ["random_from_data", "kmeans++", "kmeans"])
def test_weights_scaled_anyhow_give_the_unweighted_fit_em(method, init):
    """Weights summing to 1 made ``sum(w) - 1`` a 2e-16 denominator (both means at [-0.51, -0.34])."""
    x = _blobs()
    want = fit(method, K0, x, 2, init=init)
    for scale in (1e-6, 1.0 / len(x), 1e3):
        got = fit(method, K0, x, 2, init=init, sample_weight=np.full(len(x), scale))
        for a, b in zip(got.params, want.params):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=f"{init} x {scale}")
        assert got.info["total_weight"] == pytest.approx(len(x))
    if method == "em":  # (hard EM from random rows may stop elsewhere: the point is it does not move)
        np.testing.assert_allclose(np.sort(want.params.means[:, 0]), [-2.16, 1.97], atol=0.02)


def test_weights_scaled_anyhow_give_the_unweighted_fit_map_svi():
    x = _blobs()
    opts = {"map": dict(n_init=1, num_steps=500), "svi": dict(num_steps=400, check_every=100, num_draws=100, progress=False)}
    for method, o in opts.items():
        want = fit(method, K0, x, 2, **o)
        for scale in (1e-6, 1e3):
            got = fit(method, K0, x, 2, sample_weight=np.full(len(x), scale), **o)
            np.testing.assert_allclose(got.params.means, want.params.means, rtol=1e-6, atol=1e-8, err_msg=f"{method} x {scale}")
            np.testing.assert_allclose(covariances(got.params), covariances(want.params), rtol=1e-6, atol=1e-8)


def test_weights_scaled_anyhow_give_the_unweighted_posterior_nuts():
    """In distribution: the potentials agree to rounding, NUTS trajectories amplify rounding."""
    x = _blobs()
    o = dict(num_chains=1, num_warmup=300, num_samples=400, progress=False)
    want = fit("nuts", K0, x, 2, **o)
    got = fit("nuts", K0, x, 2, sample_weight=np.full(len(x), 1e-6), **o)
    a, b = np.asarray(got.samples.means), np.asarray(want.samples.means)
    sd = b.std(axis=(0, 1))
    np.testing.assert_allclose(a.mean(axis=(0, 1)), b.mean(axis=(0, 1)), atol=0.6 * sd.max())
    np.testing.assert_allclose(a.std(axis=(0, 1)), sd, rtol=0.35)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_sklearn_30382_two_far_points_give_the_reg_covar_floor(dtype, covariance_type):
    """scikit-learn issue 30382 (PR 30401 xfails 'tied'): rows [9999] and [0], K = 2, reg_covar = 0.1 gave a
    covariance of -0.99999979 in float32. Right: the means at the two rows, every covariance 0.1, and both
    components flagged degenerate (one point each, at the reg_covar floor)."""
    x = np.array([[9999.0], [0.0]], dtype=dtype)
    result = fit("em", K0, x, 2, covariance_type=covariance_type, reg_covar=0.1)
    np.testing.assert_allclose(np.sort(result.params.means.ravel()), [0.0, 9999.0], atol=1e-6)
    np.testing.assert_allclose(covariances(result.params).ravel(), [0.1, 0.1], rtol=1e-5)
    assert sorted(d["component"] for d in result.info["degenerate_components"]) == [0, 1]
