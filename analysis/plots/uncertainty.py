"""The classification uncertainty figure (mclust's ``plot(fit, what = "uncertainty")``): one panel per engine.

Each row is drawn in the data's plane (``style.Projection``: the columns for D <= 2, the first two principal
components of the standardised columns for D > 2), sized and coloured by its uncertainty ``1 - max_k
P(z = k | x)`` at the engine's aligned point estimate (``analysis.assignments``): sure rows are small and
grey, uncertain ones large, orange to dark red; the engine's components as 1σ and 2σ ellipses in their (aligned) colours. D = 1:
uncertainty against the column's value, over the component densities.

Numbers in, a Figure out (never ArviZ, never plt.show).
"""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure

from .style import (Projection, column_names_or_default, component_color, density_1d, draw_gaussians, engine_label,
                    figure_grid, set_limits)

__all__ = ["plot_uncertainty"]

# sure rows grey (visible, quiet), uncertain ones orange to dark red
CMAP = LinearSegmentedColormap.from_list("uncertainty", ["#b0b0b0", "#f2a541", "#d6452a", "#5c0a1e"])


def _sizes(unc: np.ndarray, k: int) -> np.ndarray:
    """Marker areas: 6 (sure) to 80 (the most uncertain a K-component fit can be, 1 - 1/K)."""
    top = max(1.0 - 1.0 / max(k, 2), 1e-12)
    return 6.0 + 74.0 * np.clip(unc / top, 0.0, 1.0) ** 0.5


def plot_uncertainty(x, results: dict, uncertainty: dict, column_names=None, reference_label: str | None = None,
                     threshold: float | None = None) -> Figure:
    """One panel per engine of ``results`` ({method: aligned FitResult}): the rows of ``x`` (N, D) sized and
    coloured by ``uncertainty[method]`` (N,); ``threshold`` (e.g. 0.2) is named in each panel's title with the
    count of rows above it."""
    x = np.asarray(x, np.float64)
    names = [m for m in results if m in uncertainty]
    columns = column_names_or_default(column_names, x.shape[1])
    fig, axes = figure_grid(max(1, len(names)))
    proj = Projection(x, columns) if x.shape[1] > 1 else None
    n_cols = min(max(1, len(names)), 3)  # figure_grid's
    top = max((1.0 - 1.0 / max(results[m].num_components, 2) for m in names), default=0.5)
    scatter = None
    for i, (ax, name) in enumerate(zip(axes, names)):
        r, unc = results[name], np.asarray(uncertainty[name], np.float64)
        order = np.argsort(unc)  # the uncertain rows on top
        if proj is None:
            grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
            dens = density_1d(r.params, grid)
            twin = ax.twinx()
            for k in range(r.num_components):
                twin.plot(grid, dens[k], color=component_color(k), lw=1.5, alpha=0.8)
            twin.set_yticks([])
            scatter = ax.scatter(x[order, 0], unc[order], s=_sizes(unc[order], r.num_components), c=unc[order],
                                 cmap=CMAP, vmin=0.0, vmax=top, edgecolors="none", zorder=3)
            ax.set_xlabel(columns[0])
            ax.set_ylabel("uncertainty")
        else:
            pts = proj.points(x)
            scatter = ax.scatter(pts[order, 0], pts[order, 1], s=_sizes(unc[order], r.num_components), c=unc[order],
                                 cmap=CMAP, vmin=0.0, vmax=top, edgecolors="none", zorder=2)
            draw_gaussians(ax, proj, r.params, component_colors=True, lw=1.4, zorder=3)
            set_limits(ax, pts)
            if i + n_cols >= len(names):  # x label on the lowest panel of each column, y on the first of each row
                ax.set_xlabel(proj.xlabel, fontsize="small")
            if i % n_cols == 0:
                ax.set_ylabel(proj.ylabel, fontsize="small")
        above = "" if threshold is None else f", {int(np.sum(unc > threshold))} rows > {threshold:g}"
        ax.set_title(f"{engine_label(name)}: mean {unc.mean():.3f}{above}", fontsize="medium")
        ax.grid(alpha=0.3)
    if scatter is not None:
        fig.colorbar(scatter, ax=list(axes), label="uncertainty 1 − max responsibility", shrink=0.8)
    against = f" (labels aligned to the {reference_label})" if reference_label else ""
    fig.suptitle("Classification uncertainty of each row" + against)
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    return fig
