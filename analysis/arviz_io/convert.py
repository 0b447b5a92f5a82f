"""FitResult -> ArviZ InferenceData, and NetCDF files of it (either ArviZ stack).

InferenceData layout (every engine; point estimates are chain=1, draw=1)
------------------------------------------------------------------------
posterior        weights (chain, draw, component), means (chain, draw, component, dim),
                 covariances (chain, draw, component, dim, dim_); the coordinates of ``dim`` / ``dim_`` are the
                 data's column names when given (the CSV header), else 0, 1, ...
log_likelihood   x (chain, draw, obs): the marginal mixture log density of each observation at
                 each draw, ``models.pointwise_log_likelihood`` (loo / waic); evenly spaced draws of each chain
                 above LOO_MAX_VALUES values in memory, above LOGLIK_MAX_VALUES in the file (``save_netcdf``,
                 whose group then says ``loo_draws_in_report``)
sample_stats     per-DRAW statistics, dims (chain, draw): ``total_log_likelihood`` (marginal
                 log-likelihood of the whole data at the draw, the sum of the group above) and, for NUTS,
                 the sampler's statistics under ArviZ's names: ``energy`` (the Hamiltonian: az.bfmi,
                 az.plot_energy), ``diverging``, ``step_size``, ``tree_depth``, ``n_steps`` (leapfrog steps),
                 ``acceptance_rate``, and ``potential_energy``
fit_trace        per-ITERATION traces of the optimisers (EM: log_likelihood, elbo, kl; hard EM:
                 log_likelihood, classification_log_likelihood; MAP/SVI: loss, log_likelihood),
                 dim ``iteration`` (traces recorded every few steps, e.g. MAP/SVI log_likelihood,
                 get their own dim ``iteration_<name>`` with the step numbers as coordinate).
                 Choice: a separate group, because these traces have neither a
                 chain nor a draw dim and their length differs from the number of draws (SVI has
                 both draws and steps); both ArviZ versions keep unknown groups through NetCDF.
observed_data    x (obs, dim)
assignments      (added by the report, ``assignment_groups``) responsibilities (obs, component), label, max_responsibility,
                 uncertainty and the data file's row (obs): each row's aligned cluster and how sure the fit is
attrs            method, converged (0/1), num_iters, seconds, compile_seconds, run_seconds,
                 rhat_method (on every group); a streamed file's fit adds subsample_rows and
                 num_rows_in_data (observed_data and log_likelihood hold that row subsample)

A NetCDF file is the same file on both stacks (one HDF5 group per InferenceData group): a file written
on one opens on the other (tested).
"""

from __future__ import annotations

import warnings

import numpy as np
import xarray as xr

from models.density import draws_pointwise_log_likelihood
from models.missing import observed_pointwise_log_likelihood
from models.params import GMMParams, covariances, to_numpy

from analysis.netcdf_file import write_groups

from ._stack import ARVIZ_MAJOR, assemble, az, group, group_names, replace_group

__all__ = ["RHAT_METHOD", "PARAM_VARS", "FIT_TRACE_GROUP", "GROUPS", "FLOAT32_GROUPS", "LOGLIK_MAX_VALUES",
           "LOGLIK_MIN_DRAWS", "LOO_MAX_VALUES", "thin_log_likelihood", "drop_loo_draws", "ARVIZ_STAT_NAMES", "dim_coords", "to_inference_data", "posterior_dataset", "group_datasets", "loglik_draws_kept",
           "save_netcdf", "netcdf_groups", "load_netcdf", "predictive_groups", "assignment_groups", "ASSIGNMENTS_GROUP"]

RHAT_METHOD = "rank"
PARAM_VARS = ("weights", "means", "covariances")
FIT_TRACE_GROUP = "fit_trace"
GROUPS = ("posterior", "sample_stats", "log_likelihood", "observed_data", FIT_TRACE_GROUP)


def _batched(samples: GMMParams) -> GMMParams:
    """Draws as (chain, draw, ...) numpy arrays; a (draw, K) layout becomes chain=1."""
    samples = to_numpy(samples)
    if samples.weights.ndim == 1:
        samples = GMMParams(*(a[None, None] for a in samples))
    elif samples.weights.ndim == 2:
        samples = GMMParams(*(a[None] for a in samples))
    return samples


