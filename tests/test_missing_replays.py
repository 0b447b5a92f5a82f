"""Public bug reports about missing values in mixture models, replayed with their right answers.

- pmelchior/pygmmis#3: a 2-D data set with one NaN in each column and a constant second column.
- Labo-Lacourse/stepmix#64: k-means initialisation crashed on NaN (KMeans refuses missing values).
- jmschrei/pomegranate#1139 (GMM with NaN fails) and pomegranate PR #373's tilted Gaussian: the
  covariance under MCAR holes, where mean imputation shrinks the variances.
- scikit-learn #9268 / PR #9581 (EM with missing data, Ghahramani & Jordan 1994, never merged).
"""

import jax
import numpy as np
import pytest

import models
from inference import fit


def test_pygmmis_3_imputes_from_the_fitted_gaussian():
    """K = 1 on [[1,5],[2,5],...,[6,nan],[nan,5]]: the second column is constant (variance = reg_covar),
    so [6, nan] is completed with 5, and [nan, 5] with the first column's maximum-likelihood mean: the
    MLE under MAR regresses column 0 on column 1, which is constant (covariance 0), so that mean is the
    average of the 6 observed values in column 0, 3.5."""
    x = np.array([[1, 5], [2, 5], [3, 5], [4, 5], [5, 5], [6, np.nan], [np.nan, 5]], dtype=np.float64)
    result = fit("em", jax.random.PRNGKey(0), x, 1, reg_covar=1e-6, tol=1e-12, max_iters=500)
    filled = np.asarray(models.impute(result.params, x))
    assert filled[5, 1] == pytest.approx(5.0, abs=1e-6)
    assert filled[6, 0] == pytest.approx(3.5, abs=1e-6)
    np.testing.assert_allclose(np.asarray(result.params.means[0]), [3.5, 5.0], atol=1e-6)


@pytest.mark.parametrize("init", ["kmeans", "kmeans++", "random_from_data"])
def test_stepmix_64_initialisers_do_not_read_nan(init):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3, 1, (200, 3)), rng.normal(3, 1, (200, 3))])
    x[rng.random(x.shape) < 0.2] = np.nan
    result = fit("em", jax.random.PRNGKey(1), x, 2, init=init, n_init=2)
    assert result.converged
    assert np.all(np.isfinite(np.asarray(result.params.means)))
    np.testing.assert_allclose(np.sort(np.asarray(result.params.means)[:, 0]), [-3, 3], atol=0.3)


def test_pomegranate_373_tilted_gaussian_covariance_under_mcar_holes():
    """One tilted Gaussian, d = 4, 20% MCAR: EM's covariance (the MLE under MAR) matches the complete-data
    estimate to within sampling error, while mean imputation shrinks every variance by ~20%."""
    rng = np.random.default_rng(1)
    d, n = 4, 4000
    tilt = rng.exponential(1.4, size=(d, d))
    full = rng.normal(8, 4, size=(n, d)) @ tilt
    x = full.copy()
    x[rng.random(x.shape) < 0.2] = np.nan
    complete_cov = np.cov(full, rowvar=False, bias=True)
    em = fit("em", jax.random.PRNGKey(2), x, 1, tol=1e-10, max_iters=1000)
    em_cov = np.asarray(models.covariances(em.params))[0]
    mean_imputed = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    imputed_cov = np.cov(mean_imputed, rowvar=False, bias=True)
    scale = np.sqrt(np.outer(np.diag(complete_cov), np.diag(complete_cov)))
    em_error = np.max(np.abs(em_cov - complete_cov) / scale)
    imputed_error = np.max(np.abs(imputed_cov - complete_cov) / scale)
    assert em_error < 0.05  # sampling error of a correlation-scaled entry at n ~ 3000 is ~0.02
    assert imputed_error > 0.15  # mean imputation: variances x ~0.8
    assert imputed_error > 4 * em_error
