"""Figures of MCMC diagnostics, from numbers ``analysis.arviz_io.sampler`` computed (never ArviZ):

- :func:`plot_rank` -- rank plots (Vehtari et al. 2021): per quantity, the histogram of each chain's ranks
  among all draws; flat (around the dashed line) when the chains mix, slanted or humped when they do not;
- :func:`plot_energy` -- ArviZ's energy plot: the centred marginal energy against the energy transitions,
  with the BFMI of each chain (below 0.3: the sampler explores the energy distribution poorly), and the
  tree depths of the transitions.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import engine_label

__all__ = ["plot_rank", "plot_energy"]

CHAIN_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def plot_rank(ranks: dict, method: str = "nuts", max_cols: int = 6, note: str = "") -> Figure:
    """Rank plot from ``ranks`` = ``analysis.arviz_io.rank_histograms``: one small panel per quantity, each
    chain's rank histogram as a step line in its colour, the uniform expectation dashed."""
    edges, panels = np.asarray(ranks["edges"]), ranks["panels"]
    n = len(panels)
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.1 * cols + 0.4, 1.55 * rows + 1.1), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False, sharex=True).ravel())
    chains = 0
    for ax, (title, counts) in zip(axes, panels):
        counts = np.asarray(counts)
        chains = counts.shape[0]
        for c in range(chains):
            ax.stairs(counts[c], edges, color=CHAIN_COLORS[c % len(CHAIN_COLORS)], lw=1.1, baseline=None)
        ax.axhline(ranks["expected"], color="0.3", ls="--", lw=0.8)
        ax.set_ylim(0, max(2.0 * ranks["expected"], counts.max() * 1.1))
        ax.set_title(title, fontsize="x-small")
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize="xx-small")
    for i, ax in enumerate(axes[:n]):
        if i + cols >= n:  # the lowest panel of its column
            ax.set_xlabel("rank among all chains' draws", fontsize="x-small")
            ax.tick_params(axis="x", labelbottom=True)
    for ax in axes[n:]:
        ax.remove()
    handles = [Line2D([], [], color=CHAIN_COLORS[c % len(CHAIN_COLORS)], lw=1.2, label=f"chain {c}") for c in range(chains)]
    handles.append(Line2D([], [], color="0.3", ls="--", lw=0.8, label="uniform (chains mixing)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)
    fig.suptitle(f"{engine_label(method)}: rank plots of the aligned draws (each chain's ranks; flat = mixing)"
                 + (f"\n{note}" if note else ""), fontsize="medium")
    return fig


def plot_energy(energy: dict, tree_depth=None, max_tree_depth: int | None = None, method: str = "nuts") -> Figure:
    """ArviZ's energy plot (``analysis.arviz_io.energy_densities``): the densities of the centred marginal
    energy and of the energy transitions, BFMI per chain in the title; with ``tree_depth`` (chain, draw) a
    second panel with each chain's tree depths and ``max_tree_depth`` marked."""
    fig = Figure(figsize=(11.0 if tree_depth is not None else 6.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if tree_depth is not None else 1, squeeze=False)[0]
    ax = axes[0]
    ax.fill_between(*energy["marginal"], color="tab:blue", alpha=0.35, label="marginal energy E − mean(E)")
    ax.fill_between(*energy["transition"], color="tab:orange", alpha=0.35, label="energy transition E[t] − E[t−1]")
    ax.set_yticks([])
    ax.set_xlabel("energy (nats)")
    bfmi = energy.get("bfmi")
    if bfmi is not None:
        ax.set_title("energy; BFMI per chain " + ", ".join(f"{v:.2f}" for v in bfmi) + " (< 0.3: poor)", fontsize="medium")
    ax.legend(fontsize="small", loc="upper right")
    if tree_depth is not None:
        depth = np.asarray(tree_depth)
        ax = axes[1]
        top = int(max(depth.max(), max_tree_depth or 0))
        bins = np.arange(0.5, top + 1.5)
        for c in range(depth.shape[0]):
            ax.hist(depth[c], bins=bins, histtype="step", lw=1.5, color=CHAIN_COLORS[c % len(CHAIN_COLORS)], label=f"chain {c}")
        if max_tree_depth is not None:
            ax.axvline(max_tree_depth, color="tab:red", ls=":", lw=1.5, label=f"max_tree_depth = {max_tree_depth}")
        ax.set_xlabel("tree depth (leapfrog steps ≈ 2^depth)")
        ax.set_ylabel("draws")
        ax.set_title("tree depth of each transition", fontsize="medium")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{engine_label(method)}: sampler diagnostics", fontsize="medium")
    return fig
