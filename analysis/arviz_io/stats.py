"""Every statistic the report asks ArviZ for, the same numbers on both stacks: R-hat, summary, LOO, WAIC,
compare, HDIs of the forest plot, kernel densities of the predictive checks. Numbers only: the figures
are ``analysis.plots``'s.

R-hat needs at least two chains: single-chain draws (SVI's guide draws) get R-hat null (both stacks).
R-hat: ``RHAT_METHOD = "rank"``, ArviZ's default rank-normalised split R-hat (Vehtari et al. 2021).
On fully label-switched chains it reads about 1.8 where the classic split R-hat reads about 8.5;
both flag the problem, the numbers are not comparable.

WAIC: ArviZ 1.x has no WAIC; ``waic`` is then the textbook formula (Watanabe 2010, as ArviZ 0.x wrote it:
``p_waic`` with the population variance), tested against ``az.waic`` and a brute-force formula.
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from models.params import GMMParams

from ._stack import ARVIZ_MAJOR, assemble, az, azs, group
from .convert import PARAM_VARS, RHAT_METHOD, posterior_dataset

__all__ = ["SUMMARY_COLUMNS", "COMPARE_COLUMNS", "PPC_MAX_DIMS", "rhat_of_samples", "summary", "loo", "loo_result", "waic",
           "waic_formula", "waic_of_pointwise", "compare", "parameter_kinds", "forest_intervals", "reference_kinds",
           "posterior_kinds", "kde", "ppc_densities"]

COMPARE_COLUMNS = ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")


def _summary_columns(hdi_prob: float) -> tuple:
    lower, upper = (1 - hdi_prob) / 2, (1 + hdi_prob) / 2
    return ("mean", "sd", f"hdi_{lower * 100:g}%", f"hdi_{upper * 100:g}%", "mcse_mean", "mcse_sd",
            "ess_bulk", "ess_tail", "r_hat")


SUMMARY_COLUMNS = _summary_columns(0.9)


def _finite_or_none(v):
    v = float(v)
    return v if np.isfinite(v) else None


def rhat_of_samples(samples: GMMParams, method: str = RHAT_METHOD) -> dict:
    """Max R-hat over the entries of each parameter, ``{"weights", "means", "covariances"}``
    (None where undefined, e.g. a single chain or too few draws)."""
    ds = posterior_dataset(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = azs.rhat(ds, method=method) if ARVIZ_MAJOR >= 1 else az.rhat(ds, method=method)
    return {name: _finite_or_none(np.nanmax(r[name].values)) if np.isfinite(r[name].values).any() else None
            for name in r.data_vars}


def summary(idata, var_names=PARAM_VARS, hdi_prob: float = 0.9):
    """ArviZ's summary as a DataFrame with ArviZ 0.x's columns on both stacks: mean, sd,
    ``hdi_5%``/``hdi_95%`` (for ``hdi_prob=0.9``), mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat
    (rank-normalised; NaN for a single chain). Rows ``weights[0]``, ``means[0, 1]``, ... (``means[0, waiting]``
    when the ``dim`` coordinate holds the column names)."""
    columns = list(_summary_columns(hdi_prob))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR < 1:
            return az.summary(idata, var_names=list(var_names), hdi_prob=hdi_prob, round_to="none")[columns]
        table = azs.summary(idata, var_names=list(var_names), ci_prob=hdi_prob, ci_kind="hdi", round_to="none")
        # ArviZ 1.x's summary takes tail ESS at its ci_prob quantiles (11%/89% by default); ArviZ 0.x and
        # Vehtari et al. (2021) use 5%/95%: recompute that one column so both stacks report the same number.
        tail = azs.ess(idata["posterior"].to_dataset()[list(var_names)], method="tail", prob=(0.05, 0.95))
    pct = f"{hdi_prob * 100:g}"
    table = table.rename(columns={f"hdi{pct}_lb": columns[2], f"hdi{pct}_ub": columns[3]})
    for name in var_names:
        da = tail[name]
        values = np.asarray(da.values)
        labels = [np.asarray(da[dim].values) if dim in da.coords else np.arange(size) for dim, size in zip(da.dims, values.shape)]
        for idx in np.ndindex(values.shape):  # the row label from the coordinates (column names on dim / dim_)
            table.loc[f"{name}[{', '.join(str(labels[a][i]) for a, i in enumerate(idx))}]", "ess_tail"] = values[idx]
    return table[columns].astype(float)


def _loo_1x(idata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return azs.loo(idata, pointwise=True)


def loo_result(idata):
    """ArviZ's pointwise PSIS-LOO result of one engine with draws (``ELPDData``, either stack): what :func:`loo`
    summarises and what :func:`compare` takes instead of the data, so that LOO is computed once per engine."""
    if ARVIZ_MAJOR >= 1:
        return _loo_1x(idata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.loo(idata, pointwise=True)


def loo(idata, result=None) -> dict:
    """PSIS-LOO of one engine with draws: elpd_loo, se, p_loo, max Pareto k, ArviZ's warning flag (a Pareto k
    above ArviZ's sample-size dependent threshold) and the number of draws S it used (the log_likelihood group's,
    ``convert.LOO_MAX_VALUES``); ``result``: its :func:`loo_result`, if computed."""
    res = loo_result(idata) if result is None else result
    if ARVIZ_MAJOR >= 1:
        elpd, se, p, k, warn, draws = res.elpd, res.se, res.p, res.pareto_k, res.warning, res.n_samples
    else:
        elpd, se, p, k, warn, draws = res["elpd_loo"], res["se"], res["p_loo"], res["pareto_k"], res["warning"], res["n_samples"]
    return {"elpd_loo": float(elpd), "se": float(se), "p_loo": float(p),
            "pareto_k_max": float(np.nanmax(np.asarray(k))), "warning": bool(warn), "draws": int(draws)}


def _log_lik_matrix(idata) -> np.ndarray:
    """(S, N) pointwise log-likelihood of ``idata`` (chains and draws flattened)."""
    ll = np.asarray(idata["log_likelihood"]["x"].values if ARVIZ_MAJOR >= 1 else idata.log_likelihood["x"].values)
    return ll.reshape(-1, ll.shape[-1])


def waic_formula(log_lik_draws) -> dict:
    """WAIC of an (S, N) matrix by the formula: ``elpd_i = logmeanexp_s ll_si - var_s ll_si`` (population
    variance), ``elpd_waic = sum_i elpd_i``, ``se = sqrt(N var_i elpd_i)``; ``warning`` when some
    ``var_s ll_si > 0.4`` (ArviZ 0.x's rule)."""
    from scipy.special import logsumexp

    ll = np.asarray(log_lik_draws, np.float64)
    lppd = logsumexp(ll, axis=0) - np.log(ll.shape[0])
    var = ll.var(axis=0)
    pointwise = lppd - var
    return {"elpd_waic": float(pointwise.sum()), "se": float(np.sqrt(ll.shape[1] * pointwise.var())),
            "p_waic": float(var.sum()), "warning": bool(np.any(var > 0.4))}


def waic(idata) -> dict:
    """WAIC of one engine with draws (log scale): elpd_waic, se, p_waic, warning. ``az.waic`` on
    ArviZ 0.x; the same formula (``waic_formula``) on ArviZ 1.x, which dropped WAIC."""
    if ARVIZ_MAJOR >= 1:
        return waic_formula(_log_lik_matrix(idata))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.waic(idata, pointwise=True)  # pointwise=False labels the estimate "waic" (arviz 0.23)
    return {"elpd_waic": float(res["elpd_waic"]), "se": float(res["se"]), "p_waic": float(res["p_waic"]),
            "warning": bool(res["warning"])}


def waic_of_pointwise(log_lik_draws) -> dict:
    """``waic`` of an (S, N) matrix of pointwise log-likelihoods (S draws, N observations)."""
    ll = np.asarray(log_lik_draws, np.float64)
    groups = {"log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), ll[None])},
                                           coords={"chain": [0], "draw": np.arange(ll.shape[0]), "obs": np.arange(ll.shape[1])})}
    return waic(assemble(groups))


