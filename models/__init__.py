"""models: the GMM parameter pytree, its log-space density and the declared NumPyro model.

Importing this package turns on JAX's 64-bit mode (``jax_enable_x64``) so that float64 data stays
float64; float32 inputs are kept in float32 by every function here and in ``inference``.
"""

import jax

jax.config.update("jax_enable_x64", True)

from .density import component_log_prob, gaussian_kl, log_likelihood, pointwise_log_likelihood, responsibilities  # noqa: E402
from .missing import (  # noqa: E402
    has_missing,
    impute,
    missing_patterns,
    observed_component_log_prob,
    observed_log_likelihood,
    observed_pointwise_log_likelihood,
    observed_responsibilities,
    sample_missing,
)
from .params import GMMParams, covariances, from_covariances, permute, to_numpy, validate_params  # noqa: E402

# The NumPyro model (numpyro, funsor) and the alignment (scipy) load on first use: EM needs neither, and
# they are ~50 MB of a process whose memory is the data's (issue 11's budget).
_LAZY = {
    "align": "alignment", "component_cost": "alignment", "match_components": "alignment",
    "mean_of_draws": "alignment", "relabel_draws": "alignment",
    "gmm_model": "gmm", "log_prior": "gmm", "params_from_sites": "gmm", "sites_from_params": "gmm",
    "sample": "predictive", "sample_posterior_predictive": "predictive", "sample_prior": "predictive",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'models' has no attribute {name!r}")

__all__ = [
    "GMMParams",
    "covariances",
    "from_covariances",
    "permute",
    "to_numpy",
    "validate_params",
    "component_log_prob",
    "log_likelihood",
    "pointwise_log_likelihood",
    "responsibilities",
    "gmm_model",
    "sample",
    "sample_prior",
    "sample_posterior_predictive",
    "log_prior",
    "params_from_sites",
    "sites_from_params",
    "seed_problem",
    "gaussian_kl",
    "impute",
    "has_missing",
    "missing_patterns",
    "observed_component_log_prob",
    "observed_log_likelihood",
    "observed_pointwise_log_likelihood",
    "observed_responsibilities",
    "sample_missing",
    "align",
    "component_cost",
    "match_components",
    "relabel_draws",
    "mean_of_draws",
]


def seed_problem():
    """The seed notebook's truth: weights [0.3, 0.7], means [[1, 1], [-1, -1]], covariances I and 0.5 I."""
    return from_covariances([0.3, 0.7], [[1.0, 1.0], [-1.0, -1.0]], [[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.0], [0.0, 0.5]]])
