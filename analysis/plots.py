"""Figures of the comparison. Every function returns a matplotlib Figure; nothing calls plt.show.

The figures replace the seed notebook's per-iteration ``plt.show()`` calls:

- :func:`plot_data` -- the sampled data, coloured by the true component when known;
- :func:`plot_components` -- data with the true and every engine's components as 1-sigma / 2-sigma
  ellipses and mean markers on one axis (the seed's "Estimated GMM Parameters" plot);
- :func:`plot_assignments` -- one panel per engine, points coloured by their assigned (aligned)
  cluster, with that engine's ellipses and the truth dashed;
- :func:`plot_traces` -- log-likelihood / ELBO per iteration for EM and hard EM on one axis set, the
  EM KL gap, the MAP/SVI loss;
- :func:`plot_em_snapshots` -- a strip of EM's estimate at a few iterations;
- :func:`plot_forest_panels` / :func:`plot_trace_panels` -- the layout of the forest and trace plots whose
  numbers come from ArviZ (``analysis.arviz_io.plot_forest`` / ``plot_trace``): one panel per parameter
  kind and data column, each on its own scale, at a capped size.

One palette: ``ENGINE_COLORS`` gives every engine its colour in every figure of the report and the
sweeps. Axes are labelled with the data's column names (``column_names``); titles say what the labels
were aligned to (``reference_label``: "truth", or the reference engine's estimate on user data).

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
    "plot_forest_panels",
    "plot_trace_panels",
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

    def __init__(self, x: np.ndarray, column_names=None):
        x = np.asarray(x, dtype=np.float64)
        names = _names(column_names, x.shape[1])
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


def _names(column_names, d: int) -> list:
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


def plot_data(x, z=None, title: str | None = None, column_names=None) -> Figure:
    """The data (the seed's "Generated Data from GMM"), coloured by the true component when ``z`` is given."""
    x = np.asarray(x)
    names = _names(column_names, x.shape[1])
    title = title or ("Sampled data" if z is not None else "The data")
    fig, (ax,) = _figure(1, (6.0, 5.0))
    if x.shape[1] == 1:
        if z is None:
            _hist_1d(ax, x)
        else:
            z = np.asarray(z)
            for k in np.unique(z):
                _hist_1d(ax, x[z == k], color=_component_color(int(k)), label=f"true component {k}")
        ax.set_xlabel(names[0])
        ax.set_ylabel("density")
    else:
        proj = Projection(x, names)
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


def plot_components(x, results: dict, truth: GMMParams | None = None, title: str | None = None,
                    column_names=None, reference_label: str | None = None) -> Figure:
    """Data with the true (black, dashed) and every engine's components as 1-sigma / 2-sigma ellipses
    and mean markers, on one axis set (D == 1: histogram with the mixture densities). Without a truth
    the title names ``reference_label``, what the labels were aligned to."""
    x = np.asarray(x)
    names = _names(column_names, x.shape[1])
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
        ax.set_xlabel(names[0])
        ax.set_ylabel("density")
        subtitle = "mixture densities"
    else:
        proj = Projection(x, names)
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
    against = "vs the truth" if truth is not None else f"(labels aligned to the {reference_label or 'first engine'})"
    ax.set_title(title or f"Estimated components of every engine {against}\n{subtitle}")
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    return fig


def plot_assignments(x, results: dict, truth: GMMParams | None = None, column_names=None,
                     reference_label: str | None = None) -> Figure:
    """One panel per engine: points coloured by their assigned (aligned) cluster, the engine's
    components as ellipses in the same colours, the truth (when known) dashed black."""
    x = np.asarray(x)
    names = list(results)
    columns = _names(column_names, x.shape[1])
    fig, axes = _figure(max(1, len(names)))
    proj = Projection(x, columns) if x.shape[1] > 1 else None
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
            ax.set_xlabel(columns[0])
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
    fig.suptitle("Cluster assignments per engine (labels aligned to the "
                 + ("truth" if truth is not None else (reference_label or "first engine")) + ")")
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
                      reference: GMMParams | None = None, method: str = "em", column_names=None) -> Figure:
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
    columns = _names(column_names, x.shape[1])
    proj = Projection(x, columns) if x.shape[1] > 1 else None
    for i, ax in enumerate(axes):
        p = GMMParams(*(a[i] for a in snapshots))
        if reference is not None:
            p, _ = align_params(reference, p)
        if proj is None:
            _hist_1d(ax, x)
            grid = np.linspace(x.min(), x.max(), 300)
            for k, dens in enumerate(_density_1d(p, grid)):
                ax.plot(grid, dens, color=_component_color(k), lw=2)
            ax.set_xlabel(columns[0])
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
    fig.suptitle(f"{engine_label(method)} estimate along the iterations"
                 + (" (truth dashed black)" if truth is not None else ""))
    if proj is not None and proj.note:
        fig.supxlabel(proj.note, fontsize="small")
    return fig


