"""The host side of minibatch SVI (:mod:`inference.numpyro_minibatch`): one pre-pass over the rows (a ``.npy`` read
by ``pread``, or an array) for the standardisation, the missingness patterns and the start's subsample, and the
batches of each step.

Pre-pass (:func:`streamed_moments`): each column's mean and sd over its observed values (float64, Chan's pairwise
merge of per-block moments), inf refused in one line, the rows' missingness patterns as bit codes (NaN marks a
missing value; at most ``MAX_PATTERN_COLUMNS`` columns then), and the rows of the start's subsample.

Batches (:class:`BatchReader`): each step's B rows are ``pieces`` (default 16) runs of ``B / pieces`` contiguous
rows, each starting at a uniformly random row and wrapping around the end, read with ``os.pread``
(:class:`inference.host_readers.NpyRows`; an array is sliced). Every row is then in a batch with probability
exactly ``B / N`` (unbiased), reads stay a few pages each, and a file sorted by cluster still gives batches that
mix ``pieces`` places of it. Each row's pattern is its index in the sorted codes (:func:`patterns_of`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .host_readers import NpyRows
from .standardize import Standardizer

__all__ = ["open_rows", "Moments", "pattern_codes", "streamed_moments", "BatchReader", "patterns_of", "observed_table",
           "PIECES", "MAX_PATTERN_COLUMNS"]

PIECES = 16  # contiguous runs per batch
PREPASS_ROWS = 1 << 16
MAX_PATTERN_COLUMNS = 62  # missingness patterns as int64 bit codes


def open_rows(source):
    """(sliceable rows, N, D) of a ``.npy`` path (read by ``pread``) or an in-memory (N, D) array."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not path.endswith(".npy"):
            raise ValueError(f"x as a path must name a .npy file, got {path!r}")
        rows = NpyRows(path)
        if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] < 1:
            raise ValueError(f"x must be a 2-D array (num_samples, num_features), got shape {rows.shape} in {path!r}")
        return rows, int(rows.shape[0]), int(rows.shape[1])
    x = np.asarray(source)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"x must be a 2-D array (num_samples, num_features), got shape {x.shape}")
    return x, int(x.shape[0]), int(x.shape[1])


class Moments(NamedTuple):
    """What the pre-pass found: the standardisation, the start's rows (float64, data units), the sorted bit codes
    of the rows' missingness patterns (bit d set: column d observed; None without NaN) and each column's count
    of observed values (D,)."""

    st: Standardizer
    x_start: np.ndarray
    codes: np.ndarray | None
    observed: np.ndarray


def pattern_codes(seen: np.ndarray) -> np.ndarray:
    """(N,) int64 bit code of each row's observed columns (``seen`` (N, D) bool, D <= MAX_PATTERN_COLUMNS)."""
    return seen.astype(np.int64) @ (np.int64(1) << np.arange(seen.shape[1], dtype=np.int64))


