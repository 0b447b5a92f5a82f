"""A ``.npy`` too large to load: one job, the report's data read from disk in passes (``gmm-report --stream``).

When ``--data FILE.npy`` streams (``--stream always``, or ``auto`` with the file above
``STREAM_THRESHOLD_BYTES``), the report never holds an N x D or N x K array:

* :func:`open_streamed` reads the header only (shape, dtype) and refuses, in one line, what cannot
  stream: not 2-D, not real numbers, Fortran order, a file shorter than its header;
* :func:`scan` reads the file once in blocks of ``BLOCK_ROWS``: no value infinite (else the rows are named,
  as :func:`analysis.files.read_data` does, before anything is written; NaN is a missing value, marginalised by
  EM, and a row with every value missing stays in the file with weight 0), and a seeded random
  subsample of ``SUBSAMPLE_ROWS`` rows (sorted row indices, the same for the same ``--seed``);
* em and hard_em get the PATH (``inference.fit`` streams it; memory bounded by its chunk buffers), and so does
  svi, which then runs minibatch SVI (``inference.numpyro_minibatch``: random row runs read per step, never the
  whole file); map and nuts need every row in memory and are skipped with the reason (:mod:`analysis.budget`,
  ``metrics.json`` ``failed``);
* :func:`subsample_view` gives a streamed FitResult the responsibilities of the subsample rows, so the
  alignment, predictive checks, InferenceData and figures run unchanged on the subsample;
* :func:`score_pass` reads the file once more with every engine's aligned estimate: the total
  log-likelihood (of the observed entries, for rows with holes), BIC and cluster sizes of all N rows (the degeneracy check is ``inference.fit``'s, from
  EM's own final pass over all rows and the data's exact covariance).

Imports: the standard library, numpy and :mod:`analysis.errors` at module level; JAX and ``models``
inside :func:`subsample_view` and :func:`score_pass` (the command line sets XLA flags first).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path

import numpy as np

from analysis.errors import ReportError

__all__ = ["STREAM_THRESHOLD_BYTES", "SUBSAMPLE_ROWS", "BLOCK_ROWS", "STREAM_MODES", "StreamedData", "stream_wanted",
           "open_streamed", "scan", "subsample_view", "score_pass", "apply_scores", "problem_fields", "skip_reason",
           "caption_note", "stream_note", "size_text"]

# Above this file size ``--stream auto`` streams a .npy instead of loading it. Measured here (2 cores, 23 GB, jax
# 0.10 / ArviZ 0.23), ``gmm-report --methods em,hard_em`` with the file loaded peaked at 5.4 GB resident on a 64 MB
# float64 .npy (1,000,000 x 8) and at 14.3 GB on a 192 MB one (3,000,000 x 8): ~0.6 GB of imports and compiled
# programs plus ~70 times the file (the predictive checks' replicated data sets, at least 10 of N x D per engine,
# and their statistics; the float64 copy; EM's centred device copy; N x K responsibilities; each NetCDF file's
# observed data and pointwise log-likelihood). 64 MiB keeps a loaded report near 5 GB, and at that size the
# default --max-seconds 600 already skips MAP, SVI and NUTS (estimated > 1,000 s each for any D: 1M rows at D = 8,
# 4M at D = 2), so streaming loses no engine a default run would fit. A fixed size, not a share of the free
# memory, so that the same file gives the same report on every machine; ``--stream always`` / ``never`` override it.
STREAM_THRESHOLD_BYTES = 64 << 20
# Rows of the subsample that figures, predictive checks and the NetCDF files' observed_data / log_likelihood
# use: enough for smooth densities and readable scatter plots, ~0.6 MB of float64 at D = 8.
SUBSAMPLE_ROWS = 10_000
BLOCK_ROWS = 65_536  # rows per read of the report's own passes (4 MiB of float64 at D = 8)
STREAM_MODES = ("auto", "always", "never")
_SUBSAMPLE_STREAM = 0x5B  # separates the subsample's random stream from the engines' keys (same --seed)


@dataclasses.dataclass(frozen=True)
class StreamedData:
    """A streamable ``.npy``: its header, size and the mode that chose streaming; after :func:`scan`,
    the subsample (S, D) float64 and its sorted row indices (S,)."""

    path: Path
    shape: tuple
    dtype: np.dtype
    data_bytes: int
    offset: int
    mode: str
    subsample: np.ndarray | None = None
    subsample_index: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return int(self.shape[0])

    @property
    def num_features(self) -> int:
        return int(self.shape[1])

    @property
    def subsample_rows(self) -> int | None:
        return None if self.subsample is None else int(self.subsample.shape[0])


def stream_wanted(path, mode: str) -> bool:
    """Whether ``--data path`` with ``--stream mode`` streams: ``always`` (a .npy is required), ``never``,
    or ``auto`` = a 2-D .npy file larger than ``STREAM_THRESHOLD_BYTES``. A missing file or a directory is
    :func:`analysis.files.load_data`'s to report (False)."""
    if mode not in STREAM_MODES:
        raise ReportError(f"--stream must be one of {', '.join(STREAM_MODES)}, got {mode!r}")
    path = Path(path)
    if mode == "never" or not path.is_file():
        return False
    is_npy = path.suffix.lower() == ".npy"
    if mode == "always":
        if not is_npy:
            raise ReportError(f"--stream always needs a .npy file; {path.name} is read as CSV, into memory "
                              "(save it with numpy.save to stream it)")
        return True
    if not is_npy or path.stat().st_size <= STREAM_THRESHOLD_BYTES:
        return False
    try:  # auto streams 2-D arrays only: a 1-D one (a column) and unreadable headers go to load_data as before
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return len(read(f)[0]) == 2
    except Exception:  # noqa: BLE001
        return False


