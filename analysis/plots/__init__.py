"""Figures of the comparison. Every function returns a matplotlib Figure; nothing calls plt.show, and
nothing here calls ArviZ: statistics (HDIs, kernel densities, draws per parameter kind) arrive as numbers
from ``analysis.arviz_io``.

The figures replace the seed notebook's per-iteration ``plt.show()`` calls. Families:

- ``style`` -- one palette (``ENGINE_COLORS``: every engine its colour in every figure of the report and the
  sweeps), engine labels, the data's plotting plane (:class:`Projection`: PCA of the standardised columns for
  D > 2), marginal Gaussians, the columns a figure shows (:func:`informative_columns`), ellipses;
- ``pairs`` -- :func:`plot_pairs`, the scatterplot matrix of D > 2 columns (the data and components figures);
- ``mixture`` -- :func:`plot_data`, :func:`plot_components`, :func:`plot_assignments`,
  :func:`plot_em_snapshots`: the data and the fitted components of every engine;
- ``traces`` -- :func:`plot_traces` (per-iteration log-likelihood / ELBO / KL / loss) and
  :func:`plot_trace_panels` (the trace plot of aligned draws);
- ``posterior`` -- :func:`plot_forest_panels` (every engine's estimates with ArviZ's HDIs, one panel per
  parameter kind, column and pair of columns, each on its own scale) and :func:`plot_ppc` (predictive checks);
- ``diagnostics`` -- :func:`plot_rank` (rank plots of MCMC draws) and :func:`plot_energy` (NUTS's energy).

Axes are labelled with the data's column names (``column_names``); titles say what the labels were
aligned to (``reference_label``: "truth", or the reference engine's estimate on user data). Results must be
aligned (``analysis.align``) so that component colours mean the same component in every panel.
"""

from .mixture import plot_assignments, plot_components, plot_data, plot_em_snapshots
from .diagnostics import plot_energy, plot_rank
from .pairs import plot_pairs
from .posterior import FOREST_MAX_COLUMNS, FOREST_MAX_HEIGHT_IN, plot_forest_panels, plot_ppc
from .style import (COMPONENT_COLORS, ENGINE_COLORS, ENGINE_LABELS, MAX_PAIR_COLUMNS, TRUTH_COLOR, Projection,
                    draw_gaussians, engine_color, engine_label, informative_columns, marginal, projection_for)
from .traces import CHAIN_STYLES, plot_trace_panels, plot_traces

__all__ = [
    "ENGINE_COLORS",
    "ENGINE_LABELS",
    "COMPONENT_COLORS",
    "TRUTH_COLOR",
    "CHAIN_STYLES",
    "FOREST_MAX_HEIGHT_IN",
    "FOREST_MAX_COLUMNS",
    "MAX_PAIR_COLUMNS",
    "informative_columns",
    "marginal",
    "plot_pairs",
    "plot_rank",
    "plot_energy",
    "engine_color",
    "engine_label",
    "draw_gaussians",
    "Projection",
    "projection_for",
    "plot_data",
    "plot_components",
    "plot_assignments",
    "plot_traces",
    "plot_em_snapshots",
    "plot_forest_panels",
    "plot_trace_panels",
    "plot_ppc",
]
