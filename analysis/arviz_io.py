"""FitResult <-> ArviZ InferenceData, and every ArviZ call of the project, on both ArviZ stacks.

This is the ONLY module that imports ArviZ. It hides the difference between the two ArviZ APIs a user
can have: ArviZ 0.x (Python 3.11; ``arviz.InferenceData``, ``az.loo`` ...) and ArviZ 1.x (Python >= 3.12;
``arviz_base`` / ``arviz_stats`` / ``arviz_plots``, the data being an ``xarray.DataTree``). Callers get
the same layout, the same dict / DataFrame shapes and the same numbers from either
(``ARVIZ_MAJOR`` tells which one is running). Group datasets are built here with xarray, so the
layout does not depend on either converter.

InferenceData layout (every engine; point estimates are chain=1, draw=1)
------------------------------------------------------------------------
posterior        weights (chain, draw, component), means (chain, draw, component, dim),
                 covariances (chain, draw, component, dim, dim_)
log_likelihood   x (chain, draw, obs): the marginal mixture log density of each observation at
                 each draw, ``models.pointwise_log_likelihood`` vmapped over draws (loo / waic)
sample_stats     per-DRAW statistics, dims (chain, draw): ``total_log_likelihood`` (marginal
                 log-likelihood of the whole data at the draw, the sum of the group above) and, for NUTS,
                 the engine's per-draw traces (``potential_energy``, ``diverging``, ...)
fit_trace        per-ITERATION traces of the optimisers (EM: log_likelihood, elbo, kl; hard EM:
                 log_likelihood, classification_log_likelihood; MAP/SVI: loss, log_likelihood),
                 dim ``iteration`` (traces recorded every few steps, e.g. MAP/SVI log_likelihood,
                 get their own dim ``iteration_<name>`` with the step numbers as coordinate).
                 Choice: a separate group, because these traces have neither a
                 chain nor a draw dim and their length differs from the number of draws (SVI has
                 both draws and steps); both ArviZ versions keep unknown groups through NetCDF.
observed_data    x (obs, dim)
attrs            method, converged (0/1), num_iters, seconds, compile_seconds, run_seconds,
                 rhat_method (on every group); a streamed file's fit adds subsample_rows and
                 num_rows_in_data (observed_data and log_likelihood hold that row subsample)

A NetCDF file is the same file on both stacks (one HDF5 group per InferenceData group): a file written
on one opens on the other (tested).

R-hat needs at least two chains: single-chain draws (SVI's guide draws) get R-hat null (both stacks).
R-hat: ``RHAT_METHOD = "rank"``, ArviZ's default rank-normalised split R-hat (Vehtari et al. 2021).
On fully label-switched chains it reads about 1.8 where the classic split R-hat reads about 8.5;
both flag the problem, the numbers are not comparable.

WAIC: ArviZ 1.x has no WAIC; ``waic`` is then the textbook formula (Watanabe 2010, as ArviZ 0.x wrote it:
``p_waic`` with the population variance), tested against ``az.waic`` and a brute-force formula.
"""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import version as _dist_version

import numpy as np
import xarray as xr

from models.density import pointwise_log_likelihood
from models.params import GMMParams, covariances, to_numpy

ARVIZ_MAJOR = int(_dist_version("arviz").split(".")[0])

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    if ARVIZ_MAJOR >= 1:
        import arviz_base as azb
        import arviz_stats as azs
    else:
        import arviz as az

# ArviZ logs "Shape validation failed" for single-chain draws (SVI); R-hat is then reported as null.
for _name in ("arviz", "arviz_base", "arviz_stats", "arviz_plots"):
    logging.getLogger(_name).setLevel(logging.ERROR)
if ARVIZ_MAJOR < 1 and isinstance(getattr(az, "_log", None), logging.Logger):  # 0.x: Logger("arviz")
    az._log.setLevel(logging.ERROR)

__all__ = [
    "ARVIZ_MAJOR",
    "RHAT_METHOD",
    "PARAM_VARS",
    "SUMMARY_COLUMNS",
    "COMPARE_COLUMNS",
    "to_inference_data",
    "group_names",
    "save_netcdf",
    "load_netcdf",
    "rhat_of_samples",
    "summary",
    "loo",
    "waic",
    "waic_of_pointwise",
    "compare",
    "plot_trace",
    "plot_forest",
    "forest_intervals",
    "loglik_draws_kept",
    "LOGLIK_MAX_VALUES",
    "arviz_version",
    "predictive_groups",
    "add_groups",
    "plot_ppc",
]

