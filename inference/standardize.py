"""The NumPyro engines' prior in the data's units: fit standardised data, report data units.

``models.gmm_model``'s default prior (means ~ Normal(0, 10), per-dimension scales ~ LogNormal(log 1, 2))
is written for data of unit spread. Like mclust's default prior and scikit-learn's
BayesianGaussianMixture, the engines here place it in the data's units: each column is centred at its
mean and divided by its standard deviation, the model is fitted there, and every parameter is mapped
back. Fitting standardised data with the default prior IS fitting the data with

    means[k, d]  ~ Normal(mean_d, 10 sd_d)
    scales[k, d] ~ LogNormal(log sd_d, 2)          (covariance = diag(scales) C diag(scales))
    C_k ~ LKJ(1),  weights ~ Dirichlet(1)

(the change of variables is exact), so results are affine-equivariant: fitting ``a * x + b`` gives
``a * mean + b`` and ``a^2 * covariance``. It also keeps the sampler's geometry the same whatever the
units (data at scale 1e-300 or 1e+3 look alike to NUTS). A user's ``prior=`` is read in data units and
converted. The prior used, in data units, goes to ``info["prior"]``.

Missing values (NaN): each column's mean and sd come from its observed entries, NaN stays NaN in the
standardised data, and a row's Jacobian counts its observed columns only.

Traces: ``log_likelihood`` is in data units (the standardised value minus ``N sum_d log sd_d``); MAP's
``loss`` is exactly the data-unit objective ``-(log p(x | theta) + log p(theta))``; SVI's ``loss`` /
``elbo`` are exact too (the parameters' Jacobians cancel between the model and the guide); NUTS's
``potential_energy`` gets the data term only, so it equals the data-unit value up to a constant. SVI's ``info["guide_params"]`` stay in the
standardised, unconstrained space.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from models.params import GMMParams, to_numpy

__all__ = ["Standardizer", "standardizer", "to_standard", "to_data", "prior_in_standard_units", "prior_in_data_units",
           "fit_standardized", "DEFAULT_PRIOR"]

# gmm_model's defaults = the prior in standardised units
DEFAULT_PRIOR = dict(concentration=1.0, mean_loc=0.0, mean_scale=10.0, scale_loc=1.0, scale_log_sd=2.0, lkj_concentration=1.0)


class Standardizer(NamedTuple):
    """``x_standard = (x - loc) / scale``, per column; loc, scale (D,)."""

    loc: np.ndarray
    scale: np.ndarray


def standardizer(x: np.ndarray, sample_weight=None) -> Standardizer:
    """Column means and standard deviations of ``x`` (N, D), computed without over/underflow at any scale;
    weighted by ``sample_weight`` (N,) if given (integer weights = repeated rows; rows of weight 0 play no part).

    NaN entries (missing values) are left out of their column's mean and sd (``_nan_standardizer``).
    Raises ValueError naming the columns that are constant (zero spread: nothing to standardise by)."""
    x = np.asarray(x, np.float64)
    if sample_weight is not None:
        w = np.asarray(sample_weight, np.float64)
        x, w = x[w > 0], w[w > 0]
    else:
        w = None
    if np.isnan(x).any():
        return _nan_standardizer(x, w)
    loc = np.average(x, axis=0, weights=w)
    spread = np.max(np.abs(x - loc), axis=0)
    constant = np.flatnonzero(~(spread > 0))
    if constant.size:
        raise ValueError(f"x: column(s) {constant.tolist()} are constant; the NumPyro engines standardise every "
                         "column by its spread (drop those columns)")
    scaled = (x - loc) / spread
    scale = spread * (np.std(scaled, axis=0) if w is None else np.sqrt(np.average(scaled**2, axis=0, weights=w)))
    return Standardizer(loc, scale)


def _nan_standardizer(x: np.ndarray, w) -> Standardizer:
    """:func:`standardizer` of ``x`` with NaN holes: each column from its observed entries (weighted by
    ``w`` (N,) or not)."""
    seen = ~np.isnan(x)
    weight = seen * (1.0 if w is None else w[:, None])  # (N, D): 0 where missing
    empty = np.flatnonzero(weight.sum(axis=0) <= 0)
    if empty.size:
        raise ValueError(f"x: column(s) {empty.tolist()} have no observed value (all NaN); drop those columns")
    filled = np.where(seen, x, 0.0)
    loc = np.sum(weight * filled, axis=0) / np.sum(weight, axis=0)
    spread = np.max(np.where(seen, np.abs(filled - loc), 0.0), axis=0)
    constant = np.flatnonzero(~(spread > 0))
    if constant.size:
        raise ValueError(f"x: column(s) {constant.tolist()} are constant; the NumPyro engines standardise every "
                         "column by its spread (drop those columns)")
    scaled = np.where(seen, (filled - loc) / spread, 0.0)
    scale = spread * np.sqrt(np.sum(weight * scaled**2, axis=0) / np.sum(weight, axis=0))
    return Standardizer(loc, scale)


def to_standard(params: GMMParams, st: Standardizer) -> GMMParams:
    """Data-unit parameters -> standardised units."""
    params = to_numpy(params)
    return GMMParams(params.weights, (params.means - st.loc) / st.scale, params.scale_tril / st.scale[:, None])


def to_data(params: GMMParams, st: Standardizer) -> GMMParams:
    """Standardised parameters (any leading batch dims) -> data units."""
    params = to_numpy(params)
    return GMMParams(params.weights, params.means * st.scale + st.loc, params.scale_tril * st.scale[:, None])


def prior_in_standard_units(prior: dict | None, st: Standardizer) -> dict:
    """A user's prior overrides (data units) -> ``gmm_model`` keyword arguments (standardised units)."""
    out = {}
    for name, value in dict(prior or {}).items():
        value = np.asarray(value, np.float64)
        if name == "mean_loc":
            value = (value - st.loc) / st.scale
        elif name in ("mean_scale", "scale_loc"):
            value = value / st.scale
        out[name] = value if value.ndim else float(value)
    return out


