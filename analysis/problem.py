"""The report's problem: one object for what is fitted, whatever the data's source. One job, :func:`load_problem`.

A :class:`Problem` is a data source, the number of components K, the seed and the columns' names; the truth
(and the true labels) when the data were simulated. The data source is one of three kinds, and everything
that differs between them is a method of the source, so that no stage of the report branches on it:

* :class:`SimulatedData` -- the seed problem (``models.seed_problem``), sampled with the report's seed; has a truth;
* :class:`MemoryData` -- a user's CSV / NPY read into memory (``analysis.files.read_data``; NaN where a value is
  missing, rows with nothing observed dropped and counted);
* :class:`StreamedFile` -- a ``.npy`` too large to load (``--stream``, :mod:`analysis.streamed`): the engines
  read the file, every stage after them sees a seeded row subsample, full-data scores take one more pass.

What a source answers: its ``shape`` (N, D) before anything is read; ``prepare`` (sample / scan, once the
engines are planned); ``rows`` (the in-memory rows the stages use: the data, or the streamed subsample);
``fit_input`` (what ``inference.fit`` gets: the rows, or the file's path); ``view`` (a fit as the rows see
it); ``score_all_rows`` (full-data scores where the rows are a subsample); the metrics and manifest entries
and the notes and captions it adds.

Imports: numpy and the analysis modules at module level (no JAX: the command line sets XLA flags first);
JAX and ``models`` inside :meth:`SimulatedData.prepare`.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from analysis import streamed
from analysis.errors import PROG, ReportError
from analysis.files import read_data
from analysis.missing_report import dropped_text

__all__ = ["Problem", "DataSource", "SimulatedData", "MemoryData", "StreamedFile", "load_problem"]


class DataSource:
    """Where the report's rows come from (the base: rows in memory, no truth). Subclasses override what differs."""

    kind = "file"  # metrics.json problem.source
    data_file = None  # the --data path, or None
    truth = None  # GMMParams of the simulation, or None
    labels = None  # (N,) true component of each row, or None
    rows: np.ndarray | None = None
    budgeted = True  # the default --max-seconds applies (user data)
    fit_note = ""  # added to the "fitting ..." progress line

    @property
    def shape(self) -> tuple:
        return tuple(int(s) for s in self.rows.shape)

    def skip_reason(self) -> str | None:
        """Why the in-memory engines cannot run (one clause, ``analysis.budget``), or None."""
        return None

    def prepare(self, seed: int, progress) -> None:
        """Make ``rows`` available (after the engines are planned, before any output is written)."""

    def fit_input(self):
        """What ``inference.fit`` gets."""
        return self.rows

    def view(self, result):
        """``result`` as the rows see it (all rows: as it is)."""
        return result

    def notes(self, engines) -> list:
        """Lines for the report's notes after the engines ran."""
        return []

    def score_all_rows(self, aligned: dict, cards: dict, num_components: int, progress) -> None:
        """Full-data scores into ``cards`` when ``rows`` are not all the data (all rows: nothing to do)."""

    def caption_note(self) -> str:
        """Added to the caption of every figure drawn from ``rows``."""
        return ""

    def problem_fields(self, stream_mode: str | None) -> dict:
        """``metrics.json`` problem entries about streaming."""
        return streamed.problem_fields(None, self.data_file, stream_mode)

    def manifest_streamed(self) -> dict | None:
        """``manifest.json`` data.streamed."""
        return None

    def row_index(self) -> np.ndarray:
        """(len(rows),) each of ``rows``' index among the data's rows (all rows: 0, 1, ...)."""
        return np.arange(self.rows.shape[0])

    def dropped_rows(self) -> tuple:
        """(indices of the data's rows dropped for having nothing observed, their CSV line numbers or None)."""
        return np.zeros(0, int), None


class SimulatedData(DataSource):
    """The seed problem: ``num_samples`` rows of ``models.seed_problem()``, sampled from the report's seed."""

    kind = "seed_problem"
    budgeted = False

    def __init__(self, num_samples: int):
        self.num_samples = int(num_samples)

    @property
    def shape(self) -> tuple:
        return (self.num_samples, 2)

    def prepare(self, seed: int, progress) -> None:
        import models
        from inference.random_keys import seed_key

        self.truth = models.to_numpy(models.seed_problem())
        progress(f"sampling N={self.num_samples} points from the seed problem (seed {seed})")
        xs, zs = models.sample(seed_key(seed), self.truth, self.num_samples)
        self.rows, self.labels = np.asarray(xs, dtype=np.float64), np.asarray(zs)


