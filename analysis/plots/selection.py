"""The model-choice figure of a report without ``--num-components`` (mclust's ``plot(fit, what = "BIC")``).

Two panels, BIC and ICL (sklearn's sign: lower is better; mclust plots the negative), against K, one line per
covariance type (``analysis.model_choice``'s table). Fits with a degenerate component are open markers (not
eligible), the chosen model is ringed. Numbers in, a Figure out.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_model_selection", "TYPE_STYLES"]

TYPE_STYLES = {"full": ("tab:blue", "o"), "diag": ("tab:orange", "s"), "spherical": ("tab:green", "^"),
               "tied": ("tab:purple", "D")}


def _zoom(ax, table, criterion: str) -> None:
    """Zoom the y axis on where the choice is made: from the lowest value to 4x its distance to the median value
    (a type far above, e.g. spherical covariances on columns of very different scales, would flatten the
    others); the types left above the axis are named in the panel."""
    values = np.array([r[criterion] for r in table if r.get(criterion) is not None and r.get("error") is None], float)
    values = values[np.isfinite(values)]
    if values.size < 3:
        return
    lo, med, top = values.min(), np.median(values), values.max()
    hi = lo + 4.0 * (med - lo)
    if not med > lo or hi >= top:
        return
    pad = 0.05 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)
    above = [f"{cov} (from {min(r[criterion] for r in rows):.0f})" for cov in TYPE_STYLES
             if (rows := [r for r in table if r["covariance_type"] == cov and r.get(criterion) is not None
                          and r.get("error") is None]) and min(r[criterion] for r in rows) > hi + pad]
    if above:
        ax.text(0.98, 0.97, "above the axis: " + ", ".join(above), transform=ax.transAxes, ha="right", va="top",
                fontsize="x-small", color="0.3")


def plot_model_selection(table, chosen: dict, icl_choice: dict | None = None) -> Figure:
    """``table``: rows {covariance_type, k, bic, icl, degenerate, error}; ``chosen`` / ``icl_choice``:
    {k, covariance_type} of the lowest BIC / ICL."""
    fig = Figure(figsize=(10.5, 4.0), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, criterion, best in ((axes[0], "bic", chosen), (axes[1], "icl", icl_choice)):
        for cov, (color, marker) in TYPE_STYLES.items():
            rows = sorted((r for r in table if r["covariance_type"] == cov and r.get(criterion) is not None
                           and r.get("error") is None), key=lambda r: r["k"])
            if not rows:
                continue
            ks = np.array([r["k"] for r in rows])
            values = np.array([r[criterion] for r in rows], float)
            ok = np.array([not r.get("degenerate") for r in rows])
            ax.plot(ks, values, color=color, lw=1.2, alpha=0.8, label=cov)
            ax.scatter(ks[ok], values[ok], color=color, marker=marker, s=28, zorder=3)
            ax.scatter(ks[~ok], values[~ok], facecolors="white", edgecolors=color, marker=marker, s=28, zorder=3)
            if best and best.get("covariance_type") == cov:
                v = values[ks == best["k"]]
                if v.size:
                    ax.scatter([best["k"]], v[:1], s=220, facecolors="none", edgecolors="black", lw=1.6, zorder=4)
        _zoom(ax, table, criterion)
        ax.set_xlabel("K (number of components)")
        ax.set_ylabel(f"{criterion.upper()} (lower is better)")
        ks_all = sorted({r["k"] for r in table})
        ax.set_xticks(ks_all)
        ax.grid(alpha=0.3)
        pick = f": K = {best['k']}, {best['covariance_type']}" if best else ""
        ax.set_title(f"{criterion.upper()}{pick}", fontsize="medium")
    axes[0].legend(title="covariances", fontsize="small")
    fig.suptitle("Choosing K: EM for every K and covariance type (open markers: a degenerate component, not eligible; "
                 "ringed: chosen)", fontsize="medium")
    return fig
