"""The report's figures: one job, which figures a run gets, with what caption, from which numbers.

:func:`draw_figures` turns a :class:`analysis.problem.Problem` and its :class:`analysis.report.Run` into
``[(name, caption, Figure)]`` in page order; :func:`write_figures` renders each once (PNG file and the
page's HTML). The statistics some figures show (HDIs, draws per parameter kind, kernel densities) are asked
from ``analysis.arviz_io`` here and handed to ``analysis.plots`` as numbers. A figure that cannot be drawn
is a note, never a failed report. Captions say what the labels were aligned to; every figure drawn from
rows ends with the data source's caption note (a streamed file's subsample).

Imports: the analysis modules at module level; matplotlib (pyplot) inside :func:`write_figures`.
"""

from __future__ import annotations

from pathlib import Path

from analysis import arviz_io, plots
from analysis.errors import one_line
from analysis.assignments import UNCERTAIN
from analysis.html_page import figure_html, figure_png
from analysis.plots.uncertainty import plot_uncertainty

__all__ = ["draw_figures", "write_figures", "FROM_ROWS"]

FROM_ROWS = ("data", "components", "assignments", "uncertainty", "em_snapshots")  # drawn from the rows (+ every ppc_*)


def draw_figures(problem, run) -> list:
    """``[(name, caption, Figure)]`` of the report, in page order; failures become ``run.notes``."""
    x, z, truth, columns = problem.x, problem.labels, problem.truth, problem.column_names
    aligned, idatas, reference_label = run.aligned, run.idatas, run.reference_label
    has_truth = truth is not None
    against = "the truth" if has_truth else f"the {reference_label} (no truth is known)"
    specs = [
        ("data", "The data" + (", coloured by the true component." if z is not None else " (no labels are known)."),
         lambda: plots.plot_data(x, z, column_names=columns)),
        ("components", ("Every engine's components (aligned) against the truth (dashed black): 1σ and 2σ ellipses, × means."
                        if has_truth else f"Every engine's components, labels aligned to {against}: 1σ and 2σ ellipses, × means."),
         lambda: plots.plot_components(x, aligned, truth, column_names=columns, reference_label=reference_label)),
        ("assignments", f"Points coloured by their assigned cluster, one panel per engine; labels aligned to {against}.",
         lambda: plots.plot_assignments(x, aligned, truth, column_names=columns, reference_label=reference_label)),
        ("uncertainty", "Classification uncertainty of each row, 1 − max responsibility at each engine's point "
         f"estimate (mclust's uncertainty plot): larger and darker points are less sure of their cluster; components "
         f"as ellipses, labels aligned to {against}. Every row's label, max responsibility and uncertainty per engine "
         "are in assignments.csv.",
         lambda: plot_uncertainty(x, aligned, {m: 1.0 - r.max(axis=1) for m, r in run.responsibilities.items()},
                                  column_names=columns, reference_label=reference_label, threshold=UNCERTAIN)),
        ("traces", "Log-likelihood and ELBO per iteration (EM, hard EM), the EM KL gap, the MAP/SVI loss.",
         lambda: plots.plot_traces(aligned)),
    ]
    em = aligned.get("em")
    if em is not None and em.info.get("snapshots") is not None and em.info.get("snapshot_iters") is not None:
        specs.append(("em_snapshots", "EM's estimate at a few iterations (the seed notebook's per-iteration plots, in one "
                      "strip)" + (", truth dashed black." if has_truth else f"; colours aligned to {against}."),
                      lambda: plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth,
                                                      run.reference, column_names=columns)))
    specs.append(("forest", f"Every engine side by side, labels aligned to {against}: one panel per parameter kind and "
                  "column, each on its own scale (weights; mean and sd of each column in the data's units; correlations "
                  "unitless); 90% HDI from ArviZ (lines) for engines with draws, dots for means and point estimates, "
                  f"the {reference_label} as thin black ticks behind them.",
                  lambda: plots.plot_forest_panels(arviz_io.forest_intervals(idatas), arviz_io.reference_kinds(run.reference),
                                                   reference_label=reference_label, column_names=columns)))
    if "nuts" in idatas:
        specs.append(("nuts_trace", f"Trace of the NUTS draws after relabelling (labels aligned to {against}): every "
                      "parameter kind, colour = component, line style = chain.",
                      lambda: _trace(idatas["nuts"], columns)))
    specs += _predictive_specs(idatas, columns)
    note = problem.data.caption_note()
    specs = [(name, caption + (note if name in FROM_ROWS or name.startswith("ppc_") else ""), draw)
             for name, caption, draw in specs]
    figures = []
    for name, caption, draw in specs:
        try:
            fig = draw()
        except Exception as exc:  # noqa: BLE001 - a figure is never worth the report
            run.notes.append(f"figure {name!r} could not be drawn: {one_line(exc)}")
            continue
        if fig is not None:
            figures.append((name, caption, fig))
    return figures


def _trace(idata, columns):
    kinds, method = arviz_io.posterior_kinds(idata)
    return plots.plot_trace_panels(kinds, method=method, column_names=columns)


def _predictive_specs(idatas: dict, columns) -> list:
    """The predictive-check figures: one per engine (its replicated data), and the prior predictive of the
    NumPyro engines' prior (one figure: map, svi and nuts share the data-unit prior)."""
    named = f" (columns: {', '.join(map(str, columns))})" if columns is not None else ""
    specs = []
    for m, idata in idatas.items():
        if "posterior_predictive" in arviz_io.group_names(idata):
            label = plots.engine_label(m)
            specs.append((f"ppc_{m}", f"Posterior predictive check of {label}: density of each column{named}, observed "
                          "(black) against data sets replicated from the fit (one per thinned posterior draw, or replicates "
                          "of the point estimate).",
                          lambda idata=idata, label=label: plots.plot_ppc(
                              arviz_io.ppc_densities(idata), title=f"{label}: posterior predictive", column_names=columns)))
    bayes = [m for m in ("nuts", "svi", "map") if m in idatas and "prior_predictive" in arviz_io.group_names(idatas[m])]
    if bayes:
        specs.append(("prior_predictive", f"Prior predictive check: data sets drawn from the prior the NumPyro engines used "
                      f"(in the data's units), against the observed data{named}.",
                      lambda: plots.plot_ppc(arviz_io.ppc_densities(idatas[bayes[0]], "prior_predictive"),
                                             title="prior predictive", group="prior_predictive", column_names=columns)))
    return specs


def write_figures(fig_dir: Path, figures) -> dict:
    """Render each figure once: ``fig_dir/<name>.png`` and ``{name: <figure> html}``; closes the figures."""
    import matplotlib.pyplot as plt

    fig_dir.mkdir()
    fig_html = {}
    for name, caption, fig in figures:
        png = figure_png(fig)
        (fig_dir / f"{name}.png").write_bytes(png)
        fig_html[name] = figure_html(fig, caption, name, png=png)
        plt.close(fig)
    return fig_html
