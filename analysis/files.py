"""Files in and out of the commands: one job, reading a user's data and writing output directories.

- in: :func:`read_data` reads a CSV with a header row or a ``.npy`` array as float64 (N, D) with NaN where a
  value is missing (rows with nothing observed dropped and listed), refusing bad input with one-line
  :class:`~analysis.errors.ReportError` naming the file and line; :func:`load_data` is its ``(x, columns)``; :func:`sha256_of_array` /
  :func:`sha256_of_file` fingerprint the data;
- out: :func:`atomic_output_dir` builds a directory next to its final place and renames it there at
  the end (an interrupted run leaves nothing), :func:`write_atomically` does the same for one file,
  :func:`dumps_json` writes strict JSON (NaN/inf -> null, numpy -> Python), :func:`csv_text` a table.

Imports: the standard library, numpy and :mod:`analysis.errors` (no JAX, no matplotlib).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
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
    "read_data",
    "DataTable",
    "NA_STRINGS",
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

# cells read as missing (NaN): pandas' default ``na_values`` (``pandas._libs.parsers.STR_NA_VALUES``, compared after
# stripping spaces, case-sensitive as in pandas), plus any spelling ``float`` reads as NaN ("NAN", "-nan", ...)
NA_STRINGS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                        "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])


@dataclasses.dataclass
class DataTable:
    """A user's data as read: ``x`` (N, D) float64 with NaN where a value is missing, the column names, and the rows
    dropped because nothing in them was observed.

    row_index : (N,) each kept row's 0-based index among the file's data rows (header and blank lines not counted;
        dropped rows keep their numbers, so the indices skip them).
    dropped : (R,) the dropped rows' indices, same numbering.
    dropped_lines : (R,) their line numbers in a CSV file (1-based, as an editor shows them), or None for ``.npy``.
    """

    x: np.ndarray
    columns: list
    row_index: np.ndarray
    dropped: np.ndarray
    dropped_lines: np.ndarray | None = None


def load_data(path) -> tuple[np.ndarray, list[str]]:
    """``(x, columns)`` of :func:`read_data` (rows with nothing observed dropped, NaN where a value is missing)."""
    table = read_data(path)
    return table.x, table.columns


def read_data(path) -> DataTable:
    """Read ``path`` (.npy, or CSV with a header row) as a :class:`DataTable`.

    Missing values (CSV: an empty cell or one of ``NA_STRINGS``; .npy: NaN) become NaN; a row with every value
    missing is dropped and listed. Raises ReportError with one line naming the file and line (CSV) or row (.npy):
    missing file, a directory, empty file, ragged rows, a non-numeric column, inf values, no row with data, a column
    with no observed value.
    """
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"data file {str(path)!r} is a directory; give a CSV or .npy file")
    if not path.is_file():
        raise ReportError(f"data file {str(path)!r} not found")
    npy = path.suffix.lower() == ".npy"
    arr, names, lines = _load_npy(path) if npy else _load_csv(path)
    infinite = np.isinf(arr).any(axis=1)
    if infinite.any():
        where = np.flatnonzero(infinite)
        listed = ", ".join(str(int(i) if npy else int(lines[i])) for i in where[:5]) + (", ..." if where.size > 5 else "")
        raise ReportError(f"{path.name}: {where.size} row(s) with inf values ({'row' if npy else 'line'} {listed}); "
                          "inf is not a missing value: leave the cell empty or write NA")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ReportError(f"{path.name}: no data")
    empty = np.isnan(arr).all(axis=1)
    if empty.all():
        raise ReportError(f"{path.name}: every row has every value missing")
    dropped = np.flatnonzero(empty)
    unseen = [names[j] for j in np.flatnonzero(np.isnan(arr).all(axis=0))]
    if unseen:
        raise ReportError(f"{path.name}: column {unseen[0]!r} has no observed value (every cell missing); remove it")
    return DataTable(arr[~empty], names, np.flatnonzero(~empty), dropped, None if npy else np.asarray(lines)[dropped])


def _load_npy(path: Path) -> tuple[np.ndarray, list[str], None]:
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
    return arr.astype(np.float64), [f"x{j}" for j in range(arr.shape[1])], None


def _load_csv(path: Path) -> tuple[np.ndarray, list[str], list[int]]:
    """A CSV with a header row as float64 (N, D) (missing cells -> NaN), its column names and each data row's line
    number in the file (1-based; blank lines are skipped, not rows)."""
    records = []  # (line number where the record starts, fields)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            line = 1
            for r in reader:
                if r and not (len(r) == 1 and not r[0].strip()):
                    records.append((line, r))
                line = reader.line_num + 1
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReportError(f"{path.name}: not a readable CSV file ({exc})") from None
    if not records:
        raise ReportError(f"{path.name}: the file is empty")
    header_line, header = records[0]
    names = [c.strip() for c in header]
    if all(_is_number(c) for c in names):
        raise ReportError(f"{path.name}:{header_line}: the first row must be a header of column names, got numbers")
    body = records[1:]
    if not body:
        raise ReportError(f"{path.name}: no data rows after the header (line {header_line})")
    for line, r in body:
        if len(r) != len(names):
            raise ReportError(f"{path.name}:{line}: {len(r)} field(s), the header (line {header_line}) has {len(names)}")
    arr = np.empty((len(body), len(names)))
    for j, name in enumerate(names):
        for i, (line, r) in enumerate(body):
            cell = r[j].strip()
            if cell in NA_STRINGS:
                arr[i, j] = np.nan
                continue
            try:
                arr[i, j] = float(cell)
            except ValueError:
                raise ReportError(f"{path.name}:{line}: column {name!r} is not numeric ({cell[:30]!r}; "
                                  f"missing values are empty cells or {', '.join(MISSING_SHOWN)})") from None
    return arr, names, [line for line, _ in body]


MISSING_SHOWN = ("NA", "NaN", "nan", "N/A", "null")


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