RHAT_METHOD = "rank"
PARAM_VARS = ("weights", "means", "covariances")
FIT_TRACE_GROUP = "fit_trace"
GROUPS = ("posterior", "sample_stats", "log_likelihood", "observed_data", FIT_TRACE_GROUP)
COMPARE_COLUMNS = ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")


def _summary_columns(hdi_prob: float) -> tuple:
    lower, upper = (1 - hdi_prob) / 2, (1 + hdi_prob) / 2
    return ("mean", "sd", f"hdi_{lower * 100:g}%", f"hdi_{upper * 100:g}%", "mcse_mean", "mcse_sd",
            "ess_bulk", "ess_tail", "r_hat")


SUMMARY_COLUMNS = _summary_columns(0.9)


def arviz_version() -> str:
    """The installed ``arviz`` distribution's version (0.x or 1.x)."""
    return _dist_version("arviz")


def _batched(samples: GMMParams) -> GMMParams:
    """Draws as (chain, draw, ...) numpy arrays; a (draw, K) layout becomes chain=1."""
    samples = to_numpy(samples)
    if samples.weights.ndim == 1:
        samples = GMMParams(*(a[None, None] for a in samples))
    elif samples.weights.ndim == 2:
        samples = GMMParams(*(a[None] for a in samples))
    return samples


_DIMS = {"weights": ("component",), "means": ("component", "dim"), "covariances": ("component", "dim", "dim_")}


def _posterior_dataset(samples: GMMParams) -> xr.Dataset:
    """(chain, draw, ...) posterior of ``samples`` with integer coordinates on every dim."""
    samples = _batched(samples)
    arrays = {"weights": samples.weights, "means": samples.means, "covariances": np.asarray(covariances(samples))}
    chains, draws, k, d = samples.means.shape
    coords = {"chain": np.arange(chains), "draw": np.arange(draws), "component": np.arange(k),
              "dim": np.arange(d), "dim_": np.arange(d)}
    return xr.Dataset({name: (("chain", "draw") + _DIMS[name], a) for name, a in arrays.items()}, coords=coords)


_POINTWISE = []

# The log_likelihood group holds at most about LOGLIK_MAX_VALUES values (draws x observations) per engine,
# and never fewer than LOGLIK_MIN_DRAWS draws (when the engine has them): PSIS-LOO / WAIC need the
# pointwise values of a few hundred draws, not of all of them (their Monte Carlo error at 100 draws is far
# below their standard error), and the full matrix of N = 50,000 x 1000 draws is 400 MB.
LOGLIK_MAX_VALUES = 5_000_000
LOGLIK_MIN_DRAWS = 100


def _pointwise_fn():
    if not _POINTWISE:
        import jax

        _POINTWISE.append(jax.jit(jax.vmap(pointwise_log_likelihood, in_axes=(0, None))))
    return _POINTWISE[0]