def open_streamed(path, mode: str = "always") -> StreamedData:
    """The header of a .npy to stream (no data read); ReportError (one line) for what cannot stream."""
    path = Path(path)
    name = path.name
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except Exception as exc:  # noqa: BLE001 - not a .npy, a truncated header, a pickle
        raise ReportError(f"cannot read {name} as .npy: {' '.join(str(exc).split())}") from None
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2:
        hint = " (save a 1-D array as (N, 1) to stream it, or use --stream never)" if len(shape) == 1 else ""
        raise ReportError(f"{name}: expected a 2-D array (rows, columns) to stream it from disk, got shape {shape}{hint}")
    if dtype.hasobject or dtype.names is not None or not (np.issubdtype(dtype, np.number) or dtype == bool) \
            or np.issubdtype(dtype, np.complexfloating):
        raise ReportError(f"{name}: array is not numeric (dtype {dtype})")
    if shape[0] < 1 or shape[1] < 1:
        raise ReportError(f"{name}: no data (shape {shape})")
    if fortran and shape[0] > 1 and shape[1] > 1:
        raise ReportError(f"{name} is Fortran-ordered: save it C-ordered (numpy.ascontiguousarray) to stream it, "
                          "or use --stream never")
    size = path.stat().st_size
    if offset + shape[0] * shape[1] * dtype.itemsize > size:
        raise ReportError(f"{name}: the file is shorter than its header says (shape {shape}, dtype {dtype})")
    return StreamedData(path, shape, dtype, size, offset, mode)


def _blocks(data: StreamedData, block_rows: int = BLOCK_ROWS):
    """``(first row, float64 block)`` over the whole file, read with ``os.pread`` (the pages read stay in
    the OS page cache, not in this process's memory as a memory map's would)."""
    n, d = data.shape
    row_bytes = d * data.dtype.itemsize
    fd = os.open(data.path, os.O_RDONLY)
    try:
        for start in range(0, n, block_rows):
            count = min(block_rows, n - start)
            want = count * row_bytes
            buf = bytearray()
            while len(buf) < want:
                part = os.pread(fd, want - len(buf), data.offset + start * row_bytes + len(buf))
                if not part:
                    raise ReportError(f"{data.path.name}: the file ended at row {start} of {n} while reading it")
                buf += part
            yield start, np.frombuffer(bytes(buf), data.dtype).reshape(count, d).astype(np.float64)
    finally:
        os.close(fd)


