"""Label alignment of whole fits: nothing in the report compares unaligned components.

A mixture is identified only up to a permutation of its components. Every ``FitResult`` goes
through :func:`align_result` before it is scored or drawn: its point estimate is matched to a
reference (the truth, or with user data one engine's estimate) by the Hungarian method on the
symmetrised Gaussian KL between components (``models.alignment``), and the same permutation is
applied to the responsibilities' columns, the hard assignments and whatever else the engine numbers
components in (its degenerate components, its warnings' "component k": ``relabel_component_info``), so
that every per-component number the report shows is in one numbering. Posterior draws (NUTS, SVI) are
relabelled draw by draw against the reference (a pivot, Stephens-style fixed point in
``models.relabel_draws``); the R-hat of every parameter before and after relabelling is stored in
``info["rhat_before"]`` / ``info["rhat_after"]``: the rank-normalised split R-hat of Vehtari et al. (2021),
ArviZ's default (``RHAT_METHOD``), computed by ``inference.diagnostics.rank_rhat`` (the same number as
``az.rhat``, tested against ``analysis.arviz_io.rhat_of_samples``).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from inference.diagnostics import parameter_draws, rank_rhat
from inference.result import FitResult
from models.alignment import match_components, mean_of_draws, relabel_draws
from models.params import GMMParams, permute, to_numpy

__all__ = ["align_params", "align_result", "align_results", "inverse_permutation", "relabel_labels", "relabel_text",
           "relabel_component_info", "mean_of_draws", "rhat_max", "RHAT_METHOD"]

RHAT_METHOD = "rank"  # rank-normalised split R-hat (ArviZ's default method), inference.diagnostics.rank_rhat
PARAMETERS = ("weights", "means", "covariances")


def inverse_permutation(perm) -> np.ndarray:
    """``inv`` with ``inv[perm[i]] = i``: maps an old component label to its new (aligned) label."""
    perm = np.asarray(perm)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.shape[-1])
    return inv


def relabel_labels(labels, perm) -> np.ndarray:
    """Hard labels in the estimate's numbering -> labels in the aligned numbering."""
    return inverse_permutation(perm)[np.asarray(labels)]


# "component 2 is degenerate", "(worst: means[2, 0])": the component index an engine's words name
_COMPONENT_WORDS = re.compile(r"\b(component |weights\[|means\[|covariances\[|scale_tril\[|scales\[)(\d+)")
_DEGENERATE_LINE = re.compile(r"component (\d+) is degenerate")


def relabel_text(line: str, perm) -> str:
    """An engine's one-line message with every component it names ("component k", "means[k, j]", ...)
    renamed from the engine's numbering to the aligned one (``perm`` of :func:`align_params`)."""
    inv = inverse_permutation(perm)
    k = inv.shape[-1]

    def rename(match):
        old = int(match.group(2))
        return match.group(1) + (str(int(inv[old])) if old < k else match.group(2))

    return _COMPONENT_WORDS.sub(rename, str(line))


def relabel_component_info(info: dict, perm) -> dict:
    """``info`` (a FitResult's) with everything that numbers components in the engine's own labels renamed to
    the aligned labels: ``degenerate_components`` (each entry's ``component``; sorted by it), ``warnings``
    (the degeneracy lines in the aligned order), ``final_counts`` and the worst elements of ``diagnostics``.
    A copy; ``assignments`` / ``assignment_draws`` are :func:`align_result`'s."""
    perm = np.asarray(perm)
    inv = inverse_permutation(perm)
    info = dict(info)
    if info.get("degenerate_components"):
        entries = []
        for entry in info["degenerate_components"]:
            entry = dict(entry)
            entry["component"] = int(inv[int(entry["component"])])
            entries.append(entry)
        info["degenerate_components"] = sorted(entries, key=lambda e: e["component"])
    if info.get("warnings"):
        lines = [relabel_text(w, perm) for w in info["warnings"]]
        slots = [i for i, w in enumerate(lines) if _DEGENERATE_LINE.match(w)]
        ordered = sorted((lines[i] for i in slots), key=lambda w: int(_DEGENERATE_LINE.match(w).group(1)))
        for i, w in zip(slots, ordered):
            lines[i] = w
        info["warnings"] = lines
    if info.get("final_counts") is not None and np.shape(info["final_counts"]) == perm.shape:
        info["final_counts"] = np.asarray(info["final_counts"])[perm]
    if isinstance(info.get("diagnostics"), dict):
        info["diagnostics"] = {key: relabel_text(v, perm) if key.startswith("worst_") and isinstance(v, str) else v
                               for key, v in info["diagnostics"].items()}
    return info


def align_params(reference: GMMParams, estimate: GMMParams) -> tuple[GMMParams, np.ndarray]:
    """``(aligned, perm)``: ``aligned = permute(estimate, perm)`` lines up with ``reference`` (Hungarian)."""
    reference, estimate = to_numpy(reference), to_numpy(estimate)
    perm = np.asarray(match_components(reference, estimate))
    return to_numpy(permute(estimate, perm)), perm


