"""``gmm-report``: sample (or load) data, fit every engine, align, score, and write one report.

Usage
-----
    gmm-report                                  # seed problem, N=500, all five engines -> ./gmm-report/
    gmm-report --data points.csv --num-components 3 --out my-report
    gmm-report --methods em,hard_em --num-samples 200 --seed 1 --out /tmp/r --force --quiet
    python -m analysis.report ...               # same thing

Writes into ``--out`` (created atomically: everything goes to a temporary sibling directory that is
renamed at the end, so an interrupted run leaves no half report):

    report.html       self-contained (figures embedded as base64 PNG), opens without a server
    metrics.json      the scorecard, schema in ``METRICS_SCHEMA`` below
    manifest.json     seed, argv, package versions, sha256 of the data
    <method>.nc       one ArviZ InferenceData per engine (NetCDF, layout in ``analysis.arviz_io``)
    figures/*.png     the figures of the HTML as files

Errors (bad CSV, non-numeric column, NaN rows, K > rows, unknown method, ValueError from an engine,
an existing non-empty ``--out`` without ``--force``) print ONE line on stderr and exit with code 2.

Subcommands: ``gmm-report <name> ...`` dispatches to ``SUBCOMMANDS[name]`` (a "module:function"
taking ``argv`` and returning an exit code); with no subcommand the report runs. A sweep module
(issue 5) registers ``"sweep": "analysis.sweep:main"`` and reuses :func:`add_common_options`,
:func:`prepare_output_dir`, :func:`finalize_output_dir`, :func:`write_atomically`,
:func:`render_html`, :func:`figure_html`, :func:`table_html` and :func:`error_exit`.
"""

from __future__ import annotations

import argparse
import ast
import base64
import contextlib
import csv
import datetime as _dt
import hashlib
import html
import importlib
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

__all__ = [
    "main",
    "build_parser",
    "add_common_options",
    "ReportError",
    "load_data",
    "prepare_output_dir",
    "finalize_output_dir",
    "write_atomically",
    "render_html",
    "figure_html",
    "figure_png",
    "table_html",
    "run_report",
    "METRICS_SCHEMA",
    "validate_metrics",
    "SUBCOMMANDS",
    "DEFAULT_ENGINE_OPTIONS",
]

PROG = "gmm-report"
DEFAULT_OUT = "gmm-report"
DEFAULT_SEED = 0
DEFAULT_NUM_SAMPLES = 500
ALL_METHODS = ("em", "hard_em", "map", "svi", "nuts")

# Subcommand name -> "module:function(argv) -> int"; imported on use.
SUBCOMMANDS: dict[str, str] = {"sweep": "analysis.sweep:main"}

# Engine options the report passes by default (overridable with --option METHOD.KEY=VALUE).
# Chosen so that the default report (N=500, all five engines) stays fast on a 2-core CPU.
DEFAULT_ENGINE_OPTIONS: dict[str, dict] = {
    "em": {},
    "hard_em": {},
    "map": {},
    "svi": {},
    "nuts": {},
}

# --------------------------------------------------------------------------- metrics.json schema

