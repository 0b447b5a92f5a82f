"""EM and hard EM on rows with missing entries (NaN), missing at random: the device side.

Ghahramani & Jordan (1994); Murphy, *Machine Learning: a Probabilistic Perspective*, 11.6.1. The E-step
of row n (observed coordinates o, pattern p) and component k uses :class:`models.missing.PatternTables`:
with ``x'`` the row with 0 at its holes and ``y = W_pk x' - offset_pk`` its whitened residual,

* the log joint of the observed sub-vector: ``log_norm_pk - |y|^2 / 2``;
* the completed row ``xhat_nk = x' + fill_pk + gain_pk y`` (= E[x_n | x_n,o, z_n = k]);
* the expected sufficient statistics ``sum_n r_nk xhat_nk`` and
  ``sum_n r_nk xhat_nk xhat_nk^T + sum_p R_pk cond_cov_pk`` with ``R_pk = sum_{n in p} r_nk``
  (a segment sum per chunk; the covariance term is added once per E-step).

Every covariance type's M-step reads these statistics (diag / spherical only their diagonals). Hard EM
takes the argmax of the same joint. The ELBO adds the entropy of q(x_m | x_o, k) to that of q(z), so that
``KL = log p(x_o) - ELBO >= 0`` still holds (and is 0 when theta does not move).

Pattern of a row on the device: the bit code ``sum_j isnan(x_j) 2^j`` (int64, so at most
``MAX_MISSING_FEATURES`` columns) looked up by ``searchsorted`` in the sorted table of the codes seen by
the host pre-pass (:func:`host_codes`), padded to a power of two with a sentinel (one program per bucket).
Rows with nothing observed have weight 0 (they carry no information). Complete data never comes here
(``inference.rows.Layout.missing`` is False and EM runs its quadratic-feature GEMMs).

Cost: every row gathers its (K, D, D) tables, ~26x the complete program per iteration at (2e5, 8, 8) with
10% of cells missing (``benchmarks/bench_missing.py``). This per-row E-step now serves streamed rows only;
in memory the rows are grouped by pattern and the E-step runs the complete program's GEMMs with per-pattern
coefficients (:mod:`inference.missing_blocks`, 1.1-1.5x the complete program at (1e6, 8, 8)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from models.linalg import cholesky
from models.missing import pattern_tables

from .stats import weighted_posterior

MAX_MISSING_FEATURES = 62
_SENTINEL = np.iinfo(np.int64).max


# --------------------------------------------------------------------------- host side


def host_codes(missing: np.ndarray) -> np.ndarray:
    """(N,) int64 bit codes of the rows' missing masks ``missing`` (N, D) bool (bit j = column j missing)."""
    bits = (np.int64(1) << np.arange(missing.shape[1], dtype=np.int64))
    return missing.astype(np.int64) @ bits


def code_table(codes) -> np.ndarray:
    """Sorted distinct codes padded with a sentinel to a power of two (at least 4): the program's table."""
    codes = np.unique(np.asarray(codes, np.int64))
    size = max(4, 1 << int(math.ceil(math.log2(max(1, codes.size)))))
    return np.concatenate([codes, np.full(size - codes.size, _SENTINEL, np.int64)])


def summarise(missing: np.ndarray, acc: dict | None = None) -> dict:
    """Running counts of the holes of a (N, D) mask: cells, rows with any / every value missing, codes."""
    acc = acc if acc is not None else {"cells": 0, "rows_with_missing": 0, "rows_all_missing": 0, "codes": set()}
    acc["cells"] += int(missing.sum())
    acc["rows_with_missing"] += int(missing.any(axis=1).sum())
    acc["rows_all_missing"] += int(missing.all(axis=1).sum())
    if missing.any():
        acc["codes"].update(np.unique(host_codes(missing)).tolist())
    return acc


