"""Input checks shared by every engine: one-line ValueErrors naming the argument."""

from __future__ import annotations

import numpy as np

_SUBSAMPLE = 20_000


def check_data(x, *, allow_missing: bool = False) -> np.ndarray:
    """Return ``x`` as a 2-D float32/float64 numpy array, or raise ``ValueError`` naming ``x``.

    ``allow_missing``: NaN marks a missing entry (``models.missing``) and passes; inf never does."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"x could not be converted to an array: {exc}") from None
    if arr.ndim != 2:
        raise ValueError(f"x must be a 2-D array of shape (num_samples, num_features), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"x must have at least one row and one column, got shape {arr.shape}")
    if np.iscomplexobj(arr):
        raise ValueError(f"x must be real-valued, got complex dtype {arr.dtype} (take .real or np.abs first)")
    if arr.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise ValueError(f"x must be numeric, got dtype {arr.dtype}")
        arr = arr.astype(np.float32 if arr.dtype == np.float16 else np.float64)
    finite = (np.isfinite(arr) | np.isnan(arr)).all(axis=1) if allow_missing else np.isfinite(arr).all(axis=1)
    if not finite.all() and allow_missing:
        bad = np.flatnonzero(~finite)
        raise ValueError(f"x contains inf in {bad.size} row(s), first at row {bad[0]} (NaN marks a missing value; inf is not one)")
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(f"x contains NaN or inf in {bad.size} row(s), first at row {bad[0]}")
    return arr


FLOAT32_RESOLUTION = 0.03  # float32 spacing at a column's largest value, as a fraction of its standard deviation


def check_float32_resolution(x, *, dtype=None, max_abs=None, std=None):
    """Refuse float32 data whose values are too large for float32 to resolve their spread.

    float32 keeps ~7 significant digits: a column of values near 1e7 with a standard deviation of 1 holds
    integers only. The rows are then not the data the user measured, and no fit of them (float32 or
    float64) recovers it. Raised when, for some column, the float32 spacing at its largest absolute value
    exceeds ``FLOAT32_RESOLUTION`` of its standard deviation (the rounding then adds more than ~1e-4 of
    the column's variance). ``x`` (N, D), or its dtype with per-column ``max_abs`` and ``std``
    (streamed data). Float64 data and constant columns pass.
    """
    dtype = np.dtype(x.dtype if x is not None else dtype)
    if dtype != np.float32:
        return
    if x is not None:  # NaN (missing values) are left out
        has_nan = bool(np.isnan(x).any())
        max_abs = (np.nanmax if has_nan else np.max)(np.abs(x), axis=0).astype(np.float64)
        std = (np.nanstd if has_nan else np.std)(x, axis=0, dtype=np.float64)
    spacing = np.spacing(np.asarray(max_abs, np.float32)).astype(np.float64)
    bad = np.flatnonzero((np.asarray(std) > 0) & (spacing > FLOAT32_RESOLUTION * np.asarray(std)))
    if bad.size:
        j = int(bad[0])
        raise ValueError(f"x (float32) cannot resolve column {j}: its values reach {max_abs[j]:.6g}, where float32 "
                         f"steps by {spacing[j]:.3g}, more than {FLOAT32_RESOLUTION:g} of its standard deviation "
                         f"({std[j]:.3g}); pass the data as float64 (or subtract an offset before converting)")


def count_distinct_rows(x: np.ndarray, at_least: int) -> int:
    """Number of distinct rows of ``x``; stops early (on a subsample) once ``at_least`` is certain."""
    if x.shape[0] > _SUBSAMPLE:
        sub = np.unique(x[:: max(1, x.shape[0] // _SUBSAMPLE)], axis=0).shape[0]
        if sub >= at_least:
            return sub
    return np.unique(x, axis=0).shape[0]


def check_num_components(num_components, x: np.ndarray) -> int:
    """Validate K against the data: 1 <= K <= N and at least K distinct rows."""
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)):
        raise ValueError(f"num_components must be an integer, got {num_components!r}")
    num_components = int(num_components)
    if num_components < 1:
        raise ValueError(f"num_components must be >= 1, got {num_components}")
    if num_components > x.shape[0]:
        raise ValueError(f"num_components ({num_components}) exceeds the number of rows of x ({x.shape[0]})")
    distinct = count_distinct_rows(x, num_components)
    if distinct < num_components:
        raise ValueError(f"x has only {distinct} distinct rows, fewer than num_components ({num_components})")
    return num_components


def check_positive(name: str, value, *, integer: bool = False, allow_zero: bool = False):
    """A finite positive (or non-negative) scalar option, else ``ValueError`` naming it."""
    ok_type = isinstance(value, (int, np.integer)) if integer else isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not ok_type or not np.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "integer" if integer else "number"
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be a finite {kind} {bound}, got {value!r}")
    return value


def check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_option_names(method: str, options, valid) -> None:
    """Refuse an option name ``method`` does not take: a one-line ``ValueError`` naming it, the closest
    valid name (difflib) when there is one, and every valid name."""
    import difflib

    valid = sorted(valid)
    unknown = [name for name in options if name not in valid]
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(str(name), valid, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown {method} option {name!r}{hint}; valid options: {', '.join(valid)}")