def scan(data: StreamedData, seed: int, subsample_rows: int | None = None) -> StreamedData:
    """One pass over the file: refuse rows with inf (ReportError naming up to 5, as ``load_data``; NaN is a missing
    value, marginalised by the engines), and
    keep the seeded random subsample of ``subsample_rows`` (default ``SUBSAMPLE_ROWS``; all rows when N is
    not larger): row indices ``sorted(numpy.random.default_rng([0x5B, seed]).choice(N, S, replace=False))``."""
    n, d = data.shape
    size = min(int(SUBSAMPLE_ROWS if subsample_rows is None else subsample_rows), n)
    if size == n:
        index = np.arange(n)
    else:
        rng = np.random.default_rng([_SUBSAMPLE_STREAM, int(seed) & 0xFFFF_FFFF_FFFF_FFFF])
        index = np.sort(rng.choice(n, size=size, replace=False))
    sub = np.empty((size, d))
    bad_count, bad_rows = 0, []
    for start, block in _blocks(data):
        bad = np.isinf(block).any(axis=1)  # NaN marks a missing value (marginalised); inf is an error
        if bad.any():
            bad_count += int(bad.sum())
            bad_rows += [start + int(i) for i in np.flatnonzero(bad)[: 5 - len(bad_rows)]]
        lo, hi = np.searchsorted(index, [start, start + block.shape[0]])
        sub[lo:hi] = block[index[lo:hi] - start]
    if bad_count:
        listed = ", ".join(map(str, bad_rows)) + (", ..." if bad_count > len(bad_rows) else "")
        raise ReportError(f"{data.path.name}: {bad_count} row(s) with inf values (row {listed}); inf is not a missing "
                          "value: write NaN for one")
    return dataclasses.replace(data, subsample=sub, subsample_index=index)


def skip_reason(data: StreamedData) -> str:
    """Why the data stay on disk, one clause (``analysis.budget`` adds what that means for each engine)."""
    return f"the data are streamed from disk ({_why(data)})"


def _why(data: StreamedData) -> str:
    size = size_text(data.data_bytes)
    if data.mode == "auto":
        return f"{data.path.name} is {size}, above the {size_text(STREAM_THRESHOLD_BYTES)} threshold of --stream auto"
    return f"--stream {data.mode}, {data.path.name} is {size}"


def size_text(num_bytes: int) -> str:
    """``1.53 GiB``, ``64.00 MiB``, ``70.44 KiB``, ``12 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.2f} {unit}"
    return f"{num_bytes} bytes"


def caption_note(data: StreamedData | None) -> str:
    """The sentence added to the caption of every figure drawn from rows."""
    if data is None:
        return ""
    if data.subsample_rows == data.num_rows:
        return f" All {data.num_rows:,} rows (streamed from disk)."
    return (f" Drawn from a seeded random subsample of {data.subsample_rows:,} of the {data.num_rows:,} rows "
            "(the data were streamed from disk).")


def stream_note(data: StreamedData, engines) -> str:
    """One line for the report's notes and its top: what streamed, what ran, what is subsampled."""
    rows = ("all rows" if data.subsample_rows == data.num_rows else
            f"a seeded random subsample of {data.subsample_rows:,} rows")
    engines = list(engines)
    passes = [m for m in engines if m != "svi"]
    read = (f"{', '.join(passes)} read all {data.num_rows:,} rows in passes" if passes else "")
    if "svi" in engines:
        read += ("; " if read else "") + (f"svi (minibatch SVI) read random batches of rows of all {data.num_rows:,} "
                                          "(its ELBO scaled by N / batch)")
    return (f"The data were streamed from disk ({_why(data)}): {read}; figures, predictive checks and the NetCDF files' observed_data / log_likelihood use {rows}; "
            "log-likelihood, BIC, cluster sizes and degeneracy counts are of all rows.")


def problem_fields(data: StreamedData | None, data_file, mode: str | None) -> dict:
    """``metrics.json`` ``problem`` entries about streaming (``metrics.METRICS_SCHEMA``)."""
    return {
        "streamed": data is not None,
        "stream_mode": mode,
        "stream_threshold_bytes": STREAM_THRESHOLD_BYTES,
        "data_bytes": None if not data_file else int(Path(data_file).stat().st_size),
        "subsample_rows": None if data is None else data.subsample_rows,
        "subsample": None if data is None else (
            "all rows" if data.subsample_rows == data.num_rows else
            f"seeded random rows (numpy default_rng([{_SUBSAMPLE_STREAM}, seed]).choice, sorted): figures, predictive "
            "checks, NetCDF observed_data and log_likelihood; log-likelihood, BIC, cluster sizes and degeneracy counts "
            "are of all rows"),
    }