def compare(idatas: dict, results: dict | None = None):
    """LOO comparison (stacking weights) of ``{name: idata}``: a DataFrame indexed by name, ranked by
    elpd_loo, with columns ``COMPARE_COLUMNS`` on both stacks (``warning``: that model's LOO warning).
    ``results``: ``{name: loo_result(idata)}`` already computed (ArviZ's compare takes them in place of the data
    and then does not compute LOO again: 18.6 s of a 50,000-row report)."""
    import pandas as pd

    results = dict(results or {})
    loos = {name: results[name] if name in results else loo_result(idata) for name, idata in idatas.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR < 1:
            return az.compare(loos, ic="loo")[list(COMPARE_COLUMNS)]
        table = azs.compare(loos, round_to="none")
    table = table.rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    table["elpd_diff"] = table["elpd_loo"].max() - table["elpd_loo"]  # 0.x's sign: >= 0, the best model 0
    table["warning"] = pd.Series({name: bool(res.warning) for name, res in loos.items()})
    table["rank"] = table["rank"].astype(int)
    return table[list(COMPARE_COLUMNS)]


def parameter_kinds(ds: xr.Dataset) -> dict:
    """``{kind: (chain, draw, ...) array}`` of the quantities the figures show, each on its own scale:
    weights (K), means (K, D), sds = sqrt(diag covariance) (K, D) in the data's units, and
    correlations (K, D, D) (unitless, in [-1, 1])."""
    cov = np.asarray(ds["covariances"].values, np.float64)
    sd = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0.0, None))
    denom = sd[..., :, None] * sd[..., None, :]
    corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
    return {"weights": np.asarray(ds["weights"].values, np.float64), "means": np.asarray(ds["means"].values, np.float64),
            "sds": sd, "correlations": corr}