def prior_in_data_units(prior_standard: dict, st: Standardizer) -> dict:
    """The full prior actually used (defaults filled in), in data units, JSON-friendly."""
    full = {**DEFAULT_PRIOR, **dict(prior_standard)}
    out = {}
    for name, value in full.items():
        value = np.asarray(value, np.float64)
        if name == "mean_loc":
            value = value * st.scale + st.loc
        elif name in ("mean_scale", "scale_loc"):
            value = value * st.scale
        out[name] = value.tolist()
    given = sorted(set(prior_standard) & set(DEFAULT_PRIOR))
    out["description"] = (
        "weights ~ Dirichlet(concentration); means[k, d] ~ Normal(mean_loc[d], mean_scale[d]); "
        "scales[k, d] ~ LogNormal(log scale_loc[d], scale_log_sd), the standard deviation of column d in component k; "
        "correlation matrix R[k] ~ LKJ(lkj_concentration); covariance[k] = diag(scales[k]) R[k] diag(scales[k]). "
        "In the data's units. Defaults: concentration 1; mean_loc = each column's mean; mean_scale = 10 x each "
        "column's standard deviation; scale_loc = each column's standard deviation; scale_log_sd 2; "
        "lkj_concentration 1 (uniform over correlation matrices)"
        + (f"; given by the user: {', '.join(given)}" if given else "") + ".")
    return out


def _convert_init(value, st: Standardizer):
    return to_standard(value, st) if isinstance(value, GMMParams) else value


def fit_standardized(engine, key, x, num_components: int, **options):
    """Run a NumPyro ``engine`` (fit_map / fit_svi / fit_nuts) on standardised ``x`` and return its
    FitResult in data units (module docstring)."""
    from ._numpyro_common import model_data, with_checked_weights

    x = model_data(x)
    options = with_checked_weights(dict(options), x)
    st = standardizer(x, options.get("sample_weight"))
    if "init" in options:
        options["init"] = _convert_init(options["init"], st)
    if isinstance(options.get("map_options"), dict):
        options["map_options"] = dict(options["map_options"])
        if "init" in options["map_options"]:
            options["map_options"]["init"] = _convert_init(options["map_options"]["init"], st)
    prior_std = prior_in_standard_units(options.get("prior"), st)
    if "prior" in options or prior_std:
        options["prior"] = prior_std or None
    result = engine(key, (x - st.loc) / st.scale, num_components, **options)
    weights = options.get("sample_weight")
    total_weight = x.shape[0] if weights is None else float(np.sum(weights))
    log_scale = float(np.sum(np.log(st.scale)))
    # the data's Jacobian: log p(x) = log p(x_standard) - N sum_d log sd_d (N = sum of weights); a row with
    # holes counts its observed columns only
    shift = total_weight * log_scale
    if np.isnan(x).any():
        per_row = (~np.isnan(x)) @ np.log(st.scale)
        shift = float(np.sum(per_row if weights is None else weights * per_row))
    return _result_in_data_units(result, st, shift, prior_std)


def _result_in_data_units(result, st: Standardizer, shift: float, prior_std: dict):
    log_scale = float(np.sum(np.log(st.scale)))
    # MAP's loss -(log p(x | theta) + log p(theta)) also changes with the means' and scales' densities
    # (each (K, D) site picks up sum_d log sd_d per component): exact data-unit MAP objective.
    loss_shift = shift + (2 * result.num_components * log_scale if result.method == "map" else 0.0)
    trace = dict(result.trace)
    for name in ("log_likelihood", "elbo"):
        if name in trace:
            trace[name] = np.asarray(trace[name]) - shift
    for name in ("loss", "potential_energy"):
        if name in trace:
            trace[name] = np.asarray(trace[name]) + (loss_shift if name == "loss" else shift)
    info = dict(result.info)
    for name in ("start_params", "engine_params", "guide_median"):
        if isinstance(info.get(name), GMMParams):
            info[name] = to_data(info[name], st)
    for name in ("restart_losses", "final_loss"):
        if name in info and info[name] is not None:
            info[name] = np.asarray(info[name]) + loss_shift
    info["prior"] = prior_in_data_units(prior_std, st)
    info["standardization"] = {"loc": st.loc.tolist(), "scale": st.scale.tolist()}
    samples = None if result.samples is None else to_data(result.samples, st)
    return dataclasses.replace(result, params=to_data(result.params, st), samples=samples, trace=trace, info=info)
