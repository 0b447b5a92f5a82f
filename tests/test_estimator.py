"""inference.GaussianMixture against scikit-learn: its own estimator checks, and its GaussianMixture
as the numerical reference (same initial parameters -> same fit to 1e-8)."""

import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import stats

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.mixture import GaussianMixture as SkGaussianMixture  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from inference import GaussianMixture  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

# Small engine settings so that sklearn's ~40 checks run the NumPyro engines in minutes, not hours.
SMALL_MAP = dict(num_steps=40, check_every=20)
SMALL_SVI = dict(num_steps=40, check_every=20, num_draws=20, map_options=dict(num_steps=40, check_every=20))
SMALL_NUTS = dict(num_chains=1, num_warmup=20, num_samples=20, num_assignment_draws=2,
                  map_options=dict(num_steps=40, check_every=20))


def blobs(seed=0, n=(300, 200, 250), dim=3, spread=4.0):
    """Three Gaussian clusters in ``dim`` dimensions with different shapes."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, size in enumerate(n):
        scale = rng.uniform(0.3, 1.2, size=dim)
        rot, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        parts.append(rng.normal(size=(size, dim)) * scale @ rot.T + spread * k)
    return np.concatenate(parts)


# --------------------------------------------------------------------------- sklearn's own checks
#
# Every check passes for EM and hard EM. The one skip: ``check_array_api_input`` raises SkipTest
# ("SCIPY_ARRAY_API is not set") for every estimator, sklearn's own GaussianMixture included, when
# SciPy was imported without SCIPY_ARRAY_API=1 (it must be set before SciPy is imported, and the rest
# of this test session imports SciPy first). test_array_api_check_in_subprocess runs that check in
# a fresh interpreter with the variable set, where it passes.


@parametrize_with_checks([GaussianMixture(method="em"), GaussianMixture(method="hard_em")])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([
    GaussianMixture(method="map", engine_options=SMALL_MAP),
    GaussianMixture(method="svi", engine_options=SMALL_SVI),
    GaussianMixture(method="nuts", engine_options=SMALL_NUTS),
])
def test_sklearn_estimator_checks_numpyro_engines(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 40 optimisation steps do not converge
        check(estimator)


def test_array_api_check_in_subprocess():
    code = (
        "import models\n"
        "from functools import partial\n"
        "from sklearn.utils.estimator_checks import check_array_api_input\n"
        "from inference import GaussianMixture\n"
        "for method in ('em', 'hard_em'):\n"
        "    check_array_api_input('GaussianMixture', GaussianMixture(method=method), array_namespace='numpy',"
        " expect_only_array_outputs=False)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


# --------------------------------------------------------------------------- sklearn as the reference


def _start(x, covariance_type, k=3):
    """A deliberately poor start (two means in one cluster, unit precisions), shaped per covariance type."""
    d = x.shape[1]
    precisions = {"full": np.tile(np.eye(d), (k, 1, 1)), "tied": np.eye(d), "diag": np.ones((k, d)),
                  "spherical": np.ones(k)}[covariance_type]
    return dict(weights_init=np.array([0.2, 0.3, 0.5]), means_init=x[[0, 1, 400]], precisions_init=precisions)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_init_as_sklearn_gives_sklearns_fit(covariance_type):
    x = blobs()
    init = _start(x, covariance_type)
    ref = SkGaussianMixture(3, covariance_type=covariance_type, tol=1e-6, max_iter=300, **init).fit(x)
    ours = GaussianMixture(3, covariance_type=covariance_type, tol=1e-6, max_iter=300, **init).fit(x)
    assert ours.n_iter_ == ref.n_iter_ > 2
    assert ours.converged_ and ref.converged_
    tight = dict(rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.lower_bound_, ref.lower_bound_, **tight)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, **tight)
    np.testing.assert_allclose(ours.weights_, ref.weights_, **tight)
    np.testing.assert_allclose(ours.means_, ref.means_, **tight)
    assert ours.covariances_.shape == ref.covariances_.shape
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, **tight)
    np.testing.assert_allclose(ours.precisions_cholesky_, ref.precisions_cholesky_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.precisions_, ref.precisions_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.bic(x), ref.bic(x), **tight)
    np.testing.assert_allclose(ours.aic(x), ref.aic(x), **tight)
    np.testing.assert_allclose(ours.score_samples(x), ref.score_samples(x), **tight)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(x), ref.predict(x))
    assert ours.score(x) == pytest.approx(ref.score(x), rel=1e-10)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_random_init_draws_sklearns_start(covariance_type):
    # init_params="random" (random responsibilities + one M-step) draws from random_state in
    # sklearn's order, so with n_init=1 the whole fit is sklearn's.
    x = blobs(seed=2)
    ref = SkGaussianMixture(3, covariance_type=covariance_type, init_params="random", random_state=5, tol=1e-7,
                            max_iter=500).fit(x)
    ours = GaussianMixture(3, covariance_type=covariance_type, init_params="random", random_state=5, tol=1e-7,
                           max_iter=500).fit(x)
    assert ours.n_iter_ == ref.n_iter_
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=1e-8)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-8, atol=1e-10)


def test_partial_init_keeps_given_parts():
    x = blobs()
    means = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 4.0], [8.0, 8.0, 8.0]])
    gm = GaussianMixture(3, means_init=means, max_iter=1, tol=0.0, random_state=0, n_init=2)
    with pytest.warns(ConvergenceWarning):
        gm.fit(x)
    # one EM iteration from means_init: the E-step at the given means assigns each blob to its mean
    ref = SkGaussianMixture(3, means_init=means, max_iter=1, tol=0.0, random_state=0)
    with pytest.warns(ConvergenceWarning):
        ref.fit(x)
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(ref.means_[:, 0]), atol=0.05)


def test_grid_search_picks_k_by_held_out_likelihood_like_sklearn():
    # shuffled, so that every fold sees every cluster
    x = np.random.default_rng(0).permutation(blobs(seed=3, n=(900, 600, 750), spread=6.0))
    grid = {"n_components": [1, 2, 3, 4, 5]}
    ours = GridSearchCV(GaussianMixture(random_state=0, n_init=2), grid, cv=3).fit(x)
    ref = GridSearchCV(SkGaussianMixture(random_state=0, n_init=2), grid, cv=3).fit(x)
    assert ours.best_params_ == ref.best_params_ == {"n_components": 3}
    # mean held-out log-likelihood per K: the same optimum as sklearn's for K <= 3 (K = 4, 5 add a
    # spurious component whose local optimum depends on the initialiser)
    np.testing.assert_allclose(ours.cv_results_["mean_test_score"][:3], ref.cv_results_["mean_test_score"][:3],
                               rtol=0, atol=1e-8)
    assert ours.cv_results_["mean_test_score"][2] > ours.cv_results_["mean_test_score"][1] + 0.5


def test_pipeline_with_scaler():
    x = blobs(seed=4) * np.array([1.0, 100.0, 0.01])
    pipe = Pipeline([("scale", StandardScaler()), ("gmm", GaussianMixture(3, random_state=0))]).fit(x)
    ref = Pipeline([("scale", StandardScaler()), ("gmm", SkGaussianMixture(3, random_state=0, n_init=3))]).fit(x)
    labels, ref_labels = pipe.predict(x), ref.predict(x)
    # same partition up to label names
    table = np.zeros((3, 3), int)
    np.add.at(table, (labels, ref_labels), 1)
    assert np.sort(table.max(axis=1)).sum() >= 0.99 * len(x)
    assert pipe.score(x) == pytest.approx(ref.score(x), abs=1e-3)


def test_clone_and_pickle_round_trip():
    x = blobs()
    gm = GaussianMixture(3, covariance_type="diag", random_state=0).fit(x)
    copy = clone(gm)
    assert copy.get_params() == gm.get_params() and not hasattr(copy, "means_")
    restored = pickle.loads(pickle.dumps(gm))
    np.testing.assert_array_equal(restored.predict_proba(x), gm.predict_proba(x))
    np.testing.assert_array_equal(restored.score_samples(x), gm.score_samples(x))
    np.testing.assert_array_equal(restored.means_, gm.means_)
    assert restored.result_.num_iters == gm.n_iter_


def test_second_fit_compiles_nothing_and_fit_predict_is_predict():
    x = blobs(seed=5)
    gm = GaussianMixture(3, random_state=0)
    labels = gm.fit_predict(x)
    np.testing.assert_array_equal(labels, gm.predict(x))
    gm.set_params(random_state=1).fit(x + 0.5)
    assert gm.result_.info["compile_seconds"] == 0.0


def test_scores_of_a_grid_over_k_share_one_program_per_row_bucket():
    """score / predict / bic / aic of K = 1..5 on folds of 166-167 rows (one row bucket) run one scoring
    program (components padded to 8 with weight 0); bic / aic are sklearn's formulas of the same scores (against
    sklearn's, padding included, to 1e-8: test_same_init_as_sklearn_gives_sklearns_fit)."""
    from inference import prediction
    from models.criteria import num_parameters

    x = blobs(seed=7, n=(200, 150, 150), dim=2)
    before = prediction._point_scores._cache_size()
    for k in range(1, 6):
        gm = GaussianMixture(k, random_state=0, max_iter=5).fit(x[:333])
        for part in (x[333:], x[334:]):
            point_ll = gm.score_samples(part)
            gm.predict(part)
            assert gm.predict_proba(part).shape == (len(part), k)
            expected = -2 * np.sum(point_ll) + num_parameters(k, 2) * np.log(len(part))
            np.testing.assert_allclose(gm.bic(part), expected, rtol=1e-12)
            np.testing.assert_allclose(gm.aic(part), -2 * np.sum(point_ll) + 2 * num_parameters(k, 2), rtol=1e-12)
    assert prediction._point_scores._cache_size() - before <= 1


