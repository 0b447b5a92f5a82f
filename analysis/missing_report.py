"""Missing values in the report: one job, saying what was missing, what was dropped and what each engine imputed.

* :func:`dropped_text` -- the one line (stderr note, page) about rows dropped for having nothing observed;
* :func:`missing_metrics` -- ``metrics.json`` ``problem.missing``: per column and per pattern (which columns are
  missing together), the dropped rows, how the holes were handled; None when nothing was missing;
* :func:`impute_stage` -- the report's stage after the alignment: every engine's imputations of the missing cells
  (``inference.imputation.multiple_imputations``: posterior multiple imputation for svi / nuts, conditional draws
  at the point estimate for em / hard_em / map), the engine cards' ``imputation`` entries and the completed rows
  the data figures draw (:func:`completed_rows`);
* :func:`imputed_csv` -- ``imputed.csv``: ``engine,row,column,value,lower,upper`` (row: the row's 0-based index
  among the file's data rows, as in ``assignments.csv``; values in the data's units);
* :func:`missing_section` -- the page's "Missing values" section.

Every engine marginalises the missing entries out of the likelihood (missing at random): a row contributes the
density of its observed entries, ``log sum_k w_k N(x_o | mu_k,o, Sigma_k,oo)`` (``models.missing``).

Imports: numpy and :mod:`analysis.html_page` at module level; JAX, ``models`` and ``inference`` inside
:func:`impute_stage` / :func:`completed_rows`.
"""

from __future__ import annotations

import html

import numpy as np

from analysis.html_page import table_html

__all__ = ["IMPUTED_FILE", "LEVEL", "HANDLING", "dropped_text", "missing_metrics", "impute_stage", "imputed_csv",
           "completed_rows", "missing_section"]

IMPUTED_FILE = "imputed.csv"
LEVEL = 0.9  # central interval of each imputed cell
HANDLING = ("marginalised out of the likelihood by every engine, assuming missing at random (MAR): a row contributes "
            "the density of its observed entries, log sum_k w_k N(x_o | mu_k,o, Sigma_k,oo); the missing cells are "
            "imputed afterwards from each engine's fit (imputed.csv)")


def dropped_text(name: str, dropped, lines=None) -> str:
    """``"d.csv: dropped 2 row(s) with every value missing (lines 5, 9)"`` (``lines`` None: rows of a .npy)."""
    dropped = np.asarray(dropped)
    where = lines if lines is not None else dropped
    listed = ", ".join(str(int(i)) for i in np.asarray(where)[:8]) + (", ..." if dropped.size > 8 else "")
    return (f"{name}: dropped {dropped.size} row(s) with every value missing ({'line' if lines is not None else 'row'}"
            f"{'s' if dropped.size > 1 else ''} {listed}); the other rows' missing values are marginalised")


def missing_metrics(x, columns, dropped=(), dropped_lines=None, imputed: bool = False) -> dict | None:
    """``problem.missing`` of the rows ``x`` (N, D) (NaN = missing) with ``columns`` names; ``dropped`` the indices of
    rows dropped for having nothing observed (their CSV lines or None). None when nothing is missing or dropped."""
    x = np.asarray(x)
    missing = np.isnan(x)
    dropped = np.asarray(dropped, int)
    if not missing.any() and dropped.size == 0:
        return None
    n, d = x.shape
    codes, counts = np.unique(missing, axis=0, return_counts=True)
    order = np.lexsort((codes.sum(axis=1), -counts))  # most frequent first
    return {
        "num_rows_counted": int(n),
        "num_cells_missing": int(missing.sum()),
        "fraction_cells_missing": float(missing.mean()) if missing.size else 0.0,
        "rows_with_missing": int(missing.any(axis=1).sum()),
        "columns": [{"column": str(columns[j]), "missing": int(missing[:, j].sum()),
                     "percent": 100.0 * float(missing[:, j].mean())} for j in range(d)],
        "patterns": [{"missing_columns": [str(columns[j]) for j in np.flatnonzero(codes[i])], "rows": int(counts[i]),
                      "percent": 100.0 * counts[i] / n} for i in order],
        "dropped_rows": {"count": int(dropped.size), "rows": dropped.tolist(),
                         "lines": None if dropped_lines is None else np.asarray(dropped_lines, int).tolist(),
                         "reason": "every value missing: nothing to fit or impute from"},
        "handling": HANDLING if missing.any() else "no value is missing in the rows fitted: nothing to marginalise or impute",
        "imputed_file": IMPUTED_FILE if imputed and missing.any() else None,
    }


def _imputations(result, x, key):
    """``(rows, columns, mean, lower, upper, method)`` of the missing cells of ``x`` under ``result``."""
    from inference.imputation import multiple_imputations

    imp = multiple_imputations(result, x, key, level=LEVEL)
    how = ("posterior multiple imputation: one completed data set per posterior draw" if result.samples is not None
           else "conditional draws of the missing cells given the observed ones at the point estimate")
    return (np.asarray(imp.rows), np.asarray(imp.columns), np.asarray(imp.mean), np.asarray(imp.lower),
            np.asarray(imp.upper), how)


