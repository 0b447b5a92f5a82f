"""report.html: one job, the report's page from its metrics, ArviZ tables and rendered figures.

One function per section (problem, scorecard, per component, posterior diagnostics, figures,
timings); :func:`report_page` puts them on one self-contained page with :mod:`analysis.html_page`.

Imports: the standard library, :mod:`analysis.html_page` and ``analysis.budget.SKIPPED``; the ArviZ frames arrive ready-made
(anything with ``to_html``).
"""

from __future__ import annotations

import html

import json
import re

from analysis.assignments import UNCERTAIN
from analysis.budget import SKIPPED
from analysis.html_page import fmt, render_html, scrolling, table_html
from analysis.missing_report import missing_section

__all__ = ["report_page", "FIGURE_HEADINGS"]

# figure name -> section heading, in page order
FIGURE_HEADINGS = {
    "data": "Data",
    "components": "Estimated components",
    "assignments": "Cluster assignments",
    "uncertainty": "Classification uncertainty",
    "traces": "Convergence traces",
    "em_snapshots": "EM along the iterations",
    "forest": "All engines side by side (forest plot, ArviZ HDIs)",
    "nuts_trace": "NUTS trace",
    "nuts_rank": "NUTS rank plots",
    "nuts_energy": "NUTS sampler: energy (BFMI) and tree depth",
}


def report_page(metrics: dict, summaries: dict, compare_df, fig_html: dict, column_names) -> str:
    """The whole page.

    Parameters
    ----------
    metrics : the validated metrics dict (``analysis.metrics``).
    summaries : ``{engine: az.summary frame}`` of the engines with draws.
    compare_df : the ``az.compare`` frame, or None.
    fig_html : ``{figure name: <figure> html}`` (names of ``FIGURE_HEADINGS``; missing ones skipped).
    column_names : the data's column names.
    """
    has_truth = metrics["problem"]["truth"] is not None
    column_names = metrics["problem"].get("columns") or column_names
    sections = [("Problem", _problem_section(metrics, column_names))]
    missing = missing_section(metrics)
    if missing:
        sections.append(("Missing values", missing))
    if metrics.get("model_selection"):
        sections.append(("Choosing K", _model_selection_section(metrics["model_selection"], fig_html.get("model_selection"),
                                                                metrics["problem"]["num_samples"])))
    sections += [("Engines: warnings and priors", _engines_section(metrics)),
                ("Scorecard", _scorecard_section(metrics))]
    if has_truth:
        sections.append(("Per component", _components_section(metrics)))
    if summaries:
        sections.append(("Posterior diagnostics (ArviZ)", _diagnostics_section(metrics["engines"], summaries, compare_df,
                                                                               column_names)))
    sections += [(heading, fig_html[name]) for name, heading in FIGURE_HEADINGS.items() if name in fig_html]
    predictive = _predictive_section(metrics, fig_html, column_names)
    if predictive:
        sections.append(("Predictive checks", predictive))
    sections.append(("Timings", _timings_section(metrics["timings"])))
    if metrics.get("notes"):
        sections.append(("Notes", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in metrics["notes"]) + "</ul>"))
    title = ("Gaussian mixture: " + ("recovery of the seed problem by " if has_truth else "fits by ")
             + ", ".join(metrics["engines"]))
    return render_html(title, sections)


