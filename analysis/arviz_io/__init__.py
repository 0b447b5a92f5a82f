"""FitResult <-> ArviZ InferenceData, and every ArviZ call of the project, on both ArviZ stacks.

This package is the ONLY place that imports ArviZ (tested). It hides the difference between the two ArviZ
APIs a user can have: ArviZ 0.x (Python 3.11; ``arviz.InferenceData``, ``az.loo`` ...) and ArviZ 1.x
(Python >= 3.12; ``arviz_base`` / ``arviz_stats`` / ``arviz_plots``, the data being an ``xarray.DataTree``).
Callers get the same layout, the same dict / DataFrame shapes and the same numbers from either
(``ARVIZ_MAJOR`` tells which one is running). Group datasets are built here with xarray, so the layout does
not depend on either converter. It returns numbers and data, never figures (``analysis.plots`` draws them).

* ``_stack`` -- which ArviZ runs, its imports, and the group calls that differ between the stacks;
* ``convert`` -- FitResult -> InferenceData (the layout), NetCDF files, predictive and assignment groups;
* ``stats`` -- R-hat, summary, LOO, WAIC, compare, HDIs and kernel densities for the figures;
* ``sampler`` -- NUTS's sampler diagnostics: BFMI, step size, tree depth, the numbers of rank and energy plots.

Everything public is re-exported here: ``from analysis import arviz_io; arviz_io.to_inference_data(...)``.
"""

from ._stack import ARVIZ_MAJOR, add_groups, arviz_version, group, group_names
from .convert import ASSIGNMENTS_GROUP, assignment_groups
from .convert import (ARVIZ_STAT_NAMES, FIT_TRACE_GROUP, FLOAT32_GROUPS, GROUPS, LOGLIK_MAX_VALUES, LOGLIK_MIN_DRAWS,
                      LOO_MAX_VALUES, PARAM_VARS, RHAT_METHOD, dim_coords, drop_loo_draws, load_netcdf, loglik_draws_kept,
                      netcdf_groups, predictive_groups, save_netcdf, thin_log_likelihood, to_inference_data)
from .loo_pool import PendingLoo
from .loo_pool import submit as submit_loo
from .sampler import BFMI_THRESHOLD, bfmi, energy_densities, rank_histograms, sampler_stats
from .stats import (COMPARE_COLUMNS, PPC_MAX_DIMS, SUMMARY_COLUMNS, compare, forest_intervals, kde, loo, loo_result,
                    parameter_kinds, posterior_kinds, ppc_densities, reference_kinds, rhat_of_samples, summary, waic,
                    waic_formula, waic_of_pointwise)

__all__ = [
    "ARVIZ_MAJOR",
    "RHAT_METHOD",
    "PARAM_VARS",
    "GROUPS",
    "FIT_TRACE_GROUP",
    "FLOAT32_GROUPS",
    "SUMMARY_COLUMNS",
    "COMPARE_COLUMNS",
    "PPC_MAX_DIMS",
    "LOGLIK_MAX_VALUES",
    "LOGLIK_MIN_DRAWS",
    "LOO_MAX_VALUES",
    "thin_log_likelihood",
    "drop_loo_draws",
    "submit_loo",
    "PendingLoo",
    "ARVIZ_STAT_NAMES",
    "BFMI_THRESHOLD",
    "dim_coords",
    "bfmi",
    "sampler_stats",
    "rank_histograms",
    "energy_densities",
    "arviz_version",
    "to_inference_data",
    "group",
    "group_names",
    "add_groups",
    "predictive_groups",
    "assignment_groups",
    "ASSIGNMENTS_GROUP",
    "save_netcdf",
    "netcdf_groups",
    "load_netcdf",
    "loglik_draws_kept",
    "rhat_of_samples",
    "summary",
    "loo",
    "loo_result",
    "waic",
    "waic_formula",
    "waic_of_pointwise",
    "compare",
    "parameter_kinds",
    "forest_intervals",
    "reference_kinds",
    "posterior_kinds",
    "kde",
    "ppc_densities",
]