# --------------------------------------------------------------------------- input handling


def test_inputs_lists_dataframes_and_dtypes():
    pd = pytest.importorskip("pandas")
    x = blobs(n=(60, 60, 60), dim=2)
    frame = pd.DataFrame(x, columns=["a", "b"])
    gm = GaussianMixture(3, random_state=0).fit(frame)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b"])
    assert gm.n_features_in_ == 2
    from_list = GaussianMixture(3, random_state=0).fit(x.tolist())
    np.testing.assert_allclose(from_list.means_, gm.means_)
    as_int = GaussianMixture(2, random_state=0).fit(np.round(x * 10).astype(np.int64))
    assert as_int.means_.dtype == np.float64
    single = GaussianMixture(3, random_state=0).fit(x.astype(np.float32))
    assert single.means_.dtype == np.float32 and single.covariances_.dtype == np.float32
    with pytest.warns(UserWarning, match="feature names"):
        gm.predict(x)


BAD_INPUTS = {  # NaN is not bad input: a missing value (allow_nan; tests/test_missing_estimator.py)
    "inf": np.array([[0.0, 1.0], [np.inf, 2.0], [1.0, 1.0]]),
    "one-d": np.arange(6.0),
    "empty": np.empty((0, 2)),
    "complex": np.array([[1 + 1j, 2.0], [3.0, 4.0], [5.0, 6.0]]),
    "one-sample": np.array([[1.0, 2.0]]),
    "strings": np.array([["a", "b"], ["c", "d"]]),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS) + ["sparse"])