def _predictive_section(metrics: dict, fig_html: dict, column_names) -> str:
    """Posterior predictive p-values per engine, statistic and column (flagged outside [0.01, 0.99]),
    then the PPC figures (``ppc_<engine>``) and the prior predictive figure."""
    cards = {m: c for m, c in metrics["engines"].items() if c.get("ppc_p_values")}
    if not cards and not any(name.startswith("ppc_") or name == "prior_predictive" for name in fig_html):
        return ""
    body = ""
    if cards:
        stats = list(next(iter(cards.values()))["ppc_p_values"])
        columns = list(column_names) if column_names is not None else None
        rows, flagged = [], []
        for m, c in cards.items():
            for stat in stats:
                values = c["ppc_p_values"][stat]
                rows.append([m, stat] + [f"{v:.2f}" + (" ⚠" if not 0.01 <= v <= 0.99 else "") for v in values])
                flagged += [f"{m}: {stat} of {columns[j] if columns else f'x{j}'} (p = {v:.2f})"
                            for j, v in enumerate(values) if not 0.01 <= v <= 0.99]
        d = len(next(iter(cards.values()))["ppc_p_values"][stats[0]])
        header = ["engine", "statistic"] + (columns if columns and len(columns) == d else [f"x{j}" for j in range(d)])
        body += ("<p>Posterior predictive p-values P(T(x_rep) ≥ T(x)) of per-column statistics (Gelman, Meng &amp; Stern "
                 "1996); ⚠ marks values outside [0.01, 0.99]: a feature of the data the fitted mixture does not reproduce.</p>")
        body += _warning_box(flagged, heading="<b>Flagged by the predictive checks</b>")
        body += table_html(header, rows)
    for name in [n for n in fig_html if n.startswith("ppc_")] + (["prior_predictive"] if "prior_predictive" in fig_html else []):
        body += fig_html[name]
    return body


def _warning_box(lines, css: str = "warn", heading: str = "") -> str:
    if not lines:
        return ""
    items = "".join(f"<li>{html.escape(str(line))}</li>" for line in lines)
    return f'<div class="{css}">{heading}<ul>{items}</ul></div>'


def _engines_section(metrics: dict) -> str:
    """Per engine: its warnings first (convergence, degenerate components), the covariances it fitted, then the
    prior it used."""
    parts, seen = [], {}
    d = metrics["problem"]["num_features"]
    for m, c in metrics["engines"].items():
        parts.append(f"<h3>{html.escape(m)}</h3>")
        parts.append(_warning_box(c.get("warnings"), heading="<b>Warnings</b>") or "<p>No warnings.</p>")
        parts.append(_covariance_line(c.get("covariance_type") or "full", d))
        prior = c.get("prior")
        key = json.dumps(prior, sort_keys=True)
        if prior is None:
            parts.append("<p>Prior: none (maximum likelihood).</p>")
        elif key in seen:
            parts.append(f"<p>Prior used: the same as {html.escape(seen[key])}'s.</p>")
        else:
            seen[key] = m
            desc = prior.get("description") if isinstance(prior, dict) else None
            rest = {k: v for k, v in prior.items() if k != "description"} if isinstance(prior, dict) else prior
            parts.append("<p>Prior used (data units): " + html.escape(str(desc or "")) + "</p>"
                         + (f"<details><summary>prior hyper-parameters</summary><pre>{html.escape(json.dumps(rest, indent=1))}"
                            "</pre></details>" if rest else ""))
    for m, reason in metrics["failed"].items():
        skipped = str(reason).startswith(SKIPPED)
        parts.append(f"<h3>{html.escape(m)}</h3>" + _warning_box([str(reason)[len(SKIPPED):] if skipped else reason],
                                                                 "note" if skipped else "failed",
                                                                 "<b>Skipped before fitting</b>" if skipped else "<b>Failed</b>"))
    return "".join(parts)


COVARIANCE_WORDS = {
    "full": "full (each component its own {d} x {d} covariance matrix)",
    "diag": "diagonal (each component its own {d} variances, no correlations)",
    "spherical": "spherical (each component one variance for every column)",
    "tied": "tied (one {d} x {d} covariance matrix shared by every component)",
}


