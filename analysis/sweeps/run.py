"""One sweep end to end: one job, dispatch to the axis, then write its directory.

:func:`run_sweep` runs an axis's experiment and returns its tables; :func:`plot_sweep` draws its
figures; :func:`write_sweep` writes ``<table>.csv`` / ``.json``, ``figures/*.png``, ``sweep.html``,
``manifest.json`` (and ``selection.json`` for the components axis) atomically.

Imports: the axis modules, :mod:`analysis.sweeps.common`, ``analysis.files`` and
``analysis.html_page``; JAX for a key given instead of a seed; matplotlib inside the writer.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax

from analysis.files import atomic_output_dir, csv_text, dumps_json, write_atomically
from analysis.html_page import figure_html, figure_png, render_html, table_html
from analysis.sweeps import calibration, components, initialisation, samples, separation
from analysis.sweeps.common import resolve_methods

__all__ = ["AXES", "COLUMNS", "DEFAULT_METHODS", "QUICK_METHODS", "methods_for", "run_sweep", "plot_sweep", "write_sweep"]

# axis name -> (module, experiment, figures); every module has COLUMNS, DEFAULT_METHODS, QUICK_METHODS, INTRO, CAPTIONS
_AXES = {
    "separation": (separation, separation.sweep_separation, separation.plot_separation),
    "init": (initialisation, initialisation.sweep_init, initialisation.plot_init),
    "samples": (samples, samples.sweep_samples, samples.plot_samples),
    "components": (components, components.sweep_components, components.plot_components),
    "calibration": (calibration, calibration.sweep_calibration, calibration.plot_calibration),
}
AXES = tuple(_AXES)
COLUMNS = {axis: module.COLUMNS for axis, (module, _, _) in _AXES.items()}
DEFAULT_METHODS = {axis: module.DEFAULT_METHODS for axis, (module, _, _) in _AXES.items()}
QUICK_METHODS = {axis: module.QUICK_METHODS for axis, (module, _, _) in _AXES.items()}
_CAPTIONS = {name: text for module, _, _ in _AXES.values() for name, text in module.CAPTIONS.items()}


def methods_for(axis: str, methods, quick: bool) -> list[str]:
    """The engines a sweep of ``axis`` runs: ``methods``, or the axis's (quick) default."""
    return resolve_methods(methods, (QUICK_METHODS if quick else DEFAULT_METHODS)[axis])


def run_sweep(axis: str, seed: int = 0, out_dir=None, quick: bool = False, repeats: int | None = None, methods=None,
              num_samples=None, engine_options: dict | None = None, progress=None, data=None, ks=None,
              force: bool = False, key=None, column_names=None, covariance_types=None) -> dict:
    """Run one sweep and return its tables: ``{table name: list of row dicts}`` (columns ``COLUMNS[axis]``).

    Parameters
    ----------
    axis : "separation" | "init" | "samples" | "components" | "calibration".
    seed : integer seed of the data and every fit (``key``, a jax PRNG key, overrides it).
    out_dir : when given, the tables (CSV + JSON), figures (PNG), sweep.html and manifest.json are
        written there (atomically; an existing non-empty directory needs ``force=True``).
    quick : small grids, few repeats and cheap engines (``QUICK_METHODS``) for tests and previews.
    repeats : repetitions per condition (init axis: number of seeds); NUTS uses at most ``NUTS_REPEATS``.
    methods : engines (default ``DEFAULT_METHODS[axis]`` or ``QUICK_METHODS[axis]``).
    num_samples : rows per data set (samples axis: the list of n).
    engine_options : ``{method: {option: value}}`` on top of ``SWEEP_ENGINE_OPTIONS``.
    progress : True (stderr), a callable taking a message, or None (silent).
    data, ks, column_names : components axis only: a user's (N, D) data (no truth), the K to try, the data's
        column names (the figures' axes).
    covariance_types : components axis only: the covariance types EM's BIC is searched over (default: all four;
        quick: full only).

    The result also has ``"notes"`` (list of strings: what was skipped or reduced, and why), the
    components axis ``"selection"`` (selection.json) and ``"_fits"`` (private, for the figures).
    """
    if axis not in _AXES:
        raise ValueError(f"unknown sweep axis {axis!r}; choose from {', '.join(AXES)}")
    if key is not None:
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    if (data is not None or ks is not None or column_names is not None or covariance_types is not None) \
            and axis != "components":
        raise ValueError("data and ks apply to the components axis only")
    start = time.perf_counter()
    notes: list = []
    kwargs = dict(seed=seed, quick=quick, repeats=repeats, methods=methods, num_samples=num_samples,
                  engine_options=engine_options, progress=progress, notes=notes)
    if axis == "components":
        kwargs.update(data=data, ks=ks, column_names=column_names, covariance_types=covariance_types)
    tables = _AXES[axis][1](**kwargs)
    tables["notes"] = notes
    settings = dict(axis=axis, seed=int(seed), quick=bool(quick), repeats=repeats,
                    methods=methods_for(axis, methods, quick), seconds=time.perf_counter() - start)
    if out_dir is not None:
        write_sweep(axis, tables, out_dir, settings=settings, force=force)
    return tables