def impute_stage(problem, run) -> None:
    """Every aligned engine's imputations of ``problem.x``'s missing cells into ``run.imputations``
    (``{method: (rows, columns, mean, lower, upper)}``) and its card's ``imputation`` entry (None without holes);
    an engine whose imputation fails keeps its results and gets a note."""
    import jax

    from analysis.errors import one_line

    x = problem.x
    holes = bool(np.isnan(x).any())
    if holes:
        run.progress(f"imputing the {int(np.isnan(x).sum()):,} missing values with every engine's fit ({IMPUTED_FILE})")
    for i, (m, r) in enumerate(run.aligned.items()):
        run.cards[m]["imputation"] = None
        if not holes:
            continue
        try:
            rows, cols, mean, lower, upper, how = _imputations(
                r, x, jax.random.fold_in(jax.random.PRNGKey(problem.seed), 7000 + i))
        except Exception as exc:  # noqa: BLE001 - the fit stands without its imputations
            run.notes.append(f"{m}: missing values could not be imputed: {one_line(exc)}")
            continue
        run.imputations[m] = (rows, cols, mean, lower, upper)
        width = upper - lower
        run.cards[m]["imputation"] = {"method": how, "level": LEVEL, "num_cells": int(rows.size),
                                      "mean_interval_width": {str(problem.column_names[j]): float(width[cols == j].mean())
                                                              for j in np.unique(cols)}}


def imputed_csv(imputations: dict, row_index, columns) -> str:
    """The text of ``imputed.csv`` from ``{engine: (rows, columns, mean, lower, upper)}`` (indices into the report's
    rows); ``row_index`` maps them to the file's data rows."""
    lines = ["engine,row,column,value,lower,upper"]
    row_index = np.asarray(row_index)
    for m, (rows, cols, mean, lower, upper) in imputations.items():
        order = np.lexsort((cols, rows))
        for i in order:
            name = str(columns[cols[i]])
            name = f'"{name}"' if any(c in name for c in ',"\n') else name
            lines.append(f"{m},{row_index[rows[i]]},{name},{mean[i]:.8g},{lower[i]:.8g},{upper[i]:.8g}")
    return "\n".join(lines) + "\n"


def completed_rows(x, reference) -> tuple[np.ndarray, np.ndarray | None]:
    """``(x with each missing cell at its conditional expectation under the reference parameters, (N, D) bool: the
    imputed cells)``; ``(x, None)`` without holes. For the figures drawn from rows."""
    x = np.asarray(x, np.float64)
    holes = np.isnan(x)
    if not holes.any():
        return x, None
    import models
    from models.params import to_numpy

    return np.asarray(models.impute(to_numpy(reference), x), np.float64), holes


def missing_section(metrics: dict) -> str:
    """The page's "Missing values": what was missing (per column, per pattern), what was dropped and why, how the
    holes were handled and what each engine imputed. Empty when nothing was missing."""
    miss = metrics["problem"].get("missing")
    if not miss:
        return ""
    n, d = miss["num_rows_counted"], metrics["problem"]["num_features"]
    sub = " (the streamed file's row subsample)" if n != metrics["problem"]["num_samples"] else " fitted"
    dropped = miss["dropped_rows"]
    if miss["num_cells_missing"]:
        body = (f"<p>{miss['num_cells_missing']:,} of {n * d:,} values missing ({100 * miss['fraction_cells_missing']:.1f}%), "
                f"in {miss['rows_with_missing']:,} of the {n:,} rows{sub}. Handling: {html.escape(miss['handling'])}.</p>")
    else:
        body = f"<p>No value is missing in the {n:,} rows{sub}: nothing to marginalise or impute.</p>"
    if dropped["count"]:
        where = dropped["lines"] if dropped["lines"] is not None else dropped["rows"]
        body += (f"<div class='note'><b>{dropped['count']} row(s) dropped</b> ({html.escape(dropped['reason'])}): "
                 f"{'line' if dropped['lines'] is not None else 'row'}(s) {', '.join(map(str, where[:30]))}"
                 f"{', ...' if len(where) > 30 else ''} of the data file. They are not in N"
                 + (", assignments.csv or imputed.csv" if miss["imputed_file"] else " or assignments.csv") + ".</div>")
    if not miss["num_cells_missing"]:
        return body
    body += "<h3>Per column</h3>" + table_html(
        ["column", "missing", "% of rows"], [[c["column"], c["missing"], f"{c['percent']:.1f}"] for c in miss["columns"]])
    body += "<h3>Per pattern (which columns are missing together)</h3>" + table_html(
        ["columns missing", "rows", "% of rows"],
        [[", ".join(p["missing_columns"]) or "— (complete rows)", p["rows"], f"{p['percent']:.1f}"]
         for p in miss["patterns"]])
    cards = {m: c["imputation"] for m, c in metrics["engines"].items() if c.get("imputation")}
    if cards:
        body += ("<h3>Imputations</h3>" + table_html(
            ["engine", "cells imputed", "how", "mean width of the 90% interval per column"],
            [[m, c["num_cells"], c["method"], ", ".join(f"{k}: {v:.3g}" for k, v in c["mean_interval_width"].items())]
             for m, c in cards.items()])
            + f"<p>Every imputed cell, per engine, with its central {100 * LEVEL:.0f}% interval, in the data's units: "
            f"<code>{IMPUTED_FILE}</code> (columns engine, row, column, value, lower, upper; row as in "
            "<code>assignments.csv</code>: the 0-based index among the file's data rows). Figures of the rows draw "
            "a row with imputed cells at the reference engine's conditional expectation, hollow where marked.</p>")
    return body
