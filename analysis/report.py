"""The report's pipeline: one job, engines -> align -> score -> ArviZ -> figures -> page.

    metrics = run_report(args)      # args from analysis.cli.build_parser(); the command is analysis.cli

Writes into ``args.out`` (atomically: everything goes to a temporary sibling directory that is
renamed at the end, so an interrupted run leaves no half report):

    report.html       self-contained (figures embedded as base64 PNG), opens without a server
    metrics.json      the scorecard, schema in ``analysis.metrics.METRICS_SCHEMA``
    assignments.csv   each row's aligned cluster, max responsibility and uncertainty per engine (``analysis.assignments``)
    imputed.csv       data with holes: every engine's imputations of the missing cells (``analysis.missing_report``)
    manifest.json     seed, argv, package versions, sha256 of the data
    <method>.nc       one ArviZ InferenceData per engine (NetCDF, layout in ``analysis.arviz_io``)
    figures/*.png     the figures of the HTML as files

The pipeline carries two objects: the :class:`analysis.problem.Problem` (the data source -- simulated, in
memory or streamed from disk --, the truth or none, K, the seed, the columns' names) and a :class:`Run`
(the engines planned, their results and failures, the aligned fits and scorecards, the InferenceData,
figures and notes). Each stage is a function of the two with one job, in this order: :func:`fit_engines`,
:func:`align_and_score`, the figures of the fits (:func:`analysis.report_figures.start_figures`: rendered in worker
processes while the next stages run), :func:`predictive_checks`, :func:`build_inference_data`, the other figures
(:mod:`analysis.report_figures`) and :func:`write_outputs`. What differs between data sources (a streamed
file's subsample, its extra pass for full-data scores) is the source's own method, not a branch here.

User errors (bad data, K > rows, a misspelt engine option, every engine failing, a non-empty ``--out``
without ``--force``) raise :class:`~analysis.errors.ReportError`; :mod:`analysis.cli` turns them into one
line and exit 2. One engine's failure is not one: it is recorded in ``metrics["failed"]``, shown at the
top of the page, and the command exits 3 (``analysis.cli.EXIT_PARTIAL``).

Imports: numpy and the light analysis modules at module level (no JAX: the command line sets XLA flags
first); JAX, matplotlib, ``models``, ``inference`` and the stages that import them inside the pipeline.
This module never imports the command line: :mod:`analysis.cli` parses and calls :func:`run_report`.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from analysis.budget import plan_report
from analysis.engine_options import ALL_METHODS, parse_methods, report_engine_options
from analysis.errors import PROG, ReportError, one_line
from analysis.files import atomic_output_dir, dumps_json, write_atomically
from analysis.manifest import build_manifest
from analysis.model_choice import choose_for_report, fitted_text, selection_metrics
from analysis.metrics import (alignment_metrics, build_metrics, compare_metrics, diagnostics_metrics, engine_notes,
                              problem_metrics, timings_metrics)
from analysis.missing_report import IMPUTED_FILE, impute_stage, imputed_csv, missing_metrics
from analysis.problem import Problem, load_problem
from analysis.progress import Progress
from analysis.report_page import report_page

__all__ = ["run_report", "Run", "fit_engines", "align_and_score", "predictive_checks", "build_inference_data",
           "write_outputs"]


@dataclasses.dataclass
class Run:
    """What the report does with a Problem, filled stage by stage.

    ``methods`` / ``options``: the engines planned (``analysis.budget``) and their options; ``failed``:
    ``{method: one-line reason}`` (engines skipped before fitting first); ``results``: ``{method: FitResult}``
    as the problem's rows see them; ``aligned`` / ``cards``: aligned fits and their scorecards; ``reference``
    / ``reference_name``: what the labels were aligned to; ``predictive``: replicated draws per engine;
    ``idatas`` / ``summaries`` / ``compare_df`` / ``compare_rows``: the ArviZ stage's; ``figures``:
    ``[(name, caption)]`` of the figures drawn; ``notes``: lines for metrics.json and the page; ``responsibilities``: ``{method:
    (N, K)}`` of the aligned point estimates (``analysis.assignments``: assignments.csv, the NetCDF files' group);
    ``model_choice``: how K was chosen without ``--num-components`` (``analysis.model_choice``), or None;
    ``imputations``: ``{method: (rows, columns, mean, lower, upper)}`` of the missing cells (``analysis.missing_report``);
    ``writes``: ``{method: PendingCall}`` of the NetCDF files being written (:func:`finish_writes`)."""

    methods: list
    options: dict
    progress: Progress
    argv: list = dataclasses.field(default_factory=list)
    t_start: float = dataclasses.field(default_factory=time.perf_counter)
    out_dir: Path | None = None
    failed: dict = dataclasses.field(default_factory=dict)
    results: dict = dataclasses.field(default_factory=dict)
    aligned: dict = dataclasses.field(default_factory=dict)
    cards: dict = dataclasses.field(default_factory=dict)
    reference: object = None
    reference_name: str = "truth"
    predictive: dict = dataclasses.field(default_factory=dict)
    idatas: dict = dataclasses.field(default_factory=dict)
    summaries: dict = dataclasses.field(default_factory=dict)
    compare_df: object = None
    compare_rows: list | None = None
    figures: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    responsibilities: dict = dataclasses.field(default_factory=dict)
    model_choice: object = None
    imputations: dict = dataclasses.field(default_factory=dict)
    writes: dict = dataclasses.field(default_factory=dict)

    @property
    def reference_label(self) -> str:
        """How figures name the reference: "truth", or e.g. "EM estimate"."""
        if self.reference_name == "truth":
            return "truth"
        from analysis.plots import engine_label

        return f"{engine_label(self.reference_name)} estimate"

    def every_engine_failed(self) -> ReportError:
        return ReportError("every engine failed: " + "; ".join(f"{m}: {e}" for m, e in self.failed.items()))


def run_report(args, argv=None, *, freeze_gc: bool = False) -> dict:
    """Run the whole report for parsed ``args``; returns the metrics dict. Raises ReportError.

    An engine that fails (any exception while fitting, scoring or building its InferenceData) is
    recorded in ``metrics["failed"]`` with a one-line reason and the report goes on with the others;
    only when every engine fails is it a ReportError. Misspelt engine options are refused before any work.
    ``freeze_gc`` (the command's own process, ``analysis.cli``; never a caller's): once the report's modules are
    imported, ``gc.freeze()`` moves every object then alive out of the cyclic collector's reach, so that its full
    collections stop walking JAX's, ArviZ's and matplotlib's module objects: the warm default report's 7 full
    collections took 0.75-0.88 s, after the freeze 0.26-0.30 s (README, "Latency").
    """
    t_start = time.perf_counter()
    progress = Progress(not args.quiet, PROG)
    methods = parse_methods(args.methods)
    options = report_engine_options(methods, args.quiet, args.num_draws, args.option)
    if args.num_components is not None and args.num_components < 1:
        raise ReportError(f"--num-components must be >= 1, got {args.num_components}")
    _check_option_names(options)
    problem = load_problem(args, progress)  # bad input is refused before the output directory is touched
    # user data without -k: K and EM's covariance type chosen by BIC on the rows (analysis.model_choice)
    choice = choose_for_report(args, problem, options, progress)
    # identifiable from these rows, and affordable? (skips engines or refuses with the fix named; analysis.budget)
    plan = plan_report(args, methods, options, problem.data, problem.num_components, progress)
    run = Run(plan.methods, plan.options, progress, list(argv) if argv is not None else sys.argv[1:], t_start,
              failed=dict(plan.skipped), notes=list(plan.notes), model_choice=choice)
    # the model's samplers (the simulated data, the predictive checks) through the executable store: a warm run
    # neither traces nor compiles them (inference.executable_store; a plain call where the store is off)
    from inference.executable_store import prefetch_recent, remember_recent, stored_call
    from models.predictive import programs_called_by

    prefetch_recent()  # the last run's stored programs deserialised on a background thread meanwhile
    with programs_called_by(stored_call):
        if choice is None:
            problem.data.prepare(problem.seed, progress)  # after the cheap refusals: sample, or one pass over the file
        else:
            run.notes.insert(0, f"K = {choice.k} chosen by BIC over K = 1..{choice.max_k} and four covariance types "
                                f"(--num-components not given): {fitted_text(choice, run.methods)}")
        with atomic_output_dir(args.out, args.force) as tmp:
            run.out_dir = tmp
            metrics = _run_stages(problem, run, freeze_gc)
    remember_recent()  # what to prefetch next time
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


def _run_stages(problem: Problem, run: Run, freeze_gc: bool = False) -> dict:
    """Every stage into ``run.out_dir``. Library warnings raised meanwhile are caught and become notes
    (metrics.json and the page), not stderr lines."""
    import warnings

    import matplotlib

    matplotlib.use("Agg", force=True)
    from analysis import render_pool
    from analysis.report_figures import draw_figures, start_figures

    if freeze_gc:  # every module the stages need is imported: see run_report
        import gc

        gc.freeze()

    render_pool.start()  # the figures' render workers import matplotlib while the engines fit
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit_engines(problem, run)
        align_and_score(problem, run)
        impute_stage(problem, run)
        started = start_figures(problem, run, run.out_dir / "figures")  # rendered while the ArviZ stages run
        predictive_checks(problem, run)
        build_inference_data(problem, run)
        run.figures, fig_html = draw_figures(problem, run, run.out_dir / "figures", started)
        finish_writes(run)
        run.progress("writing assignments.csv and manifest.json")
        metrics = write_outputs(problem, run)
    metrics["notes"] = run.notes + [n for n in _warning_notes(caught) if n not in run.notes]
    run.progress("writing metrics.json and report.html")
    write_atomically(run.out_dir / "metrics.json", dumps_json(metrics))
    write_atomically(run.out_dir / "report.html",
                     report_page(metrics, run.summaries, run.compare_df, fig_html, problem.column_names))
    return metrics


def fit_engines(problem: Problem, run: Run) -> None:
    """Fit every planned engine on the problem's data (``data.fit_input()``): ``run.results`` as the rows see
    them (``data.view``), ``run.failed`` with one-line reasons.

    Any exception of an engine (Ctrl-C aside) marks that engine as failed and the report goes on; when every
    engine fails it is a ReportError with their reasons. SVI and NUTS start from this report's MAP point when
    MAP ran first.
    """
    from inference import fit
    from inference.random_keys import seed_key

    k, progress = problem.num_components, run.progress
    n, d = problem.data.shape
    for i, method in enumerate(run.methods):
        progress(f"[{i + 1}/{len(run.methods)}] fitting {method} (K={k}, N={n}, D={d}{problem.data.fit_note})")
        key = seed_key(problem.seed, 1 + ALL_METHODS.index(method))  # fold_in(PRNGKey(seed), ...) as one stored program
        engine_options = dict(run.options[method])
        choice = run.model_choice
        if method == "em" and choice is not None and choice.params is not None and "init" not in engine_options \
                and engine_options.get("n_init", 1) == 1 and engine_options.get("covariance_type") == choice.covariance_type:
            engine_options["init"] = choice.params  # the fit the selection chose (analysis.model_choice)
        if method in ("svi", "nuts") and "init" not in engine_options and "map" in run.results:
            # start from the MAP point this report already has (the engines would otherwise re-run MAP)
            engine_options["init"] = run.results["map"].params
        try:
            r = fit(method, key, problem.data.fit_input(), k, **engine_options)
        except Exception as exc:  # noqa: BLE001 - one engine's failure never sinks the report
            run.failed[method] = one_line(exc)
            progress(f"    {method} failed: {run.failed[method]}")
            continue
        comp = r.info.get("compile_seconds")
        split = f" (compile {comp:.1f}s, run {r.info.get('run_seconds', float('nan')):.1f}s)" if comp is not None else ""
        progress(f"    {method}: {r.seconds:.1f}s{split}, {r.num_iters} iterations, converged={r.converged}")
        run.results[method] = _with_responsibilities(problem.data.view(r), problem.x)
    if not run.results:
        raise run.every_engine_failed()
    run.notes += problem.data.notes(run.results)


def _with_responsibilities(result, x):
    """EM reads an in-memory array of >= 256 MiB in place and leaves the (N, K) responsibilities to the caller
    (``inference.em.HOST_STREAM_BYTES``); the report's figures and scores need them for its rows."""
    if np.shape(result.responsibilities)[0] == x.shape[0]:
        return result
    from models.density import responsibilities

    return dataclasses.replace(result, responsibilities=np.asarray(responsibilities(result.params, x)))


def align_and_score(problem: Problem, run: Run) -> None:
    """Align every engine to the truth (or to the reference engine's estimate: EM when it ran) and score it
    (``run.aligned``, ``run.cards``; full-data scores from the data source where the rows are a subsample);
    an engine whose alignment or scoring raises joins ``run.failed``."""
    from analysis.align import align_result
    from analysis.assignments import point_responsibilities, uncertainty_summary
    from analysis.score import scorecard
    from models.params import to_numpy

    if problem.truth is not None:
        run.reference, run.reference_name = problem.truth, "truth"
    else:
        run.reference_name = "em" if "em" in run.results else next(iter(run.results))
        run.reference = to_numpy(run.results[run.reference_name].params)
    for m, r in run.results.items():
        draws = "" if r.samples is None else f" ({int(np.prod(np.shape(r.samples.weights)[:2])):,} draws relabelled)"
        run.progress(f"aligning labels and scoring {m}{draws}")
        try:
            a = align_result(r, run.reference)
            run.cards[m] = {**scorecard(a, problem.x, problem.truth, problem.labels), **engine_notes(a.info)}
            run.aligned[m] = a
            for w in a.info.get("warnings") or []:  # after the alignment: components in the report's labels
                run.progress(f"    {m} warning: {w}")
        except Exception as exc:  # noqa: BLE001
            run.failed[m] = "scoring: " + one_line(exc)
            run.progress(f"    {m} failed: {run.failed[m]}")
    if not run.aligned:
        raise run.every_engine_failed()
    run.reference = to_numpy(run.reference)
    run.progress(f"responsibilities and classification uncertainty of each row ({', '.join(run.aligned)})")
    run.responsibilities = point_responsibilities(run.aligned, problem.x)
    for m, resp in run.responsibilities.items():
        run.cards[m]["uncertainty"] = uncertainty_summary(resp)
    problem.data.score_all_rows(run.aligned, run.cards, problem.num_components, run.progress)


def predictive_checks(problem: Problem, run: Run) -> None:
    """Replicated data per engine and its prior predictive (``analysis.predictive.predictive_checks``) into
    ``run.predictive``, ``ppc_p_values`` into the cards. A failure is a note: the checks never sink the report."""
    from analysis.predictive import predictive_checks as draw_checks

    for card in run.cards.values():
        card["ppc_p_values"] = None
    try:
        draws, p_values = draw_checks(problem.seed, run.aligned, problem.x, run.progress)
    except Exception as exc:  # noqa: BLE001
        run.notes.append(f"predictive checks could not be computed: {one_line(exc)}")
        return
    for m, values in p_values.items():
        run.cards[m]["ppc_p_values"] = values
    run.predictive = draws


def build_inference_data(problem: Problem, run: Run) -> None:
    """InferenceData per engine (saved as ``<method>.nc``), az.summary / az.loo of the engines with draws and
    az.compare of them; adds ``netcdf``, ``diagnostics`` and ``loo`` to the cards.

    An engine whose InferenceData cannot be built joins ``run.failed`` and leaves ``run.aligned``; summary,
    LOO and compare are diagnostics: their failures are progress lines, never fatal.
    """
    from analysis import arviz_io
    from analysis.netcdf_file import write_groups_caught
    from analysis.render_pool import render_workers, submit_call

    progress, cards, pending_loo = run.progress, run.cards, {}
    for m, r in run.aligned.items():
        name = f"{m}.nc"
        progress(f"InferenceData of {m}, writing {name}")
        try:
            idata = arviz_io.to_inference_data(r, problem.x, problem.column_names)
            if run.predictive.get(m):
                arviz_io.add_groups(idata, arviz_io.predictive_groups(**run.predictive[m], column_names=problem.column_names))
            arviz_io.add_groups(idata, arviz_io.assignment_groups(run.responsibilities[m], problem.data.row_index()))
            # written by a render worker while the report goes on (here when none runs); waited for by finish_writes
            run.writes[m] = submit_call(write_groups_caught, run.out_dir / name, *arviz_io.netcdf_groups(idata))
        except Exception as exc:  # noqa: BLE001
            run.failed[m] = "InferenceData: " + one_line(exc)
            progress(f"    {m} failed: {run.failed[m]}")
            (run.out_dir / name).unlink(missing_ok=True)
            continue
        run.idatas[m] = idata
        cards[m].update(netcdf=name, diagnostics=None, loo=None, sampler=None)
        if r.samples is not None:  # its LOO starts now, in a worker when large (arviz_io.loo_pool), while the rest goes on
            pending_loo[m] = arviz_io.submit_loo(idata, workers=render_workers() > 0)
            run.idatas[m] = arviz_io.drop_loo_draws(idata)  # the worker has its own copy: the extra draws go
    with_draws = [m for m in run.idatas if run.aligned[m].samples is not None]
    loo_results = {}
    for m in with_draws:
        progress(f"az.summary and LOO of {m}" + (" (LOO computed in a worker process)" if pending_loo[m].in_worker else ""))
        try:
            run.summaries[m] = arviz_io.summary(run.idatas[m])
            if m != "svi":  # SVI's draws are independent draws of its guide: R-hat / ESS would measure the RNG
                cards[m]["diagnostics"] = diagnostics_metrics(run.summaries[m])
            cards[m]["sampler"] = arviz_io.sampler_stats(
                run.idatas[m], (run.aligned[m].info.get("options") or {}).get("max_tree_depth"))
        except Exception as exc:  # noqa: BLE001
            progress(f"    az.summary failed for {m}: {one_line(exc)}")
        try:
            loo_results[m] = pending_loo[m].result()
            cards[m]["loo"] = arviz_io.loo(run.idatas[m], loo_results[m])
        except Exception as exc:  # noqa: BLE001 - LOO is a diagnostic, never fatal
            progress(f"    az.loo failed for {m}: {one_line(exc)}")
    if len(with_draws) >= 2:
        progress(f"az.compare of {', '.join(with_draws)}")
        try:
            run.compare_df = arviz_io.compare({m: run.idatas[m] for m in with_draws}, loo_results)
            run.compare_rows = compare_metrics(run.compare_df)
        except Exception as exc:  # noqa: BLE001
            progress(f"    az.compare failed: {one_line(exc)}")
    for m in [m for m in run.aligned if m not in run.idatas]:
        run.aligned.pop(m)
        cards.pop(m)
    if not run.aligned:
        raise run.every_engine_failed()


def finish_writes(run: Run) -> None:
    """Wait for the engines' NetCDF files (:func:`build_inference_data` started them in the render workers) and raise
    the warnings caught while writing them here, where the report records them. A file that could not be written is
    removed, its card's ``netcdf`` set to None and a note says why."""
    import warnings

    for m, pending in run.writes.items():
        try:
            for message, category, filename, lineno in pending.result():
                warnings.warn_explicit(message, category, filename, lineno)
        except Exception as exc:  # noqa: BLE001 - the fit and its figures stand; the file is missing, and said so
            (run.out_dir / f"{m}.nc").unlink(missing_ok=True)
            if m in run.cards:
                run.cards[m]["netcdf"] = None
            run.notes.append(f"{m}.nc could not be written: {one_line(exc)}")
            run.progress(f"    {m}.nc could not be written: {one_line(exc)}")
    run.writes.clear()


def write_outputs(problem: Problem, run: Run) -> dict:
    """``manifest.json`` into ``run.out_dir``; returns the metrics dict (``metrics.json`` and the page are
    written after the warnings of the run are collected)."""
    import jax

    import models
    from analysis.assignments import ASSIGNMENTS_FILE, assignments_csv

    data, x, truth = problem.data, problem.x, problem.truth
    metrics = build_metrics(
        problem=problem_metrics(source=data.kind, data_file=data.data_file, x=x, num_components=problem.num_components,
                                seed=problem.seed, truth=truth,
                                truth_covariances=None if truth is None else models.covariances(truth),
                                log_likelihood_truth=None if truth is None else models.log_likelihood(truth, x),
                                columns=problem.column_names, shape=data.shape,
                                stream=data.problem_fields(problem.stream_mode),
                                missing=missing_metrics(x, problem.column_names, *data.dropped_rows(),
                                                        imputed=bool(run.imputations))),
        model_selection=selection_metrics(run.model_choice, run.methods),
        alignment=alignment_metrics(run.reference_name, _rhat_method()),
        engines=run.cards,
        compare=run.compare_rows,
        failed=run.failed,
        timings=timings_metrics({m: run.results[m] for m in run.aligned}, time.perf_counter() - run.t_start),
        notes=run.notes,
    )
    write_atomically(run.out_dir / ASSIGNMENTS_FILE,
                     assignments_csv({m: run.responsibilities[m] for m in run.aligned}, data.row_index()))
    imputed = {m: v for m, v in run.imputations.items() if m in run.aligned}
    if imputed:
        write_atomically(run.out_dir / IMPUTED_FILE, imputed_csv(imputed, data.row_index(), problem.column_names))
    files = (["report.html", "metrics.json", "manifest.json", ASSIGNMENTS_FILE] + ([IMPUTED_FILE] if imputed else [])
             + [f"{m}.nc" for m in run.idatas]
             + [f"figures/{n}.png" for n, _ in run.figures])
    manifest = build_manifest(tool=PROG, argv=run.argv, seed=problem.seed, methods=run.methods,
                              engine_options=run.options, source=data.kind, data_file=data.data_file, x=x,
                              column_names=problem.column_names, jax_backend=jax.default_backend(), files=files,
                              shape=data.shape, streamed=data.manifest_streamed())
    write_atomically(run.out_dir / "manifest.json", dumps_json(manifest))
    return metrics


def _rhat_method() -> str:
    from analysis.align import RHAT_METHOD

    return RHAT_METHOD
