"""Figures of the comparison. Every function returns a matplotlib Figure; nothing calls plt.show.

The figures replace the seed notebook's per-iteration ``plt.show()`` calls:

- :func:`plot_data` -- the sampled data, coloured by the true component when known;
- :func:`plot_components` -- data with the true and every engine's components as 1-sigma / 2-sigma
  ellipses and mean markers on one axis (the seed's "Estimated GMM Parameters" plot);
- :func:`plot_assignments` -- one panel per engine, points coloured by their assigned (aligned)
  cluster, with that engine's ellipses and the truth dashed;
- :func:`plot_traces` -- log-likelihood / ELBO per iteration for EM and hard EM on one axis set, the
  EM KL gap, the MAP/SVI loss;
- :func:`plot_em_snapshots` -- a strip of EM's estimate at a few iterations.

D == 2 is drawn as is; D > 2 is drawn in the plane of the data's first two principal components
(the Gaussians projected exactly: P mu, P Sigma P^T), which the figure states; D == 1 is drawn as
histograms with the component densities. Results must be aligned (``analysis.align``) so that
component colours mean the same component in every panel.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse

from models.params import GMMParams, covariances, to_numpy

__all__ = [
    "ENGINE_COLORS",
    "ENGINE_LABELS",
    "COMPONENT_COLORS",
    "engine_color",
    "engine_label",
    "draw_gaussians",
    "Projection",
    "projection_for",
    "plot_data",
    "plot_components",
    "plot_assignments",
    "plot_traces",
    "plot_em_snapshots",
]

ENGINE_COLORS = {"em": "tab:green", "hard_em": "tab:orange", "map": "tab:blue", "svi": "tab:purple", "nuts": "tab:red"}
TRUTH_COLOR = "black"
COMPONENT_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
                    "tab:olive", "tab:cyan", "tab:gray"]
ENGINE_LABELS = {"em": "EM", "hard_em": "hard EM", "map": "MAP", "svi": "SVI", "nuts": "NUTS"}


def engine_color(name: str, i: int = 0) -> str:
    """The colour of engine ``name`` in every figure (the ``i``-th unknown name gets a spare one)."""
    return ENGINE_COLORS.get(name, COMPONENT_COLORS[(i + 5) % len(COMPONENT_COLORS)])


def _component_color(k: int) -> str:
    return COMPONENT_COLORS[k % len(COMPONENT_COLORS)]


def engine_label(name: str) -> str:
    """How engine ``name`` is written in figures ("hard EM", "NUTS", ...)."""
    return ENGINE_LABELS.get(name, name)


class Projection:
    """Linear map of the data to the 2-D plotting plane (identity for D == 2, PCA for D > 2)."""

    def __init__(self, x: np.ndarray):
        x = np.asarray(x, dtype=np.float64)
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
            self.xlabel, self.ylabel = "x[0]", "x[1]"
            self.note = ""

    def points(self, x) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.center) @ self.matrix.T

    def gaussians(self, params: GMMParams) -> tuple[np.ndarray, np.ndarray]:
        """Projected means (K, 2) and covariances (K, 2, 2) -- exact for a linear map."""
        params = to_numpy(params)
        covs = np.asarray(covariances(params))
        return self.points(params.means), self.matrix @ covs @ self.matrix.T


def projection_for(x) -> Projection:
    return Projection(x)


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
        c = _component_color(k) if component_colors else color
        for nsig, alpha in ((1.0, 1.0), (2.0, 0.55)):
            _draw_ellipse(ax, means[k], covs[k], nsig, edgecolor=c, linestyle=linestyle, lw=lw if nsig == 1 else lw * 0.7,
                          alpha=alpha, zorder=zorder)
        ax.scatter(*means[k], marker=marker, s=90, color=c, linewidths=2.5, zorder=zorder + 1)


def _set_limits(ax, pts):
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.05 * (hi - lo + 1e-12)
    ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
    ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def _density_1d(params: GMMParams, grid) -> np.ndarray:
    """(K, G) weighted component densities on a 1-D grid."""
    params = to_numpy(params)
    sd = params.scale_tril[:, 0, 0]
    mu = params.means[:, 0]
    z = (grid[None, :] - mu[:, None]) / sd[:, None]
    return params.weights[:, None] * np.exp(-0.5 * z**2) / (sd[:, None] * math.sqrt(2 * math.pi))


def _hist_1d(ax, x, color="0.75", label="data"):
    ax.hist(np.asarray(x)[:, 0], bins="auto", density=True, color=color, alpha=0.6, label=label)


def _figure(n_panels: int, panel_size=(4.6, 4.2), max_cols: int = 3) -> tuple[Figure, np.ndarray]:
    cols = min(n_panels, max_cols)
    rows = math.ceil(n_panels / cols)
    fig = Figure(figsize=(panel_size[0] * cols + 1.8, panel_size[1] * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.remove()
    return fig, axes[:n_panels]


def plot_data(x, z=None, title: str = "Sampled data") -> Figure:
    """The data (the seed's "Generated Data from GMM"), coloured by the true component when ``z`` is given."""
    x = np.asarray(x)
    fig, (ax,) = _figure(1, (6.0, 5.0))
    if x.shape[1] == 1:
        if z is None:
            _hist_1d(ax, x)
        else:
            z = np.asarray(z)
            for k in np.unique(z):
                _hist_1d(ax, x[z == k], color=_component_color(int(k)), label=f"true component {k}")
        ax.set_xlabel("x[0]")
        ax.set_ylabel("density")
    else:
        proj = Projection(x)
        pts = proj.points(x)
        if z is None:
            ax.scatter(pts[:, 0], pts[:, 1], s=8, alpha=0.5, color="0.4", label="data")
        else:
            z = np.asarray(z)
            for k in np.unique(z):
                ax.scatter(pts[z == k, 0], pts[z == k, 1], s=8, alpha=0.5, color=_component_color(int(k)),
                           label=f"true component {k}")
        ax.set_xlabel(proj.xlabel)
        ax.set_ylabel(proj.ylabel)
        if proj.note:
            fig.supxlabel(proj.note, fontsize="small")
        ax.grid(alpha=0.3)
    ax.set_title(f"{title} (N = {x.shape[0]}, D = {x.shape[1]})")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", fontsize="small")
    return fig


def plot_components(x, results: dict, truth: GMMParams | None = None, title: str | None = None) -> Figure:
    """Data with the true (black, dashed) and every engine's components as 1-sigma / 2-sigma ellipses
    and mean markers, on one axis set (D == 1: histogram with the mixture densities)."""
    x = np.asarray(x)
    fig, (ax,) = _figure(1, (7.0, 5.8))
    handles = []
    if x.shape[1] == 1:
        _hist_1d(ax, x)
        grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
        if truth is not None:
            ax.plot(grid, _density_1d(truth, grid).sum(0), color=TRUTH_COLOR, ls="--", lw=2)
            handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", lw=2, label="truth"))
        for i, (name, r) in enumerate(results.items()):
            c = engine_color(name, i)
            ax.plot(grid, _density_1d(r.params, grid).sum(0), color=c, lw=1.8)
            handles.append(Line2D([], [], color=c, lw=1.8, label=engine_label(name)))
        ax.set_xlabel("x[0]")
        ax.set_ylabel("density")
        subtitle = "mixture densities"
    else:
        proj = Projection(x)
        pts = proj.points(x)
        ax.scatter(pts[:, 0], pts[:, 1], s=7, alpha=0.35, color="0.55", zorder=1)
        handles.append(Line2D([], [], marker="o", ls="", color="0.55", alpha=0.5, label="data"))
        if truth is not None:
            draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=2.2, marker="+", zorder=4)
            handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", lw=2, marker="+", markersize=10, label="truth"))
        for i, (name, r) in enumerate(results.items()):
            c = engine_color(name, i)
            draw_gaussians(ax, proj, r.params, color=c, lw=1.6, zorder=3)
            handles.append(Line2D([], [], color=c, lw=1.6, marker="x", markersize=8, label=engine_label(name)))
        _set_limits(ax, pts)
        ax.set_xlabel(proj.xlabel)
        ax.set_ylabel(proj.ylabel)
        ax.grid(alpha=0.3)
        if proj.note:
            fig.supxlabel(proj.note, fontsize="small")
        subtitle = "1σ (solid) and 2σ (faint) ellipses, × = means"
    ax.set_title(title or f"Estimated components of every engine vs the truth\n{subtitle}")
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_assignments(x, results: dict, truth: GMMParams | None = None) -> Figure:
    """One panel per engine: points coloured by their assigned (aligned) cluster, the engine's
    components as ellipses in the same colours, the truth dashed black."""
    x = np.asarray(x)
    names = list(results)
    fig, axes = _figure(max(1, len(names)))
    proj = Projection(x) if x.shape[1] > 1 else None
    k_max = max((r.num_components for r in results.values()), default=1)
    for ax, name in zip(axes, names):
        r = results[name]
        labels = np.asarray(r.info.get("assignments")) if r.info.get("assignments") is not None else np.asarray(r.assignments)
        if proj is None:
            grid = np.linspace(x.min() - 0.1 * np.ptp(x), x.max() + 0.1 * np.ptp(x), 400)
            dens = _density_1d(r.params, grid)
            edges = np.histogram_bin_edges(x[:, 0], bins=30)
            width = edges[1] - edges[0]
            groups = [x[labels == k, 0] for k in range(r.num_components)]
            ax.hist(groups, bins=edges, stacked=True, alpha=0.5,
                    color=[_component_color(k) for k in range(r.num_components)],
                    weights=[np.full(g.shape[0], 1.0 / (x.shape[0] * width)) for g in groups])
            for k in range(r.num_components):
                ax.plot(grid, dens[k], color=_component_color(k), lw=2)
            if truth is not None:
                ax.plot(grid, _density_1d(truth, grid).T, color=TRUTH_COLOR, ls="--", lw=1.5)
            ax.set_xlabel("x[0]")
            ax.set_ylabel("density")
        else:
            pts = proj.points(x)
            for k in range(r.num_components):
                sel = labels == k
                ax.scatter(pts[sel, 0], pts[sel, 1], s=7, alpha=0.45, color=_component_color(k), zorder=1)
            if truth is not None:
                draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=1.4, marker="+", zorder=4)
            draw_gaussians(ax, proj, r.params, component_colors=True, lw=2.0, zorder=3)
            _set_limits(ax, pts)
            ax.set_xlabel(proj.xlabel)
            ax.set_ylabel(proj.ylabel)
            ax.grid(alpha=0.3)
        sizes = np.bincount(labels, minlength=r.num_components)
        ax.set_title(f"{engine_label(name)}: assigned clusters\nsizes {', '.join(map(str, sizes))}", fontsize="medium")
    handles = [Line2D([], [], marker="o", ls="", color=_component_color(k), label=f"component {k}") for k in range(k_max)]
    if truth is not None:
        handles.append(Line2D([], [], color=TRUTH_COLOR, ls="--", marker="+", label="truth"))
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    fig.suptitle("Cluster assignments per engine (labels aligned to the reference)")
    return fig


