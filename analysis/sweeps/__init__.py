"""The seed notebook's four questions as reproducible experiments ("sweeps").

    How do the algorithms change with different true GMM parameters (``separation``), different
    initialisations (``init``), different numbers of samples (``samples``), different numbers of
    clusters (``components``)? And a fifth: are the Bayesian engines calibrated (``calibration``,
    simulation-based calibration)?

Python API
----------
    tables = run_sweep("samples", seed=0, quick=True)              # dict: table name -> list of row dicts
    tables = run_sweep("components", seed=0, out_dir="out", methods=("em", "nuts"))
    figs = plot_sweep("samples", tables)                            # dict: figure name -> Figure

The command line is ``gmm-report sweep separation|init|samples|components|calibration [...]`` (:mod:`analysis.cli`).

Every sweep writes ``<table>.csv`` and ``<table>.json`` per table (columns in ``COLUMNS``),
``figures/<name>.png``, ``sweep.html`` (self-contained) and ``manifest.json``; the components axis
also writes ``selection.json`` (schema in ``SELECTION_SCHEMA``). Runs are seeded: the data of a
condition and repeat come from ``fold_in`` of the seed, so every engine sees the SAME data set
(common random numbers) and a rerun reproduces the tables (timings aside).

Cost control: ``quick=True`` shrinks grids and repeats and, by default, uses the engines whose
programs compile in seconds (EM, hard EM; MAP for the separation / init / samples axes).
NUTS always gets fewer repetitions (``NUTS_REPEATS``) and is skipped above ``NUTS_MAX_N`` rows in the
samples sweep; each skip is listed in the manifest's ``notes``. Compiled programs are cached per
shape by the engines, so repeats of one shape cost only run time.

Layout (one job per module): ``common`` (engine settings, a guarded fit, scores, table helpers),
one module per axis with its truth, experiment and figures (``separation``, ``initialisation``,
``samples``, ``components``, ``calibration``), and ``run`` (dispatch and the output directory). This file only
gathers the public names.
"""

from analysis.sweeps.calibration import CALIBRATION_PRIOR, sweep_calibration
from analysis.sweeps.common import NUTS_MAX_N, NUTS_REPEATS, QUICK_ENGINE_OPTIONS, SWEEP_ENGINE_OPTIONS
from analysis.sweeps.components import CONVENTIONS, SELECTION_SCHEMA, components_truth, sweep_components
from analysis.sweeps.initialisation import INIT_METHODS, REACHED_BEST_TOL, init_truth, sweep_init
from analysis.sweeps.run import AXES, COLUMNS, DEFAULT_METHODS, QUICK_METHODS, methods_for, plot_sweep, run_sweep, write_sweep
from analysis.sweeps.samples import sweep_samples
from analysis.sweeps.separation import SHAPES, separation_truth, sweep_separation

__all__ = [
    "AXES",
    "COLUMNS",
    "SELECTION_SCHEMA",
    "CONVENTIONS",
    "DEFAULT_METHODS",
    "QUICK_METHODS",
    "SWEEP_ENGINE_OPTIONS",
    "QUICK_ENGINE_OPTIONS",
    "NUTS_REPEATS",
    "NUTS_MAX_N",
    "REACHED_BEST_TOL",
    "INIT_METHODS",
    "SHAPES",
    "run_sweep",
    "plot_sweep",
    "write_sweep",
    "methods_for",
    "sweep_separation",
    "sweep_init",
    "sweep_samples",
    "sweep_components",
    "sweep_calibration",
    "CALIBRATION_PRIOR",
    "separation_truth",
    "init_truth",
    "components_truth",
]
