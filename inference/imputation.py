"""Multiple imputation of missing entries (NaN) from a fit: a mean and an interval per missing cell.

For a fit with posterior draws (``svi``, ``nuts``: ``result.samples``) every kept draw theta_s completes the
data once, ``x_m ~ p(x_m | x_o, theta_s)`` (:func:`models.missing.sample_missing`): the completed data sets
are draws from the posterior predictive of the missing entries, so their spread carries both the
uncertainty of the entries given the parameters and that of the parameters (Rubin 1987; Little & Rubin,
*Statistical Analysis with Missing Data*, 2019, 10.2). For a point estimate (``em``, ``hard_em``, ``map``:
no draws) the draws are conditional draws at that one point: the intervals then ignore the parameters'
uncertainty (narrower than they should be, markedly so for small data).

Intervals are the draws' empirical quantiles (``np.quantile``, linear): with S draws a held-out value falls
inside with probability about ``level (S - 1) / (S + 1)`` (order statistics), 0.891 for 0.9 at S = 200.
Measured (``tests/test_missing_numpyro.py``): at the true parameters of the seed mixture, 1,641 held-out
cells (20% MCAR), 90% intervals cover 0.883 and 50% ones 0.508; from NUTS on 500 rows with 15% holes, 0.880
of 166 cells.

Cost: only rows with a hole are touched; they go in padded chunks (one compiled program per shape) with
every draw vmapped, chunk rows chosen so that a chunk's per-row tables stay under ``MAX_CHUNK_ELEMENTS``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from models.missing import missing_patterns, sample_missing_filled
from models.params import GMMParams

from .validate import check_data

MAX_DRAWS = 200  # posterior draws kept (evenly thinned) / conditional draws at a point estimate
MAX_CHUNK_ELEMENTS = 1 << 23  # draws x rows x K x D x D per chunk (64 MiB of float64)

__all__ = ["Imputations", "multiple_imputations", "MAX_DRAWS"]


class Imputations(NamedTuple):
    """The missing cells of ``x``, row-major, M of them.

    rows, columns : (M,) int, the cell's row and column in ``x``.
    mean : (M,) the mean of the imputed values over the draws (a Monte Carlo ``E[x_m | x_o]``).
    lower, upper : (M,) the equal-tailed interval of the draws at ``level``.
    level : the intervals' nominal coverage; num_draws : completed data sets drawn.
    """

    rows: np.ndarray
    columns: np.ndarray
    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    num_draws: int


def _draws_of(result, max_draws: int) -> tuple[GMMParams, bool]:
    """(S draws of GMMParams with a leading (S,) dim, whether they are posterior draws)."""
    samples = getattr(result, "samples", None)
    if samples is None:
        return GMMParams(*(np.broadcast_to(np.asarray(a), (max_draws,) + np.shape(a)) for a in result.params)), False
    flat = GMMParams(*(np.asarray(a).reshape((-1,) + np.shape(a)[2:]) for a in samples))
    total = flat.weights.shape[0]
    index = np.unique(np.linspace(0, total - 1, min(max_draws, total)).round().astype(int))
    return GMMParams(*(a[index] for a in flat)), True


@jax.jit
def _chunk_draws(keys, params: GMMParams, x, index, observed):
    """(S, B, D) completed rows, one set per draw: ``sample_missing_filled`` vmapped over (keys, params)."""
    return jax.vmap(sample_missing_filled, in_axes=(0, 0, None, None, None))(keys, params, x, index, observed)


def multiple_imputations(result, x, key, *, level: float = 0.9, max_draws: int = MAX_DRAWS) -> Imputations:
    """Mean and ``level`` interval of every missing cell of ``x`` over completed data sets drawn from ``result``.

    Parameters
    ----------
    result : a FitResult (data units). With ``samples`` (svi, nuts): one completed data set per posterior
        draw, evenly thinned to at most ``max_draws``. Without (em, hard_em, map): ``max_draws``
        conditional draws at ``result.params`` (intervals ignore parameter uncertainty; module docstring).
    x : (N, D) the data the fit saw, NaN where missing.
    key : PRNG key.
    level : nominal coverage of the equal-tailed intervals, in (0, 1).
    max_draws : completed data sets at most (default 200).

    Returns
    -------
    :class:`Imputations` (empty arrays when ``x`` has no NaN).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if isinstance(max_draws, bool) or not isinstance(max_draws, (int, np.integer)) or max_draws < 1:
        raise ValueError(f"max_draws must be a positive integer, got {max_draws!r}")
    x = check_data(x, allow_missing=True)
    dtype = np.asarray(result.params.means).dtype
    draws, _ = _draws_of(result, int(max_draws))
    draws = GMMParams(*(jnp.asarray(a, dtype) for a in draws))
    num_draws = int(draws.weights.shape[0])
    holes = np.isnan(x)
    rows_with = np.flatnonzero(holes.any(axis=1))
    rows, columns = np.nonzero(holes)
    if rows_with.size == 0:
        empty = np.zeros(0)
        return Imputations(rows, columns, empty, empty, empty, float(level), num_draws)
    patterns = missing_patterns(x[rows_with])
    filled = np.where(holes[rows_with], 0.0, x[rows_with]).astype(dtype)
    num_components, num_features = draws.means.shape[-2:]
    chunk = int(max(1, min(rows_with.size, MAX_CHUNK_ELEMENTS // (num_draws * num_components * num_features**2))))
    tail = (1.0 - level) / 2
    mean, lower, upper = [], [], []
    for i, begin in enumerate(range(0, rows_with.size, chunk)):
        stop = min(begin + chunk, rows_with.size)
        pad = chunk - (stop - begin)  # padded to one shape: one compiled program
        part = np.pad(filled[begin:stop], ((0, pad), (0, 0)))
        index = np.pad(patterns.index[begin:stop], (0, pad))
        keys = jax.random.split(jax.random.fold_in(key, i), num_draws)
        completed = np.asarray(_chunk_draws(keys, draws, jnp.asarray(part), jnp.asarray(index),
                                            jnp.asarray(patterns.observed)))[:, : stop - begin]  # (S, B, D)
        cells = holes[rows_with[begin:stop]]  # (B, D), row-major like np.nonzero
        values = completed[:, cells]  # (S, cells)
        mean.append(values.mean(axis=0))
        lower.append(np.quantile(values, tail, axis=0))
        upper.append(np.quantile(values, 1.0 - tail, axis=0))
    return Imputations(rows, columns, np.concatenate(mean), np.concatenate(lower), np.concatenate(upper),
                       float(level), num_draws)
