"""The report's pipeline: one job, engines -> align -> score -> ArviZ -> figures -> page.

    metrics = run_report(args)      # args from analysis.cli.build_parser(); the command is analysis.cli

Writes into ``args.out`` (atomically: everything goes to a temporary sibling directory that is
renamed at the end, so an interrupted run leaves no half report):

    report.html       self-contained (figures embedded as base64 PNG), opens without a server
    metrics.json      the scorecard, schema in ``analysis.metrics.METRICS_SCHEMA``
    manifest.json     seed, argv, package versions, sha256 of the data
    <method>.nc       one ArviZ InferenceData per engine (NetCDF, layout in ``analysis.arviz_io``)
    figures/*.png     the figures of the HTML as files

A ``.npy`` above ``analysis.streamed.STREAM_THRESHOLD_BYTES`` (or any with ``--stream always``) is never
loaded: em and hard_em read it from disk, the NumPyro engines are skipped (``analysis.budget``), full-data
numbers come from passes over the file and everything drawn from rows uses a seeded subsample
(:mod:`analysis.streamed`).

User errors (bad data, K > rows, a misspelt engine option, every engine failing, a non-empty ``--out``
without ``--force``) raise :class:`~analysis.errors.ReportError`; :mod:`analysis.cli` turns them into one
line and exit 2. One engine's failure is not one: it is recorded in ``metrics["failed"]``, shown at the
top of the page, and the command exits 3 (``analysis.cli.EXIT_PARTIAL``).

Imports: numpy and the analysis modules at module level (no JAX: the command line sets XLA flags
first); JAX, matplotlib, ``models``, ``inference``, ``analysis.arviz_io`` / ``plots`` / ``align`` /
``score`` inside the pipeline. ``main`` is re-exported from :mod:`analysis.cli` for the
``gmm-report = "analysis.report:main"`` entry point and ``python -m analysis.report``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from analysis.cli import PROG, main  # noqa: F401  (main: the entry point's historical home)
from analysis.budget import plan_report
from analysis.engine_options import ALL_METHODS, parse_methods, report_engine_options
from analysis.errors import ReportError
from analysis.files import atomic_output_dir, dumps_json, load_data, write_atomically
from analysis.html_page import figure_html, figure_png
from analysis.manifest import build_manifest
from analysis.metrics import (alignment_metrics, build_metrics, compare_metrics, diagnostics_metrics, engine_notes,
                              problem_metrics, timings_metrics)
from analysis.progress import Progress
from analysis.report_page import report_page
from analysis.streamed import (apply_scores, caption_note, open_streamed, problem_fields, scan, score_pass, stream_note,
                               stream_wanted, subsample_view)

__all__ = ["run_report", "main"]


def run_report(args, argv=None) -> dict:
    """Run the whole report for parsed ``args``; returns the metrics dict. Raises ReportError.

    An engine that fails (any exception while fitting, scoring or building its InferenceData) is
    recorded in ``metrics["failed"]`` with a one-line reason and the report goes on with the others;
    only when every engine fails is it a ReportError. Misspelt engine options are refused before any work.
    """
    t_start = time.perf_counter()
    progress = Progress(not args.quiet, PROG)
    methods = parse_methods(args.methods)
    options = report_engine_options(methods, args.quiet, args.num_draws, args.option)
    if args.num_components is not None and args.num_components < 1:
        raise ReportError(f"--num-components must be >= 1, got {args.num_components}")
    _check_option_names(options)

    # Load before touching the output directory: bad input must not create anything.
    stream = None
    if args.data and stream_wanted(args.data, getattr(args, "stream", "auto")):
        # too large to load (or --stream always): the header now, one pass for NaN/inf and the subsample
        stream = open_streamed(args.data, args.stream)
        k = args.num_components or 2
        source, column_names = "file", [f"x{j}" for j in range(stream.num_features)]
        if k > stream.num_rows:
            raise ReportError(f"--num-components ({k}) exceeds the number of rows ({stream.num_rows}) in {stream.path.name}")
        progress(f"{stream.path.name}: {stream.num_rows:,} x {stream.num_features} {stream.dtype}, streamed from disk "
                 f"({'--stream always' if args.stream == 'always' else 'above the --stream auto threshold'})")
        x = None
    elif args.data:
        x, column_names = load_data(args.data)
        k = args.num_components or 2
        source = "file"
        if k > x.shape[0]:
            raise ReportError(f"--num-components ({k}) exceeds the number of rows ({x.shape[0]}) in {Path(args.data).name}")
    else:
        if getattr(args, "stream", "auto") == "always":
            raise ReportError("--stream always needs --data FILE.npy (the seed problem is simulated in memory)")
        if args.num_samples < 1:
            raise ReportError(f"--num-samples must be >= 1, got {args.num_samples}")
        if args.num_components not in (None, 2):
            raise ReportError("the seed problem has 2 components; use --data FILE to fit another K")
        x, k, source, column_names = None, 2, "seed_problem", ["x0", "x1"]

    # Identifiable from these rows, and affordable? (skips engines or refuses with the fix named; analysis.budget)
    plan = plan_report(args, methods, options, x, k, progress, streamed=stream)
    methods, options, args.skipped_engines = plan.methods, plan.options, plan.skipped
    if stream is not None:  # after the cheap refusals: one pass over the file
        progress("checking every value of the file and drawing the row subsample (one pass)")
        stream = scan(stream, args.seed)
        x = stream.subsample

    with atomic_output_dir(args.out, args.force) as tmp:
        metrics = _run_into(tmp, args, list(argv) if argv is not None else sys.argv[1:], methods, options, x, k,
                            source, column_names, progress, t_start, stream)
    progress(f"report written to {Path(args.out) / 'report.html'}")
    return metrics


def _check_option_names(options: dict) -> None:
    """A misspelt ``--option METHOD.KEY`` is a user error before any work (one line, valid names listed)."""
    from inference import valid_options
    from inference.validate import check_option_names

    for method, opts in options.items():
        try:
            check_option_names(method, opts, valid_options(method))
        except ValueError as exc:
            raise ReportError(f"--option: {exc}") from None


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line: ``ValueError`` messages as they are, others prefixed with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, ValueError):
        text = f"{type(exc).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _warning_notes(caught) -> list[str]:
    """Library warnings caught during the run as unique one-line notes (deprecation warnings aside)."""
    notes = []
    for w in caught:
        if issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
            continue
        note = f"{w.category.__name__}: {' '.join(str(w.message).split())[:240]} ({Path(w.filename).name}:{w.lineno})"
        if note not in notes:
            notes.append(note)
    return notes


def _run_into(tmp: Path, args, argv, methods, options, x, k, source, column_names, progress, t_start, stream=None) -> dict:
    """The pipeline into the directory ``tmp``; ``x`` (N, D) is the user's data, or None to simulate; with
    ``stream`` (:class:`analysis.streamed.StreamedData`) ``x`` is its row subsample and the engines read the file.

    Library warnings raised meanwhile are caught and become ``notes`` (metrics.json and the page), not
    stderr lines."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        notes: list[str] = []
        metrics, summaries, compare_df, fig_html = _pipeline(tmp, args, argv, methods, options, x, k, source,
                                                             column_names, progress, t_start, notes, stream)
    metrics["notes"] = notes + [n for n in _warning_notes(caught) if n not in notes]
    write_atomically(tmp / "metrics.json", dumps_json(metrics))
    write_atomically(tmp / "report.html", report_page(metrics, summaries, compare_df, fig_html, column_names))
    return metrics


