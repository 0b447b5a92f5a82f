"""What every figure shares: one palette (``ENGINE_COLORS``: an engine has its colour in every figure of the
report and the sweeps), engine labels, the data's 2-D plane (:class:`Projection`), Gaussian ellipses and the
figure grid. Nothing here draws a whole figure.

D == 2 is drawn as is; D > 2 in the plane of the data's first two principal components (the Gaussians
projected exactly: P mu, P Sigma P^T), which the figures state; D == 1 as histograms with the component
densities.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from models.params import GMMParams, covariances, to_numpy

__all__ = ["ENGINE_COLORS", "ENGINE_LABELS", "COMPONENT_COLORS", "TRUTH_COLOR", "engine_color", "engine_label",
           "component_color", "Projection", "projection_for", "column_names_or_default", "draw_gaussians", "set_limits",
           "density_1d", "hist_1d", "figure_grid"]

ENGINE_COLORS = {"em": "tab:green", "hard_em": "tab:orange", "map": "tab:blue", "svi": "tab:purple", "nuts": "tab:red"}
TRUTH_COLOR = "black"
COMPONENT_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan", "tab:gray"]
ENGINE_LABELS = {"em": "EM", "hard_em": "hard EM", "map": "MAP", "svi": "SVI", "nuts": "NUTS"}


def engine_color(name: str, i: int = 0) -> str:
    """The colour of engine ``name`` in every figure (the ``i``-th unknown name gets a spare one)."""
    return ENGINE_COLORS.get(name, COMPONENT_COLORS[(i + 5) % len(COMPONENT_COLORS)])


def component_color(k: int) -> str:
    return COMPONENT_COLORS[k % len(COMPONENT_COLORS)]


def engine_label(name: str) -> str:
    """How engine ``name`` is written in figures ("hard EM", "NUTS", ...)."""
    return ENGINE_LABELS.get(name, name)


class Projection:
    """Linear map of the data to the 2-D plotting plane (identity for D == 2, PCA for D > 2)."""

    def __init__(self, x: np.ndarray, column_names=None):
        x = np.asarray(x, dtype=np.float64)
        names = column_names_or_default(column_names, x.shape[1])
        self.num_features = x.shape[1]
        if self.num_features > 2:
            self.center = x.mean(0)
            _, s, vt = np.linalg.svd(x - self.center, full_matrices=False)
            self.matrix = vt[:2]  # (2, D)
            explained = s**2 / np.sum(s**2)
            self.xlabel = f"PC1 ({100 * explained[0]:.0f}% of variance)"
            self.ylabel = f"PC2 ({100 * explained[1]:.0f}% of variance)"
            self.note = f"D = {self.num_features}: data and Gaussians projected on the first two principal components"
        else:
            self.center = np.zeros(self.num_features)
            self.matrix = np.eye(self.num_features)
            self.xlabel, self.ylabel = names[0], names[-1]
            self.note = ""

    def points(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) @ self.matrix.T

    def gaussians(self, params: GMMParams) -> tuple[np.ndarray, np.ndarray]:
        """Projected means (K, 2) and covariances (K, 2, 2) -- exact for a linear map."""
        params = to_numpy(params)
        covs = np.asarray(covariances(params))
        return self.points(params.means), self.matrix @ covs @ self.matrix.T


def projection_for(x, column_names=None) -> Projection:
    return Projection(x, column_names)


def column_names_or_default(column_names, d: int) -> list:
    """The data's column names, or x0, x1, ... when none were given."""
    names = [str(c) for c in column_names] if column_names is not None else []
    return names if len(names) == d else [f"x{j}" for j in range(d)]


def _draw_ellipse(ax, mean, cov, nsig, **kwargs):
    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0.0, None)
    angle = math.degrees(math.atan2(vecs[1, -1], vecs[0, -1]))
    width, height = 2 * nsig * np.sqrt(vals[::-1])
    ax.add_patch(Ellipse(xy=mean, width=width, height=height, angle=angle, fill=False, **kwargs))


def draw_gaussians(ax, proj: Projection, params: GMMParams, color=None, linestyle="-", lw=2.0, marker="x",
                   component_colors=False, zorder=3):
    """1-sigma and 2-sigma ellipses and a mean marker of each component of ``params`` on ``ax``, in
    ``proj``'s plane; one ``color``, or each component its own with ``component_colors``."""
    means, covs = proj.gaussians(params)
    for k in range(means.shape[0]):
        c = component_color(k) if component_colors else color
        for nsig, alpha in ((1.0, 1.0), (2.0, 0.55)):
            _draw_ellipse(ax, means[k], covs[k], nsig, edgecolor=c, linestyle=linestyle, lw=lw if nsig == 1 else lw * 0.7,
                          alpha=alpha, zorder=zorder)
        ax.scatter(*means[k], marker=marker, s=90, color=c, linewidths=2.5, zorder=zorder + 1)


def set_limits(ax, pts):
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.05 * (hi - lo + 1e-12)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def density_1d(params: GMMParams, grid) -> np.ndarray:
    """(K, G) weighted component densities on a 1-D grid."""
    params = to_numpy(params)
    sd = params.scale_tril[:, 0, 0]
    mu = params.means[:, 0]
    z = (grid[None, :] - mu[:, None]) / sd[:, None]
    return params.weights[:, None] * np.exp(-0.5 * z**2) / (sd[:, None] * math.sqrt(2 * math.pi))


def hist_1d(ax, x, color="0.75", label="data"):
    ax.hist(np.asarray(x)[:, 0], bins="auto", density=True, color=color, alpha=0.6, label=label)


def figure_grid(n_panels: int, panel_size=(4.6, 4.2), max_cols: int = 3) -> tuple[Figure, np.ndarray]:
    cols = min(n_panels, max_cols)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols + 1.8, panel_size[1] * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


