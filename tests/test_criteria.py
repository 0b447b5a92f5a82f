"""models.criteria: the information criteria as functions of (params, x), one definition for the estimator
and the report (sklearn's numbers are checked through analysis.selection in test_selection.py)."""

import numpy as np
import pytest

import models
from models import criteria


def test_covariance_types_are_the_engines():
    from inference.stats import COVARIANCE_TYPES

    assert criteria.COVARIANCE_TYPES == COVARIANCE_TYPES


@pytest.mark.parametrize("covariance_type", criteria.COVARIANCE_TYPES)
def test_criteria_of_params_and_of_a_total_log_likelihood_agree(covariance_type):
    truth = models.to_numpy(models.seed_problem())
    rng = np.random.default_rng(0)
    x = rng.normal(size=(97, 2))
    ll = float(np.sum(np.asarray(models.pointwise_log_likelihood(truth, x))))
    p = criteria.num_parameters(2, 2, covariance_type)
    assert criteria.total_log_likelihood(truth, x) == pytest.approx(ll, rel=1e-12)
    assert criteria.bic(truth, x, covariance_type) == pytest.approx(-2 * ll + p * np.log(97), rel=1e-12)
    assert criteria.bic(truth, x, covariance_type) == pytest.approx(criteria.bic_of(ll, 97, 2, 2, covariance_type), rel=1e-12)
    assert criteria.aic(truth, x, covariance_type) == pytest.approx(criteria.aic_of(ll, 2, 2, covariance_type), rel=1e-12)
    resp = np.asarray(models.responsibilities(truth, x))
    entropy = -np.sum(resp * np.log(resp))
    assert criteria.responsibility_entropy(truth, x) == pytest.approx(entropy, rel=1e-10)
    assert criteria.icl(truth, x, covariance_type) == pytest.approx(criteria.bic(truth, x, covariance_type) + 2 * entropy)
    with pytest.raises(ValueError, match="covariance_type"):
        criteria.num_parameters(2, 2, "banana")
