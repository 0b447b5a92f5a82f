"""What every figure shares: one palette (``ENGINE_COLORS``: an engine has its colour in every figure of the
report and the sweeps), engine labels, the data's 2-D plane (:class:`Projection`), Gaussian ellipses and the
figure grid. Nothing here draws a whole figure.

D == 2 is drawn as is; D > 2 either as a scatterplot matrix of the columns (``analysis.plots.pairs``; each
panel's Gaussians are the marginal ones of its pair, :func:`marginal`) or in the plane of the first two
principal components of the STANDARDISED columns (each centred and divided by its sd, so that a column in grams
does not take all the variance), the Gaussians projected exactly (P mu, P Sigma P^T) and the axes named by their
largest loadings; D == 1 as histograms with the component densities.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Ellipse

from models.params import GMMParams, covariances, to_numpy

__all__ = ["ENGINE_COLORS", "ENGINE_LABELS", "COMPONENT_COLORS", "TRUTH_COLOR", "engine_color", "engine_label",
           "component_color", "Projection", "projection_for", "column_names_or_default", "draw_gaussians", "set_limits",
           "density_1d", "hist_1d", "figure_grid", "label_grid_axes", "marginal", "informative_columns", "MAX_PAIR_COLUMNS",
           "scatter_rows", "IMPUTED_LEGEND"]

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
    """Linear map of the data to the 2-D plotting plane: the identity for D == 2; for D > 2 the first two
    principal components of the standardised columns (centred, divided by their sd), with axis labels naming
    the explained share of the standardised variance and the largest loadings (column names)."""

    def __init__(self, x: np.ndarray, column_names=None):
        x = np.asarray(x, dtype=np.float64)
        names = column_names_or_default(column_names, x.shape[1])
        self.num_features = x.shape[1]
        if self.num_features > 2:
            self.center = x.mean(0)
            sd = x.std(0)
            sd = np.where(sd > 0, sd, 1.0)
            _, s, vt = np.linalg.svd((x - self.center) / sd, full_matrices=False)
            vt = vt[:2].copy()
            for i in range(2):  # sign: the largest loading positive (a deterministic orientation)
                if vt[i, np.argmax(np.abs(vt[i]))] < 0:
                    vt[i] = -vt[i]
            self.loadings = vt  # (2, D), unit vectors on the standardised scale
            self.matrix = vt / sd  # (2, D), applied to x - center
            explained = s**2 / np.sum(s**2)
            self.xlabel, self.ylabel = (_pc_label(i, explained[i], vt[i], names) for i in range(2))
            self.note = (f"D = {self.num_features}: projected on the first two principal components of the standardised "
                         "columns (each centred and divided by its sd); each axis names its loadings of at least 0.3")
        else:
            self.center = np.zeros(self.num_features)
            self.matrix = np.eye(self.num_features)
            self.loadings = None
            self.xlabel, self.ylabel = names[0], names[-1]
            self.note = ""

    def points(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) @ self.matrix.T

    def gaussians(self, params: GMMParams) -> tuple[np.ndarray, np.ndarray]:
        """Projected means (K, 2) and covariances (K, 2, 2) -- exact for a linear map."""
        params = to_numpy(params)
        covs = np.asarray(covariances(params))
        return self.points(params.means), self.matrix @ covs @ self.matrix.T


def label_grid_axes(ax, proj: Projection, i: int, n_panels: int, n_cols: int, fontsize="small") -> None:
    """Axis labels of panel ``i`` of a ``figure_grid`` drawn in ``proj``'s plane: x on the lowest panel of each
    column, y on the first of each row (a principal component's label lists column names: once is enough)."""
    if proj.loadings is None or i + n_cols >= n_panels:
        ax.set_xlabel(proj.xlabel, fontsize=fontsize)
    if proj.loadings is None or i % n_cols == 0:
        ax.set_ylabel(proj.ylabel, fontsize=fontsize)


def _pc_label(i: int, explained: float, loading, names, top: int = 3, least: float = 0.3) -> str:
    """``PC1 (69% of std. variance)`` over ``+0.58 flipper_length_mm, +0.55 body_mass_g, +0.46 bill_length_mm, …``:
    the loadings of at least ``least`` in size, at most ``top`` (at least one), largest first."""
    order = [j for j in np.argsort(-np.abs(loading)) if abs(loading[j]) >= least][:top] or [int(np.argmax(np.abs(loading)))]
    terms = ", ".join(f"{'+' if loading[j] >= 0 else '−'}{abs(loading[j]):.2f} {names[j]}" for j in order)
    more = ", …" if len(loading) > len(order) else ""
    return f"PC{i + 1} ({100 * explained:.0f}% of std. variance)\n{terms}{more}"


MAX_PAIR_COLUMNS = 6  # a scatterplot matrix shows every pair of up to this many columns


def marginal(params: GMMParams, columns) -> GMMParams:
    """The mixture's marginal over ``columns`` (indices): the same weights, the means' entries and the
    covariances' sub-matrices (a Gaussian's marginal is exact), as a GMMParams."""
    params = to_numpy(params)
    idx = np.asarray(list(columns))
    covs = np.asarray(covariances(params))[:, idx[:, None], idx[None, :]]
    jitter = 1e-12 * np.maximum(np.trace(covs, axis1=-2, axis2=-1), 1e-300)[:, None, None] * np.eye(len(idx))
    return GMMParams(params.weights, params.means[:, idx], np.linalg.cholesky(covs + jitter))


def informative_columns(num_features: int, params: GMMParams | None = None,
                        max_columns: int = MAX_PAIR_COLUMNS) -> tuple[list, str]:
    """``(columns, why)``: the column indices a figure with at most ``max_columns`` columns shows, in the
    data's order, and a clause saying which (empty when all are shown). With ``params`` the columns whose
    component means differ most relative to the within-component spread (the weighted between-component
    variance of the means over the weighted mean within-component variance: an F-like ratio), else the first."""
    if num_features <= max_columns:
        return list(range(num_features)), ""
    if params is None:
        return list(range(max_columns)), f"the first {max_columns} of {num_features} columns"
    p = to_numpy(params)
    w = np.asarray(p.weights, np.float64)
    w = w / w.sum()
    mu = np.asarray(p.means, np.float64)
    within = np.einsum("k,kj->j", w, np.diagonal(np.asarray(covariances(p)), axis1=-2, axis2=-1))
    between = np.einsum("k,kj->j", w, (mu - w @ mu) ** 2)
    ratio = between / np.maximum(within, 1e-300)
    chosen = sorted(np.argsort(-ratio, kind="stable")[:max_columns].tolist())
    return chosen, (f"the {max_columns} of {num_features} columns whose component means differ most relative to "
                    "their spread within components")


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
                   component_colors=False, zorder=3, sigmas=(1.0, 2.0), marker_size=90):
    """1-sigma and 2-sigma (``sigmas``) ellipses and a mean marker of each component of ``params`` on ``ax``,
    in ``proj``'s plane; one ``color``, or each component its own with ``component_colors``."""
    means, covs = proj.gaussians(params)
    for k in range(means.shape[0]):
        c = component_color(k) if component_colors else color
        for nsig, alpha in ((n, 1.0 if n == 1.0 else 0.55) for n in sigmas):
            _draw_ellipse(ax, means[k], covs[k], nsig, edgecolor=c, linestyle=linestyle, lw=lw if nsig == 1 else lw * 0.7,
                          alpha=alpha, zorder=zorder)
        ax.scatter(*means[k], marker=marker, s=marker_size, color=c, linewidths=2.5 if marker_size >= 60 else 1.6,
                   zorder=zorder + 1)


def scatter_rows(ax, pts, imputed=None, **kwargs):
    """``ax.scatter`` of ``pts`` (N, 2); rows marked in ``imputed`` (N,) bool (a missing value drawn at its
    imputation) as hollow points of the same colour and a larger size."""
    if imputed is None or not np.any(imputed):
        return ax.scatter(pts[:, 0], pts[:, 1], **kwargs)
    imputed = np.asarray(imputed, bool)
    ax.scatter(pts[~imputed, 0], pts[~imputed, 1], **kwargs)
    hollow = {k: v for k, v in kwargs.items() if k not in ("color", "label")}
    hollow.update(s=kwargs.get("s", 8) * 2.5, alpha=min(1.0, kwargs.get("alpha", 0.5) + 0.35), linewidths=0.9,
                  facecolors="none", edgecolors=kwargs.get("color", "0.4"))
    return ax.scatter(pts[imputed, 0], pts[imputed, 1], **hollow)


IMPUTED_LEGEND = "hollow: a value imputed"


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