def plot_sweep(axis: str, tables: dict) -> dict:
    """Figures of a sweep from its tables: ``{name: matplotlib Figure}`` (never shown)."""
    return _AXES[axis][2](tables)


def write_sweep(axis: str, tables: dict, out_dir, settings: dict | None = None, force: bool = False, figures: dict | None = None):
    """Write a sweep's tables (CSV + JSON), figures (PNG), sweep.html and manifest.json into ``out_dir``.

    The directory is built next to ``out_dir`` and renamed into place at the end
    (:func:`analysis.files.atomic_output_dir`), so an interrupted sweep leaves nothing half written.
    """
    import matplotlib.pyplot as plt

    module = _AXES[axis][0]
    with atomic_output_dir(out_dir, force) as tmp:
        figs = figures if figures is not None else plot_sweep(axis, tables)
        notes = tables.get("notes") or []
        # an axis run on a user's data says so in its own words (components: no true K claimed)
        intro, captions = tables.get("intro") or module.INTRO, {**_CAPTIONS, **(tables.get("captions") or {})}
        sections = [("Question", f"<p>{intro}</p>" + "".join(f'<p class="note">{n}</p>' for n in notes))]
        if axis == "components":
            sections.append(("Selected K", _selection_section(tables["selection"])))
            write_atomically(tmp / "selection.json", dumps_json(tables["selection"]))
        for name, fig in figs.items():
            png = figure_png(fig)
            write_atomically(tmp / "figures" / f"{name}.png", png)
            sections.append((name.replace("_", " ").capitalize(), figure_html(fig, captions.get(name, ""), name=name, png=png)))
            plt.close(fig)
        for name, columns in module.COLUMNS.items():
            rows = tables.get(name, [])
            write_atomically(tmp / f"{name}.csv", csv_text(rows, columns))
            write_atomically(tmp / f"{name}.json", dumps_json({"columns": columns, "rows": rows}))
            shown = rows if name != "runs" or len(rows) <= 60 else rows[:60]
            more = f"<p>First 60 of {len(rows)} rows; all in <code>{name}.csv</code>.</p>" if shown is not rows else ""
            sections.append((f"Table: {name}", table_html(columns, [[r.get(c) for c in columns] for r in shown]) + more))
        manifest = {"axis": axis, **(settings or {}), "notes": notes, "tables": dict(module.COLUMNS),
                    "figures": [f"figures/{n}.png" for n in figs]}
        write_atomically(tmp / "manifest.json", dumps_json(manifest))
        write_atomically(tmp / "sweep.html", render_html(f"gmm-report sweep {axis}", sections))
    return Path(out_dir)


def _selection_section(sj: dict) -> str:
    """HTML of the selected K per criterion, and the criteria's conventions."""
    conv = "".join(f"<li><b>{k.upper()}</b>: {v}</li>" for k, v in components.CONVENTIONS.items())
    chosen = ", ".join(f"{k.upper()} → K = {v} ({sj['criterion_method'][k]})" for k, v in sj["selected_k"].items() if v is not None)
    search = sj.get("model_selection")
    types = (f"<p>EM's BIC over K and {', '.join(search['covariance_types'])} covariances: K = {search['k']}, "
             f"{search['covariance_type']} covariances.</p>") if search else ""
    return f"<p>{chosen}" + (f"; true K = {sj['true_k']}" if sj["true_k"] else "") + f"</p>{types}<ul>{conv}</ul>"
