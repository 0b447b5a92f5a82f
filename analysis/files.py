"""Files in and out of the commands: one job, reading a user's data and writing output directories.

- in: :func:`load_data` reads a CSV with a header row or a ``.npy`` array as float64 (N, D), refusing
  bad input with one-line :class:`~analysis.errors.ReportError`; :func:`sha256_of_array` /
  :func:`sha256_of_file` fingerprint the data;
- out: :func:`atomic_output_dir` builds a directory next to its final place and renames it there at
  the end (an interrupted run leaves nothing), :func:`write_atomically` does the same for one file,
  :func:`dumps_json` writes strict JSON (NaN/inf -> null, numpy -> Python), :func:`csv_text` a table.

Imports: the standard library, numpy and :mod:`analysis.errors` (no JAX, no matplotlib).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from analysis.errors import ReportError

__all__ = [
    "load_data",
    "sha256_of_array",
    "sha256_of_file",
    "prepare_output_dir",
    "finalize_output_dir",
    "atomic_output_dir",
    "check_output_dir",
    "write_atomically",
    "clean_json",
    "dumps_json",
    "csv_text",
]

# --------------------------------------------------------------------------- a user's data


def load_data(path) -> tuple[np.ndarray, list[str]]:
    """Load ``path`` (.npy, or CSV with a header row) as a float64 (N, D) array and its column names.

    Raises ReportError with one line: missing file, a directory, empty file, ragged rows, a non-numeric column,
    rows with missing / NaN / inf values.
    """
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"data file {str(path)!r} is a directory; give a CSV or .npy file")
    if not path.is_file():
        raise ReportError(f"data file {str(path)!r} not found")
    if path.suffix.lower() == ".npy":
        arr, names = _load_npy(path)
    else:
        arr, names = _load_csv(path)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        where = np.flatnonzero(bad)
        offset = 2 if path.suffix.lower() != ".npy" else 0
        listed = ", ".join(str(int(i) + offset) for i in where[:5]) + (", ..." if where.size > 5 else "")
        raise ReportError(f"{path.name}: {where.size} row(s) with missing, NaN or inf values ({'line' if offset else 'row'} {listed})")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ReportError(f"{path.name}: no data")
    return arr, names


def _load_npy(path: Path) -> tuple[np.ndarray, list[str]]:
    """A numeric .npy array as float64 (N, D) (a 1-D array is one column) and names x0, x1, ..."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001
        raise ReportError(f"cannot read {path.name} as .npy: {exc}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ReportError(f"{path.name}: expected a 2-D array (rows, columns), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ReportError(f"{path.name}: array is not numeric (dtype {arr.dtype})")
    return arr.astype(np.float64), [f"x{j}" for j in range(arr.shape[1])]


def _load_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    """A CSV with a header row as float64 (N, D) (missing cells -> NaN) and its column names."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path.name}: not a readable CSV file ({exc})") from None
    if not rows:
        raise ReportError(f"{path.name}: the file is empty")
    names = [c.strip() for c in rows[0]]
    if all(_is_number(c) for c in names):
        raise ReportError(f"{path.name}: the first row must be a header of column names, got numbers")
    body = rows[1:]
    if not body:
        raise ReportError(f"{path.name}: no data rows after the header")
    for i, r in enumerate(body):
        if len(r) != len(names):
            raise ReportError(f"{path.name}: row {i + 2} has {len(r)} fields, the header has {len(names)}")
    arr = np.empty((len(body), len(names)))
    for j, name in enumerate(names):
        for i, r in enumerate(body):
            cell = r[j].strip()
            if cell == "" or cell.lower() in ("na", "nan", "null", "none"):
                arr[i, j] = np.nan
                continue
            try:
                arr[i, j] = float(cell)
            except ValueError:
                raise ReportError(
                    f"{path.name}: column {name!r} is not numeric (row {i + 2}: {cell[:30]!r})"
                ) from None
    return arr, names


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def sha256_of_array(arr: np.ndarray) -> str:
    """Hex sha256 of the C-order bytes of ``arr``."""
    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def sha256_of_file(path) -> str:
    """Hex sha256 of the bytes of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- output directories


def prepare_output_dir(out, force: bool) -> Path:
    """Check ``out`` and return a fresh temporary directory next to it to write into.

    Refuses (ReportError) an existing non-empty ``out`` unless ``force``, an ``out`` that is a file,
    or an unwritable parent. Pair with :func:`finalize_output_dir` (success) or ``shutil.rmtree``;
    :func:`atomic_output_dir` does both.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ReportError(f"output directory {str(out)!r} is not empty (use --force to replace it)")
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    except OSError as exc:
        raise ReportError(f"cannot create the output directory next to {str(out)!r}: {exc.strerror or exc}") from None


def finalize_output_dir(tmp: Path, out) -> Path:
    """Move the finished ``tmp`` into place as ``out`` (replacing an old ``out`` only now)."""
    out = Path(out)
    old = None
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.absolute().parent))
        os.replace(out, old / "previous")
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


@contextlib.contextmanager
def atomic_output_dir(out, force: bool):
    """``with atomic_output_dir(out, force) as tmp:`` write into ``tmp``; it becomes ``out`` when the
    block ends, and is removed if the block raises (Ctrl-C included)."""
    tmp = prepare_output_dir(out, force)
    try:
        yield tmp
        finalize_output_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_dir(out, force: bool) -> None:
    """Refuse (ReportError) an ``out`` that :func:`prepare_output_dir` would refuse, creating nothing."""
    shutil.rmtree(prepare_output_dir(out, force), ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomically(path, data: str | bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


# --------------------------------------------------------------------------- JSON and CSV text


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def clean_json(obj):
    """``obj`` with NaN / inf -> None and numpy scalars / arrays -> Python, so that it is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def dumps_json(obj) -> str:
    """Strict, indented JSON text of ``obj`` (see :func:`clean_json`), ending in a newline."""
    return json.dumps(clean_json(obj), indent=2, default=_json_default, allow_nan=False) + "\n"


def csv_text(rows, columns) -> str:
    """CSV text of ``rows`` (dicts) with a header of ``columns``; None -> empty, floats as ``repr``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (repr(float(r[c])) if isinstance(r[c], float) else r[c]) for c in columns])
    return buf.getvalue()
