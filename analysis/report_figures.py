"""The report's figures: one job, which figures a run gets, with what caption, from which numbers.

:func:`draw_figures` turns a :class:`analysis.problem.Problem` and its :class:`analysis.report.Run` into
the figures in page order, drawing each once (a progress line per figure) and rendering it once as PNG in a worker
process (:mod:`analysis.render_pool`) while the next is drawn; the PNG files and the page's HTML follow in page order.
The figures of the fits alone (``FROM_FITS``) are drawn first (:func:`start_figures`), before the ArviZ stages, so that
the workers render them meanwhile; the rest after (:func:`draw_figures`). The statistics some figures show (HDIs, draws per parameter kind, kernel densities) are asked
from ``analysis.arviz_io`` here and handed to ``analysis.plots`` as numbers. A figure that cannot be drawn
is a note, never a failed report. Captions say what the labels were aligned to; every figure drawn from
rows ends with the data source's caption note (a streamed file's subsample).

Imports: the analysis modules at module level; matplotlib (pyplot) inside :func:`draw_figures`.
"""

from __future__ import annotations

from pathlib import Path

from analysis import arviz_io, plots, render_pool
from analysis.errors import one_line
from analysis.assignments import UNCERTAIN
from analysis.html_page import figure_html
from analysis.missing_report import completed_rows
from analysis.plots.selection import plot_model_selection
from analysis.plots.uncertainty import plot_uncertainty

__all__ = ["start_figures", "draw_figures", "FROM_ROWS", "FROM_FITS"]

FROM_ROWS = ("data", "components", "assignments", "uncertainty", "em_snapshots")  # drawn from the rows (+ every ppc_*)
# drawn as soon as the fits are aligned and scored (start_figures): rendered while the ArviZ stages run
FROM_FITS = ("model_selection", "data", "components", "assignments", "uncertainty", "traces", "em_snapshots")


def start_figures(problem, run, fig_dir: Path) -> list:
    """Draw the figures that need the fits alone (``FROM_FITS``), a progress line ``drawing figure i/n: <name>`` each,
    and hand them to the render workers, which render them while the predictive checks, InferenceData and LOO are
    computed here (on 2 cores the workers idled through those stages); returns what :func:`draw_figures` collects."""
    fig_dir.mkdir()
    return _draw([spec for spec in _specs(problem, run) if spec[0] in FROM_FITS], run, "drawing figure")


def draw_figures(problem, run, fig_dir: Path, started: list | None = None) -> tuple[list, dict]:
    """Draw and render the report's other figures one at a time, in page order (a progress line ``figure i/n: <name>``
    each, the figure closed once handed to a render worker), then collect every PNG, those :func:`start_figures`
    ``started`` first: ``([(name, caption)], {name: <figure> html})``, ``fig_dir/<name>.png``; figures that cannot be
    drawn become ``run.notes``."""
    fig_dir.mkdir(exist_ok=True)
    done = () if started is None else FROM_FITS  # a figure of the fits that failed there is not drawn again
    pending = list(started or []) + _draw([spec for spec in _specs(problem, run) if spec[0] not in done], run, "figure")
    figures, fig_html = [], {}
    for name, caption, png in pending:
        try:
            png = png.result()
        except Exception as exc:  # noqa: BLE001 - a figure is never worth the report
            run.notes.append(f"figure {name!r} could not be rendered: {one_line(exc)}")
            continue
        (fig_dir / f"{name}.png").write_bytes(png)
        fig_html[name] = figure_html(None, caption, name, png=png)
        figures.append((name, caption))
    return figures, fig_html


def _draw(specs: list, run, label: str) -> list:
    """Draw each ``(name, caption, draw)`` and submit it to the render workers: ``[(name, caption, pending PNG)]``."""
    import matplotlib.pyplot as plt

    pending = []
    for i, (name, caption, draw) in enumerate(specs):
        run.progress(f"{label} {i + 1}/{len(specs)}: {name}")
        try:
            fig = draw()
        except Exception as exc:  # noqa: BLE001 - a figure is never worth the report
            run.notes.append(f"figure {name!r} could not be drawn: {one_line(exc)}")
            continue
        if fig is None:
            continue
        pending.append((name, caption, render_pool.submit(fig)))  # rendered by a worker while the next is built
        plt.close(fig)
    return pending