def check_missing_columns(num_features: int, observed_weight: np.ndarray):
    """Refuse more columns than the codes hold, and columns with no observed value (nothing to estimate)."""
    if num_features > MAX_MISSING_FEATURES:
        raise ValueError(f"x has NaN (missing values) and {num_features} columns: EM handles missing values in "
                         f"at most {MAX_MISSING_FEATURES} columns")
    empty = np.flatnonzero(np.asarray(observed_weight) <= 0)
    if empty.size:
        raise ValueError(f"x: column {int(empty[0])} has no observed value (every entry NaN, or weight 0): "
                         f"drop it before fitting")


# --------------------------------------------------------------------------- device side


def pattern_index(codes_table, missing):
    """(c,) index into ``codes_table`` (P,) of each row's missing mask ``missing`` (c, D) bool."""
    bits = jnp.asarray(np.int64(1) << np.arange(missing.shape[1], dtype=np.int64))
    code = jnp.sum(jnp.where(missing, bits, 0), axis=1)
    return jnp.clip(jnp.searchsorted(codes_table, code), 0, codes_table.shape[0] - 1)


def observed_table(codes_table, num_features: int):
    """(P, D) bool: True where the pattern observes the column."""
    return ((codes_table[:, None] >> jnp.arange(num_features, dtype=codes_table.dtype)) & 1) == 0


def fill_missing(xc, wc):
    """A chunk completed with 0 at its holes (the column means: the rows are centred on them) and weight 0
    for rows with nothing observed: what the initialisers and the data moments read."""
    missing = jnp.isnan(xc)
    return jnp.where(missing, 0.0, xc), jnp.where(jnp.all(missing, axis=1), 0.0, wc)


def reads_missing(fn):
    """Mark a chunk function as one that reads the NaN itself (``inference.rows`` fills them otherwise)."""
    fn.reads_missing = True
    return fn


def _joint_and_white(tables, xf, idx):
    """(c, K) log joint of the observed sub-vectors, (c, K, D) whitened residuals."""
    white = jnp.einsum("nkij,nj->nki", tables.whiten[idx], xf) - tables.offset[idx]
    return tables.log_norm[idx] - 0.5 * jnp.sum(white * white, axis=-1), white


def _estep_chunk(args, xc, wc, row0, *, hard: bool, full_moment: bool):
    """One chunk's weighted statistics: ((counts, sum_x, sum_xx, R (P, K)), log_lik, entropy, worst)."""
    tables, codes_table = args
    missing = jnp.isnan(xc)
    xf = jnp.where(missing, 0.0, xc)
    wc = jnp.where(jnp.all(missing, axis=1), 0.0, wc)
    idx = pattern_index(codes_table, missing)
    joint, white = _joint_and_white(tables, xf, idx)
    post, resp, point_ll, log_lik, worst_ll, worst_rows = weighted_posterior(joint, wc, xf, hard)
    if hard:
        entropy = jnp.zeros((), xf.dtype)
    else:
        entropy = jnp.sum(jnp.where(wc > 0, wc * (point_ll - jnp.sum(post * joint, axis=1)), 0.0))
    completed = xf[:, None, :] + tables.fill[idx] + jnp.einsum("nkij,nkj->nki", tables.gain[idx], white)
    sum_x = jnp.einsum("nk,nki->ki", resp, completed)
    if full_moment:
        sum_xx = jnp.einsum("nki,nkj->kij", resp[:, :, None] * completed, completed)
    else:
        sum_xx = jnp.einsum("nk,nki->ki", resp, completed * completed)
    per_pattern = jax.ops.segment_sum(resp, idx, num_segments=codes_table.shape[0])  # (P, K)
    return (resp.sum(axis=0), sum_x, sum_xx, per_pattern), log_lik, entropy, worst_ll, worst_rows


def estep_chunk_fn(hard: bool, full_moment: bool):
    import functools

    return reads_missing(functools.partial(_estep_chunk, hard=hard, full_moment=full_moment))


def tables_of(params, codes_table):
    """The pattern tables of ``params`` for the program's code table."""
    return pattern_tables(params, observed_table(codes_table, params.means.shape[-1]))


