"""Figures of the engines' estimates with their uncertainty, drawn from numbers the caller computed
(``analysis.arviz_io``: HDIs, kernel densities), never by calling ArviZ:

- :func:`plot_forest_panels` -- every engine side by side, one panel per parameter kind and data column,
  each on its own scale, at a capped size;
- :func:`plot_ppc` -- a predictive check: the density of each data column, observed against replicated data.
"""

from __future__ import annotations

import textwrap

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .style import TRUTH_COLOR, column_names_or_default, engine_color, engine_label, figure_grid

__all__ = ["plot_forest_panels", "plot_ppc", "FOREST_MAX_HEIGHT_IN", "FOREST_MAX_COLUMNS"]

REPLICATE_COLOR = "tab:blue"
POOLED_COLOR = "tab:orange"
DATA_RANGE_COLOR = "0.85"

FOREST_MAX_HEIGHT_IN = 22.0  # inches at 100 dpi: a forest plot is never taller than 2200 px
FOREST_MAX_COLUMNS = 4  # columns with mean / sd panels, and whose every pair gets a correlation panel


def _forest_panels(num_features: int, names: list, shown: list) -> list:
    """``[(kind, index, title, x label)]`` of the forest panels: the weights, the mean and sd of every shown
    column, the correlation of every pair of shown columns (one panel each, so none is dropped)."""
    panels = [("weights", None, "weights", "weight (share of the data)")]
    pairs = [(a, b) for i, b in enumerate(shown) for a in shown[:i]]
    if pairs:
        a, b = pairs[0]
        panels.append(("correlations", (a, b), f"correlation {names[a]} ~ {names[b]}", "correlation (unitless, −1 … 1)"))
    for j in shown:
        panels.append(("means", j, f"mean of {names[j]}", f"{names[j]} (data units)"))
        panels.append(("sds", j, f"sd of {names[j]}", f"{names[j]} (data units)"))
    for a, b in pairs[1:]:
        panels.append(("correlations", (a, b), f"correlation {names[a]} ~ {names[b]}", "correlation (unitless, −1 … 1)"))
    return panels


def _panel_groups(kind, index, num_components: int) -> list:
    """``[(label, value index)]`` of the row groups of one panel (one group per component)."""
    if kind == "weights":
        return [(f"component {k}", (k,)) for k in range(num_components)]
    if kind == "correlations":
        return [(f"component {k}", (k, index[0], index[1])) for k in range(num_components)]
    return [(f"component {k}", (k, index)) for k in range(num_components)]


def plot_forest_panels(intervals: dict, reference: dict | None = None, *, reference_label: str = "truth",
                       column_names=None, hdi_prob: float = 0.9, columns=None) -> Figure:
    """Forest plot from ``intervals`` = ``{engine: {kind: {"mean", "lower", "upper"}}}`` (kinds weights
    (K,), means (K, D), sds (K, D), correlations (K, D, D); ``analysis.arviz_io.forest_intervals``).

    One panel per kind and shown column (and per pair of shown columns for the correlations), each with its
    own x scale: a mean of 80 and a weight of 0.3 never share an axis. Every engine has its own row within
    each component's group (its colour from ``ENGINE_COLORS``), so no marker hides another; the ``reference``
    values (same kinds, no draw dims) are thin black ticks drawn behind the estimates. ``columns`` =
    ``(indices, why)`` picks the columns shown (default: the first ``FOREST_MAX_COLUMNS``); every pair of
    them gets its correlation panel, and the title says what is left out. The figure is at most
    ``FOREST_MAX_HEIGHT_IN`` inches tall.
    """
    engines = list(intervals)
    first = intervals[engines[0]]
    num_components, num_features = np.shape(first["means"]["mean"])
    names = column_names_or_default(column_names, num_features)
    if columns is None:
        shown = list(range(min(num_features, FOREST_MAX_COLUMNS)))
        why = f"the first {len(shown)} of {num_features} columns" if len(shown) < num_features else ""
    else:
        shown, why = list(columns[0]), columns[1]
    panels = _forest_panels(num_features, names, shown)
    n_eng = len(engines)
    rows_of = [len(_panel_groups(kind, idx, num_components)) * (n_eng + 0.6) for kind, idx, _, _ in panels]
    lead = 1 if num_features == 1 else 2
    grid_rows = [rows_of[:lead]] + [rows_of[i : i + 2] for i in range(lead, len(panels), 2)]
    heights = [max(r) for r in grid_rows]
    row_in = min(0.17, (FOREST_MAX_HEIGHT_IN - 1.2 - 0.55 * len(heights)) / max(1.0, sum(heights)))
    ratios = [h * row_in + 0.55 for h in heights]
    fig = Figure(figsize=(9.0, sum(ratios) + 1.2), layout="constrained")
    gs = fig.add_gridspec(len(heights), 2, height_ratios=ratios)
    axes, i = [], 0
    for r, row in enumerate(grid_rows):
        for c in range(len(row)):
            span = gs[r, :] if len(row) == 1 and num_features == 1 else gs[r, c]
            axes.append(fig.add_subplot(span))
            i += 1
    for ax, (kind, idx, title, xlabel) in zip(axes, panels):
        groups = _panel_groups(kind, idx, num_components)
        ticks, labels = [], []
        for g, (label, where) in enumerate(groups):
            base = g * (n_eng + 0.6)
            ys = base + np.arange(n_eng)
            ticks.append(base + (n_eng - 1) / 2)
            labels.append(label)
            if reference is not None:
                ax.plot([reference[kind][where]] * 2, [ys[0] - 0.45, ys[-1] + 0.45], color=TRUTH_COLOR, lw=1.3,
                        alpha=0.75, zorder=1, solid_capstyle="butt")
            for e, name in enumerate(engines):
                iv = intervals[name][kind]
                c = engine_color(name, e)
                lo, hi, mid = iv["lower"][where], iv["upper"][where], iv["mean"][where]
                if hi > lo:
                    ax.plot([lo, hi], [ys[e]] * 2, color=c, lw=2.2, zorder=2, solid_capstyle="butt")
                ax.scatter([mid], [ys[e]], s=22, color=c, edgecolors="white", linewidths=0.6, zorder=3)
        ax.set_yticks(ticks, labels, fontsize="small")
        ax.invert_yaxis()
        ax.set_title(title if len(title) <= 48 else title.replace(" ~ ", " ~\n"), fontsize="medium" if len(title) <= 48 else "small")
        ax.set_xlabel(xlabel, fontsize="small")
        ax.tick_params(axis="x", labelsize="small")
        ax.grid(axis="x", alpha=0.3)
        if kind == "correlations":
            ax.set_xlim(-1.05, 1.05)
    handles = [Line2D([], [], color=engine_color(n, e), lw=2.2, marker="o", markersize=5, label=engine_label(n))
               for e, n in enumerate(engines)]
    if reference is not None:
        handles.append(Line2D([], [], color=TRUTH_COLOR, lw=1.3, marker="|", markersize=10, ls="", label=reference_label))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)
    n_pairs = num_features * (num_features - 1) // 2
    note = ""
    if len(shown) < num_features:
        note = (f"columns shown: {why} ({', '.join(names[j] for j in shown)}), with the correlations of their "
                f"{len(shown) * (len(shown) - 1) // 2} of {n_pairs} pairs; every entry is in the az.summary tables and "
                "metrics.json")
    fig.suptitle(f"Every engine aligned to the {reference_label}: {round(hdi_prob * 100)}% HDI (lines), posterior mean "
                 f"or point estimate (dots), {reference_label} (black ticks)" + (f"\n{textwrap.fill(note, 110)}" if note else ""),
                 fontsize="medium")
    return fig