def _pipeline(tmp: Path, args, argv, methods, options, x, k, source, column_names, progress, t_start, notes, stream=None):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import jax

    import models

    from analysis import arviz_io

    root = jax.random.PRNGKey(args.seed)
    truth = z = None
    if source == "seed_problem":
        truth = models.to_numpy(models.seed_problem())
        progress(f"sampling N={args.num_samples} points from the seed problem (seed {args.seed})")
        xs, zs = models.sample(jax.random.fold_in(root, 0), truth, args.num_samples)
        x, z = np.asarray(xs, dtype=np.float64), np.asarray(zs)

    if stream is None:
        results, failed = _fit_engines(root, x, k, methods, options, progress)
    else:  # the engines read the file; everything after them sees the subsample's rows
        results, failed = _fit_engines(root, str(stream.path), k, methods, options, progress, shape=stream.shape)
        results = {m: subsample_view(r, stream) for m, r in results.items()}
        notes.append(stream_note(stream, list(results)))
    failed = {**getattr(args, "skipped_engines", {}), **failed}  # engines skipped before fitting, with the reason

    progress("aligning labels, scoring, building InferenceData")
    aligned, reference, reference_name, cards = _align_and_score(results, x, truth, z, failed, progress)
    if stream is not None:
        progress(f"scoring {', '.join(aligned)} on all {stream.num_rows:,} rows (one more pass over the file)")
        apply_scores(stream, aligned, cards, score_pass(stream, aligned), k)
    predictive = _predictive(args.seed, aligned, x, cards, notes)
    idatas, summaries, compare_df, compare_rows = _arviz(tmp, aligned, x, cards, failed, progress, predictive)
    for m in list(aligned):
        if m not in idatas:
            aligned.pop(m)
            cards.pop(m)
    if not aligned:
        raise ReportError("every engine failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()))

    progress("drawing figures")
    reference_label = "truth" if truth is not None else f"{_label(reference_name)} estimate"
    figures = _figures(x, z, aligned, truth, reference, reference_label, idatas, column_names, notes, caption_note(stream))
    fig_html = _write_figures(tmp / "figures", figures)

    metrics = build_metrics(
        problem=problem_metrics(source=source, data_file=args.data, x=x, num_components=k, seed=args.seed, truth=truth,
                                truth_covariances=None if truth is None else models.covariances(truth),
                                log_likelihood_truth=None if truth is None else models.log_likelihood(truth, x),
                                columns=column_names, shape=None if stream is None else stream.shape,
                                stream=problem_fields(stream, args.data, getattr(args, "stream", None) if args.data else None)),
        alignment=alignment_metrics(reference_name, arviz_io.RHAT_METHOD),
        engines=cards,
        compare=compare_rows,
        failed=failed,
        timings=timings_metrics({m: results[m] for m in aligned}, time.perf_counter() - t_start),
        notes=notes,
    )
    files = (["report.html", "metrics.json", "manifest.json"] + [f"{m}.nc" for m in idatas]
             + [f"figures/{n}.png" for n, _, _ in figures])
    manifest = build_manifest(tool=PROG, argv=argv, seed=args.seed, methods=methods, engine_options=options, source=source,
                              data_file=args.data, x=x, column_names=column_names, jax_backend=jax.default_backend(),
                              files=files, shape=None if stream is None else stream.shape,
                              streamed=None if stream is None else {"subsample_rows": stream.subsample_rows,
                                                                    "stream_mode": stream.mode})
    write_atomically(tmp / "manifest.json", dumps_json(manifest))
    return metrics, summaries, compare_df, fig_html


def _label(name: str) -> str:
    from analysis.plots import engine_label

    return engine_label(name)


def _fit_engines(root, x, k, methods, options, progress, shape=None) -> tuple[dict, dict]:
    """Fit every engine on ``x`` (N, D), or on the .npy file at the path ``x`` of ``shape`` (streamed):
    ``({method: FitResult}, {method: one-line reason})``.

    Any exception of an engine (Ctrl-C aside) marks that engine as failed and the report goes on;
    when every engine fails it is a ReportError with their reasons. SVI and NUTS start from this
    report's MAP point when MAP ran first.
    """
    import jax

    from inference import fit

    results, failed = {}, {}
    n, d = shape if shape is not None else x.shape
    for i, method in enumerate(methods):
        progress(f"[{i + 1}/{len(methods)}] fitting {method} (K={k}, N={n}, D={d}{', streamed' if shape else ''})")
        key = jax.random.fold_in(root, 1 + ALL_METHODS.index(method))
        engine_options = dict(options[method])
        if method in ("svi", "nuts") and "init" not in engine_options and "map" in results:
            # start from the MAP point this report already has (the engines would otherwise re-run MAP)
            engine_options["init"] = results["map"].params
        try:
            r = fit(method, key, x, k, **engine_options)
        except Exception as exc:  # noqa: BLE001 - one engine's failure never sinks the report
            failed[method] = one_line(exc)
            progress(f"    {method} failed: {failed[method]}")
            continue
        if shape is None and np.shape(r.responsibilities)[0] != n:
            # EM reads an in-memory array of >= 256 MiB in place and leaves the (N, K) responsibilities
            # to the caller (inference.em.HOST_STREAM_BYTES); the report's figures and scores need them
            from models.density import responsibilities

            r = dataclasses.replace(r, responsibilities=np.asarray(responsibilities(r.params, x)))
        results[method] = r
        comp = r.info.get("compile_seconds")
        split = f" (compile {comp:.1f}s, run {r.info.get('run_seconds', float('nan')):.1f}s)" if comp is not None else ""
        progress(f"    {method}: {r.seconds:.1f}s{split}, {r.num_iters} iterations, converged={r.converged}")
        for w in r.info.get("warnings") or []:
            progress(f"    {method} warning: {w}")
    if not results:
        raise ReportError("every engine failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()))
    return results, failed


def _align_and_score(results: dict, x, truth, z, failed: dict, progress):
    """Align every engine to the truth (or to the reference engine's estimate: EM when it ran) and
    score it; an engine whose alignment or scoring raises joins ``failed``. Returns
    ``(aligned, reference params, reference name, cards)``."""
    from analysis.align import align_result
    from analysis.score import scorecard
    from models.params import to_numpy

    if truth is not None:
        reference, reference_name = truth, "truth"
    else:
        reference_name = "em" if "em" in results else next(iter(results))
        reference = to_numpy(results[reference_name].params)
    aligned, cards = {}, {}
    for m, r in results.items():
        try:
            a = align_result(r, reference)
            cards[m] = {**scorecard(a, x, truth, z), **engine_notes(a.info)}
            aligned[m] = a
        except Exception as exc:  # noqa: BLE001
            failed[m] = "scoring: " + one_line(exc)
            progress(f"    {m} failed: {failed[m]}")
    if not aligned:
        raise ReportError("every engine failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()))
    return aligned, to_numpy(reference), reference_name, cards


def _predictive(seed: int, aligned: dict, x, cards: dict, notes: list) -> dict:
    """Replicated data per engine and its prior predictive (``analysis.predictive.predictive_checks``);
    adds ``ppc_p_values`` to ``cards``. A failure is a note: the checks never sink the report."""
    from analysis.predictive import predictive_checks

    for card in cards.values():
        card["ppc_p_values"] = None
    try:
        draws, p_values = predictive_checks(seed, aligned, x)
    except Exception as exc:  # noqa: BLE001
        notes.append(f"predictive checks could not be computed: {one_line(exc)}")
        return {}
    for m, values in p_values.items():
        cards[m]["ppc_p_values"] = values
    return draws


def _arviz(tmp: Path, aligned: dict, x, cards: dict, failed: dict, progress, predictive: dict | None = None):
    """InferenceData per engine (saved as ``<method>.nc``), az.summary / az.loo of the engines with
    draws and az.compare of them; adds ``netcdf``, ``diagnostics`` and ``loo`` to ``cards`` in place.

    Returns ``(idatas, summaries, compare_df, compare rows)``, the last two None without a
    comparison. An engine whose InferenceData cannot be built joins ``failed``; summary, LOO and
    compare are diagnostics: their failures are progress lines, never fatal.
    """
    from analysis import arviz_io

    idatas = {}
    for m, r in aligned.items():
        name = f"{m}.nc"
        try:
            idata = arviz_io.to_inference_data(r, x)
            if (predictive or {}).get(m):
                arviz_io.add_groups(idata, arviz_io.predictive_groups(**predictive[m]))
            arviz_io.save_netcdf(idata, tmp / name)
        except Exception as exc:  # noqa: BLE001
            failed[m] = "InferenceData: " + one_line(exc)
            progress(f"    {m} failed: {failed[m]}")
            (tmp / name).unlink(missing_ok=True)
            continue
        idatas[m] = idata
        cards[m]["netcdf"] = name
        cards[m]["diagnostics"] = None
        cards[m]["loo"] = None
    with_draws = [m for m in idatas if aligned[m].samples is not None]
    summaries = {}
    for m in with_draws:
        try:
            summaries[m] = arviz_io.summary(idatas[m])
            cards[m]["diagnostics"] = diagnostics_metrics(summaries[m])
        except Exception as exc:  # noqa: BLE001
            progress(f"    az.summary failed for {m}: {one_line(exc)}")
        try:
            cards[m]["loo"] = arviz_io.loo(idatas[m])
        except Exception as exc:  # noqa: BLE001 - LOO is a diagnostic, never fatal
            progress(f"    az.loo failed for {m}: {one_line(exc)}")
    compare_df = compare_rows = None
    if len(with_draws) >= 2:
        try:
            compare_df = arviz_io.compare({m: idatas[m] for m in with_draws})
            compare_rows = compare_metrics(compare_df)
        except Exception as exc:  # noqa: BLE001
            progress(f"    az.compare failed: {one_line(exc)}")
    return idatas, summaries, compare_df, compare_rows


def _figures(x, z, aligned, truth, reference, reference_label, idatas, column_names, notes, rows_note: str = "") -> list:
    """``[(name, caption, Figure)]`` of the report, in page order. A figure that cannot be drawn is a
    note, never a failed report. Captions say what the labels were aligned to (``reference_label``);
    ``rows_note`` ends the caption of every figure drawn from the rows (a streamed file's subsample)."""
    from analysis import arviz_io, plots

    has_truth = truth is not None
    against = "the truth" if has_truth else f"the {reference_label} (no truth is known)"
    specs = [
        ("data", "The data" + (", coloured by the true component." if z is not None else " (no labels are known)."),
         lambda: plots.plot_data(x, z, column_names=column_names)),
        ("components", ("Every engine's components (aligned) against the truth (dashed black): 1σ and 2σ ellipses, × means."
                        if has_truth else f"Every engine's components, labels aligned to {against}: 1σ and 2σ ellipses, × means."),
         lambda: plots.plot_components(x, aligned, truth, column_names=column_names, reference_label=reference_label)),
        ("assignments", f"Points coloured by their assigned cluster, one panel per engine; labels aligned to {against}.",
         lambda: plots.plot_assignments(x, aligned, truth, column_names=column_names, reference_label=reference_label)),
        ("traces", "Log-likelihood and ELBO per iteration (EM, hard EM), the EM KL gap, the MAP/SVI loss.",
         lambda: plots.plot_traces(aligned)),
    ]
    em = aligned.get("em")
    if em is not None and em.info.get("snapshots") is not None and em.info.get("snapshot_iters") is not None:
        specs.append(("em_snapshots", "EM's estimate at a few iterations (the seed notebook's per-iteration plots, in one "
                      "strip)" + (", truth dashed black." if has_truth else f"; colours aligned to {against}."),
                      lambda: plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth, reference,
                                                      column_names=column_names)))
    specs.append(("forest", f"Every engine side by side, labels aligned to {against}: one panel per parameter kind and "
                  "column, each on its own scale (weights; mean and sd of each column in the data's units; correlations "
                  "unitless); 90% HDI from ArviZ (lines) for engines with draws, dots for means and point estimates, "
                  f"the {reference_label} as thin black ticks behind them.",
                  lambda: arviz_io.plot_forest(idatas, reference, reference_label, column_names)))
    if "nuts" in idatas:
        specs.append(("nuts_trace", f"Trace of the NUTS draws after relabelling (labels aligned to {against}): every "
                      "parameter kind, colour = component, line style = chain.",
                      lambda: arviz_io.plot_trace(idatas["nuts"], column_names)))
    specs += _predictive_specs(idatas, column_names)
    from_rows = {"data", "components", "assignments", "em_snapshots"}
    specs = [(name, caption + (rows_note if name in from_rows or name.startswith("ppc_") else ""), draw)
             for name, caption, draw in specs]
    figures = []
    for name, caption, draw in specs:
        try:
            fig = draw()
        except Exception as exc:  # noqa: BLE001 - a figure is never worth the report
            notes.append(f"figure {name!r} could not be drawn: {one_line(exc)}")
            continue
        if fig is not None:
            figures.append((name, caption, fig))
    return figures


def _predictive_specs(idatas: dict, column_names) -> list:
    """The predictive-check figures: ArviZ's PPC plot per engine, the prior predictive of the NumPyro
    engines' prior (one figure: map, svi and nuts share the data-unit prior)."""
    from analysis import arviz_io

    named = f" (columns: {', '.join(map(str, column_names))})" if column_names is not None else ""
    specs = []
    for m, idata in idatas.items():
        if "posterior_predictive" in arviz_io.group_names(idata):
            specs.append((f"ppc_{m}", f"Posterior predictive check of {_label(m)}: density of each column{named}, observed "
                          "(black) against data sets replicated from the fit (one per thinned posterior draw, or replicates "
                          "of the point estimate).",
                          lambda idata=idata, m=m: arviz_io.plot_ppc(idata, title=f"{_label(m)}: posterior predictive")))
    bayes = [m for m in ("nuts", "svi", "map") if m in idatas and "prior_predictive" in arviz_io.group_names(idatas[m])]
    if bayes:
        specs.append(("prior_predictive", f"Prior predictive check: data sets drawn from the prior the NumPyro engines used "
                      f"(in the data's units), against the observed data{named}.",
                      lambda: arviz_io.plot_ppc(idatas[bayes[0]], group="prior_predictive", title="prior predictive")))
    return specs


def _write_figures(fig_dir: Path, figures) -> dict:
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


if __name__ == "__main__":  # python -m analysis.report
    sys.exit(main())