def plot_traces(results: dict) -> Figure | None:
    """Per-iteration traces: log-likelihood (and EM's ELBO, hard EM's classification log-likelihood)
    for EM and hard EM on one axis set, the
    EM KL gap log-lik - ELBO (log scale), and the MAP/SVI loss. None when no engine has a trace."""
    panels = []
    iterative = {n: r for n, r in results.items()
                 if n in ("em", "hard_em") and len(np.ravel(r.trace.get("log_likelihood", []))) > 1}
    if iterative:
        panels.append("ll")
    if any("kl" in r.trace for r in results.values()):
        panels.append("kl")
    lossy = {n: r for n, r in results.items() if "loss" in r.trace and len(np.ravel(r.trace["loss"])) > 1}
    if lossy:
        panels.append("loss")
    if not panels:
        return None
    fig, axes = _figure(len(panels), (5.2, 4.0))
    for ax, panel in zip(axes, panels):
        if panel == "ll":
            for i, (name, r) in enumerate(iterative.items()):
                c = engine_color(name, i)
                ll = np.ravel(r.trace["log_likelihood"])
                ax.plot(np.arange(1, len(ll) + 1), ll, color=c, lw=2, label=f"{engine_label(name)} log-likelihood")
                if "elbo" in r.trace:
                    ax.plot(np.arange(1, len(ll) + 1), np.ravel(r.trace["elbo"]), color=c, ls="--", lw=1.5,
                            label=f"{engine_label(name)} ELBO")
                if "classification_log_likelihood" in r.trace:
                    cl = np.ravel(r.trace["classification_log_likelihood"])
                    ax.plot(np.arange(1, len(cl) + 1), cl, color=c, ls=":", lw=1.5,
                            label=f"{engine_label(name)} classification log-lik")
            ax.set_title("Log-likelihood and ELBO per iteration")
            ax.set_xlabel("iteration")
            ax.set_ylabel("nats")
            # zoom on the tail: the first iterations are far below
            vals = np.concatenate([np.ravel(r.trace["log_likelihood"]) for r in iterative.values()])
            hi, lo = vals.max(), np.quantile(vals, 0.1)
            if hi > lo:
                ax.set_ylim(lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo))
        elif panel == "kl":
            for i, (name, r) in enumerate(results.items()):
                if "kl" in r.trace:
                    kl = np.ravel(r.trace["kl"])
                    ax.plot(np.arange(1, len(kl) + 1), np.maximum(kl, 1e-12), color=engine_color(name, i), lw=2,
                            label=f"{engine_label(name)} KL(q || p(z|x))")
            ax.set_yscale("log")
            ax.set_title("EM: KL gap = log-likelihood − ELBO")
            ax.set_xlabel("iteration")
            ax.set_ylabel("KL (nats)")
        else:
            for i, (name, r) in enumerate(lossy.items()):
                loss = np.ravel(r.trace["loss"])
                ax.plot(np.arange(1, len(loss) + 1), loss, color=engine_color(name, i), lw=1.2, label=f"{engine_label(name)} loss")
            vals = np.concatenate([np.ravel(r.trace["loss"]) for r in lossy.values()])
            lo, hi = vals.min(), np.quantile(vals, 0.9)
            if hi > lo:
                ax.set_ylim(lo - 0.05 * (hi - lo), hi)
            ax.set_title("MAP / SVI loss per step (negative ELBO)")
            ax.set_xlabel("step")
            ax.set_ylabel("loss (nats)")
        ax.grid(alpha=0.3)
        if ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(fontsize="small", loc="best")
    return fig


