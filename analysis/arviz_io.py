"""FitResult <-> ArviZ InferenceData, and every ArviZ call of the project.

This is the ONLY module that imports ``arviz`` (a move to ArviZ 1.x is this file's work alone).

InferenceData layout (every engine; point estimates are chain=1, draw=1)
------------------------------------------------------------------------
posterior        weights (chain, draw, component), means (chain, draw, component, dim),
                 covariances (chain, draw, component, dim, dim_)
log_likelihood   x (chain, draw, obs): the marginal mixture log density of each observation at
                 each draw, ``models.pointwise_log_likelihood`` vmapped over draws (az.loo / az.waic)
sample_stats     per-DRAW statistics, dims (chain, draw): ``total_log_likelihood`` (marginal
                 log-likelihood of the whole data at the draw, the sum of the group above) and, for NUTS,
                 the engine's per-draw traces (``potential_energy``, ``diverging``, ...)
fit_trace        per-ITERATION traces of the optimisers (EM: log_likelihood, elbo, kl; hard EM:
                 log_likelihood, classification_log_likelihood; MAP/SVI: loss, log_likelihood),
                 dim ``iteration`` (traces recorded every few steps, e.g. MAP/SVI log_likelihood,
                 get their own dim ``iteration_<name>`` with the step numbers as coordinate).
                 Choice: a separate group, because these traces have neither a
                 chain nor a draw dim and their length differs from the number of draws (SVI has
                 both draws and steps); ArviZ keeps unknown groups through NetCDF round trips.
observed_data    x (obs, dim)
attrs            method, converged (0/1), num_iters, seconds, compile_seconds, run_seconds,
                 rhat_method

R-hat needs at least two chains: single-chain draws (SVI's guide draws) get R-hat null.

R-hat: ``RHAT_METHOD = "rank"``, ArviZ's default rank-normalised split R-hat (Vehtari et al. 2021).
On fully label-switched chains it reads about 1.8 where the classic split R-hat reads about 8.5;
both flag the problem, the numbers are not comparable.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import xarray as xr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

# ArviZ logs "Shape validation failed" for single-chain draws (SVI); R-hat is then reported as null.
logging.getLogger("arviz").setLevel(logging.ERROR)
if isinstance(getattr(az, "_log", None), logging.Logger):  # ArviZ 0.x builds its logger with Logger("arviz")
    az._log.setLevel(logging.ERROR)

from models.density import pointwise_log_likelihood
from models.params import GMMParams, covariances, to_numpy

__all__ = [
    "RHAT_METHOD",
    "PARAM_VARS",
    "to_inference_data",
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
    "arviz_version",
]

RHAT_METHOD = "rank"
PARAM_VARS = ("weights", "means", "covariances")
FIT_TRACE_GROUP = "fit_trace"


def arviz_version() -> str:
    return az.__version__


def _batched(samples: GMMParams) -> GMMParams:
    """Draws as (chain, draw, ...) numpy arrays; a (draw, K) layout becomes chain=1."""
    samples = to_numpy(samples)
    if samples.weights.ndim == 1:
        samples = GMMParams(*(a[None, None] for a in samples))
    elif samples.weights.ndim == 2:
        samples = GMMParams(*(a[None] for a in samples))
    return samples


def _posterior_dict(samples: GMMParams) -> dict:
    samples = _batched(samples)
    return {"weights": samples.weights, "means": samples.means, "covariances": np.asarray(covariances(samples))}


def _coords(k: int, d: int, n: int | None = None) -> dict:
    coords = {"component": np.arange(k), "dim": np.arange(d), "dim_": np.arange(d)}
    if n is not None:
        coords["obs"] = np.arange(n)
    return coords


_DIMS = {"weights": ["component"], "means": ["component", "dim"], "covariances": ["component", "dim", "dim_"]}


_POINTWISE = []


def _pointwise_fn():
    if not _POINTWISE:
        import jax

        _POINTWISE.append(jax.jit(jax.vmap(pointwise_log_likelihood, in_axes=(0, None))))
    return _POINTWISE[0]


def _pointwise(samples: GMMParams, x: np.ndarray, max_elements: int = 20_000_000) -> np.ndarray:
    """(chain, draw, obs) marginal log density, vmapped over draws in blocks to bound memory."""
    chains, draws = samples.weights.shape[:2]
    flat = GMMParams(*(a.reshape((chains * draws,) + a.shape[2:]) for a in samples))
    fn = _pointwise_fn()
    block = max(1, max_elements // max(1, x.shape[0]))
    out = [np.asarray(fn(GMMParams(*(a[i : i + block] for a in flat)), x)) for i in range(0, chains * draws, block)]
    return np.concatenate(out, axis=0).reshape(chains, draws, x.shape[0])


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
    return attrs


def to_inference_data(result, x) -> "az.InferenceData":
    """InferenceData of one FitResult (layout in the module docstring)."""
    x = np.asarray(x)
    n, d = x.shape
    k = result.num_components
    draws = _batched(result.samples if result.samples is not None else result.params)
    chains, num_draws = draws.weights.shape[:2]
    coords = _coords(k, d, n)
    pointwise = _pointwise(draws, x)
    sample_stats = {"total_log_likelihood": pointwise.sum(-1)}
    fit_trace = {}
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
    idata = az.from_dict(
        posterior=_posterior_dict(draws),
        sample_stats=sample_stats,
        log_likelihood={"x": pointwise},
        observed_data={"x": x},
        coords=coords,
        dims={**_DIMS, "x": ["obs", "dim"]},
        attrs=_attrs(result),
    )
    for group in ("posterior", "sample_stats", "log_likelihood", "observed_data"):
        getattr(idata, group).attrs.update(_attrs(result))
    # from_dict gives the log_likelihood variable the observed dims; fix them to (obs,).
    idata.log_likelihood["x"] = xr.DataArray(
        pointwise, dims=("chain", "draw", "obs"),
        coords={"chain": idata.posterior.chain, "draw": idata.posterior.draw, "obs": np.arange(n)},
    )
    if fit_trace:
        ds = _fit_trace_dataset(fit_trace)
        ds.attrs.update(_attrs(result))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata.add_groups({FIT_TRACE_GROUP: ds})
    return idata


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


def save_netcdf(idata, path) -> str:
    """Write ``idata`` to ``path`` (NetCDF4 via h5netcdf when netCDF4 is absent); returns the path."""
    path = str(path)
    try:
        idata.to_netcdf(path, engine="h5netcdf")
    except TypeError:  # older ArviZ without the engine argument
        idata.to_netcdf(path)
    return path


def load_netcdf(path) -> "az.InferenceData":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            return az.from_netcdf(str(path), engine="h5netcdf")
        except TypeError:
            return az.from_netcdf(str(path))


def _finite_or_none(v):
    v = float(v)
    return v if np.isfinite(v) else None


def rhat_of_samples(samples: GMMParams, method: str = RHAT_METHOD) -> dict:
    """Max R-hat over the entries of each parameter, ``{"weights", "means", "covariances"}``
    (None where undefined, e.g. too few draws)."""
    ds = az.convert_to_dataset(_posterior_dict(samples))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = az.rhat(ds, method=method)
    return {name: _finite_or_none(np.nanmax(r[name].values)) if np.isfinite(r[name].values).any() else None
            for name in r.data_vars}


def summary(idata, var_names=PARAM_VARS, hdi_prob: float = 0.9):
    """az.summary (mean, sd, HDI, mcse, ess_bulk, ess_tail, r_hat [rank-normalised]) as a DataFrame."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.summary(idata, var_names=list(var_names), hdi_prob=hdi_prob)