class MemoryData(DataSource):
    """A user's data file read into memory; ``table`` (``analysis.files.DataTable``) says which of the file's rows
    they are (rows with nothing observed dropped)."""

    def __init__(self, path, rows: np.ndarray, table=None):
        self.data_file, self.rows, self.table = path, rows, table

    def row_index(self) -> np.ndarray:
        return np.arange(self.rows.shape[0]) if self.table is None else np.asarray(self.table.row_index)

    def dropped_rows(self) -> tuple:
        """(the dropped rows' indices among the file's data rows, their CSV line numbers or None)."""
        if self.table is None:
            return np.zeros(0, int), None
        return self.table.dropped, self.table.dropped_lines


class StreamedFile(DataSource):
    """A ``.npy`` read from disk in passes (:mod:`analysis.streamed`): em and hard_em read the file, the stages
    after them see the seeded subsample (``rows``), full-data scores come from one more pass."""

    fit_note = ", streamed"

    def __init__(self, path, data: streamed.StreamedData):
        self.data_file, self.data = path, data

    @property
    def shape(self) -> tuple:
        return self.data.shape

    def skip_reason(self) -> str:
        return streamed.skip_reason(self.data)

    def prepare(self, seed: int, progress) -> None:
        progress("checking every value of the file and drawing the row subsample (one pass)")
        self.data = streamed.scan(self.data, seed)
        self.rows = self.data.subsample

    def fit_input(self):
        return str(self.data.path)

    def view(self, result):
        return streamed.subsample_view(result, self.data)

    def notes(self, engines) -> list:
        return [streamed.stream_note(self.data, list(engines))]

    def score_all_rows(self, aligned: dict, cards: dict, num_components: int, progress) -> None:
        progress(f"scoring {', '.join(aligned)} on all {self.data.num_rows:,} rows (one more pass over the file)")
        streamed.apply_scores(self.data, aligned, cards, streamed.score_pass(self.data, aligned), num_components)

    def caption_note(self) -> str:
        return streamed.caption_note(self.data)

    def problem_fields(self, stream_mode: str | None) -> dict:
        return streamed.problem_fields(self.data, self.data_file, stream_mode)

    def manifest_streamed(self) -> dict:
        return {"subsample_rows": self.data.subsample_rows, "stream_mode": self.data.mode}

    def row_index(self) -> np.ndarray:
        return np.asarray(self.data.subsample_index)


@dataclasses.dataclass
class Problem:
    """What the report fits: ``data`` (a :class:`DataSource`), K, the seed, the columns' names and the
    ``--stream`` mode asked for (None without ``--data``)."""

    data: DataSource
    num_components: int
    seed: int
    column_names: list
    stream_mode: str | None = None

    @property
    def x(self) -> np.ndarray:
        """The in-memory rows every stage after the fits uses (after ``data.prepare``)."""
        return self.data.rows

    @property
    def truth(self):
        return self.data.truth

    @property
    def labels(self):
        return self.data.labels


def load_problem(args, progress) -> Problem:
    """The :class:`Problem` of parsed ``args``: the data read (or, streamed, its header checked) and K checked
    against the rows. Raises ReportError for bad input, before the output directory is touched."""
    k = args.num_components or 2
    mode = getattr(args, "stream", "auto")
    if args.data and streamed.stream_wanted(args.data, mode):
        # too large to load (or --stream always): the header now, one pass for NaN/inf and the subsample later
        data = streamed.open_streamed(args.data, mode)
        if k > data.num_rows:
            raise ReportError(f"--num-components ({k}) exceeds the number of rows ({data.num_rows}) in {data.path.name}")
        progress(f"{data.path.name}: {data.num_rows:,} x {data.num_features} {data.dtype}, streamed from disk "
                 f"({'--stream always' if mode == 'always' else 'above the --stream auto threshold'})")
        return Problem(StreamedFile(args.data, data), k, args.seed, [f"x{j}" for j in range(data.num_features)], mode)
    if args.data:
        table = read_data(args.data)
        x = table.x
        if k > x.shape[0]:
            raise ReportError(f"--num-components ({k}) exceeds the number of rows ({x.shape[0]}) in {Path(args.data).name}")
        if table.dropped.size:  # shown even with --quiet, like the budget's notes
            print(f"{PROG}: note: {dropped_text(Path(args.data).name, table.dropped, table.dropped_lines)}",
                  file=sys.stderr, flush=True)
        return Problem(MemoryData(args.data, x, table), k, args.seed, column_names=table.columns, stream_mode=mode)
    if mode == "always":
        raise ReportError("--stream always needs --data FILE.npy (the seed problem is simulated in memory)")
    if args.num_samples < 1:
        raise ReportError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.num_components not in (None, 2):
        raise ReportError("the seed problem has 2 components; use --data FILE to fit another K")
    return Problem(SimulatedData(args.num_samples), 2, args.seed, ["x0", "x1"])