def plot_em_snapshots(x, snapshots: GMMParams, snapshot_iters, truth: GMMParams | None = None,
                      reference: GMMParams | None = None, method: str = "em") -> Figure:
    """A strip of EM's estimate at a few iterations (the seed's per-iteration plots, in one figure).

    ``snapshots`` has a leading iteration dim. With ``reference`` each snapshot is aligned to it so
    that colours stay fixed along the strip.
    """
    from analysis.align import align_params

    x = np.asarray(x)
    snapshots = to_numpy(snapshots)
    iters = np.ravel(np.asarray(snapshot_iters))
    n = snapshots.weights.shape[0]
    fig, axes = _figure(n, (3.6, 3.4), max_cols=math.ceil(n / math.ceil(n / 5)))
    proj = Projection(x) if x.shape[1] > 1 else None
    for i, ax in enumerate(axes):
        p = GMMParams(*(a[i] for a in snapshots))
        if reference is not None:
            p, _ = align_params(reference, p)
        if proj is None:
            _hist_1d(ax, x)
            grid = np.linspace(x.min(), x.max(), 300)
            for k, dens in enumerate(_density_1d(p, grid)):
                ax.plot(grid, dens, color=_component_color(k), lw=2)
            ax.set_xlabel("x[0]")
        else:
            pts = proj.points(x)
            ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.3, color="0.55", zorder=1)
            if truth is not None:
                draw_gaussians(ax, proj, truth, color=TRUTH_COLOR, linestyle="--", lw=1.0, marker="+", zorder=2)
            draw_gaussians(ax, proj, p, component_colors=True, lw=1.8)
            _set_limits(ax, pts)
            ax.set_xlabel(proj.xlabel, fontsize="small")
            if i == 0:
                ax.set_ylabel(proj.ylabel, fontsize="small")
        label = int(iters[i]) if i < len(iters) else i
        ax.set_title(f"iteration {label}", fontsize="medium")
    fig.suptitle(f"{engine_label(method)} estimate along the iterations (truth dashed black)")
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    return fig