def zero_stats(num_components: int, num_features: int, num_patterns: int, full_moment: bool, dtype):
    second = (num_components, num_features, num_features) if full_moment else (num_components, num_features)
    return (jnp.zeros(num_components, dtype), jnp.zeros((num_components, num_features), dtype),
            jnp.zeros(second, dtype), jnp.zeros((num_patterns, num_components), dtype))


def finish_stats(tables, codes_table, sums, full_moment: bool):
    """(counts, sum_x, sum_xx with the conditional covariances added, entropy of q(x_m | x_o, z))."""
    counts, sum_x, sum_xx, per_pattern = sums
    cond = tables.cond_cov  # (P, K, D, D), 0 outside the missing block
    if full_moment:
        sum_xx = sum_xx + jnp.einsum("pk,pkij->kij", per_pattern, cond)
    else:
        sum_xx = sum_xx + jnp.einsum("pk,pki->ki", per_pattern, jnp.diagonal(cond, axis1=-2, axis2=-1))
    num_features = cond.shape[-1]
    observed = observed_table(codes_table, num_features).astype(cond.dtype)[:, None, :]  # (P, 1, D)
    num_missing = jnp.sum(1.0 - observed, axis=-1)  # (P, 1)
    chol = cholesky(cond + jnp.eye(num_features, dtype=cond.dtype) * observed[..., None])
    log_det = jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    per_entropy = 0.5 * num_missing * (1.0 + math.log(2 * math.pi)) + log_det  # (P, K)
    entropy = jnp.sum(jnp.where(per_pattern > 0, per_pattern * per_entropy, 0.0))
    return counts, sum_x, sum_xx, entropy


def final_rows(params, codes_table, xc, hard: bool):
    """(c, K) responsibilities (one-hot for hard EM) and (c,) log-likelihoods of the observed entries (0 for
    rows with nothing observed: their responsibilities are the weights)."""
    missing = jnp.isnan(xc)
    tables = tables_of(params, codes_table)
    joint, _ = _joint_and_white(tables, jnp.where(missing, 0.0, xc), pattern_index(codes_table, missing))
    point_ll = jax.scipy.special.logsumexp(joint, axis=1)
    if hard:
        resp = jax.nn.one_hot(jnp.argmax(joint, axis=1), joint.shape[1], dtype=joint.dtype)
    else:
        resp = jnp.exp(joint - point_ll[:, None])
    return resp, jnp.where(jnp.all(missing, axis=1), 0.0, point_ll)


def moments_chunk(args, xc, wc, row0):
    """(sum w, sum w x', sum w x' x'^T, per-column observed weight) of a chunk, x' = holes at 0."""
    xf, wc = fill_missing(xc, wc)
    return wc.sum(), wc @ xf, (xf * wc[:, None]).T @ xf, wc @ (~jnp.isnan(xc)).astype(xf.dtype)


reads_missing(moments_chunk)


def data_covariance(sums):
    """The data covariance (D, D) from :func:`moments_chunk`'s sums: each column's variance from its
    observed values, the correlations those of the rows completed with the column means (positive
    semi-definite: the mean-completed covariance rescaled on both sides)."""
    total, sum_x, sum_xx, observed = sums
    denom = lambda t: jnp.where(t > 1, t - 1, jnp.maximum(t, 1e-300))
    completed = (sum_xx - jnp.outer(sum_x, sum_x) / total) / denom(total)
    completed = 0.5 * (completed + completed.T)
    var = (jnp.diagonal(sum_xx) - sum_x**2 / observed) / denom(observed)
    diag = jnp.diagonal(completed)
    scale = jnp.where(diag > 0, jnp.sqrt(jnp.maximum(var, 0.0) / jnp.where(diag > 0, diag, 1.0)), 0.0)
    cov = completed * jnp.outer(scale, scale)
    return cov + jnp.diag(jnp.where(diag > 0, 0.0, jnp.maximum(var, 0.0)))


__all__ = ["MAX_MISSING_FEATURES", "host_codes", "code_table", "summarise", "check_missing_columns",
           "pattern_index", "observed_table", "fill_missing", "reads_missing", "estep_chunk_fn", "tables_of",
           "zero_stats", "finish_stats", "final_rows", "moments_chunk", "data_covariance"]
