"""``fit``: one entry point to every engine, and the checks every result gets.

``fit(method, key, x, num_components, **options)`` looks the engine up (``ENGINES``, imported on first use so
that ``import inference`` stays light), refuses misspelt options (``valid_options``), runs it and adds the
degeneracy check of the point estimate (``with_degeneracy_check``). Re-exported by ``inference/__init__.py``;
the modules of ``inference`` that need ``fit`` (``inference.estimator``) import it from here, never from the
package, so that the package's ``__init__`` imports its modules and none imports it back.
"""

from __future__ import annotations

import importlib

import models  # noqa: F401  (turns on x64 before any engine builds arrays)

from .result import FitResult
from .validate import check_choice, check_option_names

__all__ = ["fit", "ENGINES", "METHODS", "get_engine", "valid_options", "with_degeneracy_check", "fit_em", "fit_hard_em"]

# method name -> (module, function); modules are imported on first use so that
# `import inference` stays light.
ENGINES = {
    "em": ("inference.em", "fit_em"),
    "hard_em": ("inference.em", "fit_hard_em"),
    "map": ("inference.numpyro_engines", "fit_map"),
    "svi": ("inference.numpyro_engines", "fit_svi"),
    "nuts": ("inference.numpyro_engines", "fit_nuts"),
}
METHODS = tuple(ENGINES)


def get_engine(method: str):
    """The fit function registered under ``method``."""
    check_choice("method", method, METHODS)
    module_name, function_name = ENGINES[method]
    return getattr(importlib.import_module(module_name), function_name)


def fit(method: str, key, x, num_components: int, **options) -> FitResult:
    """Fit a ``num_components`` GMM to ``x`` (N, D) with the engine named ``method``.

    Parameters
    ----------
    method : one of ``METHODS``.
    key : jax PRNG key (first, as in JAX).
    x : (N, D) numpy or JAX array, float32 or float64.
    num_components : K.
    **options : engine options by keyword (``init=``, ``n_init=``, ``max_iters=``, ``tol=``,
        ``reg_covar=``, ``covariance_type=``, ``num_steps=``, ``num_chains=``, ...).

    Every result's ``info`` has ``warnings`` (a list of lines: degenerate components for every engine;
    failed convergence conditions for NUTS) and ``degenerate_components``.
    """
    engine = get_engine(method)
    check_option_names(method, options, valid_options(method))
    result = engine(key, x, num_components, **options)
    return with_degeneracy_check(result, x, options.get("sample_weight"))


def valid_options(method: str) -> tuple:
    """The option names engine ``method`` takes (EM: the keyword arguments of ``inference.em._fit``;
    the NumPyro engines: their ``*_DEFAULTS`` dicts)."""
    import inspect

    check_choice("method", method, METHODS)
    if method in ("em", "hard_em"):
        from .em import _fit

        return tuple(n for n, p in inspect.signature(_fit).parameters.items()
                     if p.kind is p.KEYWORD_ONLY and n != "hard")
    module = importlib.import_module({"map": "inference.numpyro_map", "svi": "inference.numpyro_svi",
                                      "nuts": "inference.numpyro_nuts"}[method])
    names = tuple(getattr(module, f"{method.upper()}_DEFAULTS"))
    return names + (("ordered_means",) if method == "nuts" else ())  # nuts explains its removal itself


def with_degeneracy_check(result: FitResult, x, sample_weight=None) -> FitResult:
    """``result`` with ``info["degenerate_components"]`` (``inference.diagnostics.degenerate_components``
    of the point estimate; effective counts weighted by ``sample_weight``) and one line per such
    component added to ``info["warnings"]``. A streamed EM fit (no responsibilities in memory) is checked
    from its ``info["final_counts"]`` and ``info["data_covariance"]``; a result with neither is not
    checked (``info["degenerate_components"]`` is then None)."""
    import dataclasses

    import numpy as np

    from .diagnostics import degenerate_components

    reg_covar = result.info.get("reg_covar") if result.method in ("em", "hard_em") else None
    covariance_type = result.info.get("covariance_type", "full")
    full = covariance_type in ("full", "tied")
    responsibilities = np.asarray(result.responsibilities)
    warnings = list(result.info.get("warnings", []))
    if "final_counts" in result.info and "data_covariance" in result.info:
        degenerate = degenerate_components(result.params, None, None, reg_covar, full_covariance=full,
                                           counts=result.info["final_counts"],
                                           data_covariance=result.info["data_covariance"])
    elif not hasattr(x, "shape") or responsibilities.shape[0] != np.shape(x)[0]:
        return dataclasses.replace(result, info=dict(result.info, degenerate_components=None, warnings=warnings))
    else:
        if sample_weight is not None:  # relative weights: counts in rows (inference.rows.normalize_sample_weight)
            from .rows import normalize_sample_weight

            responsibilities = responsibilities * normalize_sample_weight(sample_weight)[:, None]
        x64 = np.asarray(x, np.float64)
        nothing = np.isnan(x64).all(axis=1)  # rows with every value missing count no points
        if nothing.any():
            responsibilities = responsibilities * ~nothing[:, None]
        degenerate = degenerate_components(result.params, x64, responsibilities, reg_covar, full_covariance=full)
    warnings += [f"component {d['component']} is degenerate: " + "; ".join(d["reasons"]) for d in degenerate]
    info = dict(result.info, degenerate_components=degenerate, warnings=warnings)
    return dataclasses.replace(result, info=info)


def fit_em(key, x, num_components, **options) -> FitResult:
    """Soft EM; see :func:`inference.em.fit_em`."""
    return fit("em", key, x, num_components, **options)


def fit_hard_em(key, x, num_components, **options) -> FitResult:
    """Hard (classification) EM; see :func:`inference.em.fit_hard_em`."""
    return fit("hard_em", key, x, num_components, **options)
