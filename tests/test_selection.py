"""analysis.selection: BIC/AIC equal sklearn's for the same parameters; ICL; WAIC; BIC picks the true K."""

import jax
import numpy as np
import pytest

import models
from analysis import selection
from inference import fit

sklearn_mixture = pytest.importorskip("sklearn.mixture")


def _sklearn_from_params(params, covariance_type):
    """A GaussianMixture whose fitted attributes are ``params`` (reduced to ``covariance_type``)."""
    from sklearn.mixture._gaussian_mixture import _compute_precision_cholesky

    p = models.to_numpy(params)
    covs = np.asarray(models.covariances(p))
    k, d = p.means.shape
    if covariance_type == "full":
        sk_cov = covs
    elif covariance_type == "tied":
        sk_cov = covs[0]
    elif covariance_type == "diag":
        sk_cov = np.diagonal(covs, axis1=1, axis2=2).copy()
    else:
        sk_cov = covs[:, 0, 0].copy()
    gm = sklearn_mixture.GaussianMixture(n_components=k, covariance_type=covariance_type)
    gm.weights_ = np.asarray(p.weights)
    gm.means_ = np.asarray(p.means)
    gm.covariances_ = sk_cov
    gm.precisions_cholesky_ = _compute_precision_cholesky(sk_cov, covariance_type)
    return gm


@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_bic_aic_match_sklearn(covariance_type, seed_data):
    truth, x, _ = seed_data
    x = x[:800]
    result = fit("em", jax.random.PRNGKey(3), x, 3, covariance_type=covariance_type, max_iters=60)
    gm = _sklearn_from_params(result.params, covariance_type)
    np.testing.assert_allclose(selection.bic(result, x), gm.bic(x), rtol=1e-9)
    np.testing.assert_allclose(selection.aic(result, x), gm.aic(x), rtol=1e-9)
    assert selection.num_parameters(3, 2, covariance_type) == gm._n_parameters()
    row = selection.criteria_row(result, x)
    np.testing.assert_allclose(row["bic"], gm.bic(x), rtol=1e-9)
    # ICL = BIC + 2 * entropy of sklearn's own responsibilities
    resp = gm.predict_proba(x)
    ent = -np.sum(np.where(resp > 0, resp * np.log(np.where(resp > 0, resp, 1.0)), 0.0))
    np.testing.assert_allclose(selection.icl(result, x), gm.bic(x) + 2 * ent, rtol=1e-8)
    assert row["icl"] >= row["bic"]


def test_num_parameters_formula():
    assert selection.num_parameters(1, 1) == 2
    assert selection.num_parameters(3, 2, "full") == 2 + 6 + 9
    with pytest.raises(ValueError):
        selection.num_parameters(2, 2, "banana")


def test_waic_matches_formula_and_single_draw():
    rng = np.random.default_rng(0)
    ll = rng.normal(-2.0, 0.3, size=(400, 50))
    w = selection.waic(ll)
    # the definition (Watanabe; Vehtari, Gelman & Gabry 2017) with ArviZ's population variance
    lppd = np.log(np.mean(np.exp(ll), axis=0))
    np.testing.assert_allclose(w["elpd_waic"], np.sum(lppd - ll.var(0, ddof=0)), rtol=1e-12)
    np.testing.assert_allclose(w["p_waic"], np.sum(ll.var(0, ddof=0)), rtol=1e-12)
    one = selection.waic(ll[:1])
    np.testing.assert_allclose(one["elpd_waic"], ll[0].sum())
    assert one["p_waic"] == 0.0


def test_select_rule():
    rows = [{"k": 1, "bic": 10.0, "loo": -5.0}, {"k": 2, "bic": 3.0, "loo": -1.0}, {"k": 3, "bic": 4.0, "loo": None}]
    assert selection.select(rows, "bic") == 2
    assert selection.select(rows, "loo") == 2
    assert selection.select([], "aic") is None
    with pytest.raises(ValueError):
        selection.select(rows, "nope")


def test_bic_selects_three_well_separated_components():
    truth = models.from_covariances(
        [0.3, 0.4, 0.3], [[-6.0, 0.0], [0.0, 6.0], [6.0, 0.0]], np.stack([np.eye(2), 0.6 * np.eye(2), np.diag([1.5, 0.5])])
    )
    x, _ = models.sample(jax.random.PRNGKey(7), truth, 450)
    sel = selection.select_num_components(np.asarray(x), range(1, 6), jax.random.PRNGKey(1), method="em")
    assert sel.selected["bic"] == 3
    assert sel.selected["icl"] == 3
    assert [row["k"] for row in sel.table] == [1, 2, 3, 4, 5]
    assert set(sel.fits) == {1, 2, 3, 4, 5}
    assert all(row["error"] is None for row in sel.table)
