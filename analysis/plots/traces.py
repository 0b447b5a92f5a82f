"""Figures of the fits' progress: the per-iteration traces of every optimiser and the trace plot of draws.

- :func:`plot_traces` -- log-likelihood / ELBO per iteration for EM and hard EM on one axis set, the
  EM KL gap, the MAP/SVI loss;
- :func:`plot_trace_panels` -- the trace plot of aligned posterior draws from their numbers
  (``analysis.arviz_io.posterior_kinds``): one row per parameter kind and shown column.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .style import column_names_or_default, component_color, engine_color, engine_label, figure_grid

__all__ = ["plot_traces", "plot_trace_panels", "CHAIN_STYLES"]

CHAIN_STYLES = ("-", "--", ":", "-.")


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
    fig, axes = figure_grid(len(panels), (5.2, 4.0))
    for ax, panel in zip(axes, panels):
        if panel == "ll":
            series = []
            for i, (name, r) in enumerate(iterative.items()):
                c = engine_color(name, i)
                series.append((np.ravel(r.trace["log_likelihood"]), dict(color=c, lw=2), f"{engine_label(name)} log-likelihood"))
                if "elbo" in r.trace:
                    series.append((np.ravel(r.trace["elbo"]), dict(color=c, ls="--", lw=1.5), f"{engine_label(name)} ELBO"))
                if "classification_log_likelihood" in r.trace:
                    series.append((np.ravel(r.trace["classification_log_likelihood"]), dict(color=c, ls=":", lw=1.5),
                                   f"{engine_label(name)} classification log-lik"))
            # zoom on the tail (the first iterations are far below), keeping the second half of every line in view
            vals = np.concatenate([np.ravel(r.trace["log_likelihood"]) for r in iterative.values()])
            tails = np.concatenate([y[len(y) // 2:] for y, _, _ in series])
            hi = max(np.max(y) for y, _, _ in series)
            lo = min(np.quantile(vals, 0.1), tails.min())
            limits = (lo - 0.1 * (hi - lo), hi + 0.05 * (hi - lo)) if hi > lo else None
            for y, style, label in series:
                ax.plot(np.arange(1, len(y) + 1), y, label=label + _clipped(y, limits, "iteration"), **style)
            if limits is not None:
                ax.set_ylim(*limits)
            ax.set_title("Log-likelihood and ELBO per iteration")
            ax.set_xlabel("iteration")
            ax.set_ylabel("nats")
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
            vals = np.concatenate([np.ravel(r.trace["loss"]) for r in lossy.values()])
            lo, hi = vals.min(), np.quantile(vals, 0.9)
            limits = (lo - 0.05 * (hi - lo), hi) if hi > lo else None
            for i, (name, r) in enumerate(lossy.items()):
                loss = np.ravel(r.trace["loss"])
                ax.plot(np.arange(1, len(loss) + 1), loss, color=engine_color(name, i), lw=1.2,
                        label=f"{engine_label(name)} loss" + _clipped(loss, limits, "step"))
            if limits is not None:
                ax.set_ylim(*limits)
            ax.set_title("MAP / SVI loss per step (negative ELBO)")
            ax.set_xlabel("step")
            ax.set_ylabel("loss (nats)")
        ax.grid(alpha=0.3)
        if ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)  # below: never over a line
    return fig


def _clipped(y, limits, unit: str) -> str:
    """A legend suffix naming the points of ``y`` outside ``limits`` (none: ""), e.g.
    " (iterations 1–2 below the axis, from −5,420)"."""
    if limits is None:
        return ""
    parts = []
    for mask, where, extreme in ((y < limits[0], "below", np.min), (y > limits[1], "above", np.max)):
        idx = np.flatnonzero(mask) + 1
        if idx.size == 0:
            continue
        if idx.size == len(y):
            span = f"every {unit}"
        elif idx.size == 1:
            span = f"{unit} {idx[0]}"
        elif idx[-1] - idx[0] + 1 == idx.size:
            span = f"{unit}s {idx[0]}–{idx[-1]}"
        else:
            span = f"{idx.size} {unit}s"
        parts.append(f"{span} {where} the axis, to {extreme(y):,.0f}".replace("-", "−"))
    return f" ({'; '.join(parts)})" if parts else ""


def plot_trace_panels(kinds: dict, method: str = "", column_names=None, max_dims: int = 3, columns=None) -> Figure:
    """Trace plot of aligned draws ``kinds`` = ``{kind: (chain, draw, ...)}`` (weights, means, sds,
    correlations; ``analysis.arviz_io.posterior_kinds``): one row per kind and shown column (``columns``,
    indices; default the first ``max_dims``) and the correlation of the first two, the marginal density left
    and the draws right; colour = component, line style = chain; one legend."""
    num_chains, num_draws, num_components, num_features = np.shape(kinds["means"])
    names = column_names_or_default(column_names, num_features)
    shown = list(columns)[:max_dims] if columns is not None else list(range(min(num_features, max_dims)))
    rows = [("weights", None, "weights")]
    for j in shown:
        rows += [("means", j, f"mean of {names[j]}"), ("sds", j, f"sd of {names[j]}")]
    if len(shown) > 1:
        rows.append(("correlations", (shown[0], shown[1]), f"correlation {names[shown[0]]}~{names[shown[1]]}"))
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
            color = component_color(k)
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
    handles = [Line2D([], [], color=component_color(k), lw=1.5, label=f"component {k}") for k in range(num_components)]
    handles += [Line2D([], [], color="0.3", ls=CHAIN_STYLES[c % len(CHAIN_STYLES)], lw=1.2, label=f"chain {c}")
                for c in range(num_chains)]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize="small", frameon=False)
    extra = f"; columns {', '.join(names[j] for j in shown)} of {num_features} shown" if len(shown) < num_features else ""
    fig.suptitle(f"{engine_label(method)}: trace of the aligned draws (every parameter kind{extra})", fontsize="medium")
    return fig