def test_bad_input_raises_what_sklearn_raises(name):
    if name == "sparse":
        import scipy.sparse

        x = scipy.sparse.random(10, 3, density=0.5, format="csr", random_state=0)
    else:
        x = BAD_INPUTS[name]
    with pytest.raises(Exception) as ref:
        SkGaussianMixture(1).fit(x)
    with pytest.raises(type(ref.value)) as ours:
        GaussianMixture(1).fit(x)
    assert "\n" not in str(ours.value).strip()


def test_unfitted_and_wrong_feature_count():
    x = blobs(n=(50, 50, 50), dim=2)
    gm = GaussianMixture(2)
    for call in (gm.predict, gm.predict_proba, gm.score_samples, gm.score, gm.bic):
        with pytest.raises(NotFittedError):
            call(x)
    with pytest.raises(NotFittedError):
        gm.sample(3)
    gm.fit(x)
    with pytest.raises(ValueError, match="3 features, but GaussianMixture is expecting 2"):
        gm.predict(np.ones((4, 3)))
    with pytest.raises(ValueError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(x[:4])


def test_option_errors():
    x = blobs(n=(50, 50, 50), dim=2)
    with pytest.raises(ValueError, match="engine_options must not set"):
        GaussianMixture(2, engine_options={"tol": 1e-3}).fit(x)
    with pytest.raises(ValueError, match="full covariances only"):
        GaussianMixture(2, method="map", covariance_type="diag").fit(x)
    with pytest.raises(ValueError, match="unknown"):
        GaussianMixture(2, engine_options={"num_warmup": 5}).fit(x)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(2, weights_init=[0.5, 0.6]).fit(x)
    with pytest.raises(ValueError, match="precision"):
        GaussianMixture(2, covariance_type="diag", precisions_init=-np.ones((2, 2))).fit(x)


def test_convergence_warning_and_warm_start():
    x = blobs(seed=6)
    with pytest.warns(ConvergenceWarning):
        gm = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0, warm_start=True).fit(x)
    assert not gm.converged_ and gm.n_iter_ == 2
    first = gm.lower_bound_
    gm.set_params(max_iter=500, tol=1e-6).fit(x)  # continues from the previous parameters
    ref = GaussianMixture(3, max_iter=502, tol=1e-6, random_state=0).fit(x)
    assert gm.converged_ and gm.lower_bound_ >= first
    np.testing.assert_allclose(gm.lower_bound_, ref.lower_bound_, rtol=1e-6)