_DIMS = {"weights": ("component",), "means": ("component", "dim"), "covariances": ("component", "dim", "dim_")}


def dim_coords(num_features: int, column_names=None) -> np.ndarray:
    """The coordinate of the ``dim`` / ``dim_`` dims: the column names when there are ``num_features`` distinct
    ones, else 0, 1, ..."""
    names = [str(c) for c in column_names] if column_names is not None else []
    if len(names) == num_features and len(set(names)) == num_features:
        return np.asarray(names, dtype=object)
    return np.arange(num_features)


def posterior_dataset(samples: GMMParams, column_names=None) -> xr.Dataset:
    """(chain, draw, ...) posterior of ``samples``: integer coordinates, the column names on ``dim`` / ``dim_``."""
    samples = _batched(samples)
    arrays = {"weights": samples.weights, "means": samples.means, "covariances": np.asarray(covariances(samples))}
    chains, draws, k, d = samples.means.shape
    names = dim_coords(d, column_names)
    coords = {"chain": np.arange(chains), "draw": np.arange(draws), "component": np.arange(k),
              "dim": names, "dim_": names}
    return xr.Dataset({name: (("chain", "draw") + _DIMS[name], a) for name, a in arrays.items()}, coords=coords)


# The log_likelihood group: in memory (what the report's PSIS-LOO reads) at most about LOO_MAX_VALUES values
# (draws x observations) per engine, in the NetCDF file (``save_netcdf``) at most about LOGLIK_MAX_VALUES, and
# never fewer than LOGLIK_MIN_DRAWS draws either way (when the engine has them). The elpd itself needs few draws
# (at 100 draws its Monte Carlo error is far below its standard error) but PSIS's Pareto k does not: its
# estimate is noisy at small S and ArviZ's warning threshold, min(1 - 1 / log10 S, 0.7), is 0.5 at S = 100.
# Measured on 50,000 rows (K = 4, D = 8, NUTS, 2 x 1,000 draws): the largest k was 1.26-2.69 from 100 evenly
# spaced draws (25 rows above 0.7, a warning that blamed the model), 0.52 from 500 and 0.27 from all 2,000.
# So LOO keeps up to 50M values (400 MB of float64: every draw up to 25,000 rows, 1,000 draws at 50,000 rows)
# and the file keeps 5M (N = 50,000 x 2,000 draws would be 400 MB as float32).
LOGLIK_MAX_VALUES = 5_000_000
LOO_MAX_VALUES = 50_000_000
LOGLIK_MIN_DRAWS = 100