def loo(idata) -> dict:
    """PSIS-LOO of one engine with draws: elpd_loo, se, p_loo, max Pareto k, and ArviZ's warning flag."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.loo(idata, pointwise=True)
    return {
        "elpd_loo": float(res["elpd_loo"]),
        "se": float(res["se"]),
        "p_loo": float(res["p_loo"]),
        "pareto_k_max": float(np.nanmax(np.asarray(res["pareto_k"]))),
        "warning": bool(res["warning"]),
    }


def waic(idata) -> dict:
    """WAIC of one engine with draws (``az.waic``, log scale): elpd_waic, se, p_waic, warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = az.waic(idata, pointwise=True)  # pointwise=False labels the estimate "waic" (arviz 0.23)
    return {"elpd_waic": float(res["elpd_waic"]), "se": float(res["se"]), "p_waic": float(res["p_waic"]),
            "warning": bool(res["warning"])}


def waic_of_pointwise(log_lik_draws) -> dict:
    """``az.waic`` of an (S, N) matrix of pointwise log-likelihoods (S draws, N observations)."""
    ll = np.asarray(log_lik_draws, np.float64)
    return waic(az.from_dict(log_likelihood={"x": ll[None]}))


def compare(idatas: dict):
    """az.compare (LOO, stacking weights) of ``{name: idata}``; a DataFrame ranked by elpd_loo."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return az.compare(dict(idatas), ic="loo")


def plot_trace(idata, var_names=("weights", "means")):
    """az.plot_trace (compact: one line per component / coordinate) -> Figure."""
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_trace(idata, var_names=list(var_names), compact=True, show=False,
                             backend_kwargs={"layout": "constrained"})
    fig = np.ravel(axes)[0].figure
    fig.suptitle(f"{idata.posterior.attrs.get('method', '')}: trace of the aligned draws (ArviZ plot_trace)")
    plt.figure(fig.number)
    return fig


def _forest_label_values(truth: GMMParams) -> dict:
    """Map ArviZ forest tick labels like ``means\\n[0, 1]`` to the true value."""
    arrays = _posterior_dict(truth)
    values = {}
    for name, a in arrays.items():
        a = a[0, 0]
        for idx in np.ndindex(a.shape):
            values[(name, tuple(int(i) for i in idx))] = float(a[idx])
    return values


def _parse_label(label: str):
    label = label.replace("\n", " ").strip()
    if "[" not in label:
        return None
    name, rest = label.split("[", 1)
    try:
        idx = tuple(int(v) for v in rest.rstrip("]").split(","))
    except ValueError:
        return None
    return name.strip(), idx


def plot_forest(idatas: dict, truth: GMMParams | None = None, var_names=PARAM_VARS, hdi_prob: float = 0.9):
    """az.plot_forest of all engines side by side (90% HDI, point engines are single dots), true
    values marked with red crosses. -> Figure."""
    names = list(idatas)
    rows = sum(int(np.prod(idatas[names[0]].posterior[v].shape[2:])) for v in var_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_forest(
            [idatas[n] for n in names], model_names=names, var_names=list(var_names), combined=True,
            hdi_prob=hdi_prob, figsize=(8, max(4.0, 0.25 * rows * max(1, len(names)) ** 0.5 + 2)), show=False,
        )
    ax = np.ravel(axes)[0]
    fig = ax.figure
    if truth is not None:
        values = _forest_label_values(truth)
        ticks = ax.get_yticks()
        labels = [t.get_text() for t in ax.get_yticklabels()]
        ys, xs = [], []
        current = None
        order = np.argsort(ticks)[::-1]  # top to bottom: the variable name labels its first row
        for y, lab in ((ticks[i], labels[i]) for i in order):
            lab = lab.replace("\n", " ").strip()
            if lab and not lab.startswith("[") and "[" in lab:
                current = lab.split("[", 1)[0].strip()
            elif lab.startswith("[") and current is not None:
                lab = current + lab
            parsed = _parse_label(lab)
            if parsed is not None and parsed in values:
                ys.append(y)
                xs.append(values[parsed])
        old = ax.get_legend()
        handles = list(old.legend_handles) if old is not None else []
        texts = [t.get_text() for t in old.get_texts()] if old is not None else []
        if ys:
            handles.append(ax.scatter(xs, ys, marker="x", s=70, color="black", zorder=5, label="true value"))
            texts.append("true value")
        if old is not None:
            old.remove()
        if handles:
            ax.legend(handles, texts, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", title="engine")
    ax.set_title(f"All engines, aligned to the truth: {int(hdi_prob * 100)}% HDI (lines) and means (dots)")
    ax.set_xlabel("value")
    fig.tight_layout()
    return fig