METRICS_SCHEMA: dict = {
    "schema_version": "int, 1",
    "problem": {
        "source": '"seed_problem" (simulated from models.seed_problem()) or "file"',
        "data_file": "path given to --data, or null",
        "num_samples": "N, rows of the data",
        "num_features": "D, columns of the data",
        "num_components": "K fitted",
        "seed": "the --seed integer (data and every engine's key derive from it)",
        "truth": "{weights (K,), means (K,D), covariances (K,D,D)} or null for user data",
        "log_likelihood_truth": "total log-likelihood of the data at the truth, or null",
    },
    "alignment": {
        "reference": '"truth" or the name of the engine whose estimate is the reference (user data)',
        "method": "how labels were matched (Hungarian, symmetrised Gaussian KL)",
        "rhat_method": '"rank": ArviZ rank-normalised split R-hat (Vehtari et al. 2021)',
    },
    "engines": {
        "<method>": {
            "method": "engine name",
            "log_likelihood": "total marginal log-likelihood of the data at the (aligned) point estimate",
            "log_likelihood_per_obs": "the same divided by N",
            "log_likelihood_truth": "at the truth, or null",
            "bic": "-2 log L + p log N, p = sklearn's parameter count for the fit's covariance type (full: (K-1) + K D + K D (D+1) / 2)",
            "num_iters": "iterations / optimisation steps / draws per chain",
            "converged": "bool, the engine's stopping rule was met",
            "seconds": "wall time of the fit (compile included)",
            "compile_seconds": "compile time, or null",
            "run_seconds": "run time after compilation, or null",
            "cluster_sizes": "(K,) points assigned to each aligned component",
            "weights": "(K,) aligned point estimate",
            "means": "(K,D) aligned point estimate",
            "covariances": "(K,D,D) aligned point estimate",
            "ari": "adjusted Rand index of the assignments vs the true z, or null",
            "components": "{weight_abs_error, mean_l2_error, cov_frobenius_error, kl_true_to_estimate}: (K,) lists, or null",
            "summary": "{weight_abs_error_max, mean_l2_error_max, cov_frobenius_error_max, kl_true_to_estimate_mean, kl_true_to_estimate_max}, or null",
            "posterior": "engines with draws: {weights|means|covariances: {mean, sd, lower, upper[, truth, covered]}, level, num_draws[, coverage]}, else null",
            "num_divergences": "NUTS divergent transitions, or null",
            "rhat_before": "{weights, means, covariances}: max R-hat of the draws before relabelling, or null",
            "rhat_after": "the same after relabelling against the reference, or null",
            "relabelled_fraction": "share of draws whose relabelling differs from the most frequent one (label-switched draws), or null",
            "diagnostics": "engines with draws: {rhat_max, ess_bulk_min, ess_tail_min} from az.summary, else null",
            "loo": "engines with draws: {elpd_loo, se, p_loo, pareto_k_max, warning} from az.loo, else null",
            "netcdf": "file name of the engine's InferenceData",
        }
    },
    "compare": "az.compare (LOO) rows [{engine, rank, elpd_loo, p_loo, elpd_diff, weight, se, dse, warning}] for >= 2 engines with draws, else null",
    "failed": "{method: one-line error} of engines that raised, {} when none",
    "timings": {
        "total_seconds": "wall time of the whole report",
        "fit_seconds": "{method: seconds}",
        "compile_seconds": "{method: seconds or null}",
        "run_seconds": "{method: seconds or null}",
    },
}


def validate_metrics(metrics: dict, schema: dict = METRICS_SCHEMA, where: str = "metrics") -> None:
    """Raise ``ValueError`` if ``metrics`` lacks a documented key or has an undocumented one."""
    if not isinstance(metrics, dict):
        raise ValueError(f"{where} must be an object")
    if set(schema) == {"<method>"}:
        for name, value in metrics.items():
            validate_metrics(value, schema["<method>"], f"{where}.{name}")
        return
    missing = sorted(set(schema) - set(metrics))
    extra = sorted(set(metrics) - set(schema))
    if missing or extra:
        raise ValueError(f"{where}: missing keys {missing}, undocumented keys {extra}")
    for key, sub in schema.items():
        if isinstance(sub, dict):
            validate_metrics(metrics[key], sub, f"{where}.{key}")


# --------------------------------------------------------------------------- errors and output


class ReportError(Exception):
    """A user error: reported as one line on stderr, exit code 2."""


def error_exit(message: str, code: int = 2) -> int:
    """Print ``gmm-report: error: <message>`` (one line) on stderr and return ``code``."""
    first = " ".join(str(message).split())
    print(f"{PROG}: error: {first}", file=sys.stderr)
    return code


