"""Figures of the data and of the fitted mixtures (the seed notebook's plots, for every engine at once):

- :func:`plot_data` -- the sampled data, coloured by the true component when known (D > 2: a
  scatterplot matrix of the columns, ``analysis.plots.pairs``);
- :func:`plot_components` -- data with the true and every engine's components as 1-sigma / 2-sigma
  ellipses and mean markers on one axis (the seed's "Estimated GMM Parameters" plot; D > 2: a scatterplot
  matrix with each pair's marginal Gaussians);
- :func:`plot_assignments` -- one panel per engine, points coloured by their assigned (aligned)
  cluster, with that engine's ellipses and the truth dashed;
- :func:`plot_em_snapshots` -- a strip of EM's estimate at a few iterations.

Results must be aligned (``analysis.align``) so that component colours mean the same component in every
panel; titles say what the labels were aligned to (``reference_label``). The per-engine and per-iteration
strips (assignments, EM snapshots) draw D > 2 in the plane of the standardised columns' first two principal
components (``style.Projection``), axes named by their largest loadings.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.align import align_params
from models.params import GMMParams, to_numpy

from .pairs import plot_pairs
from .style import (TRUTH_COLOR, Projection, column_names_or_default, component_color, density_1d, draw_gaussians,
                    engine_color, engine_label, figure_grid, hist_1d, informative_columns, label_grid_axes,
                    scatter_rows, set_limits, IMPUTED_LEGEND)

__all__ = ["plot_data", "plot_components", "plot_assignments", "plot_em_snapshots"]


def _shown(num_features: int, shown, params=None) -> tuple[list, str]:
    """The columns a scatterplot matrix shows and the note saying so (``shown`` = ``(indices, why)`` or None)."""
    cols, why = shown if shown is not None else informative_columns(num_features, params)
    return list(cols), (f"columns shown: {why}" if why else "")


def plot_data(x, z=None, title: str | None = None, column_names=None, shown=None, imputed=None) -> Figure:
    """The data (the seed's "Generated Data from GMM"), coloured by the true component when ``z`` is given.
    D > 2: a scatterplot matrix of the columns ``shown`` = ``(indices, why)`` (default: all up to six).
    ``imputed`` (N, D) bool: cells drawn at imputed values (``x`` holds the completed rows); their rows are hollow."""
    x = np.asarray(x)
    names = column_names_or_default(column_names, x.shape[1])
    title = title or ("Sampled data" if z is not None else "The data")
    if x.shape[1] > 2:
        cols, note = _shown(x.shape[1], shown)
        return plot_pairs(x, cols, names, labels=z, label_name="true component", note=note, imputed=imputed,
                          title=f"{title} (N = {x.shape[0]}, D = {x.shape[1]})\nevery pair of columns; histograms on the diagonal")
    fig, (ax,) = figure_grid(1, (6.0, 5.0))
    imputed = None if imputed is None else np.asarray(imputed).any(axis=1)
    if x.shape[1] == 1:
        if z is None:
            hist_1d(ax, x)
        else:
            z = np.asarray(z)
            for k in np.unique(z):
                hist_1d(ax, x[z == k], color=component_color(int(k)), label=f"true component {k}")
        ax.set_xlabel(names[0])
        ax.set_ylabel("density")
    else:
        proj = Projection(x, names)
        pts = proj.points(x)
        if z is None:
            scatter_rows(ax, pts, imputed, s=8, alpha=0.5, color="0.4", label="data")
        else:
            z = np.asarray(z)
            for k in np.unique(z):
                scatter_rows(ax, pts[z == k], None if imputed is None else imputed[z == k], s=8, alpha=0.5,
                             color=component_color(int(k)), label=f"true component {k}")
        if imputed is not None and np.any(imputed):
            ax.scatter([], [], s=20, facecolors="none", edgecolors="0.3", label=IMPUTED_LEGEND)
        ax.set_xlabel(proj.xlabel)
        ax.set_ylabel(proj.ylabel)
        if proj.note:
            fig.supxlabel(proj.note, fontsize="small")
        ax.grid(alpha=0.3)
    ax.set_title(f"{title} (N = {x.shape[0]}, D = {x.shape[1]})")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return fig


def plot_components(x, results: dict, truth: GMMParams | None = None, title: str | None = None,
                    column_names=None, reference_label: str | None = None, shown=None, imputed=None) -> Figure:
    """Data with the true (black, dashed) and every engine's components as 1-sigma / 2-sigma ellipses
    and mean markers, on one axis set (D == 1: histogram with the mixture densities; D > 2: a scatterplot
    matrix of the columns ``shown`` = ``(indices, why)``, each panel with the pair's marginal Gaussians, 1-sigma
    ellipses only, and each engine's marginal mixture density on the diagonal). Without a truth the title
    names ``reference_label``, what the labels were aligned to. ``imputed`` (N, D) bool: cells drawn at imputed
    values (``x`` holds the completed rows), their rows hollow."""
    x = np.asarray(x)
    names = column_names_or_default(column_names, x.shape[1])
    against = "vs the truth" if truth is not None else f"(labels aligned to the {reference_label or 'first engine'})"
    if x.shape[1] > 2:
        first = truth if truth is not None else next((r.params for r in results.values()), None)
        cols, note = _shown(x.shape[1], shown, first)
        return plot_pairs(x, cols, names, fits={m: r.params for m, r in results.items()}, truth=truth, note=note,
                          imputed=imputed,
                          sigmas=(1.0,), title=title or f"Estimated components of every engine {against}\neach pair's "
                          "marginal Gaussians (1σ ellipses, × means); diagonal: each engine's marginal mixture density")
    fig, (ax,) = figure_grid(1, (7.0, 5.8))
    handles = []
    if x.shape[1] == 1:
        hist_1d(ax, x)
        grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
        if truth is not None:
            ax.plot(grid, density_1d(truth, grid).sum(0), color=TRUTH_COLOR, ls="--", lw=2)
            handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", lw=2, label="truth"))
        for i, (name, r) in enumerate(results.items()):
            c = engine_color(name, i)
            ax.plot(grid, density_1d(r.params, grid).sum(0), color=c, lw=1.8)
            handles.append(Line2D([], [], color=c, lw=1.8, label=engine_label(name)))
        ax.set_xlabel(names[0])
        ax.set_ylabel("density")
        subtitle = "mixture densities"
    else:
        proj = Projection(x, names)
        pts = proj.points(x)
        rows = None if imputed is None else np.asarray(imputed).any(axis=1)
        scatter_rows(ax, pts, rows, s=7, alpha=0.35, color="0.55", zorder=1)
        handles.append(Line2D([], [], marker="o", ls="", color="0.55", alpha=0.5, label="data"))
        if rows is not None and rows.any():
            handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3", label=IMPUTED_LEGEND))
        if truth is not None:
            draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=2.2, marker="+", zorder=4)
            handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", lw=2, marker="+", markersize=10, label="truth"))
        for i, (name, r) in enumerate(results.items()):
            c = engine_color(name, i)
            draw_gaussians(ax, proj, r.params, color=c, lw=1.6, zorder=3)
            handles.append(Line2D([], [], color=c, lw=1.6, marker="x", markersize=8, label=engine_label(name)))
        set_limits(ax, pts)
        ax.set_xlabel(proj.xlabel)
        ax.set_ylabel(proj.ylabel)
        ax.grid(alpha=0.3)
        if proj.note:
            fig.supxlabel(proj.note, fontsize="small")
        subtitle = "1σ (solid) and 2σ (faint) ellipses, × = means"
    ax.set_title(title or f"Estimated components of every engine {against}\n{subtitle}")
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_assignments(x, results: dict, truth: GMMParams | None = None, column_names=None,
                     reference_label: str | None = None, imputed=None) -> Figure:
    """One panel per engine: points coloured by their assigned (aligned) cluster, the engine's
    components as ellipses in the same colours, the truth (when known) dashed black. ``imputed`` (N, D) bool:
    cells drawn at imputed values (``x`` holds the completed rows); their rows are hollow."""
    x = np.asarray(x)
    imputed = None if imputed is None else np.asarray(imputed).any(axis=1)
    names = list(results)
    columns = column_names_or_default(column_names, x.shape[1])
    fig, axes = figure_grid(max(1, len(names)))
    proj = Projection(x, columns) if x.shape[1] > 1 else None
    k_max = max((r.num_components for r in results.values()), default=1)
    n_cols = min(max(1, len(names)), 3)  # figure_grid's
    for i, (ax, name) in enumerate(zip(axes, names)):
        r = results[name]
        labels = np.asarray(r.info.get("assignments")) if r.info.get("assignments") is not None else np.asarray(r.assignments)
        if proj is None:
            grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
            dens = density_1d(r.params, grid)
            edges = np.histogram_bin_edges(x[:, 0], bins=30)
            width = edges[1] - edges[0]
            groups = [x[labels == k, 0] for k in range(r.num_components)]
            ax.hist(groups, bins=edges, stacked=True, alpha=0.5,
                    color=[component_color(k) for k in range(r.num_components)],
                    weights=[np.full(g.shape[0], 1.0 / (x.shape[0] * width)) for g in groups])
            for k in range(r.num_components):
                ax.plot(grid, dens[k], color=component_color(k), lw=2)
            if truth is not None:
                ax.plot(grid, density_1d(truth, grid).T, color=TRUTH_COLOR, ls="--", lw=1.5)
            ax.set_xlabel(columns[0])
            ax.set_ylabel("density")
        else:
            pts = proj.points(x)
            for k in range(r.num_components):
                sel = labels == k
                scatter_rows(ax, pts[sel], None if imputed is None else np.asarray(imputed)[sel], s=7, alpha=0.45,
                             color=component_color(k), zorder=1)
            if truth is not None:
                draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=1.4, marker="+", zorder=4)
            draw_gaussians(ax, proj, r.params, component_colors=True, lw=2.0, zorder=3)
            set_limits(ax, pts)
            label_grid_axes(ax, proj, i, len(names), n_cols, fontsize="medium" if proj.loadings is None else "small")
            ax.grid(alpha=0.3)
        sizes = np.bincount(labels, minlength=r.num_components)
        ax.set_title(f"{engine_label(name)}: assigned clusters\nsizes {', '.join(map(str, sizes))}", fontsize="medium")
    handles = [Line2D([], [], marker="o", ls="", color=component_color(k), label=f"component {k}") for k in range(k_max)]
    if imputed is not None and np.any(imputed) and proj is not None:
        handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none", color="0.3", label=IMPUTED_LEGEND))
    if truth is not None:
        handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", marker="+", label="truth"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    fig.suptitle("Cluster assignments per engine (labels aligned to the "
                 + ("truth" if truth is not None else (reference_label or "first engine")) + ")")
    return fig


def plot_em_snapshots(x, snapshots: GMMParams, snapshot_iters, truth: GMMParams | None = None,
                      reference: GMMParams | None = None, method: str = "em", column_names=None) -> Figure:
    """A strip of EM's estimate at a few iterations (the seed's per-iteration plots, in one figure).

    ``snapshots`` has a leading iteration dim. With ``reference`` each snapshot is aligned to it so
    that colours stay fixed along the strip.
    """
    x = np.asarray(x)
    snapshots = to_numpy(snapshots)
    iters = np.ravel(np.asarray(snapshot_iters))
    n = snapshots.weights.shape[0]
    n_cols = math.ceil(n / math.ceil(n / 5))
    fig, axes = figure_grid(n, (3.6, 3.4), max_cols=n_cols)
    columns = column_names_or_default(column_names, x.shape[1])
    proj = Projection(x, columns) if x.shape[1] > 1 else None
    for i, ax in enumerate(axes):
        p = GMMParams(*(a[i] for a in snapshots))
        if reference is not None:
            p, _ = align_params(reference, p)
        if proj is None:
            hist_1d(ax, x)
            grid = np.linspace(x.min(), x.max(), 300)
            for k, dens in enumerate(density_1d(p, grid)):
                ax.plot(grid, dens, color=component_color(k), lw=2)
            ax.set_xlabel(columns[0])
        else:
            pts = proj.points(x)
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.3, color="0.55", zorder=1)
            if truth is not None:
                draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=1.0, marker="+", zorder=2)
            draw_gaussians(ax, proj, p, component_colors=True, lw=1.8)
            set_limits(ax, pts)
            label_grid_axes(ax, proj, i, n, min(n, n_cols), fontsize="small" if proj.loadings is None else "x-small")
        label = int(iters[i]) if i < len(iters) else i
        ax.set_title(f"iteration {label}", fontsize="medium")
    fig.suptitle(f"{engine_label(method)} estimate along the iterations"
                 + (" (truth dashed black)" if truth is not None else ""))
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    return fig


