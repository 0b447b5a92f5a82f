"""The ``gmm-report`` command line: one job, from argv to an exit code.

    gmm-report [--data FILE] [--stream auto|always|never] [--num-components K] [--methods em,...] [--seed S]
               [--num-samples N] [--num-draws M] [--option METHOD.KEY=VALUE ...] [--max-seconds S] [--out DIR] [--force] [--quiet]
    gmm-report sweep {separation,init,samples,components} [--quick] [--repeats R] [...]
    python -m analysis ... / python -m analysis.cli ...      # the same

Both commands' parsers (argparse that raises instead of printing usage), the error guard (a user
error is ONE line on stderr and exit 2, Ctrl-C 130, anything else one line and exit 1), and the
JAX/XLA set-up done before JAX starts (persistent compilation cache, quick compiles for small
simulated problems). The work itself is :func:`analysis.report.run_report` and
:func:`analysis.sweeps.run_sweep`; this module calls them and nothing imports it back (the
``gmm-report`` entry point is ``analysis.cli:main``).

Imports: the standard library, :mod:`analysis.errors` and :mod:`analysis.engine_options` at module
level; the report, the sweeps and :mod:`analysis.files` only inside the commands, after the XLA
flags are set (importing them would start JAX too early).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from analysis.engine_options import ALL_METHODS
from analysis.errors import PROG, ReportError

__all__ = [
    "main",
    "sweep_main",
    "build_parser",
    "build_sweep_parser",
    "add_common_options",
    "run_guarded",
    "error_exit",
    "enable_compilation_cache",
    "prefer_fast_compile",
    "fast_compile_flags",
    "SUBCOMMANDS",
    "EXIT_PARTIAL",
]

DEFAULT_OUT = "gmm-report"
DEFAULT_SWEEP_OUT = "gmm-sweep"
DEFAULT_SEED = 0
DEFAULT_NUM_SAMPLES = 500
# Exit codes of gmm-report: 0 every engine ran; EXIT_PARTIAL the report was written but some engine failed
# (metrics.json "failed"); 2 a user error, nothing written; 1 an unexpected error; 130 interrupted.
EXIT_PARTIAL = 3

# --------------------------------------------------------------------------- parsers


class Parser(argparse.ArgumentParser):
    """argparse that raises ReportError (one line, exit 2) instead of printing usage."""

    def error(self, message):
        raise ReportError(message)


def add_common_options(parser: argparse.ArgumentParser, default_out: str = DEFAULT_OUT) -> None:
    """--out, --force, --quiet, --seed: shared by the report and its subcommands."""
    parser.add_argument("--out", default=default_out, metavar="DIR", help=f"output directory (default: ./{default_out}/)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``gmm-report`` (the report)."""
    p = Parser(
        prog=PROG,
        description="Fit a Gaussian mixture with EM, hard EM, MAP, SVI and NUTS, align the labels, "
        "score the recovery and write an HTML report with ArviZ diagnostics.",
        epilog="Subcommands: sweep (gmm-report <subcommand> --help).",
    )
    p.add_argument("--data", metavar="FILE", help="CSV with a header row, or .npy (N, D); missing values (empty cells, NA, NaN) are "
                   "marginalised, rows with none observed dropped; default: simulate the seed problem")
    p.add_argument("--stream", choices=("auto", "always", "never"), default="auto",
                   help="read a .npy --data from disk in passes instead of loading it: em and hard_em in passes, svi by "
                   "minibatches, map and nuts skipped; figures "
                   "and checks on a row subsample (default auto: a .npy above 64 MiB, analysis.streamed.STREAM_THRESHOLD_BYTES)")
    p.add_argument("--num-components", "-k", type=int, default=None, metavar="K",
                   help="number of components (default: with --data, chosen by BIC over K = 1..--max-k and the four "
                   "covariance types, as mclust does; the seed problem has 2)")
    p.add_argument("--max-k", type=int, default=None, metavar="K",
                   help="largest K tried when --num-components is not given with --data (default 9)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma-separated engines (default {','.join(ALL_METHODS)})")
    p.add_argument("--num-samples", "-n", type=int, default=DEFAULT_NUM_SAMPLES, metavar="N",
                   help=f"rows simulated from the seed problem (default {DEFAULT_NUM_SAMPLES}; ignored with --data)")
    p.add_argument("--num-draws", type=int, default=None, metavar="S",
                   help="posterior draws per chain for NUTS and SVI (default: the engines' own defaults)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="engine option passed to inference.fit, e.g. nuts.num_warmup=200 (repeatable)")
    p.add_argument("--max-seconds", type=float, default=None, metavar="S",
                   help="budget for all engines together, checked against a rough cost estimate before fitting: "
                   "the most expensive engines are skipped (stated) until the estimate fits "
                   "(default 600 with --data, none for the seed problem; 0 or inf: no budget)")
    add_common_options(p)
    return p


def build_sweep_parser() -> argparse.ArgumentParser:
    """The parser of ``gmm-report sweep`` (imports :mod:`analysis.sweeps`, which starts JAX)."""
    from analysis.sweeps import AXES

    p = Parser(prog="gmm-report sweep", description="Run one of the seed notebook's four questions (or the calibration check) as an experiment: "
               "tables (CSV, JSON), figures (PNG) and an HTML page in --out.")
    p.add_argument("axis", choices=AXES, help="what to vary")
    p.add_argument("--quick", action="store_true", help="small grids, few repeats, cheap engines (a preview)")
    p.add_argument("--repeats", type=int, default=None, help="repetitions per condition (init: number of seeds)")
    p.add_argument("--methods", default=None, help="comma-separated engines (default depends on the axis)")
    p.add_argument("--num-samples", "-n", default=None, metavar="N",
                   help="rows per data set (samples axis: comma-separated list of n)")
    p.add_argument("--data", metavar="FILE", help="components axis: CSV with a header row or .npy, no truth needed")
    p.add_argument("--ks", default=None, help="components axis: K to try, e.g. 1-8 or 1,2,3 (default 1-8; quick 1-5)")
    add_common_options(p, default_out=DEFAULT_SWEEP_OUT)
    return p


# --------------------------------------------------------------------------- the error guard


def error_exit(message: str, code: int = 2) -> int:
    """Print ``gmm-report: error: <message>`` (one line) on stderr and return ``code``."""
    first = " ".join(str(message).split())
    print(f"{PROG}: error: {first}", file=sys.stderr)
    return code


def run_guarded(action) -> int:
    """Run ``action()`` for a command: 0 on success; a user error (ReportError, ValueError) is one line
    on stderr and exit 2, Ctrl-C (a KeyboardInterrupt, in process) ``gmm-report: interrupted; nothing
    written`` and exit 130, anything else one line and exit 1 (never a traceback; ``GMM_REPORT_DEBUG=1``
    re-raises). The command itself runs in a child process (:mod:`analysis.interrupt`), whose parent
    prints the same line when it stops the child."""
    from analysis.interrupt import INTERRUPTED_MESSAGE

    try:
        action()
    except (ReportError, ValueError) as exc:
        return error_exit(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: {INTERRUPTED_MESSAGE}", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("GMM_REPORT_DEBUG"):
            raise
        return error_exit(f"{type(exc).__name__}: {exc}", 1)
    return 0


def _parse(parser: argparse.ArgumentParser, argv):
    """``(args, None)``, or ``(None, exit code)`` for a parse error (one line) or --help."""
    try:
        return parser.parse_args(argv), None
    except ReportError as exc:
        return None, error_exit(str(exc))
    except SystemExit as exc:  # --help / --version
        return None, int(exc.code or 0)


# --------------------------------------------------------------------------- JAX / XLA set-up


def compilation_cache_dir() -> str | None:
    """The persistent compilation cache directory of the commands (no JAX import), or None when
    ``GMM_REFERENCE_CACHE`` turns it off: ``$GMM_REFERENCE_CACHE``, default ``~/.cache/gmm-reference/jax``."""
    where = os.environ.get("GMM_REFERENCE_CACHE", str(Path.home() / ".cache" / "gmm-reference" / "jax"))
    return None if where.lower() in ("", "0", "off", "none", "false") else where


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for the command-line tools.

    A report is dominated by XLA compile time (the fits themselves take milliseconds at N = 500), so a
    second run with the same shapes reuses the compiled programs from disk. The cache lives in
    ``$GMM_REFERENCE_CACHE`` (default ``~/.cache/gmm-reference/jax``); ``GMM_REFERENCE_CACHE=off``
    disables it. Returns the directory used, or None.

    Every program is kept, however quick its compile (JAX keeps only those over 1 s by default): the warm default
    report compiles ~130 small programs (eager ``jnp`` calls: one per primitive and shape, ~20 ms each at
    optimisation level 0), which cost ~3 s of a 23-26 s warm report when compiled again in every process.
    """
    where = compilation_cache_dir()
    if where is None:
        return None
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where


FAST_COMPILE_MAX_VALUES = 20_000
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"
# XLA's CPU fusion emitters (MLIR) compile the NumPyro engines' loops ~2x slower than the older emitters: off in
# jaxlib 0.10: the default report's cold compiles of MAP / SVI / NUTS 12.4 / 13.9 / 8.2 s -> 9.4 / 9.2 / 4.4 s. jaxlib
# 0.12 has no such flag, and XLA ends the process on an unknown flag: only jaxlib 0.10.x gets it (tested 0.10.2).
NO_FUSION_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters=false"
NO_FUSION_EMITTERS_JAXLIB = (0, 10)


def fast_compile_flags() -> str:
    """The ``XLA_FLAGS`` of :func:`prefer_fast_compile`: optimisation level 0, and the older CPU emitters where the
    installed jaxlib has the switch (``NO_FUSION_EMITTERS_JAXLIB``, read from its metadata: JAX not started)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = tuple(int(part) for part in version("jaxlib").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        release = None
    return FAST_COMPILE_FLAG + (f" {NO_FUSION_EMITTERS_FLAG}" if release == NO_FUSION_EMITTERS_JAXLIB else "")


def prefer_fast_compile(num_values: int) -> bool:
    """For a small simulated problem, ask XLA for quick compiles (``XLA_FLAGS``: :func:`fast_compile_flags`).

    At N = 500 every engine spends > 90% of its time compiling; skipping LLVM's backend optimisation
    saves ~6 s of the default report, the older emitters ~17 s more (jaxlib 0.10), and both cost only run time,
    which is milliseconds there. Applied only when ``num_values`` (N x D) <= ``FAST_COMPILE_MAX_VALUES``, the user
    has not set ``XLA_FLAGS``, and JAX has not started yet. Returns whether the flags were set.
    """
    if num_values > FAST_COMPILE_MAX_VALUES or "XLA_FLAGS" in os.environ or "jax" in sys.modules:
        return False
    os.environ["XLA_FLAGS"] = fast_compile_flags()
    return True


def use_every_core() -> bool:
    """Split the CPU into one XLA host device per core (``--xla_force_host_platform_device_count``) so
    that EM shards its rows over every core; only when JAX has not started and ``XLA_FLAGS`` is unset
    or holds only this module's own fast-compile flag. Returns whether the flag was added."""
    flags = os.environ.get("XLA_FLAGS")
    if "jax" in sys.modules or (flags is not None and flags != fast_compile_flags()):
        return False
    count = os.cpu_count() or 1
    os.environ["XLA_FLAGS"] = f"{flags or ''} --xla_force_host_platform_device_count={count}".strip()
    return True


# --------------------------------------------------------------------------- gmm-report


# the command's own process (``main(own_process=True)``): Python's default is (700, 10, 10). Measured on the warm default
# report with the freeze of ``run_report(freeze_gc=True)``: collections 0.50 -> 0.24 s, no full collection left, the
# same peak memory (README, "Latency")
GC_THRESHOLDS = (10_000, 10, 10)


def main(argv=None, *, own_process: bool = False) -> int:
    """Entry point of ``gmm-report``; returns the exit code (0 ok, 3 = ``EXIT_PARTIAL`` a report written
    with some engine failed, 2 user error, 1 failure, 130 interrupted).

    ``gmm-report <subcommand> ...`` runs ``SUBCOMMANDS[subcommand](argv)``; otherwise the report.
    With ``argv`` None (the command: ``gmm-report``, ``python -m analysis``) the work runs in a child
    process that Ctrl-C stops at once (:mod:`analysis.interrupt`); with a list (tests, notebooks), or
    with ``GMM_REPORT_IN_PROCESS=1``, in this process. ``own_process`` (the command's child, or ``argv`` None):
    the process is the report's alone, so its garbage collector may be tuned (``run_report(freeze_gc=True)``);
    never for a caller's process.
    """
    own_process = own_process or argv is None
    if own_process:  # the report allocates millions of short-lived objects: collect the young ones 14x less often
        import gc

        gc.set_threshold(*GC_THRESHOLDS)
    if argv is None:
        from analysis.interrupt import run_supervised, supervision_wanted

        argv = sys.argv[1:]
        if supervision_wanted():
            return run_supervised(argv, out=_output_dir_of(argv), cache_dir=compilation_cache_dir(), prog=PROG)
    argv = list(argv)
    subcommand = SUBCOMMANDS.get(argv[0]) if argv else None
    if subcommand is None and not {"-h", "--help"} & set(argv):  # help is printed once, by _parse below
        try:
            early = build_parser().parse_args(argv)
            if early.data is None:
                prefer_fast_compile(early.num_samples * 2)
        except (ReportError, SystemExit):
            pass  # reported below
    use_every_core()
    enable_compilation_cache()
    if subcommand is not None:
        return int(subcommand(argv[1:]) or 0)
    args, code = _parse(build_parser(), argv)
    if args is None:
        return code
    from analysis.report import run_report  # after the XLA flags: the report starts JAX

    done = {}
    code = run_guarded(lambda: done.update(metrics=run_report(args, argv=argv, freeze_gc=own_process)))
    failed = {m: why for m, why in ((done.get("metrics") or {}).get("failed") or {}).items()
              if not str(why).startswith("skipped: ")}  # an engine skipped before fitting (analysis.budget) is no failure
    if code == 0 and failed:
        print(f"{PROG}: warning: partial report: {len(failed)} engine(s) failed ({', '.join(failed)}); "
              f"see 'failed' in metrics.json (exit {EXIT_PARTIAL})", file=sys.stderr)
        return EXIT_PARTIAL
    return code


def _output_dir_of(argv) -> str:
    """The ``--out`` a command line asks for (its default otherwise), read without the full parser
    (the sweep's imports JAX); a malformed line is the child's to report."""
    default = DEFAULT_SWEEP_OUT if list(argv[:1]) == ["sweep"] else DEFAULT_OUT
    p = Parser(add_help=False)
    p.add_argument("--out", default=default)
    try:
        return p.parse_known_args(list(argv))[0].out
    except (ReportError, SystemExit):
        return default


# --------------------------------------------------------------------------- gmm-report sweep


def sweep_main(argv=None) -> int:
    """``gmm-report sweep <axis> ...``: returns 0, or 2 with one line on stderr for a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, code = _parse(build_sweep_parser(), argv)
    if args is None:
        return code
    return run_guarded(lambda: _run_sweep_command(args, argv))


def _run_sweep_command(args, argv) -> None:
    """The sweep command after parsing (errors propagate to :func:`run_guarded`)."""
    from analysis.files import check_output_dir, read_data
    from analysis.missing_report import dropped_text
    from analysis.sweeps import methods_for, run_sweep, write_sweep

    if args.repeats is not None and args.repeats < 1:
        raise ReportError(f"--repeats must be >= 1, got {args.repeats}")
    if (args.data or args.ks) and args.axis != "components":
        raise ReportError("--data and --ks apply to the components axis only")
    ks = _parse_ks(args.ks) if args.ks else None
    num_samples = _parse_num_samples(args.num_samples, args.axis) if args.num_samples else None
    data = names = None
    if args.data:
        table = read_data(args.data)
        data, names = table.x, table.columns
        if table.dropped.size:
            print(f"{PROG}: note: {dropped_text(Path(args.data).name, table.dropped, table.dropped_lines)}",
                  file=sys.stderr, flush=True)
    check_output_dir(args.out, args.force)  # refuse a non-empty (or unwritable) --out before any work
    tables = run_sweep(args.axis, seed=args.seed, out_dir=None, quick=args.quick, repeats=args.repeats,
                       methods=args.methods, num_samples=num_samples, progress=not args.quiet, data=data, ks=ks,
                       column_names=names)
    if data is not None:
        tables["selection"]["data_file"] = str(args.data)
    settings = dict(axis=args.axis, seed=args.seed, quick=args.quick, repeats=args.repeats,
                    methods=methods_for(args.axis, args.methods, args.quick), argv=["sweep", *argv],
                    data_file=args.data)
    write_sweep(args.axis, tables, args.out, settings=settings, force=args.force)
    if not args.quiet:
        print(f"[gmm-report sweep] written to {Path(args.out) / 'sweep.html'}", file=sys.stderr)


def _parse_ks(text: str) -> list[int]:
    """``"1-3,5"`` -> ``[1, 2, 3, 5]``; ReportError unless every K >= 1."""
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise ReportError(f"--ks must look like 1-8 or 1,2,3 with K >= 1, got {text!r}")
    return sorted(set(out))


def _parse_num_samples(text: str, axis: str):
    """``--num-samples`` of a sweep: a list of n for the samples axis, one n for the others."""
    try:
        vals = [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise ReportError(f"--num-samples must be integers, got {text!r}") from None
    if not vals or min(vals) < 2:
        raise ReportError(f"--num-samples must be >= 2, got {text!r}")
    if len(vals) > 1 and axis != "samples":
        raise ReportError("a list of --num-samples applies to the samples axis only")
    return vals if axis == "samples" else vals[0]


# Subcommand name -> function(argv) -> exit code.
SUBCOMMANDS = {"sweep": sweep_main}


if __name__ == "__main__":  # python -m analysis.cli
    sys.exit(main())
