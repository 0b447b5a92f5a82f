"""The ``components`` sweep: how do the engines change with other numbers of clusters?

K = 1..8 fitted to data with a known K = 3 (or to a user's data, no truth): BIC, AIC, ICL of the
point engines, PSIS-LOO and WAIC of NUTS / SVI, and the K each criterion selects
(``selection.json``, schema ``SELECTION_SCHEMA``). One job: this axis's truth, experiment and figures.

Imports: numpy, ``models``, ``analysis.selection``, ``analysis.plots`` (projection, ellipses) and
:mod:`analysis.sweeps.common`; matplotlib inside the figures.
"""

from __future__ import annotations

import numpy as np

import models
from analysis import selection as sel
from analysis.errors import ReportError
from analysis.model_choice import SELECTION_TYPES, choose_model
from analysis.sweeps.common import (engine_color, engine_label, fit_once, key, one_line, options_for, progress_of,
                                    resolve_methods, row)
from models.params import GMMParams

__all__ = ["SELECTION_SCHEMA", "CONVENTIONS", "components_truth", "sweep_components", "plot_components", "COLUMNS"]

DEFAULT_METHODS = ("em", "svi", "nuts")
QUICK_METHODS = ("em",)
COLUMNS = {
    "criteria": ["method", "k", "loglik", "num_parameters", "bic", "aic", "icl", "entropy", "loo", "loo_se",
                 "p_loo", "pareto_k_max", "waic", "waic_se", "p_waic", "seconds", "error"],
    "selected": ["criterion", "method", "selected_k", "rule"],
    # EM's BIC / ICL over K and the four covariance types (analysis.model_choice, mclust's default search)
    "model_selection": ["covariance_type", "k", "loglik", "num_parameters", "bic", "icl", "degenerate", "error",
                        "seconds"],
}
SELECTION_SCHEMA = {
    "selected_k": "{bic, aic, icl, loo, waic}: the selected K (int) or null when the criterion was not computed",
    "criterion_method": "{criterion: engine whose fits the criterion was computed from}",
    "true_k": "K of the simulated truth, or null for --data",
    "ks": "the K tried",
    "num_samples": "N",
    "num_features": "D",
    "data_file": "path given to --data, or null",
    "conventions": "{criterion: definition and direction}",
    "model_selection": "EM's lowest BIC over K and covariance types {k, covariance_type, icl_choice, "
                       "covariance_types}, or null when only full covariances were searched (--quick)",
}
CONVENTIONS = {
    "bic": "sklearn GaussianMixture.bic: -2 log L + p log N, lower is better (mclust's BIC is its negative)",
    "aic": "sklearn GaussianMixture.aic: -2 log L + 2 p, lower is better",
    "icl": "ICL-BIC (Biernacki, Celeux & Govaert 2000): bic + 2 * sum_n entropy(responsibilities), lower is better",
    "loo": "ArviZ PSIS-LOO elpd_loo (log scale), higher is better",
    "waic": "WAIC elpd_waic (log scale, az.waic's formula), higher is better",
}
INTRO = ("How do the algorithms change with different numbers of clusters? K = 1..8 fitted to data with a known K; "
         "BIC, AIC, ICL for the point engines and PSIS-LOO / WAIC for the posterior engines.")
CAPTIONS = {
    "components_criteria": "Criteria vs K; the star marks the K each criterion selects, the dotted line the true K.",
    "components_fits": "What a too-small and a too-large K look like (1- and 2-sigma ellipses).",
    "components_model_selection": "EM's BIC and ICL against K for each covariance type (full, diag, spherical, tied: "
                                  "scikit-learn's; mclust searches its covariance models the same way); open markers "
                                  "have a degenerate component and are not eligible; the chosen model is ringed.",
}
# a user's data (--data): no truth, no true K; the page and figures say so (``tables["intro"]`` / ``["captions"]``)
DATA_INTRO = ("How many clusters do these data support? K = {ks} fitted to the data ({n} rows, columns {columns}). "
              "These are a user's data: no generating mixture is known, so BIC, AIC and ICL of the point engines and "
              "PSIS-LOO / WAIC of the posterior engines each select a K of their own, and they need not agree.")
DATA_CAPTIONS = {
    "components_criteria": "Criteria vs K on the data; the star marks the K each criterion selects.",
    "components_fits": "The fits one K below the K that BIC selects, at it, and two above (1- and 2-sigma ellipses, × "
                       "means), in the data's units, axes named by the columns{pca}.",
}