def _model_selection_section(sel: dict, figure: str | None, num_samples: int) -> str:
    """How K was chosen (no --num-components): the choice, what each engine fits, BIC and ICL per K and type."""
    body = (f"<p><b>K = {sel['k']}</b> with <b>{html.escape(sel['covariance_type'])}</b> covariances, chosen by BIC "
            f"(−2 log L + p log N, lower is better; mclust's BIC is its negative) among EM fits to {sel['num_rows']:,} rows"
            + (" (the streamed file's row subsample: these BICs are not the scorecard's, which are of all rows)"
               if sel["num_rows"] != num_samples else "")
            + f" for K = 1..{sel['max_k']} "
            f"and the covariance types {html.escape(', '.join(sel['covariance_types']))} (5 restarts each; a K is tried "
            "only when the rows identify it, and a fit with a degenerate component is not eligible). "
            + (f"ICL would choose K = {sel['icl_choice']['k']}, {html.escape(sel['icl_choice']['covariance_type'])}. "
               if sel.get("icl_choice") else "")
            + f"Fitted: {html.escape(sel['fitted'])}. ({len(sel['table'])} fits, {sel['seconds']:.0f} s; give "
            "<code>--num-components K</code> to skip this.)</p>")
    types = [t for t in ("full", "diag", "spherical", "tied") if t in sel["covariance_types"]]
    cells = {(r["covariance_type"], r["k"]): r for r in sel["table"]}
    for criterion in ("bic", "icl"):
        best = (sel["k"], sel["covariance_type"]) if criterion == "bic" else (
            (sel["icl_choice"]["k"], sel["icl_choice"]["covariance_type"]) if sel.get("icl_choice") else None)
        rows = []
        for k in sorted({r["k"] for r in sel["table"]}):
            row = [k]
            for t in types:
                r = cells.get((t, k))
                v = None if r is None or r.get(criterion) is None else f"{r[criterion]:.1f}"
                if v is not None and r.get("degenerate"):
                    v += " (degenerate)"
                if v is not None and best == (k, t):
                    v = f"★ {v}"
                row.append(v if v is not None else ("failed" if r is not None else ""))
            rows.append(row)
        body += f"<h3>{criterion.upper()}</h3>" + table_html(["K"] + types, rows)
    return body + (figure or "")


def _covariance_line(covariance_type: str, d: int) -> str:
    words = COVARIANCE_WORDS.get(covariance_type, "{covariance_type}").format(d=d, covariance_type=covariance_type)
    return f"<p>Covariances fitted: <b>{html.escape(words)}</b> (<code>covariance_type={html.escape(covariance_type)}</code>).</p>"


def _problem_section(metrics: dict, column_names) -> str:
    prob = metrics["problem"]
    if prob["source"] == "seed_problem":
        intro = (f"<p>Data: N = {prob['num_samples']} points sampled from the seed notebook's mixture "
                 f"(weights {prob['truth']['weights']}, means {prob['truth']['means']}, covariances I and 0.5 I), "
                 f"seed {prob['seed']}. Log-likelihood at the truth: {fmt(prob['log_likelihood_truth'])}.</p>")
    else:
        intro = (f"<p>Data: <code>{html.escape(str(prob['data_file']))}</code>, N = {prob['num_samples']}, "
                 f"D = {prob['num_features']} (columns {html.escape(', '.join(column_names))}); K = {prob['num_components']}. "
                 "No truth is known: the scorecard shows the log-likelihood, BIC, iterations, time and cluster sizes.</p>")
        miss = prob.get("missing")
        if miss:
            dropped = miss["dropped_rows"]["count"]
            cells = miss["num_cells_missing"]
            intro += ("<p><b>Missing values</b>: " + (
                f"{cells:,} values missing in {miss['rows_with_missing']:,} of {miss['num_rows_counted']:,} rows, "
                "marginalised by every engine (missing at random)" if cells else "none in the rows fitted")
                      + (f"; {dropped} row(s) with every value missing dropped (not in N)" if dropped else "")
                      + ": see <a href='#s1'>Missing values</a> (the next section).</p>")
    intro += (
        "<p class='note'>Labels: mixture components are only defined up to a permutation. Every engine's estimate is "
        "aligned to the " + ("truth" if prob["truth"] is not None else f"<b>{html.escape(metrics['alignment']['reference'])}</b> estimate")
        + " by the Hungarian method on the symmetrised KL divergence between Gaussian components "
        "(means and covariances), and posterior draws are relabelled one by one the same way. Nothing below compares "
        "unaligned components. R-hat is ArviZ's default <b>rank-normalised split R-hat</b> (Vehtari et al. 2021); on "
        "fully label-switched chains it reads about 1.8 where the classic split R-hat reads about 8.5.</p>"
    )
    skipped = {m: e for m, e in metrics["failed"].items() if str(e).startswith(SKIPPED)}
    failed = {m: e for m, e in metrics["failed"].items() if m not in skipped}
    if skipped:
        intro = _warning_box([f"{m}: {str(e)[len(SKIPPED):]}" for m, e in skipped.items()], "note",
                             f"<b>{len(skipped)} engine(s) skipped before fitting</b> (metrics.json \"failed\", "
                             "\"skipped: ...\")") + intro
    if prob.get("streamed"):
        intro = _streamed_box(metrics) + intro
    if failed:
        intro = _warning_box([f"{m}: {e}" for m, e in failed.items()], "failed",
                             f"<b>Partial report: {len(failed)} engine(s) failed</b> "
                             "(the others are reported below; metrics.json \"failed\")") + intro
    warned = [f"{m}: {w}" for m, c in metrics["engines"].items() for w in (c.get("warnings") or [])]
    if warned:
        intro = _warning_box(warned, heading="<b>Engine warnings</b> (details per engine below)") + intro
    return intro


