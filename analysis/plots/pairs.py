"""Scatterplot matrices (mclust's / seaborn's pairs plot) of data with more than two columns.

- :func:`plot_pairs` -- the lower triangle of every pair of the shown columns (x = the column of the panel's
  column, y = the column of its row, each axis labelled with the column's name), the diagonal the histogram
  of each column; optionally the points coloured by a labelling and every fit's components drawn in each
  panel as the MARGINAL Gaussians of that pair (mean entries and 2x2 covariance sub-matrix: exact), and on
  the diagonal each fit's marginal mixture density.

Which columns: all of them up to ``style.MAX_PAIR_COLUMNS``, else the caller's choice
(``style.informative_columns``), which the figure states.
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from models.params import GMMParams

from .style import (TRUTH_COLOR, Projection, column_names_or_default, component_color, density_1d, draw_gaussians,
                    engine_color, engine_label, marginal, scatter_rows, set_limits, IMPUTED_LEGEND)

__all__ = ["plot_pairs", "pairs_axes", "MAX_PAIR_POINTS"]

MAX_PAIR_POINTS = 3000  # rows drawn as points; beyond, 2-D histograms (or, labelled, a seeded subset of the rows)


def pairs_axes(names: list, shown: list, panel_in: float | None = None) -> tuple[Figure, np.ndarray]:
    """A figure with an (n, n) grid for the ``shown`` columns: the upper triangle removed, every column of
    panels sharing its x axis, every row's off-diagonal panels sharing their y axis; bottom-row x labels and
    left-column y labels are the column names, each diagonal panel names its column too."""
    n = len(shown)
    panel_in = panel_in or (2.3 if n <= 4 else 1.95)
    fig = Figure(figsize=(panel_in * n + 0.6, panel_in * n + 1.0), layout="constrained")
    axes = fig.subplots(n, n, squeeze=False, sharex="col")
    for i in range(n):
        for j in range(n):
            ax = axes[i, j]
            if j > i:
                ax.remove()
                continue
            if 0 < j < i:
                ax.sharey(axes[i, 0])
            ax.tick_params(labelsize="x-small")
            if i < n - 1:
                ax.tick_params(labelbottom=False)
            if j > 0 or i == j:
                ax.tick_params(labelleft=False)
            if i == n - 1:
                ax.set_xlabel(names[shown[j]], fontsize="small")
            if j == 0 and i > 0:
                ax.set_ylabel(names[shown[i]], fontsize="small")
            if i == j:
                ax.set_yticks([])
                ax.set_title(names[shown[i]], fontsize="small", loc="left", pad=2)
            else:
                ax.grid(alpha=0.25)
    return fig, axes


def plot_pairs(x, shown: list, column_names=None, *, labels=None, label_name: str = "component",
               fits: dict | None = None, truth: GMMParams | None = None, title: str = "", note: str = "",
               sigmas=(1.0, 2.0), legend_title: str = "", imputed=None) -> Figure:
    """A scatterplot matrix of ``x`` (N, D) over the column indices ``shown``.

    ``labels`` (N,) colour the points (legend "<label_name> k"); ``fits`` = ``{engine: GMMParams}`` draws each
    engine's components in its colour (``sigmas`` ellipses and × means of the pair's marginal Gaussians) and
    its marginal mixture density on the diagonal; ``truth`` dashed black the same way. ``note`` goes under
    the figure (e.g. which columns are shown and why). ``imputed`` (N, D) bool: cells drawn at imputed values; a
    panel draws the rows with an imputed cell in its pair hollow, the diagonal histograms use observed values only."""
    x = np.asarray(x, np.float64)
    names = column_names_or_default(column_names, x.shape[1])
    fits = dict(fits or {})
    fig, axes = pairs_axes(names, shown)
    n = len(shown)
    groups = None
    if labels is not None:
        labels = np.asarray(labels)
        groups = [int(k) for k in np.unique(labels)]
    rows = np.arange(x.shape[0])
    dense = groups is None and x.shape[0] > MAX_PAIR_POINTS
    if dense:  # overplotted as points, and a heavy image: each panel a 2-D histogram of every row
        note = "; ".join(filter(None, [note, f"{x.shape[0]:,} rows: each panel a 2-D histogram (darker = more rows)"]))
    elif x.shape[0] > MAX_PAIR_POINTS:  # labelled: a seeded subset of the rows
        rows = np.sort(np.random.default_rng(0).choice(x.shape[0], MAX_PAIR_POINTS, replace=False))
        note = "; ".join(filter(None, [note, f"scatter panels: a random {MAX_PAIR_POINTS:,} of the {x.shape[0]:,} rows "
                                             "(histograms: every row)"]))
    drawn = ([("truth", truth, TRUTH_COLOR, "--", "+")] if truth is not None else []) + [
        (name, params, engine_color(name, e), "-", "x") for e, (name, params) in enumerate(fits.items())]
    lw = 1.5 if len(drawn) <= 2 else 1.1
    for i in range(n):
        for j in range(i + 1):
            ax, a, b = axes[i, j], shown[j], shown[i]
            if i == j:
                seen = slice(None) if imputed is None else ~np.asarray(imputed)[:, a]
                _diagonal(ax, x[seen, a], None if labels is None else labels[seen], groups, [(marginal(p, [a]), c, ls) for _, p, c, ls, _ in drawn])
                continue
            pts = x[:, [a, b]]
            sub = pts[rows]
            if dense:
                ax.hist2d(pts[:, 0], pts[:, 1], bins=50, cmap="Greys", norm=LogNorm(), cmin=1, zorder=0)
            else:
                hollow = None if imputed is None else np.asarray(imputed)[rows][:, [a, b]].any(axis=1)
                if groups is None:
                    scatter_rows(ax, sub, hollow, s=4, alpha=0.35, color="0.5", zorder=1)
                for k in groups or []:
                    sel = labels[rows] == k
                    scatter_rows(ax, sub[sel], None if hollow is None else hollow[sel], s=4, alpha=0.5,
                                 color=component_color(k), zorder=1)
            proj = Projection(pts)
            for _, params, color, ls, marker in drawn:
                draw_gaussians(ax, proj, marginal(params, [a, b]), color=color, linestyle=ls, lw=lw, marker=marker,
                               sigmas=sigmas, marker_size=30, zorder=3 if ls == "-" else 4)
            set_limits(ax, pts)
    handles = []
    if groups is not None:
        handles += [Line2D([], [], marker="o", ls="", color=component_color(k), label=f"{label_name} {k}") for k in groups]
    elif drawn:
        handles.append(Line2D([], [], marker="o", ls="", color="0.5", alpha=0.5, label="data"))
    handles += [Line2D([], [], color=c, ls=ls, lw=1.5, marker=m, markersize=7, label=engine_label(name))
                for name, _, c, ls, m in drawn]
    if imputed is not None and np.any(imputed) and not dense:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3", label=IMPUTED_LEGEND))
    if handles:  # in the empty upper triangle
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 0.93), fontsize="small",
                   title=legend_title or None, title_fontsize="small")
    if title:
        fig.suptitle(title, fontsize="medium")
    if note:
        fig.supxlabel(note, fontsize="small")
    return fig


def _diagonal(ax, values, labels, groups, densities) -> None:
    """One column's histogram (stacked by ``groups`` when labelled) and each fit's marginal mixture density."""
    edges = np.histogram_bin_edges(values, bins=min(40, max(10, int(np.sqrt(values.size)))))
    if groups is None:
        ax.hist(values, bins=edges, density=True, color="0.75", alpha=0.8)
    else:
        parts = [values[labels == k] for k in groups]
        width = edges[1] - edges[0]
        ax.hist(parts, bins=edges, stacked=True, color=[component_color(k) for k in groups], alpha=0.55,
                weights=[np.full(p.size, 1.0 / (values.size * width)) for p in parts])
    grid = np.linspace(edges[0], edges[-1], 300)
    for params, color, ls in densities:
        ax.plot(grid, density_1d(params, grid).sum(0), color=color, ls=ls, lw=1.2)