def prepare_output_dir(out, force: bool) -> Path:
    """Check ``out`` and return a fresh temporary directory next to it to write into.

    Refuses (ReportError) an existing non-empty ``out`` unless ``force``, an ``out`` that is a file,
    or an unwritable parent. Pair with :func:`finalize_output_dir` (success) or ``shutil.rmtree``.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ReportError(f"output directory {str(out)!r} is not empty (use --force to replace it)")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    except OSError as exc:
        raise ReportError(f"cannot create the output directory next to {str(out)!r}: {exc.strerror or exc}") from None


def finalize_output_dir(tmp: Path, out) -> Path:
    """Move the finished ``tmp`` into place as ``out`` (replacing an old ``out`` only now)."""
    out = Path(out)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.absolute().parent))
        os.replace(out, old / "previous")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_json(obj):
    """NaN / inf -> null so that the file is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps_json(obj) -> str:
    return json.dumps(_clean_json(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- HTML


_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1250px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { margin-top: 2em; border-bottom: 1px solid #bbb; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.88em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th { background: #f0f0f0; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .9em; color: #444; }
.note { background: #f7f7e8; border-left: 4px solid #cc9; padding: .4em .8em; font-size: .92em; }
.bad { color: #b00; font-weight: bold; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def figure_png(fig, dpi: int = 100) -> bytes:
    """The Figure rendered once as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def figure_html(fig, caption: str = "", name: str | None = None, dpi: int = 100, png: bytes | None = None) -> str:
    """A ``<figure>`` with the Figure embedded as a base64 PNG (``data-name`` = ``name``).

    Pass ``png`` (from :func:`figure_png`) to embed bytes already rendered instead of rendering again.
    """
    data = base64.b64encode(png if png is not None else figure_png(fig, dpi)).decode("ascii")
    attr = f' data-name="{html.escape(name)}"' if name else ""
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return f'<figure{attr}><img alt="{html.escape(name or caption or "figure")}" src="data:image/png;base64,{data}">{cap}</figure>'


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{max(digits, len(str(int(abs(v)))) + 2)}g}"
    return html.escape(str(v))


def table_html(header, rows, raw_columns=()) -> str:
    """An HTML table; cells are formatted numbers or escaped text (columns in ``raw_columns`` are raw HTML)."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(f"<td>{c if i in raw_columns else _fmt(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(title: str, sections) -> str:
    """A self-contained HTML page: ``sections`` is a list of ``(heading, html_body)``."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    toc = "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>' for i, (h, _) in enumerate(sections))
    parts.append(f"<ul>{toc}</ul>")
    for i, (heading, body) in enumerate(sections):
        parts.append(f'<section id="s{i}"><h2>{html.escape(heading)}</h2>{body}</section>')
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------- data


def load_data(path) -> tuple[np.ndarray, list[str]]:
    """Load ``path`` (.npy, or CSV with a header row) as a float64 (N, D) array and its column names.

    Raises ReportError with one line: missing file, empty file, ragged rows, a non-numeric column,
    rows with missing / NaN / inf values.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"data file {str(path)!r} not found")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise ReportError(f"cannot read {path.name} as .npy: {exc}") from None
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise ReportError(f"{path.name}: expected a 2-D array (rows, columns), got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ReportError(f"{path.name}: array is not numeric (dtype {arr.dtype})")
        arr = arr.astype(np.float64)
        names = [f"x{j}" for j in range(arr.shape[1])]
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ReportError(f"{path.name}: not a readable CSV file ({exc})") from None
        if not rows:
            raise ReportError(f"{path.name}: the file is empty")
        names = [c.strip() for c in rows[0]]
        if all(_is_number(c) for c in names):
            raise ReportError(f"{path.name}: the first row must be a header of column names, got numbers")
        body = rows[1:]
        if not body:
            raise ReportError(f"{path.name}: no data rows after the header")
        for i, r in enumerate(body):
            if len(r) != len(names):
                raise ReportError(f"{path.name}: row {i + 2} has {len(r)} fields, the header has {len(names)}")
        arr = np.empty((len(body), len(names)))
        for j, name in enumerate(names):
            for i, r in enumerate(body):
                cell = r[j].strip()
                if cell == "" or cell.lower() in ("na", "nan", "null", "none"):
                    arr[i, j] = np.nan
                    continue
                try:
                    arr[i, j] = float(cell)
                except ValueError:
                    raise ReportError(
                        f"{path.name}: column {name!r} is not numeric (row {i + 2}: {cell[:30]!r})"
                    ) from None
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        offset = 2 if path.suffix.lower() != ".npy" else 0
        listed = ", ".join(str(int(i) + offset) for i in where[:5]) + (", ..." if where.size > 5 else "")
        raise ReportError(f"{path.name}: {where.size} row(s) with missing, NaN or inf values ({'line' if offset else 'row'} {listed})")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ReportError(f"{path.name}: no data")
    return arr, names


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def _sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- CLI


def add_common_options(parser: argparse.ArgumentParser, default_out: str = DEFAULT_OUT) -> None:
    """--out, --force, --quiet, --seed: shared by the report and its subcommands."""
    parser.add_argument("--out", default=default_out, metavar="DIR", help=f"output directory (default: ./{default_out}/)")
    parser.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ReportError (one line, exit 2) instead of printing usage."""

    def error(self, message):
        raise ReportError(message)


def _parse_option(text: str) -> tuple[str, str, object]:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ReportError(f"--option must look like METHOD.KEY=VALUE, got {text!r}")
    lhs, value = text.split("=", 1)
    method, key = lhs.split(".", 1)
    if method not in ALL_METHODS:
        raise ReportError(f"--option {text!r}: unknown method {method!r}; choose from {', '.join(ALL_METHODS)}")
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        parsed = value
    return method, key, parsed


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Fit a Gaussian mixture with EM, hard EM, MAP, SVI and NUTS, align the labels, "
        "score the recovery and write an HTML report with ArviZ diagnostics.",
        epilog="Subcommands: " + ", ".join(SUBCOMMANDS) + " (gmm-report <subcommand> --help).",
    )
    p.add_argument("--data", metavar="FILE", help="CSV with a header row, or .npy (N, D); default: simulate the seed problem")
    p.add_argument("--num-components", "-k", type=int, default=None, metavar="K",
                   help="number of components (default 2; the seed problem has 2)")
    p.add_argument("--methods", default=",".join(ALL_METHODS), help=f"comma-separated engines (default {','.join(ALL_METHODS)})")
    p.add_argument("--num-samples", "-n", type=int, default=DEFAULT_NUM_SAMPLES, metavar="N",
                   help=f"rows simulated from the seed problem (default {DEFAULT_NUM_SAMPLES}; ignored with --data)")
    p.add_argument("--num-draws", type=int, default=None, metavar="S",
                   help="posterior draws per chain for NUTS and SVI (default: the engines' own defaults)")
    p.add_argument("--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="engine option passed to inference.fit, e.g. nuts.num_warmup=200 (repeatable)")
    add_common_options(p)
    return p


def _parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ReportError("--methods is empty")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ReportError(f"unknown method {unknown[0]!r} in --methods; choose from {', '.join(ALL_METHODS)}")
    return list(dict.fromkeys(methods))


class _Progress:
    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.start = time.perf_counter()

    def __call__(self, message: str):
        if not self.quiet:
            print(f"[{PROG} {time.perf_counter() - self.start:6.1f}s] {message}", file=sys.stderr, flush=True)


def enable_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache for the command-line tools.

    A report is dominated by XLA compile time (the fits themselves take milliseconds at N = 500), so a
    second run with the same shapes reuses the compiled programs from disk. The cache lives in
    ``$GMM_REFERENCE_CACHE`` (default ``~/.cache/gmm-reference/jax``); ``GMM_REFERENCE_CACHE=off``
    disables it. Returns the directory used, or None.
    """
    where = os.environ.get("GMM_REFERENCE_CACHE", str(Path.home() / ".cache" / "gmm-reference" / "jax"))
    if where.lower() in ("", "0", "off", "none", "false"):
        return None
    try:
        Path(where).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    import jax

    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return where


FAST_COMPILE_MAX_VALUES = 20_000
FAST_COMPILE_FLAG = "--xla_backend_optimization_level=0"


def prefer_fast_compile(num_values: int) -> bool:
    """For a small simulated problem, ask XLA for quick compiles (``XLA_FLAGS`` optimisation level 0).

    At N = 500 every engine spends > 90% of its time compiling; skipping LLVM's backend optimisation
    saves ~6 s of the default report and costs only run time, which is milliseconds there. Applied
    only when ``num_values`` (N x D) <= ``FAST_COMPILE_MAX_VALUES``, the user has not set ``XLA_FLAGS``,
    and JAX has not started yet. Returns whether the flag was set.
    """
    if num_values > FAST_COMPILE_MAX_VALUES or "XLA_FLAGS" in os.environ or "jax" in sys.modules:
        return False
    os.environ["XLA_FLAGS"] = FAST_COMPILE_FLAG
    return True


def main(argv=None) -> int:
    """Entry point of ``gmm-report``; returns the exit code (0 ok, 2 user error, 1 failure)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not (argv and argv[0] in SUBCOMMANDS):
        try:
            early = build_parser().parse_args(argv)
            if early.data is None:
                prefer_fast_compile(early.num_samples * 2)
        except (ReportError, SystemExit):
            pass  # reported below
    enable_compilation_cache()
    if argv and argv[0] in SUBCOMMANDS:
        target = SUBCOMMANDS[argv[0]]
        module_name, function_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            return error_exit(f"subcommand {argv[0]!r} is not available in this version")
        return int(getattr(module, function_name)(argv[1:]) or 0)
    try:
        args = build_parser().parse_args(argv)
    except ReportError as exc:
        return error_exit(str(exc))
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    return run_guarded(lambda: run_report(args, argv=argv), "interrupted; no report written")


def run_guarded(action, interrupted: str = "interrupted; nothing written") -> int:
    """Run ``action()`` for a command: 0 on success; a user error (ReportError, ValueError) is one line
    on stderr and exit 2, Ctrl-C exit 130, anything else one line and exit 1 (never a traceback;
    ``GMM_REPORT_DEBUG=1`` re-raises)."""
    try:
        action()
    except (ReportError, ValueError) as exc:
        return error_exit(str(exc))
    except KeyboardInterrupt:
        return error_exit(interrupted, 130)
    except Exception as exc:  # noqa: BLE001 - one line, never a traceback
        if os.environ.get("GMM_REPORT_DEBUG"):
            raise
        return error_exit(f"{type(exc).__name__}: {exc}", 1)
    return 0


# --------------------------------------------------------------------------- the report


def _engine_options(args, methods) -> dict:
    options = {m: dict(DEFAULT_ENGINE_OPTIONS.get(m, {})) for m in methods}
    for method in ("svi", "nuts"):
        if method in options:
            options[method]["progress"] = not args.quiet  # the engine's tqdm bar on stderr
    if args.num_draws is not None:
        if args.num_draws < 1:
            raise ReportError(f"--num-draws must be >= 1, got {args.num_draws}")
        if "nuts" in options:
            options["nuts"]["num_samples"] = args.num_draws
        if "svi" in options:
            options["svi"]["num_draws"] = args.num_draws
    for text in args.option:
        method, key, value = _parse_option(text)
        if method in options:
            options[method][key] = value
    return options


def _package_versions() -> dict:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("gmm-reference", "jax", "jaxlib", "numpyro", "funsor", "arviz", "numpy", "scipy", "matplotlib", "xarray", "h5netcdf"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_report(args, argv=None) -> dict:
    """Run the whole report for parsed ``args``; returns the metrics dict. Raises ReportError."""
    t_start = time.perf_counter()
    progress = _Progress(args.quiet)
    methods = _parse_methods(args.methods)
    options = _engine_options(args, methods)
    if args.num_components is not None and args.num_components < 1:
        raise ReportError(f"--num-components must be >= 1, got {args.num_components}")

    # Load before touching the output directory: bad input must not create anything.
    if args.data:
        x, column_names = load_data(args.data)
        truth, z = None, None
        k = args.num_components or 2
        source = "file"
    else:
        if args.num_samples < 1:
            raise ReportError(f"--num-samples must be >= 1, got {args.num_samples}")
        if args.num_components not in (None, 2):
            raise ReportError("the seed problem has 2 components; use --data FILE to fit another K")
        x = truth = z = None
        k = 2
        column_names = ["x0", "x1"]
        source = "seed_problem"
    if x is not None and k > x.shape[0]:
        raise ReportError(f"--num-components ({k}) exceeds the number of rows ({x.shape[0]}) in {Path(args.data).name}")

    tmp = prepare_output_dir(args.out, args.force)
    try:
        metrics = _run_into(tmp, args, argv, methods, options, x, truth, z, k, source, column_names, progress, t_start)
        finalize_output_dir(tmp, args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"report written to {Path(args.out) / 'report.html'}")
    return metrics


def _run_into(tmp: Path, args, argv, methods, options, x, truth, z, k, source, column_names, progress, t_start) -> dict:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import jax

    import models
    from inference import fit

    from . import arviz_io, plots
    from .align import align_results
    from .score import scorecard

    root = jax.random.PRNGKey(args.seed)
    if source == "seed_problem":
        truth = models.to_numpy(models.seed_problem())
        progress(f"sampling N={args.num_samples} points from the seed problem (seed {args.seed})")
        xs, zs = models.sample(jax.random.fold_in(root, 0), truth, args.num_samples)
        x, z = np.asarray(xs, dtype=np.float64), np.asarray(zs)

    results, failed = {}, {}
    for i, method in enumerate(methods):
        progress(f"[{i + 1}/{len(methods)}] fitting {method} (K={k}, N={x.shape[0]}, D={x.shape[1]})")
        key = jax.random.fold_in(root, 1 + ALL_METHODS.index(method))
        engine_options = dict(options[method])
        if method in ("svi", "nuts") and "init" not in engine_options and "map" in results:
            # start from the MAP point this report already has (the engines would otherwise re-run MAP)
            engine_options["init"] = results["map"].params
        try:
            r = fit(method, key, x, k, **engine_options)
        except ValueError as exc:
            raise ReportError(f"{method}: {exc}") from None
        except FloatingPointError as exc:
            failed[method] = f"{type(exc).__name__}: {exc}"
            progress(f"    {method} failed: {failed[method]}")
            continue
        results[method] = r
        comp = r.info.get("compile_seconds")
        split = f" (compile {comp:.1f}s, run {r.info.get('run_seconds', float('nan')):.1f}s)" if comp is not None else ""
        progress(f"    {method}: {r.seconds:.1f}s{split}, {r.num_iters} iterations, converged={r.converged}")
    if not results:
        raise ReportError("every engine failed: " + "; ".join(f"{m}: {e}" for m, e in failed.items()))

    progress("aligning labels, scoring, building InferenceData")
    aligned, reference = align_results(results, truth)
    reference_name = "truth" if truth is not None else ("em" if "em" in results else next(iter(results)))
    cards = {m: scorecard(r, x, truth, z) for m, r in aligned.items()}
    idatas = {}
    for m, r in aligned.items():
        idatas[m] = arviz_io.to_inference_data(r, x)
        name = f"{m}.nc"
        arviz_io.save_netcdf(idatas[m], tmp / name)
        cards[m]["netcdf"] = name
        cards[m]["diagnostics"] = None
        cards[m]["loo"] = None
    with_draws = [m for m, r in aligned.items() if r.samples is not None]
    summaries = {}
    for m in with_draws:
        summaries[m] = arviz_io.summary(idatas[m])
        s = summaries[m]
        cards[m]["diagnostics"] = {
            "rhat_max": _nan_reduce(np.max, s, "r_hat"),
            "ess_bulk_min": _nan_reduce(np.min, s, "ess_bulk"),
            "ess_tail_min": _nan_reduce(np.min, s, "ess_tail"),
        }
        try:
            cards[m]["loo"] = arviz_io.loo(idatas[m])
        except Exception as exc:  # noqa: BLE001 - LOO is a diagnostic, never fatal
            progress(f"    az.loo failed for {m}: {exc}")
    compare_rows = None
    compare_df = None
    if len(with_draws) >= 2:
        try:
            compare_df = arviz_io.compare({m: idatas[m] for m in with_draws})
            compare_rows = [
                {"engine": str(name), **{c: _clean_json(row[c]) for c in
                                         ("rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "warning")
                                         if c in row}}
                for name, row in compare_df.iterrows()
            ]
        except Exception as exc:  # noqa: BLE001
            progress(f"    az.compare failed: {exc}")

    progress("drawing figures")
    figures = []  # (name, caption, Figure)
    figures.append(("data", "The data" + (", coloured by the true component." if z is not None else "."), plots.plot_data(x, z)))
    figures.append(("components", "Every engine's components (aligned) against the truth: 1σ and 2σ ellipses, × means.",
                    plots.plot_components(x, aligned, truth)))
    figures.append(("assignments", "Points coloured by their assigned cluster, one panel per engine; labels aligned "
                    "to the " + ("truth" if truth is not None else f"{reference_name} estimate") + ".",
                    plots.plot_assignments(x, aligned, truth)))
    tr = plots.plot_traces(aligned)
    if tr is not None:
        figures.append(("traces", "Log-likelihood and ELBO per iteration (EM, hard EM), the EM KL gap, the MAP/SVI loss.", tr))
    em = aligned.get("em")
    if em is not None and em.info.get("snapshots") is not None and em.info.get("snapshot_iters") is not None:
        figures.append(("em_snapshots", "EM's estimate at a few iterations (the seed notebook's per-iteration plots, in one strip).",
                        plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth, reference)))
    figures.append(("forest", "ArviZ forest plot of every engine (90% HDI for engines with draws, dots for point "
                    "estimates)" + (", true values marked ×." if truth is not None else "."),
                    arviz_io.plot_forest(idatas, truth)))
    if "nuts" in idatas:
        figures.append(("nuts_trace", "ArviZ trace plot of the NUTS draws after relabelling.", arviz_io.plot_trace(idatas["nuts"])))

    fig_dir = tmp / "figures"
    fig_dir.mkdir()
    fig_html = {}
    import matplotlib.pyplot as plt

    for name, caption, fig in figures:
        png = figure_png(fig)
        (fig_dir / f"{name}.png").write_bytes(png)
        fig_html[name] = figure_html(fig, caption, name, png=png)
        plt.close(fig)

    total = time.perf_counter() - t_start
    metrics = {
        "schema_version": 1,
        "problem": {
            "source": source,
            "data_file": str(args.data) if args.data else None,
            "num_samples": int(x.shape[0]),
            "num_features": int(x.shape[1]),
            "num_components": int(k),
            "seed": int(args.seed),
            "truth": None if truth is None else {
                "weights": np.asarray(truth.weights).tolist(),
                "means": np.asarray(truth.means).tolist(),
                "covariances": np.asarray(models.covariances(truth)).tolist(),
            },
            "log_likelihood_truth": None if truth is None else float(models.log_likelihood(truth, x)),
        },
        "alignment": {
            "reference": reference_name,
            "method": "Hungarian assignment (scipy linear_sum_assignment) on the symmetrised Gaussian KL between "
                      "components; posterior draws relabelled one by one against the reference",
            "rhat_method": arviz_io.RHAT_METHOD,
        },
        "engines": cards,
        "compare": compare_rows,
        "failed": failed,
        "timings": {
            "total_seconds": total,
            "fit_seconds": {m: float(r.seconds) for m, r in results.items()},
            "compile_seconds": {m: r.info.get("compile_seconds") for m, r in results.items()},
            "run_seconds": {m: r.info.get("run_seconds") for m, r in results.items()},
        },
    }
    validate_metrics(metrics)
    write_atomically(tmp / "metrics.json", dumps_json(metrics))

    data_sha = _file_sha256(args.data) if args.data else _sha256(x)
    manifest = {
        "tool": PROG,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv) if argv is not None else sys.argv[1:],
        "seed": int(args.seed),
        "methods": methods,
        "engine_options": options,
        "data": {
            "source": source,
            "file": str(args.data) if args.data else None,
            "sha256": data_sha,
            "sha256_of": "file bytes" if args.data else "float64 C-order bytes of the simulated x",
            "shape": list(x.shape),
            "columns": column_names,
        },
        "versions": _package_versions(),
        "platform": platform.platform(),
        "jax_backend": jax.default_backend(),
        "files": sorted(["report.html", "metrics.json", "manifest.json"] + [f"{m}.nc" for m in idatas]
                        + [f"figures/{n}.png" for n, _, _ in figures]),
    }
    write_atomically(tmp / "manifest.json", dumps_json(manifest))
    page = _report_html(metrics, aligned, summaries, compare_df, fig_html, truth, column_names)
    write_atomically(tmp / "report.html", page)
    return metrics


def _nan_reduce(fn, frame, column):
    """``fn`` over the finite entries of ``frame[column]``; None when there are none (e.g. R-hat of one chain)."""
    if column not in frame:
        return None
    values = np.asarray(frame[column], dtype=float)
    values = values[np.isfinite(values)]
    return float(fn(values)) if values.size else None


def _report_html(metrics, aligned, summaries, compare_df, fig_html, truth, column_names) -> str:
    prob = metrics["problem"]
    cards = metrics["engines"]
    sections = []
    if prob["source"] == "seed_problem":
        intro = (f"<p>Data: N = {prob['num_samples']} points sampled from the seed notebook's mixture "
                 f"(weights {prob['truth']['weights']}, means {prob['truth']['means']}, covariances I and 0.5 I), "
                 f"seed {prob['seed']}. Log-likelihood at the truth: {_fmt(prob['log_likelihood_truth'])}.</p>")
    else:
        intro = (f"<p>Data: <code>{html.escape(str(prob['data_file']))}</code>, N = {prob['num_samples']}, "
                 f"D = {prob['num_features']} (columns {html.escape(', '.join(column_names))}); K = {prob['num_components']}. "
                 "No truth is known: the scorecard shows the log-likelihood, BIC, iterations, time and cluster sizes.</p>")
    intro += (
        "<p class='note'>Labels: mixture components are only defined up to a permutation. Every engine's estimate is "
        "aligned to the " + ("truth" if truth is not None else f"<b>{html.escape(metrics['alignment']['reference'])}</b> estimate")
        + " by the Hungarian method on the symmetrised KL divergence between Gaussian components "
        "(means and covariances), and posterior draws are relabelled one by one the same way. Nothing below compares "
        "unaligned components. R-hat is ArviZ's default <b>rank-normalised split R-hat</b> (Vehtari et al. 2021); on "
        "fully label-switched chains it reads about 1.8 where the classic split R-hat reads about 8.5.</p>"
    )
    if metrics["failed"]:
        intro += "<p class='bad'>Failed engines: " + html.escape("; ".join(f"{m}: {e}" for m, e in metrics["failed"].items())) + "</p>"
    sections.append(("Problem", intro))

    header = ["engine", "log-lik", "Δ vs truth", "BIC", "max |Δw|", "max ‖Δμ‖", "max ‖ΔΣ‖F", "mean KL(true‖est)",
              "ARI", "90% coverage", "iters", "converged", "seconds", "compile s", "run s"]
    rows = []
    for m, c in cards.items():
        s = c["summary"] or {}
        delta = None if c["log_likelihood_truth"] is None else c["log_likelihood"] - c["log_likelihood_truth"]
        cov = (c["posterior"] or {}).get("coverage")
        rows.append([m, c["log_likelihood"], delta, c["bic"], s.get("weight_abs_error_max"), s.get("mean_l2_error_max"),
                     s.get("cov_frobenius_error_max"), s.get("kl_true_to_estimate_mean"), c["ari"], cov, c["num_iters"],
                     c["converged"], c["seconds"], c["compile_seconds"], c["run_seconds"]])
    body = table_html(header, rows)
    body += ("<p>Errors are of the aligned point estimate (NUTS/SVI: the posterior mean of the aligned draws) against "
             "the truth; KL(true‖est) in nats; ARI of the hard assignments against the true labels; coverage: share of "
             "the true weights, means and covariance entries inside the central 90% posterior interval.</p>"
             if truth is not None else "")
    sizes = table_html(["engine", "cluster sizes", "weights"],
                       [[m, ", ".join(map(str, c["cluster_sizes"])), ", ".join(f"{w:.3f}" for w in c["weights"])]
                        for m, c in cards.items()])
    sections.append(("Scorecard", body + sizes))

    if truth is not None:
        k = len(metrics["problem"]["truth"]["weights"])
        comp_rows = []
        for m, c in cards.items():
            e = c["components"]
            for j in range(k):
                comp_rows.append([m, j, c["weights"][j], e["weight_abs_error"][j], e["mean_l2_error"][j],
                                  e["cov_frobenius_error"][j], e["kl_true_to_estimate"][j]])
        sections.append(("Per component", table_html(
            ["engine", "component", "weight", "|Δw|", "‖Δμ‖₂", "‖ΔΣ‖F", "KL(true‖est)"], comp_rows)))

    if summaries:
        diag = []
        for m in summaries:
            c = cards[m]
            rb, ra = c.get("rhat_before") or {}, c.get("rhat_after") or {}
            d = c.get("diagnostics") or {}
            diag.append([m, rb.get("means"), ra.get("means"), d.get("rhat_max"), d.get("ess_bulk_min"), d.get("ess_tail_min"),
                         c.get("relabelled_fraction"), c.get("num_divergences")])
        body = table_html(["engine", "R-hat means before relabelling", "R-hat means after", "max R-hat (all)",
                           "min ESS bulk", "min ESS tail", "relabelled draws", "divergences"], diag)
        for m, s in summaries.items():
            body += f"<h3>az.summary: {html.escape(m)}</h3>" + s.to_html(float_format=lambda v: f"{v:.3f}")
        if any(cards[m].get("loo") for m in summaries):
            body += "<h3>PSIS-LOO</h3>" + table_html(
                ["engine", "elpd_loo", "se", "p_loo", "max Pareto k", "warning"],
                [[m, cards[m]["loo"]["elpd_loo"], cards[m]["loo"]["se"], cards[m]["loo"]["p_loo"],
                  cards[m]["loo"]["pareto_k_max"], cards[m]["loo"]["warning"]] for m in summaries if cards[m].get("loo")])
        if compare_df is not None:
            body += "<h3>az.compare (LOO)</h3>" + compare_df.to_html(float_format=lambda v: f"{v:.3f}")
        sections.append(("Posterior diagnostics (ArviZ)", body))

    for name, heading in (("data", "Data"), ("components", "Estimated components"), ("assignments", "Cluster assignments"),
                          ("traces", "Convergence traces"), ("em_snapshots", "EM along the iterations"),
                          ("forest", "All engines side by side (ArviZ forest plot)"), ("nuts_trace", "NUTS trace (ArviZ)")):
        if name in fig_html:
            sections.append((heading, fig_html[name]))

    t = metrics["timings"]
    time_rows = [[m, t["fit_seconds"][m], t["compile_seconds"][m], t["run_seconds"][m]] for m in t["fit_seconds"]]
    sections.append(("Timings", table_html(["engine", "fit seconds", "compile", "run"], time_rows)
                     + f"<p>Whole report: {t['total_seconds']:.1f} s (before writing the HTML).</p>"
                     "<p>Files: <code>metrics.json</code>, <code>manifest.json</code>, one ArviZ InferenceData per engine "
                     "(<code>&lt;engine&gt;.nc</code>, reload with <code>arviz.from_netcdf</code>), <code>figures/*.png</code>.</p>"))
    title = "Gaussian mixture: " + ("recovery of the seed problem by " if truth is not None else "fits by ") + ", ".join(cards)
    return render_html(title, sections)


if __name__ == "__main__":  # python -m analysis.report
    sys.exit(main())