def components_truth() -> GMMParams:
    """Three well-separated 2-D components (true K = 3)."""
    means = [[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]]
    covs = np.stack([np.eye(2), 0.7 * np.eye(2), np.diag([1.6, 0.5])])
    return models.from_covariances([0.3, 0.4, 0.3], means, covs)


# --------------------------------------------------------------------------- the experiment


def sweep_components(seed=0, quick=False, repeats=None, methods=None, num_samples=None, engine_options=None,
                     progress=None, notes=None, data=None, ks=None, column_names=None, covariance_types=None) -> dict:
    """Fit K = 1..8 (quick: 1..5) to data with a known true K (``components_truth``, K = 3) or to
    ``data`` (N, D; ``column_names`` its columns): BIC/AIC/ICL of the point engines, LOO/WAIC of NUTS/SVI,
    the selected K of each. On ``data`` the intro and captions claim no true K (``"intro"``, ``"captions"``).
    When EM runs, its BIC / ICL are also searched over ``covariance_types`` (default: the four types; quick:
    full only, which the per-K table already is) by :func:`analysis.model_choice.choose_model`
    (``"model_selection"`` table, ``selection["model_selection"]``).

    The returned dict also holds ``"selection"`` (the selection.json object) and, under the private
    key ``"_fits"``, the FitResults and data used by the figures (not written to files).
    """
    progress = progress_of(progress)
    notes = [] if notes is None else notes
    methods = resolve_methods(methods, QUICK_METHODS if quick else DEFAULT_METHODS)
    ks = list(ks) if ks is not None else list(range(1, 6 if quick else 9))
    if not ks or min(ks) < 1:
        raise ValueError("ks must be a non-empty list of integers >= 1")
    if data is None:
        truth = components_truth()
        n = int(num_samples or (300 if quick else 500))
        x, z = models.sample(key(seed, 30), truth, n)
        x, z = np.asarray(x), np.asarray(z)
        true_k = int(truth.weights.shape[0])
    else:
        truth, z, true_k = None, None, None
        x = np.asarray(data, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"data must be a 2-D array (N, D), got shape {x.shape}")
        ks = [k for k in ks if k <= x.shape[0]]
        if not ks:
            raise ValueError("every K exceeds the number of rows of the data")
    cols = COLUMNS["criteria"]
    rows, fits = [], {}
    for mi, method in enumerate(methods):
        opts = options_for(method, quick, engine_options)
        if method in ("em", "hard_em"):
            opts.setdefault("n_init", 5)
            opts["n_init"] = max(opts["n_init"], 5)
        for k in ks:
            progress(f"components: {method} K={k}")
            result, err, secs = fit_once(method, key(seed, 31, mi, k), x, k, opts)
            vals = dict(method=method, k=k, seconds=secs, error=err)
            if result is not None:
                try:
                    vals.update(sel.criteria_row(result, x))
                except (ValueError, FloatingPointError) as exc:
                    vals["error"] = one_line(exc)
                fits[(method, k)] = result
            rows.append(row(cols, vals))
    chosen, criterion_method, selected_rows = _select(rows, methods)
    model_rows, model_json = _search_covariance_types(x, seed, ks, methods, quick, covariance_types, engine_options,
                                                      progress, notes)
    selection_json = {
        "selected_k": chosen,
        "criterion_method": criterion_method,
        "true_k": true_k,
        "ks": ks,
        "num_samples": int(x.shape[0]),
        "num_features": int(x.shape[1]),
        "data_file": None,
        "conventions": dict(CONVENTIONS),
        "model_selection": model_json,
    }
    if not any(m in methods for m in ("nuts", "svi")):
        notes.append("LOO and WAIC need posterior draws: run with --methods including nuts or svi.")
    names = None
    if column_names is not None and len(column_names) == x.shape[1]:
        names = [str(c) for c in column_names]
    out = {"criteria": rows, "selected": selected_rows, "selection": selection_json, "model_selection": model_rows,
           "_fits": {"fits": fits, "x": x, "z": z, "truth": truth, "columns": names}}
    if data is not None:
        shown = names or [f"x{j}" for j in range(x.shape[1])]
        out["intro"] = DATA_INTRO.format(ks=_ks_text(ks), n=x.shape[0], columns=", ".join(shown))
        pca = "; D > 2: the plane of the first two principal components of the standardised columns" if x.shape[1] > 2 else ""
        out["captions"] = {name: text.format(pca=pca) for name, text in DATA_CAPTIONS.items()}
    return out


