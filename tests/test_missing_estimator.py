"""The scikit-learn estimator on data with NaN holes (issue 22 part 3): fit / predict / predict_proba / score_samples /
score use the observed-data density (``models.missing``) at the fitted parameters, ``impute`` is ``models.impute``,
complete data keep today's prediction programs, sklearn's ``allow_nan`` tag, inf refused."""

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.utils import get_tags

import models
from inference import GaussianMixture
from inference import prediction
from models.missing import impute, observed_pointwise_log_likelihood, observed_responsibilities
from models.params import GMMParams


def _data(n=240, fraction=0.15, seed=0):
    x = np.asarray(models.sample(jax.random.PRNGKey(seed), models.seed_problem(), n)[0])
    holes = x.copy()
    holes[np.random.default_rng(seed).uniform(size=x.shape) < fraction] = np.nan
    holes[3] = np.nan  # a row with nothing observed: density 1, responsibilities = weights
    return x, holes


@pytest.fixture(scope="module")
def fitted():
    x, holes = _data()
    return GaussianMixture(2, random_state=0).fit(holes), x, holes


def test_tags_allow_nan_and_inf_is_refused(fitted):
    est, _, holes = fitted
    assert get_tags(GaussianMixture()).input_tags.allow_nan is True
    bad = holes.copy()
    bad[0, 0] = np.inf
    for call in (est.predict, est.score_samples, est.impute, GaussianMixture(2).fit):
        with pytest.raises(ValueError, match="infinity"):
            call(bad)


def test_predictions_with_holes_are_the_observed_data_density(fitted):
    est, _, holes = fitted
    params = est.result_.params
    assert np.isfinite(est.weights_).all() and np.isfinite(est.means_).all() and est.converged_
    resp = np.asarray(observed_responsibilities(params, holes))
    point = np.asarray(observed_pointwise_log_likelihood(params, holes))
    np.testing.assert_allclose(est.predict_proba(holes), resp, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(est.predict(holes), resp.argmax(axis=1))
    np.testing.assert_allclose(est.score_samples(holes), point, rtol=1e-12, atol=1e-12)
    assert est.score(holes) == pytest.approx(point.mean(), rel=1e-12)
    np.testing.assert_allclose(est.predict_proba(holes)[3], est.weights_, atol=1e-12)  # nothing observed
    assert est.score_samples(holes)[3] == pytest.approx(0.0, abs=1e-12)
    # EM's lower bound: the observed-data log-likelihood per row at the last E-step (one iteration before the end)
    assert est.lower_bound_ == pytest.approx(point.mean(), abs=est.tol)
    # one row at a time (another row bucket and pattern count) gives the same numbers
    np.testing.assert_allclose(est.score_samples(holes[:7]), point[:7], rtol=1e-12, atol=1e-12)


def test_impute_is_models_impute_and_keeps_observed_entries(fitted):
    est, x, holes = fitted
    completed = est.impute(holes)
    np.testing.assert_array_equal(completed, np.asarray(impute(est.result_.params, holes)))
    seen = ~np.isnan(holes)
    np.testing.assert_array_equal(completed[seen], holes[seen])
    assert np.isfinite(completed).all()
    np.testing.assert_array_equal(est.impute(x), x)  # nothing missing: X as it is
    assert est.impute(holes.astype(np.float32)).dtype == np.float32


def test_complete_data_keep_the_programs_they_had(fitted):
    est, x, _ = fitted
    params = GMMParams(*(np.asarray(a) for a in est.result_.params))
    padded = np.zeros((prediction.bucket(x.shape[0]), x.shape[1]))
    padded[: x.shape[0]] = x
    # the complete-data program, called as before (components padded to their bucket with weight 0)
    log_resp, point = prediction._point_scores(prediction._pad_components(params, x.dtype), padded)
    num_rows, num_components = x.shape[0], params.weights.shape[0]
    np.testing.assert_array_equal(np.log(est.predict_proba(x)),
                                  np.log(np.exp(np.asarray(log_resp)[:num_rows, :num_components])))
    np.testing.assert_array_equal(est.score_samples(x), np.asarray(point)[:num_rows])
    unpadded_resp, unpadded_point = prediction._point_scores(params, padded)  # padding changes nothing
    np.testing.assert_allclose(np.asarray(log_resp)[:num_rows, :num_components], np.asarray(unpadded_resp)[:num_rows],
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(point)[:num_rows], np.asarray(unpadded_point)[:num_rows], rtol=1e-12)
    np.testing.assert_allclose(est.predict_proba(x), np.asarray(models.responsibilities(params, x)), atol=1e-12)


def test_posterior_scores_with_holes_average_the_observed_density_over_draws():
    """``posterior=True`` (svi / nuts) on rows with holes: log mean_s p(x_o | theta_s), mean responsibilities."""
    _, holes = _data(n=50)
    truth = models.seed_problem()
    draws = []
    for s in range(6):
        shift = 0.1 * s
        draws.append(GMMParams(np.asarray(truth.weights), np.asarray(truth.means) + shift, np.asarray(truth.scale_tril)))
    samples = GMMParams(*(np.stack([getattr(d, f) for d in draws]).reshape((2, 3) + getattr(draws[0], f).shape)
                          for f in GMMParams._fields))
    resp, point = prediction.posterior_scores(samples, holes)
    each = np.stack([np.asarray(observed_pointwise_log_likelihood(d, holes)) for d in draws])
    np.testing.assert_allclose(point, logsumexp(each, axis=0) - np.log(6), rtol=1e-12, atol=1e-12)
    mean_resp = np.mean([np.asarray(observed_responsibilities(d, holes)) for d in draws], axis=0)
    np.testing.assert_allclose(resp, mean_resp, atol=1e-12)


def test_sklearn_pickle_check_with_nan():
    """sklearn's own check for allow_nan estimators: 10 NaN cells in the data, fit, pickle, same predictions."""
    from sklearn.utils.estimator_checks import check_estimators_pickle

    check_estimators_pickle("GaussianMixture", GaussianMixture(random_state=0))


@pytest.mark.parametrize("method", ["hard_em", "map"])
def test_other_engines_fit_with_holes(method):
    """Waits on the engines: hard EM with holes (landed with EM) and MAP (NumPyro engines with holes)."""
    _, holes = _data(n=160)
    options = {"num_steps": 300} if method == "map" else None
    est = GaussianMixture(2, method=method, random_state=0, engine_options=options).fit(holes)
    point = np.asarray(observed_pointwise_log_likelihood(est.result_.params, holes))
    np.testing.assert_allclose(est.score_samples(holes), point, rtol=1e-12, atol=1e-12)
    assert np.isfinite(est.impute(holes)).all()