def _streamed_box(metrics: dict) -> str:
    """The top of a streamed report: the file stayed on disk, which engines read it, what is subsampled."""
    from analysis.streamed import size_text

    prob = metrics["problem"]
    n, s = prob["num_samples"], prob["subsample_rows"]
    why = (f"above the {size_text(prob['stream_threshold_bytes'])} threshold of --stream auto"
           if prob["stream_mode"] == "auto" else f"--stream {prob['stream_mode']}")
    rows = "all rows" if s == n else f"a seeded random subsample of {s:,} of the {n:,} rows"
    return (f"<div class='note'><p><b>Streamed from disk</b>: the data file ({size_text(prob['data_bytes'])}, {why}) was "
            f"never loaded into memory. Engines that ran, reading all {n:,} rows in passes: "
            f"<b>{html.escape(', '.join(metrics['engines']))}</b> (map, svi and nuts need every row in memory). "
            "Log-likelihood, BIC, cluster sizes and the degeneracy counts are of all rows; the figures, predictive "
            f"checks and the NetCDF files' observed data use {rows} (metrics.json <code>problem.subsample_rows</code>)."
            "</p></div>")


def _scorecard_section(metrics: dict) -> str:
    cards = metrics["engines"]
    has_truth = metrics["problem"]["truth"] is not None
    header = ["engine", "log-lik", "BIC", "iters", "converged", "seconds", "compile s", "run s"]
    if has_truth:
        header[2:2] = ["Δ vs truth"]
        header[4:4] = ["max |Δw|", "max ‖Δμ‖", "max ‖ΔΣ‖F", "mean KL(true‖est)", "ARI", "90% coverage"]
    rows = []
    for m, c in cards.items():
        s = c["summary"] or {}
        row = [m, c["log_likelihood"], c["bic"], c["num_iters"], c["converged"], c["seconds"], c["compile_seconds"],
               c["run_seconds"]]
        if has_truth:
            delta = None if c["log_likelihood_truth"] is None else c["log_likelihood"] - c["log_likelihood_truth"]
            cov = (c["posterior"] or {}).get("coverage")
            row[2:2] = [delta]
            row[4:4] = [s.get("weight_abs_error_max"), s.get("mean_l2_error_max"), s.get("cov_frobenius_error_max"),
                        s.get("kl_true_to_estimate_mean"), c["ari"], cov]
        rows.append(row)
    body = table_html(header, rows)
    body += ("<p>Errors are of the aligned point estimate (NUTS/SVI: the posterior mean of the aligned draws) against "
             "the truth; KL(true‖est) in nats; ARI of the hard assignments against the true labels; coverage: share of "
             "the true weights, means and covariance entries inside the central 90% posterior interval.</p>"
             if has_truth else
             f"<p>No truth is known: no recovery errors. Labels of every engine are aligned to the "
             f"<b>{html.escape(metrics['alignment']['reference'])}</b> estimate.</p>")
    unc = lambda c, key: (c.get("uncertainty") or {}).get(key)  # noqa: E731
    sizes = table_html(["engine", "cluster sizes", "weights", "mean uncertainty", f"rows with uncertainty > {UNCERTAIN:g}"],
                       [[m, ", ".join(map(str, c["cluster_sizes"])), ", ".join(f"{w:.3f}" for w in c["weights"]),
                         unc(c, "mean"), unc(c, "num_uncertain")] for m, c in cards.items()])
    return body + sizes + ("<p>Uncertainty of a row: 1 − its largest responsibility P(z = k | x) at the engine's point "
                           "estimate (mclust's); each row's label, max responsibility and uncertainty per engine are in "
                           "<code>assignments.csv</code> and in each engine's NetCDF file (group "
                           "<code>assignments</code>, with the responsibilities).</p>")