def _specs(problem, run) -> list:
    """``[(name, caption, draw)]`` of the run's figures in page order (``draw()`` makes the Figure); those that need
    the ArviZ stages' results only once ``run.idatas`` holds them."""
    z, truth, columns = problem.labels, problem.truth, problem.column_names
    aligned, idatas, reference_label = run.aligned, run.idatas, run.reference_label
    x, imputed = completed_rows(problem.x, run.reference)  # missing cells at the reference's conditional expectation
    filled = "" if imputed is None else (
        f" Rows with missing values are drawn at their conditional expectation under the {reference_label} "
        "(models.impute)")
    has_truth = truth is not None
    against = "the truth" if has_truth else f"the {reference_label} (no truth is known)"
    d = x.shape[1]
    # which columns the figures with a column budget show: all that fit, else those whose component means
    # differ most relative to the spread within components in the reference (the truth, or the reference engine)
    shown = plots.informative_columns(d, run.reference)
    in_forest = plots.informative_columns(d, run.reference, plots.FOREST_MAX_COLUMNS)
    in_ppc = plots.informative_columns(d, run.reference, arviz_io.PPC_MAX_DIMS)
    pairs = (" Every pair of columns" + (f" ({shown[1]})" if shown[1] else "")
             + ": scatter plots below the diagonal, each column's histogram on it.") if d > 2 else ""
    pca = (" D > 2: each panel is the plane of the first two principal components of the standardised columns "
           "(centred, divided by their sd), the Gaussians projected exactly; each axis names its loadings of at least 0.3.") \
        if d > 2 else ""
    specs = [
        ("data", "The data" + (", coloured by the true component." if z is not None else " (no labels are known).") + pairs
         + (filled + ", hollow" + (" in the panels of a pair with an imputed value; histograms of observed values only."
                                   if d > 2 else ".") if filled else ""),
         lambda: plots.plot_data(x, z, column_names=columns, shown=shown, imputed=imputed)),
        ("components", (("Every engine's components (aligned) against the truth (dashed black)"
                         if has_truth else f"Every engine's components, labels aligned to {against}")
                        + (": for each pair of columns the marginal Gaussians (the pair's means and 2×2 covariance "
                           "sub-matrix: exact), 1σ ellipses and × means; on the diagonal each engine's marginal mixture "
                           "density over the column's histogram." + (f" Columns: {shown[1]}." if shown[1] else "")
                           if d > 2 else ": 1σ and 2σ ellipses, × means.")),
         lambda: plots.plot_components(x, aligned, truth, column_names=columns, reference_label=reference_label,
                                       shown=shown, imputed=imputed)),
        ("assignments", f"Points coloured by their assigned cluster, one panel per engine; labels aligned to {against}." + pca
         + (filled + ", hollow." if filled else ""),
         lambda: plots.plot_assignments(x, aligned, truth, column_names=columns, reference_label=reference_label,
                                        imputed=imputed)),
        ("uncertainty", "Classification uncertainty of each row, 1 − max responsibility at each engine's point "
         f"estimate (mclust's uncertainty plot): larger and darker points are less sure of their cluster; components "
         f"as ellipses, labels aligned to {against}. Every row's label, max responsibility and uncertainty per engine "
         "are in assignments.csv.",
         lambda: plot_uncertainty(x, aligned, {m: 1.0 - r.max(axis=1) for m, r in run.responsibilities.items()},
                                  column_names=columns, reference_label=reference_label, threshold=UNCERTAIN)),
        ("traces", "Log-likelihood and ELBO per iteration (EM, hard EM), the EM KL gap, the MAP/SVI loss. The y axes "
         "zoom on where the fits end; a legend entry says which iterations or steps lie beyond its axis.",
         lambda: plots.plot_traces(aligned)),
    ]
    em = aligned.get("em")
    if em is not None and em.info.get("snapshots") is not None and em.info.get("snapshot_iters") is not None:
        specs.append(("em_snapshots", "EM's estimate at a few iterations (the seed notebook's per-iteration plots, in one "
                      "strip)" + (", truth dashed black." if has_truth else f"; colours aligned to {against}.") + pca,
                      lambda: plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth,
                                                      run.reference, column_names=columns)))
    n_pairs = len(in_forest[0]) * (len(in_forest[0]) - 1) // 2
    specs.append(("forest", f"Every engine side by side, labels aligned to {against}: one panel per parameter kind and "
                  "column, each on its own scale (weights; mean and sd of each column in the data's units; the "
                  f"correlation of {'the' if n_pairs == 1 else f'every one of the {n_pairs}'} pair{'s' if n_pairs != 1 else ''} "
                  f"of {'shown ' if in_forest[1] else ''}columns, unitless)"
                  + (f"; columns shown: {in_forest[1]}" if in_forest[1] else "") + "; 90% HDI from ArviZ (lines) for "
                  "engines with draws, dots for means and point estimates, "
                  f"the {reference_label} as thin black ticks behind them.",
                  lambda: plots.plot_forest_panels(arviz_io.forest_intervals(idatas), arviz_io.reference_kinds(run.reference),
                                                   reference_label=reference_label, column_names=columns, columns=in_forest)))
    if "nuts" in idatas:
        specs += _nuts_specs(idatas["nuts"], aligned.get("nuts"), columns, against, in_forest)
    choice = getattr(run, "model_choice", None)
    if choice is not None:
        specs.insert(0, ("model_selection", "BIC and ICL of EM for every K and covariance type (lower is better; mclust "
                         "plots their negatives): the chosen model ringed, fits with a degenerate component open.",
                         lambda: plot_model_selection(choice.table, {"k": choice.k, "covariance_type": choice.covariance_type},
                                                      choice.icl_choice)))
    specs += _predictive_specs(idatas, columns, in_ppc)
    note = problem.data.caption_note()
    if filled:  # the other figures of rows draw the completed rows too, unmarked
        for i, (name, caption, draw) in enumerate(specs):
            if name in ("components", "uncertainty", "em_snapshots"):
                specs[i] = (name, caption + filled + (", hollow." if name == "components" else ", not marked."), draw)
    specs = [(name, caption + (note if name in FROM_ROWS or name.startswith("ppc_") else ""), draw)
             for name, caption, draw in specs]
    return specs


