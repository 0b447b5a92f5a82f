"""Where EM's rows come from: a user's array (copied to the devices, sharded), a large array read in
place from host memory, or a stream (a ``.npy`` path, a callable returning chunk iterators, a list of
chunks). One host-side pass checks them (shape, dtype, finiteness, float32 resolution, weights,
distinct rows) and computes the float64 centre the device subtracts from every chunk
(:class:`inference.rows.RowData`).
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from . import missing_blocks, missing_em
from .host_readers import ChunkReader, NpyRows, rechunk
from .rows import Layout, RowData, check_sample_weight, normalize_sample_weight, row_bucket
from .stats import default_chunk_size
from .validate import check_data, check_float32_resolution, check_num_components

STREAM_BLOCK_ROWS = 1 << 16  # rows per read of the host pre-pass over a streamed source
READ_BYTES = 1 << 22  # ~bytes per host read of a streamed fold (a whole number of compute chunks)
# Every statistic is computed in float64, whatever the data's dtype (float32 rows are converted chunk by
# chunk on the device; they stay float32 in memory). The E-step's quadratic features and the raw-moment
# M-step cancel ~eps |x - c|^2 / sd^2 (c the data's centre, sd a cluster's width): in float32 that is
# every cluster narrower than ~1/300 of its distance from c; in float64, ~1e-8 at 1e4 cluster sds.
COMPUTE_DTYPE = jnp.float64


class Rows(NamedTuple):
    """Host-side result of reading the user's rows."""

    layout: Layout
    data: RowData
    center: np.ndarray
    total_weight: float
    dtype: np.dtype
    reader: ChunkReader | None
    local_rows: int  # this process's real rows (multi-process: its own; else N)
    share: int = 0  # in memory, one process: real rows at the front of each device's block (0: contiguous)
    missing: dict | None = None  # rows with NaN: cells, rows_with_missing, rows_all_missing, patterns (else None)


def _missing_info(acc: dict) -> dict:
    """``info["missing"]`` from :func:`inference.missing_em.summarise`'s counts (patterns: distinct masks)."""
    return {"cells": acc["cells"], "rows_with_missing": acc["rows_with_missing"],
            "rows_all_missing": acc["rows_all_missing"], "patterns": len(acc["codes"])}


def _holes_center(missing, x, w, num_features):
    """In-memory rows with NaN: (centre = each column's weighted mean of its observed values, total weight of
    the rows with something observed, the rows completed with the centre (for the host's checks))."""
    w64 = np.ones(x.shape[0]) if w is None else np.asarray(w, np.float64)
    w_eff = w64 * ~missing.all(axis=1)
    observed_weight = w_eff @ ~missing
    missing_em.check_missing_columns(num_features, observed_weight)
    center = (w_eff @ np.where(missing, 0.0, x.astype(np.float64))) / observed_weight
    return center, float(w_eff.sum()), np.where(missing, center.astype(x.dtype), x)


def _pattern_plan(missing, w, table, share, num_devices, chunk_size, sharding):
    """Device arrays of :func:`inference.missing_blocks.pattern_plan` for in-memory rows with holes."""
    pattern = np.searchsorted(table, missing_em.host_codes(missing))
    keep = ~missing.all(axis=1) if w is None else (~missing.all(axis=1)) & (w > 0)
    block = missing_blocks.block_size(int(keep.sum()), int(np.unique(pattern).size), chunk_size)
    order, block_pattern = missing_blocks.pattern_plan(pattern, keep, share, num_devices, block, chunk_size)
    put = (lambda a: jnp.asarray(a)) if sharding is None else (lambda a: jax.device_put(a, sharding))
    return put(order), put(block_pattern)