def _components_section(metrics: dict) -> str:
    k = len(metrics["problem"]["truth"]["weights"])
    rows = []
    for m, c in metrics["engines"].items():
        e = c["components"]
        for j in range(k):
            rows.append([m, j, c["weights"][j], e["weight_abs_error"][j], e["mean_l2_error"][j],
                         e["cov_frobenius_error"][j], e["kl_true_to_estimate"][j]])
    return table_html(["engine", "component", "weight", "|Δw|", "‖Δμ‖₂", "‖ΔΣ‖F", "KL(true‖est)"], rows)


def _named_rows(index, column_names) -> list:
    """az.summary row labels with the data's column names: ``means[0, 1]`` -> ``means[0, eruptions]``,
    ``covariances[0, 1, 2]`` -> ``covariances[0, waiting, x2]``."""
    names = list(column_names or [])

    def rename(label: str) -> str:
        m = re.fullmatch(r"(means|covariances)\[(\d+), (.+)\]", str(label))
        if not m:
            return str(label)
        dims = m.group(3).split(", ")  # indices, or already the column names (the NetCDF's dim coordinates)
        return f"{m.group(1)}[{m.group(2)}, " + ", ".join(
            names[int(d)] if d.isdigit() and int(d) < len(names) else d for d in dims) + "]"

    return [rename(i) for i in index]


# SVI's draws are independent draws of its guide: MCMC diagnostics (R-hat, ESS, MCSE) would measure the random
# number generator, not convergence; what matters is how wide the guide is (README "Calibration, measured")
SVI_CAVEAT = ("SVI's draws are independent draws from its fitted guide, not a Markov chain: R-hat, effective sample "
              "sizes and Monte Carlo errors say nothing about them and are not shown. What limits them is the guide: "
              "a mean-field guide underestimates the posterior's spread and ignores correlations between parameters. "
              "In the calibration sweep (<code>gmm-report sweep calibration</code>) SVI's central 90% intervals covered "
              "the true values about 77% of the time (50% intervals: 42%), NUTS's 88% (53%): read SVI's intervals as "
              "too narrow.")
MCMC_ONLY_COLUMNS = ("mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")


def _summary_html(frame, column_names, mcmc: bool = True) -> str:
    """An az.summary frame as a scrolling table; without ``mcmc`` (SVI's guide draws) the MCMC columns (MCSE,
    ESS, R-hat) are left out and the SVI caveat says why."""
    note = ""
    if not mcmc:
        frame = frame.drop(columns=[c for c in MCMC_ONLY_COLUMNS if c in frame])
        note = f"<p class='note'>{SVI_CAVEAT}</p>"
    elif "r_hat" in frame and not frame["r_hat"].notna().any():
        frame = frame.drop(columns=["r_hat"])
        note = "<p class='note'>R-hat is undefined for a single chain; column left out.</p>"
    frame = frame.copy()
    frame.index = _named_rows(frame.index, column_names)
    return note + scrolling(frame.to_html(float_format=lambda v: f"{v:.3f}"))


def _sampler_html(cards: dict) -> str:
    """NUTS's sampler table: BFMI per chain, step size per chain, tree depth (mean, max, share at the cap),
    acceptance rate, divergences (``metrics.json`` engines.<m>.sampler)."""
    rows = []
    for m, c in cards.items():
        s = c.get("sampler")
        if not s:
            continue
        low = [v for v in s["bfmi"] if v < 0.3]
        hit = s.get("hit_max_tree_depth")
        rows.append([m, ", ".join(f"{v:.2f}" for v in s["bfmi"]) + (" ⚠" if low else ""),
                     ", ".join(f"{v:.3g}" for v in s["step_size"] or []), s.get("tree_depth_mean"),
                     f"{s.get('tree_depth_max')} of {s.get('max_tree_depth')}" if s.get("max_tree_depth") else s.get("tree_depth_max"),
                     None if hit is None else f"{100 * hit:.1f}%" + (" ⚠" if hit > 0.01 else ""),
                     s.get("acceptance_rate_mean"), s.get("divergences")])
    if not rows:
        return ""
    return ("<h3>NUTS sampler</h3>" + table_html(
        ["engine", "BFMI per chain", "step size per chain", "mean tree depth", "max tree depth (of the cap)",
         "draws at the cap", "mean acceptance", "divergences"], rows)
        + "<p>BFMI (Bayesian fraction of missing information, ArviZ's <code>bfmi</code> of the <code>energy</code> in "
        "<code>nuts.nc</code>'s sample_stats): below 0.3 the momentum resampling explores the energy distribution poorly. "
        "Tree depth d means up to 2^d − 1 leapfrog steps per draw; draws at the cap (<code>max_tree_depth</code>) were "
        "cut short. Step size after warm-up; mean acceptance should be near the target (0.8).</p>")


