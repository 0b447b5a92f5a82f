"""MCMC sampler diagnostics of one engine's InferenceData (NUTS), on both ArviZ stacks: BFMI from the
``energy`` in sample_stats, the sampler's step size, tree depth and acceptance, and the numbers of a rank
plot and an energy plot. Numbers only: ``analysis.plots.diagnostics`` draws them.

BFMI (Betancourt 2016): ``az.bfmi`` on ArviZ 0.x, ``arviz_stats.bfmi`` on 1.x; below 0.3 the momentum
resampling does not explore the energy distribution well. Ranks (Vehtari et al. 2021): every draw's rank
among all chains' draws of the same quantity; the histogram of each chain's ranks is flat when the chains
mix.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata

from ._stack import ARVIZ_MAJOR, az, azs, group, group_names
from .stats import kde, parameter_kinds

__all__ = ["BFMI_THRESHOLD", "bfmi", "sampler_stats", "rank_histograms", "energy_densities"]

BFMI_THRESHOLD = 0.3


def _stats(idata):
    return group(idata, "sample_stats") if "sample_stats" in group_names(idata) else None


def bfmi(idata) -> np.ndarray | None:
    """BFMI per chain (ArviZ's) from ``sample_stats.energy``; None when there is no energy (not NUTS)."""
    stats = _stats(idata)
    if stats is None or "energy" not in stats:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if ARVIZ_MAJOR >= 1:
            out = azs.bfmi(idata)
            out = out["energy"] if hasattr(out, "data_vars") else out
        else:
            out = az.bfmi(idata)
    return np.atleast_1d(np.asarray(getattr(out, "values", out), np.float64))


def sampler_stats(idata, max_tree_depth: int | None = None) -> dict | None:
    """The sampler's numbers for the page and metrics.json, or None without ``energy`` (not NUTS):
    ``{bfmi (per chain), bfmi_min, step_size (per chain, after warm-up), tree_depth_mean, tree_depth_max,
    max_tree_depth, hit_max_tree_depth (share of draws at it), acceptance_rate_mean, divergences}``."""
    stats = _stats(idata)
    values = bfmi(idata)
    if values is None:
        return None
    get = lambda name: np.asarray(stats[name].values) if name in stats else None  # noqa: E731
    depth, step, accept, diverging = get("tree_depth"), get("step_size"), get("acceptance_rate"), get("diverging")
    out = {"bfmi": [float(v) for v in values], "bfmi_min": float(np.min(values)),
           "step_size": None if step is None else [float(v) for v in step[:, -1]],
           "tree_depth_mean": None if depth is None else float(depth.mean()),
           "tree_depth_max": None if depth is None else int(depth.max()),
           "max_tree_depth": None if max_tree_depth is None else int(max_tree_depth),
           "hit_max_tree_depth": None,
           "acceptance_rate_mean": None if accept is None else float(accept.mean()),
           "divergences": None if diverging is None else int(diverging.sum())}
    if depth is not None and max_tree_depth is not None:
        out["hit_max_tree_depth"] = float(np.mean(depth >= max_tree_depth))
    return out


def rank_histograms(idata, columns=None, num_bins: int = 20) -> dict:
    """The numbers of a rank plot of the aligned draws: ``{"edges": (B + 1,), "expected": draws per bin per chain,
    "panels": [(title, counts (chain, B))]}`` for the weights, and the mean and sd of each column in ``columns``
    (indices; default all) of every component. Ranks are over all chains' draws together (ties averaged)."""
    post = group(idata, "posterior")
    kinds = parameter_kinds(post)
    names = [str(v) for v in post["means"]["dim"].values]
    chains, draws, k, d = kinds["means"].shape
    cols = list(range(d)) if columns is None else list(columns)
    edges = np.linspace(0, chains * draws, num_bins + 1)
    panels = []
    series = [(f"weight of component {c}", kinds["weights"][:, :, c]) for c in range(k)]
    for j in cols:
        series += [(f"mean of {names[j]}, component {c}", kinds["means"][:, :, c, j]) for c in range(k)]
        series += [(f"sd of {names[j]}, component {c}", kinds["sds"][:, :, c, j]) for c in range(k)]
    for title, values in series:
        ranks = rankdata(values.reshape(-1)).reshape(chains, draws)
        panels.append((title, np.stack([np.histogram(r, bins=edges)[0] for r in ranks])))
    return {"edges": edges, "expected": draws / num_bins, "panels": panels}


def energy_densities(idata) -> dict | None:
    """The numbers of ArviZ's energy plot: kernel densities of the centred marginal energy ``E - mean(E)`` and
    of the energy transitions ``E[t] - E[t-1]`` (all chains), and the BFMI per chain; None without energy."""
    stats = _stats(idata)
    if stats is None or "energy" not in stats:
        return None
    energy = np.asarray(stats["energy"].values, np.float64)
    marginal = energy - energy.mean(axis=1, keepdims=True)
    transition = np.diff(energy, axis=1)
    return {"marginal": kde(marginal.ravel()), "transition": kde(transition.ravel()), "bfmi": bfmi(idata)}