def streams_from_memory(x, threshold_bytes: int) -> bool:
    """A 2-D float numpy array of at least ``threshold_bytes`` (``inference.em.HOST_STREAM_BYTES``; single process): EM reads it in place, a few
    MiB per host read, instead of copying it (centred) to the devices. XLA's CPU runtime takes a host buffer
    without a copy only when it is 64-byte aligned, which numpy's large arrays are not (16), so a device copy
    would double the memory of a data set that fills it."""
    return (isinstance(x, np.ndarray) and x.ndim == 2 and x.dtype in (np.float32, np.float64)
            and x.nbytes >= threshold_bytes and jax.process_count() == 1)


def is_streamed(x) -> bool:
    """A path, a callable, an iterator, or a list of 2-D chunks / (x, w) pairs (not a nested list of numbers)."""
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(isinstance(c, tuple) or np.ndim(c) == 2 for c in x)
    return isinstance(x, (str, os.PathLike)) or callable(x) or (not isinstance(x, (np.ndarray, jax.Array)) and hasattr(x, "__iter__"))


def _padded_slice(arr, rows: slice, num_rows: int, center=None, fill=0.0):
    """Rows ``rows`` of ``arr`` (shorter than asked beyond ``num_rows``: zero-filled), centred."""
    start, stop = rows.start or 0, rows.stop if rows.stop is not None else num_rows
    part = arr[start:min(stop, num_rows)]
    if center is not None:
        part = part - center
    if stop > num_rows:
        pad = np.full((stop - max(start, num_rows),) + arr.shape[1:], fill, arr.dtype)
        part = np.concatenate([part, pad]) if part.size else pad
    return part