def loo_max_values() -> int:
    """``arviz_io.LOO_MAX_VALUES``, imported when a page with LOO is written (arviz_io imports ArviZ)."""
    from analysis.arviz_io import LOO_MAX_VALUES

    return LOO_MAX_VALUES


def _diagnostics_section(cards: dict, summaries: dict, compare_df, column_names=None) -> str:
    diag = []
    for m in [m for m in summaries if m != "svi"]:
        c = cards[m]
        rb, ra = c.get("rhat_before") or {}, c.get("rhat_after") or {}
        d = c.get("diagnostics") or {}
        diag.append([m, rb.get("means"), ra.get("means"), d.get("rhat_max"), d.get("ess_bulk_min"), d.get("ess_tail_min"),
                     c.get("relabelled_fraction"), c.get("num_divergences")])
    body = table_html(["engine", "R-hat means before relabelling", "R-hat means after", "max R-hat (all)",
                       "min ESS bulk", "min ESS tail", "relabelled draws", "divergences"], diag) if diag else ""
    body += _sampler_html({m: cards[m] for m in summaries})
    for m, s in summaries.items():
        body += f"<h3>az.summary: {html.escape(m)}</h3>" + _summary_html(s, column_names, mcmc=m != "svi")
    if any(cards[m].get("loo") for m in summaries):
        body += "<h3>PSIS-LOO</h3>" + table_html(
            ["engine", "elpd_loo", "se", "p_loo", "max Pareto k", "warning", "draws"],
            [[m, cards[m]["loo"]["elpd_loo"], cards[m]["loo"]["se"], cards[m]["loo"]["p_loo"],
              cards[m]["loo"]["pareto_k_max"], cards[m]["loo"]["warning"], cards[m]["loo"].get("draws")]
             for m in summaries if cards[m].get("loo")])
        body += ("<p>The warning is ArviZ's: a Pareto k above min(1 - 1/log<sub>10</sub> S, 0.7) for S draws. k is "
                 "estimated from the draws, noisily when they are few: LOO uses every draw up to "
                 f"{loo_max_values():,} pointwise values, evenly spaced draws above that. Below about 2,200 draws the "
                 "threshold is under 0.7, and a warning there asks first for more draws, then for another model "
                 "(A. Vehtari, paul-buerkner/brms#1606; stan-dev/loo#234).</p>")
    if compare_df is not None:
        body += "<h3>az.compare (LOO)</h3>" + scrolling(compare_df.to_html(float_format=lambda v: f"{v:.3f}"))
    return body


def _timings_section(t: dict) -> str:
    rows = [[m, t["fit_seconds"][m], t["compile_seconds"][m], t["run_seconds"][m]] for m in t["fit_seconds"]]
    return (table_html(["engine", "fit seconds", "compile", "run"], rows)
            + f"<p>Whole report: {t['total_seconds']:.1f} s (before writing the HTML).</p>"
            "<p>Files: <code>metrics.json</code>, <code>manifest.json</code>, <code>assignments.csv</code> (each row's "
            "aligned label, max responsibility and uncertainty per engine), <code>imputed.csv</code> (data with missing "
            "values: each engine's imputation of every missing cell with its 90% interval), one ArviZ InferenceData per engine "
            "(<code>&lt;engine&gt;.nc</code>, reload with <code>arviz.from_netcdf</code>; compressed, the pointwise "
            "log-likelihood in float32 and, for large N, of evenly thinned draws: what LOO needs), "
            "<code>figures/*.png</code>.</p>")