def _nuts_specs(idata, result, columns, against: str, in_forest) -> list:
    """NUTS's trace plot, rank plot and energy / tree-depth figure."""
    max_depth = ((result.info.get("options") or {}).get("max_tree_depth") if result is not None else None)
    cols, why = in_forest
    names = ", ".join(str(columns[j]) if columns is not None else f"x{j}" for j in cols)
    specs = [("nuts_trace", f"Trace of the NUTS draws after relabelling, labels aligned to {against}: every "
              "parameter kind, colour = component, line style = chain" + (
                  f" (the first three of the columns {names})." if len(cols) > 3 else "."),
              lambda: _trace(idata, columns, cols[:3])),
             ("nuts_rank", "Rank plots of the NUTS draws after relabelling (Vehtari et al. 2021): for every weight and "
              "the mean and sd of each " + (f"shown column ({why}: {names})" if why else "column") + " of every component, the "
              "histogram of each chain's draws' ranks among all chains' draws; flat around the dashed line when the "
              "chains sample the same distribution.",
              lambda: plots.plot_rank(arviz_io.rank_histograms(idata, cols), note=f"columns: {why}" if why else ""))]
    stats = arviz_io.group(idata, "sample_stats") if "sample_stats" in arviz_io.group_names(idata) else None
    if stats is not None and "energy" in stats:
        depth = stats["tree_depth"].values if "tree_depth" in stats else None
        specs.append(("nuts_energy", "NUTS's sampler: the energy plot (ArviZ's plot_energy: the marginal energy "
                      "distribution against the energy transitions; BFMI, their variance ratio, below 0.3 flags poor "
                      "exploration) and the tree depth of every transition (draws at max_tree_depth were cut short).",
                      lambda: plots.plot_energy(arviz_io.energy_densities(idata), depth, max_depth)))
    return specs


def _trace(idata, columns, shown=None):
    kinds, method = arviz_io.posterior_kinds(idata)
    return plots.plot_trace_panels(kinds, method=method, column_names=columns, columns=shown)


def _predictive_specs(idatas: dict, columns, in_ppc) -> list:
    """The predictive-check figures: one per engine (its replicated data), and the prior predictive of the
    NumPyro engines' prior (one figure: map, svi and nuts share the data-unit prior). Captions name the
    columns drawn (all of them, or the subset ``in_ppc`` says)."""
    dims, why = in_ppc
    names = [str(columns[j]) if columns is not None else f"x{j}" for j in dims]
    named = f" (columns: {', '.join(names)}" + (f"; {why}" if why else "") + ")"
    specs = []
    for m, idata in idatas.items():
        if "posterior_predictive" in arviz_io.group_names(idata):
            label = plots.engine_label(m)
            specs.append((f"ppc_{m}", f"Posterior predictive check of {label}: density of each column{named}, observed "
                          "(black) against data sets replicated from the fit (one per thinned posterior draw, or replicates "
                          "of the point estimate).",
                          lambda idata=idata, label=label: plots.plot_ppc(
                              arviz_io.ppc_densities(idata, dims=dims), title=f"{label}: posterior predictive",
                              column_names=columns)))
    bayes = [m for m in ("nuts", "svi", "map") if m in idatas and "prior_predictive" in arviz_io.group_names(idatas[m])]
    if bayes:
        specs.append(("prior_predictive", "Prior predictive check: the observed data's density (black; its range shaded "
                      "grey) against data sets drawn from the prior the NumPyro engines used (in the data's units; blue, "
                      f"pooled dashed), for each column{named}. The x axis spans the data and the central 90% of the "
                      "prior predictive values (wider replicates run off it); the y axis stops at 1.3 times the higher "
                      "of the observed and pooled densities, so narrow replicates run off the top.",
                      lambda: plots.plot_ppc(arviz_io.ppc_densities(idatas[bayes[0]], "prior_predictive", dims=dims),
                                             title="prior predictive", group="prior_predictive", column_names=columns)))
    return specs