def _pointwise_blocks(flat: GMMParams, x: np.ndarray, max_elements: int = 25_000_000):
    """Yield (start, (block, N) pointwise log density) over the draws of ``flat`` (S, ...) in blocks of bounded
    memory: complete rows by ``models.density.draws_pointwise_log_likelihood`` (one matmul of quadratic features
    per block, checked against its rounding bound); rows with holes by the observed entries' density
    (``models.missing``), whose (block, N, K, D, D) lookups cap the block."""
    if not np.isnan(x).any():
        yield from draws_pointwise_log_likelihood(flat, x, max_elements)
        return
    import jax

    k, d = flat.means.shape[-2:]
    fn = jax.vmap(lambda p, _: observed_pointwise_log_likelihood(p, x), in_axes=(0, None))
    block = max(1, max_elements // d // max(1, x.shape[0] * k * d))
    for i in range(0, flat.weights.shape[0], block):
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


# NUTS's per-draw traces under ArviZ's sample_stats names (az.from_numpyro's; Stan's without the underscores)
ARVIZ_STAT_NAMES = {"accept_prob": "acceptance_rate", "num_steps": "n_steps"}


def _per_draw_stats(result, chains: int, num_draws: int) -> tuple[dict, dict]:
    """Split the engine's traces into per-draw statistics (chain, draw) and per-iteration traces."""
    sample_stats, fit_trace = {}, {}
    for name, value in result.trace.items():
        value = np.asarray(value)
        if result.samples is not None and value.size == chains * num_draws and result.method == "nuts":
            if name != "log_likelihood":
                sample_stats[ARVIZ_STAT_NAMES.get(name, name)] = value.reshape(chains, num_draws)
        elif value.ndim == 1:
            fit_trace[name] = value
        elif value.size == chains * num_draws:
            sample_stats[name] = value.reshape(chains, num_draws)
    diverging = result.info.get("diverging")
    if diverging is not None and np.size(diverging) == chains * num_draws:
        sample_stats["diverging"] = np.asarray(diverging, dtype=bool).reshape(chains, num_draws)
    return sample_stats, fit_trace


def group_datasets(result, x: np.ndarray, max_values: int | None = None, column_names=None) -> dict:
    """``{group: xr.Dataset}`` of one FitResult, the layout of the module docstring."""
    n, d = x.shape
    draws = _batched(result.samples if result.samples is not None else result.params)
    chains, num_draws = draws.weights.shape[:2]
    posterior = posterior_dataset(draws, column_names)
    sample_coords = {"chain": posterior.chain.values, "draw": posterior.draw.values}
    total, pointwise, kept = _pointwise(draws, x, LOO_MAX_VALUES if max_values is None else max_values)
    stats, fit_trace = _per_draw_stats(result, chains, num_draws)
    stats = {"total_log_likelihood": total, **stats}
    groups = {
        "posterior": posterior,
        "sample_stats": xr.Dataset({k: (("chain", "draw"), v) for k, v in stats.items()}, coords=sample_coords),
        # draws thinned to what LOO needs (the draw coordinate names the posterior draws kept); thinned again to
        # LOGLIK_MAX_VALUES when written (save_netcdf)
        "log_likelihood": xr.Dataset({"x": (("chain", "draw", "obs"), pointwise)},
                                     coords={"chain": posterior.chain.values, "draw": posterior.draw.values[kept],
                                             "obs": np.arange(n)}),
        "observed_data": xr.Dataset({"x": (("obs", "dim"), x)}, coords={"obs": np.arange(n), "dim": posterior.dim.values}),
    }
    if fit_trace:
        groups[FIT_TRACE_GROUP] = _fit_trace_dataset(fit_trace)
    for ds in groups.values():
        ds.attrs.update(_attrs(result))
    return groups


def to_inference_data(result, x, column_names=None):
    """InferenceData of one FitResult (layout in the module docstring): an ``arviz.InferenceData``
    on ArviZ 0.x, an ``xarray.DataTree`` on ArviZ 1.x (ArviZ 1.x's own InferenceData type). ``column_names``
    (D,) become the coordinates of the ``dim`` / ``dim_`` dims."""
    return assemble(group_datasets(result, np.asarray(x), column_names=column_names), _attrs(result))


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


def save_netcdf(idata, path, complevel: int = 4) -> str:
    """Write ``idata`` to ``path``: NetCDF4 through h5netcdf, one HDF5 group per InferenceData group (the
    layout both ArviZ stacks read), every variable zlib-compressed and the pointwise log-likelihood stored
    and the predictive replicates as float32 (``FLOAT32_GROUPS``; LOO / WAIC from it agree with float64 to
    ~1e-6 of their standard error). The same as ``analysis.netcdf_file.write_groups(path, *netcdf_groups(idata))``."""
    return write_groups(path, *netcdf_groups(idata, complevel))


def netcdf_groups(idata, complevel: int = 4) -> tuple[dict, list]:
    """What :func:`save_netcdf` writes, as plain xarray: ``(root attrs, [(group name, Dataset, encoding)])``, the
    log_likelihood group thinned (:func:`thin_log_likelihood`); picklable, so a worker process can write it
    (:func:`analysis.netcdf_file.write_groups`)."""
    groups = []
    for name in group_names(idata):
        ds = group(idata, name)
        if name == "log_likelihood":
            ds = thin_log_likelihood(ds)
        encoding = {}
        for var, values in ds.variables.items():
            enc = {"zlib": True, "complevel": complevel, "shuffle": True} if values.ndim else {}
            if (name in FLOAT32_GROUPS and var in ds.data_vars and values.dtype == np.float64):
                enc["dtype"] = "float32"
            encoding[var] = enc
        groups.append((name, ds, encoding))
    return dict(idata.attrs or {}), groups


def thin_log_likelihood(ds: xr.Dataset, max_values: int | None = None) -> xr.Dataset:
    """The log_likelihood group as written to a file: evenly spaced draws of each chain, about ``max_values``
    (default ``LOGLIK_MAX_VALUES``) values, never fewer than ``LOGLIK_MIN_DRAWS`` draws; the group as it is when it
    is already that small. ``attrs["loo_draws_in_report"]`` says how many draws the report's LOO used."""
    chains, draws, n = ds["x"].shape
    keep = loglik_draws_kept(chains, draws, n, LOGLIK_MAX_VALUES if max_values is None else max_values)
    if len(keep) == draws:
        return ds
    thinned = ds.isel(draw=keep)
    thinned.attrs = {**ds.attrs, "loo_draws_in_report": int(chains * draws)}
    return thinned


def drop_loo_draws(idata):
    """``idata`` with its log_likelihood group thinned as the file keeps it (:func:`thin_log_likelihood`): the
    memory of the extra draws LOO read is given back once LOO is computed."""
    return replace_group(idata, "log_likelihood", thin_log_likelihood(group(idata, "log_likelihood")))


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


# --------------------------------------------------------------------------- predictive groups


def predictive_groups(x_rep=None, prior_params: GMMParams | None = None, x_prior=None, column_names=None) -> dict:
    """``{group: Dataset}`` for replicated data and prior draws (``analysis.predictive``'s draws):

    posterior_predictive  x (chain=1, draw, obs, dim), float32: replicated data, one set per thinned posterior
                          draw (point estimates: replicates of the point)
    prior                 weights / means / covariances (chain=1, draw, ...): draws from the prior used
    prior_predictive      x (chain=1, draw, obs, dim): one data set per prior draw
    """
    def replicated(values):
        values = np.asarray(values, np.float32)  # replicated data: float32 is plenty for a check
        s, n, d = values.shape
        coords = {"chain": [0], "draw": np.arange(s), "obs": np.arange(n), "dim": dim_coords(d, column_names)}
        return xr.Dataset({"x": (("chain", "draw", "obs", "dim"), values[None])}, coords=coords)

    groups = {}
    if x_rep is not None:
        groups["posterior_predictive"] = replicated(x_rep)
    if prior_params is not None:
        groups["prior"] = posterior_dataset(GMMParams(*(np.asarray(a)[None] for a in prior_params)), column_names)
    if x_prior is not None:
        groups["prior_predictive"] = replicated(x_prior)
    return groups


# --------------------------------------------------------------------------- per-point assignments

ASSIGNMENTS_GROUP = "assignments"


def assignment_groups(responsibilities, row_index=None) -> dict:
    """``{"assignments": Dataset}`` of one engine's per-point output (``analysis.assignments``), dims (obs,
    component) like the other groups' ``obs``:

    assignments   responsibilities (obs, component): P(z = k | x) at the aligned point estimate; label (obs):
                  the aligned component assigned (argmax); max_responsibility (obs); uncertainty (obs):
                  1 - max_responsibility (mclust's); row (obs): the row's index among the data file's rows
                  (a streamed file's subsample keeps its rows' indices)
    """
    resp = np.asarray(responsibilities, np.float64)
    n, k = resp.shape
    label = np.argmax(resp, axis=1)
    top = resp[np.arange(n), label]
    obs = np.arange(n)
    ds = xr.Dataset({"responsibilities": (("obs", "component"), resp), "label": (("obs",), label.astype(np.int64)),
                     "max_responsibility": (("obs",), top), "uncertainty": (("obs",), 1.0 - top),
                     "row": (("obs",), obs if row_index is None else np.asarray(row_index, np.int64))},
                    coords={"obs": obs, "component": np.arange(k)})
    return {ASSIGNMENTS_GROUP: ds}