def plot_ppc(densities: list, title: str = "", group: str = "posterior_predictive", column_names=None) -> Figure:
    """A predictive check from ``densities`` (``analysis.arviz_io.ppc_densities``: ArviZ's kernel densities):
    one panel per column drawn (named on its x axis), the observed data's density (black) against each
    replicated data set's (thin, translucent) and all replicates pooled (dashed). ``group``:
    "posterior_predictive" or "prior_predictive" (names the replicates in the legend).

    Axis ranges: x spans the observed column's range and the pooled replicates' central 90%; y stops at 1.3
    times the highest of the observed and pooled densities (a replicate narrower than that runs off the top).
    For the prior predictive, whose replicates are far wider than the data, the data's range is shaded."""
    prior = group == "prior_predictive"
    kind = "prior predictive" if prior else "posterior predictive"
    num_features = max((d["dim"] for d in densities), default=0) + 1
    names = column_names_or_default(column_names, num_features)
    fig, axes = figure_grid(max(1, len(densities)), (4.0, 3.2), max_cols=4)
    for ax, entry in zip(axes, densities):
        if entry["replicated"]:  # one artist for every replicate's line: ~50 Line2D cost 3x to build and draw
            ax.add_collection(LineCollection([np.column_stack(curve) for curve in entry["replicated"]],
                                             colors=REPLICATE_COLOR, alpha=0.2, lw=0.8, zorder=1))
        ax.plot(*entry["pooled"], color=POOLED_COLOR, ls="--", lw=1.5, zorder=2)
        ax.plot(*entry["observed"], color=TRUTH_COLOR, lw=1.8, zorder=3)
        _ppc_limits(ax, entry, shade=prior)
        ax.set_xlabel(names[entry["dim"]], fontsize="small")
        ax.set_yticks([])
        ax.tick_params(axis="x", labelsize="small")
    handles = [Line2D([], [], color=TRUTH_COLOR, lw=1.8, label="observed"),
               Line2D([], [], color=REPLICATE_COLOR, alpha=0.5, lw=1.0, label=f"{kind} (one line per replicated data set)"),
               Line2D([], [], color=POOLED_COLOR, ls="--", lw=1.5, label=f"{kind}, replicates pooled")]
    if prior:
        handles.append(Patch(color=DATA_RANGE_COLOR, alpha=0.5, label="range of the observed data"))
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def _ppc_limits(ax, entry: dict, shade: bool = False) -> None:
    """x: the observed range and the pooled replicates' central 90%, padded; y: 1.3 x the highest of the
    observed and pooled densities inside it."""
    lo_obs, hi_obs = entry.get("observed_range", (np.min(entry["observed"][0]), np.max(entry["observed"][0])))
    q5, q95 = entry.get("replicated_quantiles", (lo_obs, hi_obs))
    lo, hi = min(lo_obs, q5), max(hi_obs, q95)
    pad = 0.05 * (hi - lo) if hi > lo else 1.0
    ax.set_xlim(lo - pad, hi + pad)
    top = 0.0
    for grid, pdf in (entry["observed"], entry["pooled"]):
        inside = (np.asarray(grid) >= lo - pad) & (np.asarray(grid) <= hi + pad)
        if inside.any():
            top = max(top, float(np.max(np.asarray(pdf)[inside])))
    if top > 0:
        ax.set_ylim(0, 1.3 * top)
    if shade:
        ax.axvspan(lo_obs, hi_obs, color=DATA_RANGE_COLOR, alpha=0.5, zorder=0, lw=0)
