"""Which options each engine gets: one job, option dicts layered per method.

:func:`layered` is the one merge rule of the report and the sweeps (later layers win, key by key);
:func:`report_engine_options` builds the report's layers from its command-line values
(``--methods``, ``--num-draws``, ``--option METHOD.KEY=VALUE``). The sweeps' own defaults live in
:mod:`analysis.sweeps.common`.

Imports: the standard library and :mod:`analysis.errors` (no JAX: the command line uses this before
JAX starts, so the method list is spelled out here; it equals ``inference.METHODS``).
"""

from __future__ import annotations

import ast

from analysis.errors import ReportError

__all__ = ["ALL_METHODS", "DEFAULT_ENGINE_OPTIONS", "layered", "parse_methods", "parse_option", "report_engine_options"]

ALL_METHODS = ("em", "hard_em", "map", "svi", "nuts")

# Engine options the report passes by default (overridable with --option METHOD.KEY=VALUE).
# Chosen so that the default report (N=500, all five engines) stays fast on a 2-core CPU.
DEFAULT_ENGINE_OPTIONS: dict[str, dict] = {
    "em": {},
    "hard_em": {},
    "map": {},
    "svi": {},
    "nuts": {},
}


def layered(method: str, *layers) -> dict:
    """The options of ``method``: ``layer[method]`` of each layer ({method: {option: value}} or None)
    merged in order, later layers overriding earlier ones; a new (shallow) dict."""
    options = {}
    for layer in layers:
        options.update((layer or {}).get(method, {}))
    return options


def parse_methods(text: str) -> list[str]:
    """``"em,nuts"`` -> ``["em", "nuts"]`` (duplicates dropped); ReportError if empty or unknown."""
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise ReportError("--methods is empty")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ReportError(f"unknown method {unknown[0]!r} in --methods; choose from {', '.join(ALL_METHODS)}")
    return list(dict.fromkeys(methods))


def parse_option(text: str) -> tuple[str, str, object]:
    """``"nuts.num_warmup=200"`` -> ``("nuts", "num_warmup", 200)``; the value is a Python literal,
    or the text itself when it is not one. ReportError for a malformed text or an unknown method."""
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


def report_engine_options(methods, quiet: bool, num_draws: int | None, option_texts) -> dict:
    """``{method: options}`` of the report: the defaults, the engines' progress bars unless ``quiet``,
    ``num_draws`` posterior draws per chain (NUTS, SVI), then each ``--option`` text in order."""
    progress = {m: {"progress": not quiet} for m in ("svi", "nuts")}  # the engine's tqdm bar on stderr
    draws = {}
    if num_draws is not None:
        if num_draws < 1:
            raise ReportError(f"--num-draws must be >= 1, got {num_draws}")
        draws = {"nuts": {"num_samples": num_draws}, "svi": {"num_draws": num_draws}}
    given: dict = {}
    for text in option_texts:
        method, key, value = parse_option(text)
        given.setdefault(method, {})[key] = value
    return {m: layered(m, DEFAULT_ENGINE_OPTIONS, progress, draws, given) for m in methods}