def _pointwise_blocks(flat: GMMParams, x: np.ndarray, max_elements: int = 25_000_000):
    """Yield (start, (block, N) pointwise log density) over the draws of ``flat`` (S, ...), in blocks
    whose largest intermediate, the whitened data (block, N, K, D), has at most ``max_elements`` values
    (200 MB in float64), so that memory stays bounded."""
    fn = _pointwise_fn()
    total = flat.weights.shape[0]
    k, d = flat.means.shape[-2:]
    block = max(1, max_elements // max(1, x.shape[0] * k * d))
    for i in range(0, total, block):
        yield i, np.asarray(fn(GMMParams(*(a[i : i + block] for a in flat)), x))


def loglik_draws_kept(chains: int, draws: int, num_obs: int, max_values: int = LOGLIK_MAX_VALUES,
                      min_draws: int | None = None) -> np.ndarray:
    """Indices (per chain, evenly spaced) of the draws whose pointwise log-likelihood is stored."""
    min_draws = LOGLIK_MIN_DRAWS if min_draws is None else min_draws
    keep_total = max(min_draws, max_values // max(1, num_obs))
    per_chain = max(1, min(draws, -(-keep_total // chains)))
    return np.unique(np.linspace(0, draws - 1, per_chain).round().astype(int))


def _pointwise(samples: GMMParams, x: np.ndarray, max_values: int = LOGLIK_MAX_VALUES):
    """``(total (chain, draw), pointwise (chain, kept, obs), kept draw indices)``: the marginal
    log-likelihood of the whole data at every draw, and the pointwise one at the draws kept for LOO."""
    chains, draws = samples.weights.shape[:2]
    n = x.shape[0]
    kept = loglik_draws_kept(chains, draws, n, max_values)
    flat = GMMParams(*(a.reshape((chains * draws,) + a.shape[2:]) for a in samples))
    total = np.empty(chains * draws)
    pointwise = np.empty((chains, len(kept), n))
    where = {c * draws + d: (c, j) for c in range(chains) for j, d in enumerate(kept)}
    for start, block in _pointwise_blocks(flat, x):
        total[start : start + block.shape[0]] = block.sum(-1)
        for i in range(block.shape[0]):
            if start + i in where:
                pointwise[where[start + i]] = block[i]
    return total.reshape(chains, draws), pointwise, kept


def _attrs(result) -> dict:
    attrs = {
        "method": str(result.method),
        "converged": int(bool(result.converged)),
        "num_iters": int(result.num_iters),
        "seconds": float(result.seconds),
        "rhat_method": RHAT_METHOD,
    }
    for key in ("compile_seconds", "run_seconds", "num_divergences"):
        value = result.info.get(key)
        if value is not None:
            attrs[key] = float(value)
    if result.info.get("subsample_rows") is not None:  # a streamed file: observed_data / log_likelihood are a row subsample
        attrs["subsample_rows"] = int(result.info["subsample_rows"])
        attrs["num_rows_in_data"] = int(result.info["num_rows"])
    return attrs


def _per_draw_stats(result, chains: int, num_draws: int) -> tuple[dict, dict]:
    """Split the engine's traces into per-draw statistics (chain, draw) and per-iteration traces."""
    sample_stats, fit_trace = {}, {}
    for name, value in result.trace.items():
        value = np.asarray(value)
        if result.samples is not None and value.size == chains * num_draws and result.method == "nuts":
            if name != "log_likelihood":
                sample_stats[name] = value.reshape(chains, num_draws)
        elif value.ndim == 1:
            fit_trace[name] = value
        elif value.size == chains * num_draws:
            sample_stats[name] = value.reshape(chains, num_draws)
    diverging = result.info.get("diverging")
    if diverging is not None and np.size(diverging) == chains * num_draws:
        sample_stats["diverging"] = np.asarray(diverging, dtype=bool).reshape(chains, num_draws)
    return sample_stats, fit_trace


def _group_datasets(result, x: np.ndarray, max_values: int | None = None) -> dict:
    """``{group: xr.Dataset}`` of one FitResult, the layout of the module docstring."""
    n, d = x.shape
    draws = _batched(result.samples if result.samples is not None else result.params)
    chains, num_draws = draws.weights.shape[:2]
    posterior = _posterior_dataset(draws)
    sample_coords = {"chain": posterior.chain.values, "draw": posterior.draw.values}
    total, pointwise, kept = _pointwise(draws, x, LOGLIK_MAX_VALUES if max_values is None else max_values)
    stats, fit_trace = _per_draw_stats(result, chains, num_draws)
    stats = {"total_log_likelihood": total, **stats}
    groups = {
        "posterior": posterior,
        "sample_stats": xr.Dataset({k: (("chain", "draw"), v) for k, v in stats.items()}, coords=sample_coords),
        # draws thinned to what LOO needs (the draw coordinate names the posterior draws kept)
        "log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), pointwise)},
                                     coords={"chain": posterior.chain.values, "draw": posterior.draw.values[kept],
                                             "obs": np.arange(n)}),
        "observed_data": xr.Dataset({"x": (("obs", "dim"), x)}, coords={"obs": np.arange(n), "dim": np.arange(d)}),
    }
    if fit_trace:
        groups[FIT_TRACE_GROUP] = _fit_trace_dataset(fit_trace)
    for ds in groups.values():
        ds.attrs.update(_attrs(result))
    return groups


def _assemble(groups: dict, attrs: dict | None = None):
    """InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x) of ``{group: Dataset}``."""
    if ARVIZ_MAJOR >= 1:
        tree = xr.DataTree.from_dict(dict(groups))
        tree.attrs.update(attrs or {})
        return tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "fit_trace group is not defined in the schema"
        return az.InferenceData(**groups, attrs=attrs) if attrs else az.InferenceData(**groups)


def to_inference_data(result, x):
    """InferenceData of one FitResult (layout in the module docstring): an ``arviz.InferenceData``
    on ArviZ 0.x, an ``xarray.DataTree`` on ArviZ 1.x (ArviZ 1.x's own InferenceData type)."""
    return _assemble(_group_datasets(result, np.asarray(x)), _attrs(result))


def group_names(idata) -> list:
    """Names of the groups of ``idata`` (either stack), e.g. ``["posterior", "log_likelihood", ...]``."""
    if ARVIZ_MAJOR >= 1:
        return list(idata.children)
    return list(idata.groups())


def _fit_trace_dataset(traces: dict) -> xr.Dataset:
    """Per-iteration traces. The longest traces share the dim ``iteration`` (coordinate 1, 2, ...);
    a shorter trace ``name`` recorded every few steps gets its own dim ``iteration_<name>`` whose
    coordinate is the engine's ``<name>_step`` array when present (e.g. MAP/SVI log_likelihood
    recorded every ``check_every`` steps)."""
    traces = {k: np.asarray(v) for k, v in traces.items()}
    steps = {k[: -len("_step")]: v for k, v in traces.items() if k.endswith("_step") and k[: -len("_step")] in traces}
    length = max(len(v) for k, v in traces.items() if not (k.endswith("_step") and k[: -len("_step")] in steps))
    data, coords = {}, {"iteration": np.arange(1, length + 1)}
    for name, value in traces.items():
        if name.endswith("_step") and name[: -len("_step")] in steps:
            continue
        value = value.astype(float) if value.dtype != bool else value
        if len(value) == length:
            data[name] = (("iteration",), value)
        else:
            dim = f"iteration_{name}"
            step = steps.get(name)
            coords[dim] = np.asarray(step) if step is not None and len(step) == len(value) else np.arange(1, len(value) + 1)
            data[name] = ((dim,), value)
    return xr.Dataset(data, coords=coords)


# Groups stored as float32: pointwise log-likelihoods (LOO / WAIC) and simulated replicates of the data.
FLOAT32_GROUPS = ("log_likelihood", "posterior_predictive", "prior_predictive")


def _group(idata, name: str) -> xr.Dataset:
    return idata[name].to_dataset() if ARVIZ_MAJOR >= 1 else getattr(idata, name)


def save_netcdf(idata, path, complevel: int = 4) -> str:
    """Write ``idata`` to ``path``: NetCDF4 through h5netcdf, one HDF5 group per InferenceData group (the
    layout both ArviZ stacks read), every variable zlib-compressed and the pointwise log-likelihood stored
    and the predictive replicates as float32 (``FLOAT32_GROUPS``; LOO / WAIC from it agree with float64 to
    ~1e-6 of their standard error)."""
    path = str(path)
    root_attrs = dict(idata.attrs or {})
    xr.Dataset(attrs=root_attrs).to_netcdf(path, mode="w", engine="h5netcdf")
    for name in group_names(idata):
        ds = _group(idata, name)
        encoding = {}
        for var, values in ds.variables.items():
            enc = {"zlib": True, "complevel": complevel, "shuffle": True} if values.ndim else {}
            if (name in FLOAT32_GROUPS and var in ds.data_vars and values.dtype == np.float64):
                enc["dtype"] = "float32"
            encoding[var] = enc
        ds.to_netcdf(path, mode="a", group=name, engine="h5netcdf", encoding=encoding)
    return path


def load_netcdf(path):
    """Read a file written by ``save_netcdf`` on either stack, fully into memory (no open handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if ARVIZ_MAJOR >= 1:
            with xr.open_datatree(str(path), engine="h5netcdf") as tree:
                return tree.load().copy()
        try:
            return az.from_netcdf(str(path), engine="h5netcdf")
        except TypeError:  # older ArviZ without the engine argument
            return az.from_netcdf(str(path))


def _finite_or_none(v):
    v = float(v)
    return v if np.isfinite(v) else None


def rhat_of_samples(samples: GMMParams, method: str = RHAT_METHOD) -> dict:
    """Max R-hat over the entries of each parameter, ``{"weights", "means", "covariances"}``
    (None where undefined, e.g. a single chain or too few draws)."""
    ds = _posterior_dataset(samples)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = azs.rhat(ds, method=method) if ARVIZ_MAJOR >= 1 else az.rhat(ds, method=method)
    return {name: _finite_or_none(np.nanmax(r[name].values)) if np.isfinite(r[name].values).any() else None
            for name in r.data_vars}


def summary(idata, var_names=PARAM_VARS, hdi_prob: float = 0.9):
    """ArviZ's summary as a DataFrame with ArviZ 0.x's columns on both stacks: mean, sd,
    ``hdi_5%``/``hdi_95%`` (for ``hdi_prob=0.9``), mcse_mean, mcse_sd, ess_bulk, ess_tail, r_hat
    (rank-normalised; NaN for a single chain). Rows ``weights[0]``, ``means[0, 1]``, ..."""
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
        values = np.asarray(tail[name].values)
        for idx in np.ndindex(values.shape):
            table.loc[f"{name}[{', '.join(str(i) for i in idx)}]", "ess_tail"] = values[idx]
    return table[columns].astype(float)


def _loo_1x(idata):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return azs.loo(idata, pointwise=True)


def loo(idata) -> dict:
    """PSIS-LOO of one engine with draws: elpd_loo, se, p_loo, max Pareto k, and ArviZ's warning flag
    (a Pareto k above ArviZ's sample-size dependent threshold)."""
    if ARVIZ_MAJOR >= 1:
        res = _loo_1x(idata)
        elpd, se, p, k, warn = res.elpd, res.se, res.p, res.pareto_k, res.warning
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = az.loo(idata, pointwise=True)
        elpd, se, p, k, warn = res["elpd_loo"], res["se"], res["p_loo"], res["pareto_k"], res["warning"]
    return {"elpd_loo": float(elpd), "se": float(se), "p_loo": float(p),
            "pareto_k_max": float(np.nanmax(np.asarray(k))), "warning": bool(warn)}


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
    return waic(_assemble(groups))


def compare(idatas: dict):
    """LOO comparison (stacking weights) of ``{name: idata}``: a DataFrame indexed by name, ranked by
    elpd_loo, with columns ``COMPARE_COLUMNS`` on both stacks (``warning``: that model's LOO warning)."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR < 1:
            return az.compare(dict(idatas), ic="loo")[list(COMPARE_COLUMNS)]
        loos = {name: _loo_1x(idata) for name, idata in idatas.items()}
        table = azs.compare(loos, round_to="none")
    table = table.rename(columns={"elpd": "elpd_loo", "p": "p_loo"})
    table["elpd_diff"] = table["elpd_loo"].max() - table["elpd_loo"]  # 0.x's sign: >= 0, the best model 0
    table["warning"] = pd.Series({name: bool(res.warning) for name, res in loos.items()})
    table["rank"] = table["rank"].astype(int)
    return table[list(COMPARE_COLUMNS)]


def _derived(ds: xr.Dataset) -> dict:
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
    :func:`_derived`: the posterior mean and ArviZ's ``hdi_prob`` HDI for engines with draws, the point
    estimate (lower = upper = mean) for the others."""
    out = {}
    for name, idata in idatas.items():
        kinds = _derived(_group(idata, "posterior"))
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


def plot_forest(idatas: dict, reference: GMMParams | None = None, reference_label: str = "truth", column_names=None,
                hdi_prob: float = 0.9, max_dims: int = 4):
    """Forest plot of every engine: one panel per parameter kind and data dimension (weights; mean and sd
    of each shown column; correlations), each on its own scale; ArviZ HDIs as lines, means as dots, the
    ``reference`` as a thin black tick behind them -> Figure (layout in :func:`analysis.plots.plot_forest_panels`)."""
    from analysis import plots

    ref = None
    if reference is not None:
        ref = {k: v[0, 0] for k, v in _derived(_posterior_dataset(reference)).items()}
    return plots.plot_forest_panels(forest_intervals(idatas, hdi_prob), ref, reference_label=reference_label,
                                    column_names=column_names, hdi_prob=hdi_prob, max_dims=max_dims)


def plot_trace(idata, column_names=None, max_dims: int = 3):
    """Trace plot of an engine's aligned draws: every parameter kind (weights, means, sds, correlations),
    one row per kind and shown column, density left and draws right, colour = component, line style =
    chain, with a legend -> Figure (layout in :func:`analysis.plots.plot_trace_panels`)."""
    from analysis import plots

    post = _group(idata, "posterior")
    return plots.plot_trace_panels(_derived(post), method=str(post.attrs.get("method", "")), column_names=column_names,
                                   max_dims=max_dims)


# --------------------------------------------------------------------------- predictive groups and checks

PPC_MAX_DIMS = 8


def predictive_groups(x_rep=None, prior_params: GMMParams | None = None, x_prior=None) -> dict:
    """``{group: Dataset}`` for replicated data and prior draws (``analysis.predictive``'s draws):

    posterior_predictive  x (chain=1, draw, obs, dim), float32: replicated data, one set per thinned posterior
                          draw (point estimates: replicates of the point)
    prior                 weights / means / covariances (chain=1, draw, ...): draws from the prior used
    prior_predictive      x (chain=1, draw, obs, dim): one data set per prior draw
    """
    def replicated(values):
        values = np.asarray(values, np.float32)  # replicated data: float32 is plenty for a check
        s, n, d = values.shape
        coords = {"chain": [0], "draw": np.arange(s), "obs": np.arange(n), "dim": np.arange(d)}
        return xr.Dataset({"x": (("chain", "draw", "obs", "dim"), values[None])}, coords=coords)

    groups = {}
    if x_rep is not None:
        groups["posterior_predictive"] = replicated(x_rep)
    if prior_params is not None:
        groups["prior"] = _posterior_dataset(GMMParams(*(np.asarray(a)[None] for a in prior_params)))
    if x_prior is not None:
        groups["prior_predictive"] = replicated(x_prior)
    return groups


def add_groups(idata, groups: dict):
    """``idata`` with ``groups`` ({name: Dataset}) added, on either stack; returns it."""
    if not groups:
        return idata
    if ARVIZ_MAJOR >= 1:
        for name, ds in groups.items():
            idata[name] = xr.DataTree(ds)
        return idata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata.add_groups(dict(groups))
    return idata


def plot_ppc(idata, group: str = "posterior_predictive", title: str = "", num_draws: int = 50):
    """ArviZ's predictive check plot (0.x ``plot_ppc``, 1.x ``plot_ppc_dist``): the density of each data
    dimension, observed (black) against ``num_draws`` replicated data sets, one panel per dimension (the
    first ``PPC_MAX_DIMS``) -> Figure. ``group``: "posterior_predictive" or "prior_predictive"."""
    import matplotlib.pyplot as plt

    dims = int(idata["observed_data"]["x"].shape[-1]) if ARVIZ_MAJOR >= 1 else int(idata.observed_data["x"].shape[-1])
    coords = {"dim": list(range(min(dims, PPC_MAX_DIMS)))}
    replicated = _group(idata, group)["x"].shape
    # at most the replicated data sets stored (ArviZ refuses more: few are kept when N x D is large)
    num_draws = max(1, min(int(num_draws), int(np.prod(replicated[:2]))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            import arviz_plots as azp

            pc = azp.plot_ppc_dist(idata, group=group, coords=coords, cols=["dim"], num_samples=num_draws,
                                   backend="matplotlib")
            fig = pc.viz["figure"].item()
        else:
            axes = az.plot_ppc(idata, group="prior" if group == "prior_predictive" else "posterior", kind="kde",
                               coords=coords, flatten=["obs"], num_pp_samples=num_draws, show=False)
            fig = np.ravel(axes)[0].figure
    if title:
        fig.suptitle(title)
    plt.figure(fig.number)
    return fig