def _hdi(values: np.ndarray, hdi_prob: float) -> np.ndarray:
    """ArviZ's HDI of (chain, draw, ...) ``values`` -> (..., 2) [lower, upper] (either stack)."""
    dims = ("chain", "draw") + tuple(f"d{i}" for i in range(values.ndim - 2))
    ds = xr.Dataset({"v": (dims, values)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            out = azs.hdi(ds, prob=hdi_prob)["v"]
            bound = "ci_bound"
        else:
            out = az.hdi(ds, hdi_prob=hdi_prob)["v"]
            bound = "hdi"
    return np.asarray(out.transpose(..., bound).values)


def forest_intervals(idatas: dict, hdi_prob: float = 0.9) -> dict:
    """``{engine: {kind: {"mean": (...), "lower": (...), "upper": (...)}}}`` for every ``kind`` of
    :func:`parameter_kinds`: the posterior mean and ArviZ's ``hdi_prob`` HDI for engines with draws, the point
    estimate (lower = upper = mean) for the others."""
    out = {}
    for name, idata in idatas.items():
        kinds = parameter_kinds(group(idata, "posterior"))
        entry = {}
        for kind, values in kinds.items():
            mean = values.mean(axis=(0, 1))
            if values.shape[0] * values.shape[1] > 1:
                bounds = _hdi(values, hdi_prob)
                lower, upper = bounds[..., 0], bounds[..., 1]
            else:
                lower = upper = mean
            entry[kind] = {"mean": mean, "lower": lower, "upper": upper}
        out[name] = entry
    return out


def reference_kinds(reference: GMMParams) -> dict:
    """:func:`parameter_kinds` of one parameter point (no draw dims): the forest plot's reference ticks."""
    return {k: v[0, 0] for k, v in parameter_kinds(posterior_dataset(reference)).items()}


def posterior_kinds(idata) -> tuple[dict, str]:
    """``({kind: (chain, draw, ...)}, method)`` of an engine's (aligned) draws: the trace plot's numbers."""
    post = group(idata, "posterior")
    return parameter_kinds(post), str(post.attrs.get("method", ""))


# --------------------------------------------------------------------------- predictive checks

PPC_MAX_DIMS = 16  # columns of a predictive check figure (more: the caller picks which, and says so)


def kde(values, bw=None, return_bw: bool = False):
    """ArviZ's kernel density estimate of 1-D ``values`` on a linear grid: ``(grid, pdf)``, and the bandwidth
    (data units) with ``return_bw``. ``bw`` None: ArviZ's default rule (its "experimental"/ISJ bandwidth, a
    root search costing ~4 ms per call); a positive number: that bandwidth, no search."""
    values = np.asarray(values, np.float64).ravel()
    options = {} if bw is None else {"bw": float(bw)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            from arviz_stats.base import array_stats

            estimate = array_stats.kde(values, **options)
        else:
            estimate = az.kde(values, bw_return=True, **options)
    grid, pdf = np.asarray(estimate[0], np.float64), np.asarray(estimate[1], np.float64)
    used = estimate[2] if len(estimate) > 2 else np.nan  # ArviZ 0.x returns no bandwidth for a constant sample
    return (grid, pdf, float(np.asarray(used))) if return_bw else (grid, pdf)


def ppc_densities(idata, group_name: str = "posterior_predictive", num_draws: int = 50,
                  max_dims: int = PPC_MAX_DIMS, dims=None) -> list[dict]:
    """The numbers of a predictive check figure: for each data column (``dims``, indices; default the first
    ``max_dims``) the ArviZ KDE (:func:`kde`) of the observed column, of each of the first ``num_draws`` replicated
    data sets stored in ``group_name`` ("posterior_predictive" or "prior_predictive"), and of all those replicates
    pooled; the observed column's range and the pooled replicates' 5% and 95% quantiles (a sensible axis range).
    Every curve of a column uses the bandwidth ArviZ's rule picks for the observed column: the check compares
    the data and the replicates through one smoother (a per-replicate rule would smooth a bad replicate and the
    data differently), and one bandwidth search per column instead of ~50 (the default report's figures: 3.1 s
    of ISJ searches -> 0.1 s).
    Data with holes: each column's observed cells only, and the same cells of every replicate.
    ``[{"dim", "observed": (grid, pdf), "replicated": [(grid, pdf), ...], "pooled": (grid, pdf),
    "observed_range": (min, max), "replicated_quantiles": (q5, q95)}]``."""
    observed = np.asarray(group(idata, "observed_data")["x"].values, np.float64)
    replicated = np.asarray(group(idata, group_name)["x"].values, np.float64)
    replicated = replicated.reshape((-1,) + replicated.shape[-2:])[: max(1, int(num_draws))]  # (S, N, D)
    dims = list(range(min(observed.shape[-1], int(max_dims)))) if dims is None else [int(j) for j in dims]
    out = []
    for j in dims:
        seen = ~np.isnan(observed[:, j])  # data with holes: the observed cells, and the same cells of each replicate
        pooled = replicated[:, seen, j]
        grid, pdf, bw = kde(observed[seen, j], return_bw=True)
        if not bw > 0:  # a constant column: ArviZ's rule gives no usable width; each curve then picks its own
            bw = None
        out.append({"dim": j, "observed": (grid, pdf),
                    "replicated": [kde(rep[seen, j], bw) for rep in replicated],
                    "pooled": kde(pooled, bw),
                    "observed_range": (float(observed[seen, j].min()), float(observed[seen, j].max())),
                    "replicated_quantiles": tuple(float(q) for q in np.quantile(pooled, [0.05, 0.95]))})
    return out
