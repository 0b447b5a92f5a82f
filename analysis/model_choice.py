"""Choosing the model when a user's data come without ``--num-components``: one job, :func:`choose_for_report`.

As mclust does by default (``Mclust(x)``: G = 1..9 and its covariance models), EM is fitted for every K from 1 to
``MAX_K`` (``--max-k``) and each of the four covariance types (full, diag, spherical, tied: scikit-learn's), with
5 restarts each (``analysis.selection.select_num_components``; on one device: these fits are compile-bound,
and one program without collectives compiles faster), and the model with the lowest BIC
(``-2 log L + p log N``, sklearn's sign; mclust's BIC is its negative) among the fits without a degenerate
component (``inference.diagnostics``: a collapsed covariance has an unbounded likelihood that BIC would reward)
is chosen. A K is only tried when the rows identify it (``analysis.budget.identifiable``: about N / K rows for
the D + 1 a full or tied covariance needs, 2 for a diagonal or spherical one). ICL (BIC plus twice the
classification entropy, Biernacki et al. 2000) is reported with its own choice; it prefers well-separated
clusters.

EM's options given with ``--option em.KEY=...`` apply to these fits too; ``--option em.covariance_type=...``
restricts the search to that type (mclust's ``modelNames``). Then EM and hard EM fit the chosen K and covariance
type (EM starts from the chosen fit, so that the report's EM is the fit the table chose), and MAP, SVI and NUTS
the chosen K with full covariances, the only type their model has; the page, the
notes and ``metrics.json`` (``model_selection``, each engine's ``covariance_type``) say so. The rows are the
problem's in-memory rows (a streamed file's row subsample).

Imports: numpy and the light analysis modules at module level; JAX and the fits inside :func:`choose_model`.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from analysis.budget import plan_engines, points_per_component
from analysis.errors import ReportError

__all__ = ["MAX_K", "SELECTION_TYPES", "ModelChoice", "candidate_ks", "choose_model", "choose_for_report",
           "fitted_text", "selection_metrics"]

MAX_K = 9
SELECTION_TYPES = ("full", "diag", "spherical", "tied")
_SELECTION_KEY = 0x5E1  # separates the selection's EM keys from the engines' (same --seed)
_ROW_KEYS = ("covariance_type", "k", "loglik", "num_parameters", "bic", "icl", "degenerate", "error", "seconds")


@dataclasses.dataclass
class ModelChoice:
    """What :func:`choose_model` found: the chosen ``k`` and ``covariance_type`` (lowest BIC without a
    degenerate component), ``icl_choice`` {k, covariance_type} (or None), ``table`` (one row per fit:
    ``_ROW_KEYS``), ``max_k`` asked, ``seconds`` spent and ``params`` (the chosen EM fit's point estimate: the
    report's EM starts there, so that its fit is the one the table chose)."""

    k: int
    covariance_type: str
    icl_choice: dict | None
    table: list
    max_k: int
    seconds: float
    params: object = None
    num_rows: int = 0


def candidate_ks(n: int, d: int, covariance_type: str, max_k: int = MAX_K) -> list:
    """K = 1 .. min(``max_k``, the largest K whose components the rows identify for ``covariance_type``)."""
    return list(range(1, min(int(max_k), n // points_per_component(d, covariance_type)) + 1))


def _best(rows, criterion: str):
    ok = [r for r in rows if r.get("error") is None and not r.get("degenerate") and r.get(criterion) is not None
          and np.isfinite(r[criterion])]
    return min(ok, key=lambda r: r[criterion]) if ok else None


def choose_model(x, seed: int = 0, progress=None, max_k: int = MAX_K, covariance_types=SELECTION_TYPES,
                 **em_options) -> ModelChoice:
    """Fit EM for every identifiable K <= ``max_k`` and covariance type; the lowest BIC without a degenerate
    component wins (module docstring). Raises ReportError when no fit qualifies."""
    import jax

    from analysis.selection import select_num_components

    x = np.asarray(x, np.float64)
    n, d = x.shape
    start = time.perf_counter()
    key = jax.random.fold_in(jax.random.PRNGKey(seed), _SELECTION_KEY)
    table, fits = [], {}
    for cov in covariance_types:
        ks = candidate_ks(n, d, cov, max_k)
        if not ks:
            continue
        rows = []
        for k in ks:  # one K at a time, a progress line each (the same fits: K's key is fold_in(key, K) either way)
            if progress is not None:
                progress(f"choosing K: EM with {cov} covariances, K = {k} of 1..{ks[-1]} (5 restarts)")
            selection = select_num_components(x, [k], key=key, method="em", criteria=("bic", "icl"),
                                              covariance_type=cov, **{"devices": jax.devices()[:1], **em_options})
            rows += [{name: row.get(name) for name in _ROW_KEYS} | {"covariance_type": cov} for row in selection.table]
            fits.update({(cov, kk): r.params for kk, r in selection.fits.items()})
        if not table and all(r["error"] for r in rows) and len({r["error"] for r in rows}) == 1:
            raise ReportError(f"choosing K: em: {rows[0]['error']}")  # e.g. a bad --option em.tol: one line
        table += rows
    best, best_icl = _best(table, "bic"), _best(table, "icl")
    if best is None:
        raise ReportError(f"no model could be chosen: every EM fit for K = 1..{max_k} had a degenerate component or "
                          "failed; give --num-components K")
    icl_choice = None if best_icl is None else {"k": int(best_icl["k"]), "covariance_type": best_icl["covariance_type"]}
    return ModelChoice(int(best["k"]), best["covariance_type"], icl_choice, table, int(max_k),
                       time.perf_counter() - start, fits.get((best["covariance_type"], int(best["k"]))), n)


def choose_for_report(args, problem, options: dict, progress) -> ModelChoice | None:
    """For ``gmm-report --data FILE`` without ``--num-components``: choose the model on the problem's rows (after
    ``problem.data.prepare``), set ``problem.num_components`` and EM's and hard EM's ``covariance_type`` in
    ``options`` (unless given), and return the choice with a note line; None (nothing done) otherwise."""
    if not args.data or args.num_components is not None:
        return None
    from analysis.files import check_output_dir

    max_k = MAX_K if getattr(args, "max_k", None) is None else args.max_k
    if max_k < 1:
        raise ReportError(f"--max-k must be >= 1, got {max_k}")
    check_output_dir(args.out, args.force)  # a refused --out before minutes of fits, not after
    n, d = problem.data.shape
    # the refusals that do not depend on K (streamed data for in-memory engines only, ...) before minutes of fits
    plan_engines(list(options), options, int(n), int(d), 1, None, streamed=problem.data.skip_reason())
    em_options = {key: v for key, v in (options.get("em") or options.get("hard_em") or {}).items()
                  if key not in ("covariance_type", "progress")}
    given = (options.get("em") or options.get("hard_em") or {}).get("covariance_type")
    problem.data.prepare(problem.seed, progress)
    choice = choose_model(problem.x, problem.seed, progress, max_k, (given,) if given else SELECTION_TYPES,
                          **em_options)
    problem.num_components = choice.k
    for method in ("em", "hard_em"):
        if method in options and "covariance_type" not in options[method]:
            options[method]["covariance_type"] = choice.covariance_type
    progress(f"chosen by BIC: K = {choice.k}, {choice.covariance_type} covariances ({len(choice.table)} EM fits, "
             f"{choice.seconds:.0f} s)")
    return choice


def fitted_text(choice: ModelChoice, methods) -> str:
    """One line: what each engine fits after the choice."""
    em = [m for m in methods if m in ("em", "hard_em")]
    bayes = [m for m in methods if m not in ("em", "hard_em")]
    parts = [f"{', '.join(em)} fit K = {choice.k} with {choice.covariance_type} covariances"] if em else []
    if bayes:
        parts.append(f"{', '.join(bayes)} fit K = {choice.k} with full covariances (their model's only type)")
    return "; ".join(parts)


def selection_metrics(choice: ModelChoice | None, methods=()) -> dict | None:
    """``metrics.json`` ``model_selection`` (``analysis.metrics.METRICS_SCHEMA``), None when K was given."""
    if choice is None:
        return None
    return {
        "criterion": "bic",
        "k": choice.k,
        "covariance_type": choice.covariance_type,
        "icl_choice": choice.icl_choice,
        "max_k": choice.max_k,
        "num_rows": choice.num_rows,
        "covariance_types": sorted({r["covariance_type"] for r in choice.table}, key=SELECTION_TYPES.index),
        "fitted": fitted_text(choice, methods),
        "seconds": choice.seconds,
        "table": [{name: row.get(name) for name in _ROW_KEYS} for row in choice.table],
    }