def streamed_moments(rows, num_rows: int, start_index: np.ndarray) -> Moments:
    """One pass over ``rows`` in blocks: each column's mean and sd over its observed values (float64, Chan's
    merge of block moments), inf refused in one line, the missingness patterns, and the rows at the sorted
    ``start_index`` (the start's subsample)."""
    num_features = int(rows.shape[1])
    count, mean, m2 = np.zeros(num_features), np.zeros(num_features), np.zeros(num_features)
    picked, codes = [], set()
    for first in range(0, num_rows, PREPASS_ROWS):
        block = np.asarray(rows[first: first + PREPASS_ROWS], np.float64)
        if np.isinf(block).any():
            bad = first + int(np.flatnonzero(np.isinf(block).any(axis=1))[0])
            raise ValueError(f"x has inf first at row {bad}: inf is not a missing value (write NaN for one)")
        seen = ~np.isnan(block)
        b = seen.sum(axis=0).astype(np.float64)
        if not seen.all():
            if num_features > MAX_PATTERN_COLUMNS:
                raise ValueError(f"x has NaN (missing values) in {num_features} columns: minibatch SVI takes missing "
                                 f"values in at most {MAX_PATTERN_COLUMNS} columns (fit em, or the in-memory svi)")
            codes.update(np.unique(pattern_codes(seen)).tolist())
        filled = np.where(seen, block, 0.0)
        b_mean = filled.sum(axis=0) / np.maximum(b, 1)
        b_m2 = np.sum(np.where(seen, block - b_mean, 0.0) ** 2, axis=0)
        total = count + b
        delta = b_mean - mean
        share = np.where(total > 0, b / np.maximum(total, 1), 0.0)
        mean = mean + delta * share
        m2 = m2 + b_m2 + delta**2 * count * share
        count = total
        lo, hi = np.searchsorted(start_index, [first, first + block.shape[0]])
        picked.append(block[start_index[lo:hi] - first])
    if codes:
        full = (1 << num_features) - 1
        codes.add(full)  # complete rows always have a pattern (a batch may hold only them)
    empty = np.flatnonzero(count <= 0)
    if empty.size:
        raise ValueError(f"x: column(s) {empty.tolist()} have no observed value (all NaN); drop those columns")
    scale = np.sqrt(m2 / count)
    constant = np.flatnonzero(~(scale > 0))
    if constant.size:
        raise ValueError(f"x: column(s) {constant.tolist()} are constant; the NumPyro engines standardise every "
                         "column by its spread (drop those columns)")
    return Moments(Standardizer(mean, scale), np.concatenate(picked), np.array(sorted(codes), np.int64) if codes else None,
                   count)


class BatchReader:
    """Standardised batches of ``batch_size`` rows: ``pieces`` runs of contiguous rows, each from a uniformly
    random start, wrapping around the end (module docstring: every row with probability B / N)."""

    def __init__(self, rows, num_rows: int, st: Standardizer, batch_size: int, seed, pieces: int = PIECES):
        self.rows, self.num_rows, self.st, self.batch_size = rows, num_rows, st, batch_size
        self.pieces = max(1, min(pieces, batch_size))
        self.rng = np.random.default_rng(seed)

    def _run(self, start: int, length: int) -> np.ndarray:
        end = start + length
        if end <= self.num_rows:
            return np.asarray(self.rows[start:end], np.float64)
        return np.concatenate([np.asarray(self.rows[start:self.num_rows], np.float64),
                               np.asarray(self.rows[0:end - self.num_rows], np.float64)])

    def batch(self) -> np.ndarray:
        """(B, D) standardised rows (NaN where missing)."""
        b = self.batch_size
        if b >= self.num_rows:
            out = np.asarray(self.rows[0:self.num_rows], np.float64)
        else:
            lengths = np.full(self.pieces, b // self.pieces)
            lengths[: b % self.pieces] += 1
            starts = self.rng.integers(0, self.num_rows, self.pieces)
            out = np.concatenate([self._run(int(s), int(n)) for s, n in zip(starts, lengths)])
        return (out - self.st.loc) / self.st.scale

    def batches(self, count: int, codes: np.ndarray | None = None) -> tuple:
        """(count, B, D) standardised rows, and (count, B) int32 pattern indices into ``codes`` (None without)."""
        x = np.stack([self.batch() for _ in range(count)])
        return x, patterns_of(x, codes)


def patterns_of(x: np.ndarray, codes: np.ndarray | None):
    """Each row's index in the sorted pattern ``codes`` (int32, shape of ``x`` without its last axis), or None."""
    if codes is None:
        return None
    return np.searchsorted(codes, pattern_codes(~np.isnan(x.reshape(-1, x.shape[-1])))).reshape(x.shape[:-1]).astype(np.int32)


def observed_table(codes: np.ndarray, num_features: int) -> np.ndarray:
    """(P, D) bool: the columns each pattern code observes."""
    return ((codes[:, None] >> np.arange(num_features, dtype=np.int64)) & 1).astype(bool)