def in_memory_rows(x, sample_weight, num_components, chunk_size, mesh, num_slots=None) -> Rows:
    """The rows of in-memory ``x`` on the devices of ``mesh`` (``num_slots``: the component slots the program is
    compiled for, >= K, which sizes the chunks; default K)."""
    x_np = check_data(x, allow_missing=True)
    missing = np.isnan(x_np)
    holes = bool(missing.any())
    check_float32_resolution(x_np)
    num_rows, num_features = x_np.shape
    dtype = x_np.dtype
    w = normalize_sample_weight(check_sample_weight(sample_weight, num_rows, np.float64))
    x_host = x_np
    if holes:  # EM marginalises the holes (inference.missing_em); the host's checks read the completed rows
        if jax.process_count() > 1:
            raise ValueError("x has NaN (missing values): not supported with several processes (jax.distributed)")
        center_holes, total_holes, x_host = _holes_center(missing, x_np, w, num_features)
        keep = ~missing.all(axis=1) if w is None else (~missing.all(axis=1)) & (w > 0)
        x_host = x_host[keep] if not keep.all() else x_host
    positive = x_host if w is None or (w > 0).all() or holes else x_np[w > 0]
    if positive is not x_np and isinstance(num_components, (int, np.integer)) and 1 <= num_components <= num_rows:
        if np.unique(positive, axis=0).shape[0] < num_components:
            raise ValueError(f"x has only {np.unique(positive, axis=0).shape[0]} distinct rows with sample_weight > 0, "
                             f"fewer than num_components ({num_components})")
    num_components = check_num_components(num_components, positive)
    sum_w = float(num_rows) if w is None else float(w.sum())
    sum_x = x_np.sum(axis=0, dtype=np.float64) if w is None else w @ x_np.astype(np.float64)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        counts = np.asarray(multihost_utils.process_allgather(np.array([num_rows])))
        sums = np.asarray(multihost_utils.process_allgather(np.concatenate([[sum_w], sum_x])))
        sum_w, sum_x = float(sums[:, 0].sum()), sums[:, 1:].sum(axis=0)
        global_rows, max_local = int(counts.sum()), int(counts.max())
    else:
        global_rows, max_local = num_rows, num_rows
    center = sum_x / sum_w  # float64: rows are centred on the device, after conversion (RowData)
    if holes:
        center, sum_w = center_holes, total_holes
    num_devices = mesh.devices.size
    local_devices = max(1, num_devices // jax.process_count())
    itemsize = np.dtype(dtype).itemsize
    weights = np.ones(num_rows, dtype) if w is None else w.astype(dtype)
    center_dev = jnp.asarray(center, COMPUTE_DTYPE)
    if jax.process_count() == 1:
        # One program per row bucket (inference.rows.row_bucket), not per N: each device holds its share
        # ceil(N / devices) at the front of a block of whole chunks; the real N is traced (RowData.num_rows).
        per_device = -(-row_bucket(num_rows, num_features, itemsize) // num_devices)
        chunk_size = int(chunk_size or default_chunk_size(per_device, num_slots or num_components, num_features, itemsize))
        block = -(-per_device // chunk_size) * chunk_size
        share = -(-num_rows // num_devices)
        layout = Layout(block * num_devices, num_features, chunk_size, mesh, dtype=str(dtype), missing=holes)

        def device_block(arr, idx):
            d = (idx[0].start or 0) // block
            first = min(d * share, num_rows)
            return _padded_slice(arr[first : min(first + share, num_rows)], slice(0, block), min(share, num_rows - first))

        x_dev = jax.make_array_from_callback((block * num_devices, num_features), layout.sharding,
                                             lambda idx: device_block(x_np, idx))
        w_dev = jax.make_array_from_callback((block * num_devices,), layout.sharding, lambda idx: device_block(weights, idx))
        codes, info, order, block_pattern = None, None, None, None
        if holes:
            info = missing_em.summarise(missing)
            table = missing_em.code_table(list(info["codes"]))
            codes = jnp.asarray(table)
            order, block_pattern = _pattern_plan(missing, w, table, share, num_devices, chunk_size, layout.sharding)
            info = _missing_info(info)
        data = RowData(x_dev, w_dev, center=center_dev, num_rows=np.int32(num_rows), codes=codes, order=order,
                       block_pattern=block_pattern)
        return Rows(layout, data, center, sum_w, dtype, None, num_rows, share, info)
    chunk_size = int(chunk_size or default_chunk_size(-(-max_local // local_devices), num_components, num_features,
                                                       itemsize))
    layout = Layout(global_rows, num_features, chunk_size, mesh, dtype=str(dtype))
    sharding = layout.sharding
    # several processes: each holds its own rows (static layout, compiled for these row counts)
    per_process = -(-max_local // local_devices) * local_devices
    local_x = _padded_slice(x_np, slice(0, per_process), num_rows)
    local_w = _padded_slice(weights, slice(0, per_process), num_rows)
    total = per_process * jax.process_count()
    x_dev = jax.make_array_from_process_local_data(sharding, local_x, (total, num_features))
    w_dev = jax.make_array_from_process_local_data(sharding, local_w, (total,))
    data = RowData(x_dev, w_dev, center=center_dev)
    return Rows(layout, data, center, sum_w, dtype, None, num_rows)


def _source_blocks(x):
    """A callable returning a fresh iterator of row blocks for a streamed source, and the source to read
    from (an array-like for ``.npy`` files, the callable otherwise)."""
    if isinstance(x, (str, os.PathLike)):
        path = os.fspath(x)
        if not path.endswith(".npy"):
            raise ValueError(f"x as a path must name a .npy file, got {path!r}")
        try:
            arr = NpyRows(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"x: could not read {path!r}: {exc}") from None
        if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
            raise ValueError(f"x must be a 2-D array of shape (num_samples, num_features), got shape {arr.shape} in {path!r}")
        return arr, (lambda: (arr[i : i + STREAM_BLOCK_ROWS] for i in range(0, arr.shape[0], STREAM_BLOCK_ROWS)))
    if isinstance(x, np.ndarray):  # a large in-memory array, read in place (_streams_from_memory)
        return x, (lambda: (x[i : i + STREAM_BLOCK_ROWS] for i in range(0, x.shape[0], STREAM_BLOCK_ROWS)))
    if callable(x):
        return x, x
    if iter(x) is x:
        raise ValueError("x is a one-shot iterator: EM reads the rows once per iteration; pass a callable that "
                         "returns a fresh iterator of row chunks (or a list of chunks, or a .npy path)")
    return (lambda: iter(x)), (lambda: iter(x))


def streamed_rows(x, sample_weight, num_components, chunk_size, mesh) -> Rows:
    """One host pre-pass over the source: shape, dtype, finiteness, weights, centre, distinct rows."""
    if jax.process_count() > 1:
        raise ValueError("streamed x (a path or chunk iterator) is single-process; in a multi-process run pass each "
                         "process's rows as an array")
    source, blocks = _source_blocks(x)
    num_rows, num_features, dtype = 0, None, None
    sum_w, sum_x, weights_in_chunks = 0.0, None, None
    num_positive, max_abs, sum_sq = 0, None, None
    distinct: set = set()
    holes = None  # rows with NaN: the running counts (inference.missing_em.summarise)
    for item in blocks():
        xb, wb = item if isinstance(item, tuple) else (item, None)
        try:
            xb = check_data(np.asarray(xb)[:, None] if np.ndim(xb) == 1 else xb, allow_missing=True)
        except ValueError as exc:  # name the row in the whole source, not in this block
            raise ValueError(re.sub(r"first at row (\d+)", lambda m: f"first at row {int(m.group(1)) + num_rows}", str(exc))) from None
        if num_features is None:
            num_features, dtype = xb.shape[1], xb.dtype
            sum_x, sum_sq, max_abs = np.zeros(num_features), np.zeros(num_features), np.zeros(num_features)
            sum_plain = np.zeros(num_features)
            observed_w, observed_n, total_observed = np.zeros(num_features), np.zeros(num_features), 0.0
        elif xb.shape[1] != num_features:
            raise ValueError(f"x: a chunk has {xb.shape[1]} columns, the first had {num_features}")
        if weights_in_chunks is None:
            weights_in_chunks = wb is not None
        if (wb is not None) != weights_in_chunks:
            raise ValueError("x: either every chunk is an (x, w) pair or none is")
        if wb is not None:
            if sample_weight is not None:
                raise ValueError("sample_weight given twice: in the chunks and as sample_weight")
            wb = check_sample_weight(wb, xb.shape[0], np.float64) if (np.asarray(wb) > 0).any() or np.asarray(wb).size == 0 else np.zeros(xb.shape[0])
        elif sample_weight is not None:
            wb = None  # checked below as a whole
        w64 = np.ones(xb.shape[0]) if wb is None else np.asarray(wb, np.float64)
        sum_w += float(w64.sum())
        num_positive += int(np.count_nonzero(w64 > 0))
        x64 = np.asarray(xb, np.float64)
        miss = np.isnan(x64)
        if miss.any():  # holes: sums over the observed values (the rows completed with 0)
            holes = missing_em.summarise(miss, holes)
            x64, xb_abs = np.where(miss, 0.0, x64), np.abs(np.where(miss, 0, xb))
        else:
            xb_abs = np.abs(xb) if xb.shape[0] else None
        observed_w += w64 @ ~miss
        observed_n += np.sum(~miss, axis=0)
        total_observed += float(w64 @ ~miss.all(axis=1))
        sum_x += w64 @ x64
        sum_sq += np.sum(x64**2, axis=0)  # (only for the float32 resolution check: cancellation is harmless there)
        sum_plain += np.sum(x64, axis=0)
        max_abs = np.maximum(max_abs, np.max(xb_abs, axis=0)) if xb.shape[0] else max_abs
        if len(distinct) < num_components:
            keep = xb if wb is None else xb[w64 > 0]
            distinct.update(map(bytes, np.unique(keep[: 4 * num_components + 64], axis=0)))
        num_rows += xb.shape[0]
    if num_rows == 0:
        raise ValueError("x has no rows")
    w = normalize_sample_weight(check_sample_weight(sample_weight, num_rows, np.float64))
    weight_scale = 1.0
    if weights_in_chunks and sum_w > 0:  # the chunks' own weights, normalised as a whole (check_sample_weight)
        weight_scale, sum_x, sum_w = num_positive / sum_w, sum_x * (num_positive / sum_w), float(num_positive)
        observed_w, total_observed = observed_w * weight_scale, total_observed * weight_scale
    if num_rows:
        counted = np.maximum(observed_n, 1) if holes else num_rows
        mean_plain = sum_plain / counted
        check_float32_resolution(None, dtype=dtype, max_abs=max_abs,
                                 std=np.sqrt(np.maximum(sum_sq / counted - mean_plain**2, 0.0)))
    if w is not None:
        sum_w = float(w.sum())
        sum_x = np.zeros(num_features)
        observed_w, total_observed = np.zeros(num_features), 0.0
        for i, item in enumerate(rechunk(blocks(), STREAM_BLOCK_ROWS)):
            wi = w[i * STREAM_BLOCK_ROWS : i * STREAM_BLOCK_ROWS + item[0].shape[0]].astype(np.float64)
            if holes:
                miss = np.isnan(item[0])
                observed_w += wi @ ~miss
                total_observed += float(wi @ ~miss.all(axis=1))
                sum_x += wi @ np.where(miss, 0.0, item[0])
            else:
                sum_x += wi @ item[0]
    if holes:  # each column's mean over its observed values; rows with nothing observed weigh nothing
        missing_em.check_missing_columns(num_features, observed_w)
        sum_x, sum_w = sum_x / observed_w * total_observed, total_observed
    if sum_w <= 0:
        raise ValueError("sample_weight is zero for every row: nothing to fit")
    if isinstance(num_components, bool) or not isinstance(num_components, (int, np.integer)) or num_components < 1:
        check_num_components(num_components, np.zeros((1, 1)))
    if num_components > num_rows:
        raise ValueError(f"num_components ({num_components}) exceeds the number of rows of x ({num_rows})")
    if len(distinct) < num_components:
        raise ValueError(f"x has only {len(distinct)} distinct rows (among its leading rows), fewer than num_components ({num_components})")
    center = sum_x / sum_w  # float64: subtracted on the device, after conversion (RowData)
    num_devices = mesh.devices.size
    itemsize = np.dtype(dtype).itemsize
    # static sizes from the row bucket, the real N traced (RowData.num_rows): one program per bucket
    bucket = row_bucket(num_rows, num_features, itemsize)
    chunk_size = int(chunk_size or default_chunk_size(bucket, num_components, num_features, itemsize))
    chunks_per_read = max(1, READ_BYTES // (chunk_size * num_features * itemsize))  # the fold skips empty chunks
    read_rows = chunk_size * chunks_per_read
    # the fold reads a traced number of chunks (rows.RowData.num_rows): nothing static depends on N, so one
    # streamed program serves every file of these columns, dtype and chunking
    layout = Layout(0, num_features, chunk_size, mesh, streamed=True, chunks_per_device=0,
                    chunks_per_read=chunks_per_read, dtype=str(dtype), missing=holes is not None)
    reader = ChunkReader(source, w, np.zeros(num_features), read_rows, dtype, window=4 * num_devices + 4,
                         weight_scale=weight_scale)
    token = jax.device_put(np.int32(reader.token), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    codes = None if holes is None else jnp.asarray(missing_em.code_table(list(holes["codes"])))
    data = RowData(None, None, token, center=jnp.asarray(center, COMPUTE_DTYPE), num_rows=np.int32(num_rows), codes=codes)
    return Rows(layout, data, center, sum_w, dtype, reader, num_rows, missing=None if holes is None else _missing_info(holes))