# --------------------------------------------------------------------------- forest and trace layout

FOREST_MAX_HEIGHT_IN = 22.0  # inches at 100 dpi: a forest plot is never taller than 2200 px
MAX_CORRELATION_GROUPS = 12  # (component, column pair) groups in the correlation panel
CHAIN_STYLES = ("-", "--", ":", "-.")


def _forest_panels(num_features: int, names: list, max_dims: int) -> tuple[list, list]:
    """``[(kind, index, title, x label)]`` of the forest / trace panels, and the columns shown."""
    shown = list(range(min(num_features, max_dims)))
    panels = [("weights", None, "weights", "weight (share of the data)")]
    if num_features > 1:
        panels.append(("correlations", None, "correlations", "correlation (unitless, −1 … 1)"))
    for j in shown:
        panels.append(("means", j, f"mean of {names[j]}", f"{names[j]} (data units)"))
        panels.append(("sds", j, f"sd of {names[j]}", f"{names[j]} (data units)"))
    return panels, shown


def _correlation_pairs(num_features: int, num_components: int) -> list:
    """Column pairs (a, b), a < b, shown in the correlation panel: as many as fit MAX_CORRELATION_GROUPS."""
    pairs = [(a, b) for b in range(num_features) for a in range(b)]
    return pairs[: max(1, MAX_CORRELATION_GROUPS // max(1, num_components))]


def _panel_groups(kind, index, num_components: int, pairs, names) -> list:
    """``[(label, value index)]`` of the row groups of one panel (one group per component / pair)."""
    if kind == "weights":
        return [(f"component {k}", (k,)) for k in range(num_components)]
    if kind == "correlations":
        return [(f"c{k}: {names[a]}~{names[b]}", (k, a, b)) for k in range(num_components) for a, b in pairs]
    return [(f"component {k}", (k, index)) for k in range(num_components)]


def plot_forest_panels(intervals: dict, reference: dict | None = None, *, reference_label: str = "truth",
                       column_names=None, hdi_prob: float = 0.9, max_dims: int = 4) -> Figure:
    """Forest plot from ``intervals`` = ``{engine: {kind: {"mean", "lower", "upper"}}}`` (kinds weights
    (K,), means (K, D), sds (K, D), correlations (K, D, D); ``analysis.arviz_io.forest_intervals``).

    One panel per kind and shown column, each with its own x scale: a mean of 80 and a weight of 0.3
    never share an axis. Every engine has its own row within each component's group (its colour from
    ``ENGINE_COLORS``), so no marker hides another; the ``reference`` values (same kinds, no draw dims)
    are thin black ticks drawn behind the estimates. At most ``max_dims`` columns and
    ``MAX_CORRELATION_GROUPS`` correlation groups are drawn; the figure is at most
    ``FOREST_MAX_HEIGHT_IN`` inches tall.
    """
    engines = list(intervals)
    first = intervals[engines[0]]
    num_components, num_features = np.shape(first["means"]["mean"])
    names = _names(column_names, num_features)
    panels, shown = _forest_panels(num_features, names, max_dims)
    pairs = _correlation_pairs(len(shown) if len(shown) > 1 else num_features, num_components)
    n_eng = len(engines)
    rows_of = [len(_panel_groups(kind, idx, num_components, pairs, names)) * (n_eng + 0.6) for kind, idx, _, _ in panels]
    grid_rows = [rows_of[:2]] + [rows_of[i : i + 2] for i in range(2, len(panels), 2)]
    if num_features == 1:
        grid_rows = [rows_of[:1]] + [rows_of[i : i + 2] for i in range(1, len(panels), 2)]
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
        groups = _panel_groups(kind, idx, num_components, pairs, names)
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
        ax.set_title(title, fontsize="medium")
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
    note = ""
    if len(shown) < num_features:
        note = (f"columns {', '.join(names[j] for j in shown)} of {num_features} shown; every entry is in the "
                "az.summary tables and metrics.json")
    fig.suptitle(f"Every engine aligned to the {reference_label}: {round(hdi_prob * 100)}% HDI (lines), posterior mean "
                 f"or point estimate (dots), {reference_label} (black ticks)" + (f"\n{note}" if note else ""),
                 fontsize="medium")
    return fig


def plot_trace_panels(kinds: dict, method: str = "", column_names=None, max_dims: int = 3) -> Figure:
    """Trace plot of aligned draws ``kinds`` = ``{kind: (chain, draw, ...)}`` (weights, means, sds,
    correlations; ``analysis.arviz_io._derived``): one row per kind and shown column, the marginal
    density left and the draws right; colour = component, line style = chain; one legend."""
    num_chains, num_draws, num_components, num_features = np.shape(kinds["means"])
    names = _names(column_names, num_features)
    shown = list(range(min(num_features, max_dims)))
    rows = [("weights", None, "weights")]
    for j in shown:
        rows += [("means", j, f"mean of {names[j]}"), ("sds", j, f"sd of {names[j]}")]
    if num_features > 1:
        rows.append(("correlations", (0, 1), f"correlation {names[0]}~{names[1]}"))
    fig = Figure(figsize=(9.0, 1.55 * len(rows) + 1.0), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False, gridspec_kw={"width_ratios": [1, 2.2]})
    draws = np.arange(num_draws)
    for (kind, idx, title), (ax_d, ax_t) in zip(rows, axes):
        for k in range(num_components):
            v = kinds[kind][:, :, k]
            if kind in ("means", "sds"):
                v = v[..., idx]
            elif kind == "correlations":
                v = v[..., idx[0], idx[1]]
            color = _component_color(k)
            for c in range(num_chains):
                style = CHAIN_STYLES[c % len(CHAIN_STYLES)]
                ax_t.plot(draws, v[c], color=color, ls=style, lw=0.6, alpha=0.75)
                if np.ptp(v[c]) > 0:
                    ax_d.hist(v[c], bins=int(np.clip(num_draws // 15, 5, 40)), density=True, histtype="step", color=color, ls=style, lw=1.0)
        ax_d.set_title(title, loc="left", fontsize="small")
        ax_t.set_title(title, loc="left", fontsize="small")
        ax_d.set_yticks([])
        ax_d.tick_params(axis="x", labelsize="small")
        ax_t.tick_params(labelsize="small")
        ax_t.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("value (density per chain)", fontsize="small")
    axes[-1, 1].set_xlabel("draw")
    handles = [Line2D([], [], color=_component_color(k), lw=1.5, label=f"component {k}") for k in range(num_components)]
    handles += [Line2D([], [], color="0.3", ls=CHAIN_STYLES[c % len(CHAIN_STYLES)], lw=1.2, label=f"chain {c}")
                for c in range(num_chains)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small", frameon=False)
    extra = f"; columns {', '.join(names[j] for j in shown)} of {num_features} shown" if len(shown) < num_features else ""
    fig.suptitle(f"{engine_label(method)}: trace of the aligned draws (every parameter kind{extra})", fontsize="medium")
    return fig