def _search_covariance_types(x, seed, ks, methods, quick, covariance_types, engine_options, progress, notes):
    """EM's BIC over K <= max(ks) and covariance types: ``(table rows, selection.json entry or None)``."""
    if "em" not in methods:
        return [], None
    types = tuple(covariance_types) if covariance_types else (("full",) if quick else SELECTION_TYPES)
    unknown = [t for t in types if t not in SELECTION_TYPES]
    if unknown:
        raise ValueError(f"covariance_types must be among {', '.join(SELECTION_TYPES)}, got {', '.join(unknown)}")
    if types == ("full",):
        notes.append("EM's BIC was searched over full covariances only (--quick); without --quick the sweep searches "
                     "full, diag, spherical and tied covariances for every K, as mclust does.")
        return [], None
    em_options = {k: v for k, v in ((engine_options or {}).get("em") or {}).items() if k not in ("covariance_type", "progress")}
    try:
        choice = choose_model(x, seed, progress, max(ks), types, **em_options)
    except ReportError as exc:
        notes.append(f"searching covariance types: {exc}")
        return [], None
    table = [{name: r.get(name) for name in COLUMNS["model_selection"]} for r in choice.table]
    entry = {"k": choice.k, "covariance_type": choice.covariance_type, "icl_choice": choice.icl_choice,
             "covariance_types": list(types)}
    notes.append(f"EM's lowest BIC over K = 1..{max(ks)} and {', '.join(types)} covariances: K = {choice.k}, "
                 f"{choice.covariance_type} (table model_selection; fits with a degenerate component not eligible).")
    return table, entry


def _ks_text(ks) -> str:
    ks = sorted(ks)
    return f"{ks[0]}..{ks[-1]}" if ks == list(range(ks[0], ks[-1] + 1)) and len(ks) > 2 else ", ".join(map(str, ks))


def _select(rows, methods):
    """``(selected K per criterion, engine per criterion, "selected" table rows)``.

    The point criteria come from the first point engine that ran (EM, hard EM, MAP; else the
    posterior mean of NUTS / SVI), LOO / WAIC from the first posterior engine.
    """
    point = next((m for m in ("em", "hard_em", "map") if m in methods), None)
    post = next((m for m in ("nuts", "svi") if m in methods), None)
    if point is None:
        point = post  # BIC/AIC/ICL at the posterior mean when no point engine ran
    chosen, criterion_method, selected_rows = {}, {}, []
    for c in sel.CRITERIA:
        m = post if c in sel.POSTERIOR_CRITERIA else point
        chosen[c] = sel.select(rows, c, method=m) if m else None
        criterion_method[c] = m if chosen[c] is not None else None
        for meth in methods:
            k_sel = sel.select(rows, c, method=meth)
            if k_sel is not None:
                selected_rows.append(row(COLUMNS["selected"], dict(
                    criterion=c, method=meth, selected_k=k_sel, rule="min" if sel.LOWER_IS_BETTER[c] else "max")))
    return chosen, criterion_method, selected_rows


# --------------------------------------------------------------------------- figures

_STYLES = {"bic": ("tab:blue", "o"), "aic": ("tab:orange", "s"), "icl": ("tab:green", "^"),
           "loo": ("tab:red", "v"), "waic": ("tab:purple", "D")}


def plot_components(tables: dict) -> dict:
    """``{name: Figure}``: the criteria vs K (stars at the selected K) and, when the fits are at
    hand, the data with a too-small, the selected (or true) and a too-large K."""
    figs = {"components_criteria": _plot_criteria(tables)}
    search = tables["selection"].get("model_selection")
    if search and tables.get("model_selection"):
        from analysis.plots.selection import plot_model_selection

        figs["components_model_selection"] = plot_model_selection(
            tables["model_selection"], {"k": search["k"], "covariance_type": search["covariance_type"]},
            search["icl_choice"])
    priv = tables.get("_fits")
    if priv and priv["fits"]:
        figs["components_fits"] = _plot_fits(tables, priv["fits"], priv["x"], priv["truth"])
    return figs