def test_verbose_prints_lower_bounds(capsys):
    x = blobs(seed=8)
    gm = GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1, tol=1e-6).fit(x)
    lines = capsys.readouterr().out.splitlines()
    assert "converged=True" in lines[0] and len(lines) == 1 + gm.n_iter_
    assert float(lines[-1].split()[-1]) == pytest.approx(gm.lower_bound_, abs=1e-5)


def test_sample_follows_the_fitted_mixture():
    x = blobs(seed=7)
    gm = GaussianMixture(3, random_state=0).fit(x)
    draws, labels = gm.sample(20000)
    assert draws.shape == (20000, 3) and labels.shape == (20000,)
    counts = np.bincount(labels, minlength=3) / 20000
    se = np.sqrt(gm.weights_ * (1 - gm.weights_) / 20000)
    assert np.all(np.abs(counts - gm.weights_) < 5 * se)
    for k in range(3):
        rows = draws[labels == k]
        se_mean = np.sqrt(np.diag(gm.covariances_[k]) / len(rows))
        assert np.all(np.abs(rows.mean(axis=0) - gm.means_[k]) < 5 * se_mean)
    again, _ = gm.sample(20000)
    np.testing.assert_array_equal(again, draws)  # int random_state: the same draws, as sklearn
    with pytest.raises(ValueError, match="n_samples"):
        gm.sample(0)


# --------------------------------------------------------------------------- posterior engines


def _scipy_posterior(samples, x):
    """Mean responsibilities and log mean density over draws, with scipy.stats (independent)."""
    w = samples.weights.reshape(-1, samples.weights.shape[-1])
    mu = samples.means.reshape((-1,) + samples.means.shape[-2:])
    low = samples.scale_tril.reshape((-1,) + samples.scale_tril.shape[-3:])
    resp, dens = 0.0, 0.0
    for s in range(w.shape[0]):
        comp = np.stack([w[s, k] * stats.multivariate_normal(mu[s, k], low[s, k] @ low[s, k].T).pdf(x)
                         for k in range(w.shape[1])], axis=1)
        resp = resp + comp / comp.sum(axis=1, keepdims=True)
        dens = dens + comp.sum(axis=1)
    return resp / w.shape[0], np.log(dens / w.shape[0])


@pytest.mark.slow
@pytest.mark.parametrize("method,options", [
    ("svi", dict(num_steps=600, num_draws=50)),
    ("nuts", dict(num_chains=1, num_warmup=150, num_samples=50)),
])
def test_posterior_engines(method, options):
    x = blobs(n=(120, 80, 100), dim=2, spread=5.0)
    gm = GaussianMixture(3, method=method, engine_options=options, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(x)
    resp, log_dens = _scipy_posterior(gm.result_.samples, x)
    np.testing.assert_allclose(gm.predict_proba(x, posterior=True), resp, atol=1e-10)
    np.testing.assert_allclose(gm.score_samples(x, posterior=True), log_dens, rtol=1e-10)
    np.testing.assert_array_equal(gm.predict(x, posterior=True), resp.argmax(axis=1))
    # point predictions: the posterior mean of the aligned draws (covariances averaged)
    draws = gm.result_.samples
    np.testing.assert_allclose(gm.means_, draws.means.reshape((-1, 3, 2)).mean(axis=0), rtol=1e-10)
    cov = draws.scale_tril @ np.swapaxes(draws.scale_tril, -1, -2)
    np.testing.assert_allclose(gm.covariances_, cov.reshape((-1, 3, 2, 2)).mean(axis=0), rtol=1e-8)
    from analysis import arviz_io  # ArviZ is the analysis layer's: the estimator has no posterior_

    idata = arviz_io.to_inference_data(gm.result_, x)
    assert idata.posterior["means"].shape[-2:] == (3, 2)
    assert idata.posterior["means"].shape[:2] == draws.means.shape[:2]
    # the EM fit of the same data agrees with the posterior mean on separated clusters
    em = GaussianMixture(3, random_state=0, n_init=3).fit(x)
    assert np.sort(em.means_[:, 0]) == pytest.approx(np.sort(gm.means_[:, 0]), abs=0.2)
    with pytest.raises(ValueError, match="posterior"):
        em.predict_proba(x, posterior=True)
    assert not hasattr(em, "posterior_")