def _engine_raw_draws(samples: GMMParams, engine_perms) -> GMMParams:
    """Undo an engine's own relabelling (``info["permutations"]``, (chain, draw, K)) so that
    ``rhat_before`` is measured on the draws as sampled."""
    if engine_perms is None:
        return samples
    engine_perms = np.asarray(engine_perms)
    if engine_perms.shape != np.shape(samples.weights):
        return samples
    inverse = np.argsort(engine_perms, axis=-1)
    return to_numpy(permute(samples, inverse))


def rhat_max(samples: GMMParams) -> dict:
    """Max rank-normalised R-hat over the entries of each parameter of (chain, draw, ...) draws,
    ``{"weights", "means", "covariances"}``: None where undefined (fewer than 2 chains or 4 draws, every
    entry constant) or not finite. Entries that do not vary are left out, as ArviZ's NaN is."""
    chains, draws = np.shape(samples.weights)[:2]
    out = dict.fromkeys(PARAMETERS)
    if chains < 2 or draws < 4:
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        values = {name: rank_rhat(column) for name, column in parameter_draws(samples).items()}
    for name in PARAMETERS:
        found = [v for key, v in values.items() if key.startswith(f"{name}[") and not np.isnan(v)]
        if found and np.isfinite(max(found)):
            out[name] = float(max(found))
    return out


def align_result(result: FitResult, reference: GMMParams, *, relabel: bool = True) -> FitResult:
    """A copy of ``result`` whose components line up with ``reference``.

    Permutes ``params``, the columns of ``responsibilities`` and ``info["assignments"]`` (if any) by
    the Hungarian match of the point estimate to ``reference``. When the result has posterior
    ``samples`` (and ``relabel``), the engine's own relabelling (``info["permutations"]``) is undone,
    every draw is relabelled against ``reference``, ``params`` becomes the component-wise mean of
    the relabelled draws (the engine's aligned point is kept in ``info["engine_params"]``), and
    ``info`` gains ``rhat_before`` (draws as sampled) / ``rhat_after`` (max R-hat per parameter,
    ArviZ rank-normalised split R-hat) and ``relabelled_fraction`` (share of draws whose
    relabelling differs from the most frequent one, i.e. the label-switched draws). ``info["alignment_perm"]`` is the
    permutation applied to the point estimate. Nothing is refitted.
    """
    reference = to_numpy(reference)
    params, perm = align_params(reference, result.params)
    info = relabel_component_info(result.info, perm)  # degeneracy entries, warnings, ... in the aligned labels
    info["alignment_perm"] = perm
    if "assignments" in info and info["assignments"] is not None:
        info["assignments"] = relabel_labels(info["assignments"], perm)
    resp = np.asarray(result.responsibilities)[..., perm] if result.responsibilities is not None else None
    samples = result.samples
    if samples is not None and relabel:
        samples = to_numpy(samples)
        k = samples.weights.shape[-1]
        if samples.weights.ndim == 2:  # (draw, K) -> (chain=1, draw, K)
            samples = GMMParams(*(a[None] for a in samples))
        raw = _engine_raw_draws(samples, info.get("permutations"))
        try:
            info["rhat_before"] = rhat_max(raw)
        except Exception:  # noqa: BLE001 - a diagnostic must never break the alignment
            info["rhat_before"] = None
        aligned_draws, draw_perms = relabel_draws(raw, reference)
        samples = GMMParams(*(np.asarray(a) for a in aligned_draws))
        draw_perms = np.asarray(draw_perms)
        flat_perms = draw_perms.reshape(-1, k)
        uniq, counts = np.unique(flat_perms, axis=0, return_counts=True)
        info["relabelled_fraction"] = float(1.0 - counts.max() / flat_perms.shape[0])
        try:
            info["rhat_after"] = rhat_max(samples)
        except Exception:  # noqa: BLE001
            info["rhat_after"] = None
        info["engine_params"] = params
        params = mean_of_draws(samples)
        # Hard labels of the engine (aligned to its own pivot) follow the point estimate's permutation.
        if info.get("assignment_draws") is not None and np.size(info["assignment_draws"]):
            info["assignment_draws"] = relabel_labels(info["assignment_draws"], perm)
    return dataclasses.replace(result, params=params, samples=samples, responsibilities=resp, info=info)


def align_results(results: dict, reference: GMMParams | None = None) -> tuple[dict, GMMParams]:
    """Align every result of ``{method: FitResult}`` to ``reference``.

    Without a truth (user data), the reference is the first result's point estimate (EM when it
    ran), so that colours and labels agree across engines. Returns ``(aligned_results, reference)``.
    """
    if not results:
        return {}, reference
    if reference is None:
        first = results.get("em") or next(iter(results.values()))
        reference = to_numpy(first.params)
    return {name: align_result(r, reference) for name, r in results.items()}, to_numpy(reference)