def _plot_criteria(tables):
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in tables["criteria"] if r["error"] is None]
    chosen = tables["selection"]["selected_k"]
    true_k = tables["selection"].get("true_k")
    has_post = any(r["loo"] is not None for r in rows)
    fig, axes = plt.subplots(1, 2 if has_post else 1, figsize=(13 if has_post else 7, 4.5), squeeze=False)
    ax = axes[0, 0]
    pm = tables["selection"]["criterion_method"].get("bic")
    for c in sel.POINT_CRITERIA:
        rr = sorted((r for r in rows if r["method"] == pm and r[c] is not None), key=lambda r: r["k"])
        if not rr:
            continue
        ax.plot([r["k"] for r in rr], [r[c] for r in rr], marker=_STYLES[c][1], color=_STYLES[c][0], label=c.upper())
        if chosen.get(c) is not None:
            v = next(r[c] for r in rr if r["k"] == chosen[c])
            ax.plot([chosen[c]], [v], marker="*", ms=18, color=_STYLES[c][0], mec="k")
    if true_k:
        ax.axvline(true_k, color="k", ls=":", label="true K")
    ax.set_xlabel("K (number of components)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title(f"{engine_label(pm) if pm else ''}: BIC / AIC / ICL (lower is better; star = selected)")
    ax.grid(alpha=0.3)
    ax.legend()
    if has_post:
        _plot_posterior_criteria(axes[0, 1], rows, true_k)
    fig.tight_layout()
    return fig


def _plot_posterior_criteria(ax, rows, true_k) -> None:
    from matplotlib.ticker import MaxNLocator

    for m in ("nuts", "svi"):
        for c in sel.POSTERIOR_CRITERIA:
            rr = sorted((r for r in rows if r["method"] == m and r[c] is not None), key=lambda r: r["k"])
            if not rr:
                continue
            ax.plot([r["k"] for r in rr], [r[c] for r in rr], marker=_STYLES[c][1], color=_STYLES[c][0],
                    ls="-" if m == "nuts" else "--", label=f"{engine_label(m)} {c.upper()} elpd")
            k_sel = sel.select(rr, c)
            ax.plot([k_sel], [next(r[c] for r in rr if r["k"] == k_sel)], marker="*", ms=18, color=_STYLES[c][0], mec="k")
    if true_k:
        ax.axvline(true_k, color="k", ls=":")
    ax.set_xlabel("K (number of components)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("elpd (higher is better)")
    ax.set_title("PSIS-LOO / WAIC elpd (higher is better; star = selected)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _plot_fits(tables, fits, x, truth):
    import matplotlib.pyplot as plt

    from analysis.plots import Projection, draw_gaussians

    chosen = tables["selection"]["selected_k"]
    pm = tables["selection"]["criterion_method"].get("bic")
    fm = pm if any(m == pm for m, _ in fits) else next(iter(fits))[0]
    ks_avail = sorted(k for m, k in fits if m == fm)
    centre = tables["selection"].get("true_k") or chosen.get("bic") or ks_avail[len(ks_avail) // 2]
    picks = []
    for k, what in ((centre - 1, "too small"), (centre, "selected by BIC" if not truth else "true K"), (centre + 2, "too large")):
        if k in ks_avail:
            picks.append((k, what))
    names = (tables.get("_fits") or {}).get("columns")
    proj = Projection(x, names) if x.shape[1] >= 2 else None
    fig, axes = plt.subplots(1, len(picks), figsize=(5.2 * len(picks), 4.8), squeeze=False, sharex=True, sharey=True)
    for i, (ax, (k, what)) in enumerate(zip(axes[0], picks)):
        if proj is None:  # D == 1: histogram
            ax.hist(x[:, 0], bins=40, color="0.7")
            ax.set_xlabel(names[0] if names else "x0")
        else:
            pts = proj.points(x)
            ax.scatter(pts[:, 0], pts[:, 1], s=6, color="0.6", alpha=0.6)
            if truth is not None:
                draw_gaussians(ax, proj, truth, color="k", linestyle="--", lw=1.6)
            draw_gaussians(ax, proj, fits[(fm, k)].params, color=engine_color(fm), lw=1.6)
            lo, hi = pts.min(0), pts.max(0)
            pad = 0.08 * (hi - lo + 1e-12)
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])  # the data's own ranges: no equal aspect across units
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
            ax.set_xlabel(proj.xlabel, fontsize="small" if proj.loadings is not None else "medium")
            if i == 0:
                ax.set_ylabel(proj.ylabel, fontsize="small" if proj.loadings is not None else "medium")
        ax.set_title(f"K = {k} ({what}), {engine_label(fm)}" + (", truth dashed" if truth is not None else ""))
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