# --------------------------------------------------------------------------- results on streamed data


def subsample_view(result, data: StreamedData):
    """``result`` (a streamed fit: 0 responsibility rows) with the responsibilities of the subsample rows
    (one-hot for hard EM, as its in-memory fit has them) and ``info["subsample_rows"]``."""
    import models

    resp = np.asarray(models.responsibilities(result.params, data.subsample), np.float64)
    if result.method == "hard_em":
        resp = np.eye(resp.shape[1])[np.argmax(resp, axis=1)]
    info = dict(result.info, subsample_rows=data.subsample_rows, num_rows=data.num_rows)
    return dataclasses.replace(result, responsibilities=resp, info=info)


@functools.lru_cache(maxsize=None)
def _block_scores_fn():
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    from models.density import component_log_prob

    @jax.jit
    def scores(params, xb, valid):
        joint = component_log_prob(params, xb)  # (B, K)
        point = logsumexp(joint, axis=1)
        w = valid.astype(joint.dtype)
        hard = jax.nn.one_hot(jnp.argmax(joint, axis=1), joint.shape[1], dtype=joint.dtype)
        return jnp.sum(jnp.where(valid, point, 0.0)), w @ hard

    return scores


def score_pass(data: StreamedData, results: dict) -> dict:
    """One pass over the file with every (aligned) result's point estimate:
    ``{method: {"log_likelihood": total over all rows, "hard_counts": (K,)}}``.
    Blocks are padded to ``BLOCK_ROWS`` (one compiled program whatever N)."""
    from models.params import to_numpy

    scores = _block_scores_fn()
    params = {m: to_numpy(r.params) for m, r in results.items()}
    k = {m: int(np.shape(p.weights)[-1]) for m, p in params.items()}
    out = {m: {"log_likelihood": 0.0, "hard_counts": np.zeros(k[m])} for m in results}
    padded = np.zeros((BLOCK_ROWS, data.num_features))
    valid = np.zeros(BLOCK_ROWS, bool)
    for _, block in _blocks(data):
        m_rows = block.shape[0]
        padded[:m_rows] = block
        padded[m_rows:] = 0.0
        valid[:] = False
        valid[:m_rows] = True
        holes = np.isnan(padded).any()
        for m in results:
            ll, hard = _hole_scores(params[m], padded, valid) if holes else scores(params[m], padded, valid)
            acc = out[m]
            acc["log_likelihood"] += float(ll)
            acc["hard_counts"] += np.asarray(hard)
    return out


def _hole_scores(params, xb, valid):
    """:func:`score_pass`'s block scores of rows with NaN holes: the observed entries' density (``models.missing``)."""
    from models.missing import observed_component_log_prob

    joint = np.asarray(observed_component_log_prob(params, xb))
    top = joint.max(axis=1, keepdims=True)
    point = (top[:, 0] + np.log(np.exp(joint - top).sum(axis=1)))[valid]
    return float(point.sum()), np.bincount(np.argmax(joint[valid], axis=1), minlength=joint.shape[1]).astype(float)


def apply_scores(data: StreamedData, aligned: dict, cards: dict, scores: dict, k: int) -> None:
    """Put the full-data numbers of :func:`score_pass` into the scorecards (log-likelihood, per row, BIC,
    cluster sizes); in place. The degeneracy check needs no pass here: ``inference.fit`` ran it on the
    streamed fit from EM's own final pass over all rows (``info["final_counts"]``, ``info["data_covariance"]``)."""
    from analysis.metrics import engine_notes
    from analysis.score import bic

    n, d = data.shape
    for m, a in aligned.items():
        s = scores[m]
        cov_type = a.info.get("covariance_type", "full")
        cards[m].update(
            log_likelihood=s["log_likelihood"],
            log_likelihood_per_obs=s["log_likelihood"] / n,
            bic=bic(s["log_likelihood"], n, k, d, cov_type),
            cluster_sizes=np.rint(s["hard_counts"]).astype(int).tolist(),
            **engine_notes(a.info),
        )
