"""Where EM's rows live and how one pass over them runs: one device, many devices, many hosts, or disk.

Every data pass of EM (E-steps, initialisers, the final pass) is a fold
``acc = merge(acc, chunk_fn(args, x_chunk, w_chunk, first_row))`` over row chunks, written once in
:func:`data_pass`. Where the chunks come from is a static :class:`Layout`:

* **in memory, sharded**: the (centred, padded) rows are one global ``jax.Array`` split over the
  devices of a 1-D mesh (axis ``"rows"``, ``NamedSharding``); inside ``shard_map`` each device folds
  its own rows in chunks (``lax.scan``) and the devices' accumulators meet in one ``psum`` per pass
  (or an ``all_gather`` + the same merge, for the hard-EM "worst rows" that are not sums). The same
  program serves 1 device, several CPU host devices, several GPUs and several processes
  (``jax.distributed``), each holding its own rows;
* **streamed**: the rows stay on disk (a ``.npy`` file, memory-mapped) or in a user's chunk iterator; each
  chunk is read by a host callback inside the compiled program, so memory is bounded by the chunk
  buffers, whatever N. Device ``d`` reads global chunks ``d, d + D, d + 2D, ...``.

Padding rows (N not divisible by the device count, or by the streamed block) carry weight 0, so they
change nothing: every statistic is weighted by the sample weights. Randomness that depends on rows
(the initialisers' Gumbel keys) is a function of the *global row index* only (:func:`row_gumbel`), so the
same key gives the same initial point on 1, 2, 3 or 4 devices, and streamed or in memory.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from .host_readers import read_callback
from .missing_em import fill_missing

ROW_AXIS = "rows"
RANDOM_BLOCK = 256  # rows per counter of the row-indexed random stream


@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of where the rows are (hashable: part of the compiled program's cache key).

    num_rows : the rows the program is compiled for: the real N, or (when ``RowData.num_rows`` carries the
        real count, traced) a bucket >= N (:func:`row_bucket`) so that one program serves every N in it.
    chunk_size : rows per chunk of a fold.
    mesh : 1-D device mesh over axis ``"rows"``; None = plain arrays, no ``shard_map`` (used by
        ``inference.init.initialize`` for the NumPyro engines).
    streamed : rows read from a host reader (``RowData.token``) instead of device arrays.
    chunks_per_device : streamed only: host reads per device and pass.
    chunks_per_read : streamed only: compute chunks per host read (one read = chunks_per_read *
        chunk_size rows, so that the callbacks' overhead is paid per few MiB, not per chunk).
    """

    num_rows: int
    num_features: int
    chunk_size: int
    mesh: Any = None
    streamed: bool = False
    chunks_per_device: int = 0
    chunks_per_read: int = 1
    dtype: str = "float64"  # streamed only: the dtype the host reader serves (the data's own)
    missing: bool = False  # the rows hold NaN (inference.missing_em): folds fill them unless told not to

    @property
    def read_rows(self) -> int:
        return self.chunk_size * self.chunks_per_read

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else int(self.mesh.devices.size)

    @property
    def padded_rows(self) -> int:
        if self.streamed:
            return self.num_devices * self.chunks_per_device * self.read_rows
        return -(-self.num_rows // self.num_devices) * self.num_devices

    @property
    def sharding(self):
        return None if self.mesh is None else NamedSharding(self.mesh, P(ROW_AXIS))


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass
class RowData:
    """The traced side of the rows: ``x`` (padded N, D) and ``w`` (padded N,) in memory, or a reader
    ``token`` (int32 scalar) for streamed rows; ``num_rows`` (int32 scalar), when given, the real row count,
    traced, so that the compiled program does not depend on it: in memory each device holds its share
    ``ceil(N / devices)`` of the rows at the front of its block (zero-padded, weight 0) and folds only the
    chunks that hold them; streamed, each device reads only the chunks that exist. ``center`` (D,), when given, is subtracted from every chunk
    on the device after converting it to ``center``'s dtype (the compute dtype).

    Why on the device: rows are stored in the data's dtype and never centred on the host. A float32 row
    centred in float32 loses ``eps32 |x - c|`` (for two tight clusters far apart, more than the clusters'
    width); converted to float64 first, ``x - c`` is exact, and every statistic after it is float64."""

    x: Any = None
    w: Any = None
    token: Any = None
    center: Any = None
    num_rows: Any = None  # the real N (int32 scalar, traced); None: every row of x is the data's (static)
    codes: Any = None  # rows with NaN: the sorted table of missingness codes (inference.missing_em.code_table)
    order: Any = None  # rows with NaN, in memory: the pattern-sorted permutation (inference.missing_blocks)
    block_pattern: Any = None  # its blocks' patterns

    def tree_flatten(self):
        return (self.x, self.w, self.token, self.center, self.num_rows, self.codes, self.order,
                self.block_pattern), None

    @classmethod
    def tree_unflatten(cls, _, children):
        return cls(*children)


def make_mesh(devices=None, mesh=None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device JAX sees, all processes) or the user's ``mesh``
    (its devices, flattened, in order)."""
    if mesh is not None and devices is not None:
        raise ValueError("pass either mesh or devices, not both")
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise ValueError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        devices = list(np.asarray(mesh.devices).ravel())
    elif devices is None:
        devices = jax.devices()
    else:
        devices = list(devices)
        if not devices or not all(isinstance(d, jax.Device) for d in devices):
            raise ValueError("devices must be a non-empty list of jax.Device (e.g. jax.devices()[:2])")
    return Mesh(np.array(devices), (ROW_AXIS,))


def row_gumbel(key, first_row, num_rows: int):
    """Standard Gumbel noise for global rows ``first_row .. first_row + num_rows - 1``.

    A function of (key, global row index) only: blocks of ``RANDOM_BLOCK`` rows draw from
    ``fold_in(key, block)``, so any chunking or sharding of the rows sees the same numbers.
    """
    first_block = first_row // RANDOM_BLOCK
    num_blocks = num_rows // RANDOM_BLOCK + 2
    blocks = first_block + jnp.arange(num_blocks)
    noise = jax.vmap(lambda b: jax.random.gumbel(jax.random.fold_in(key, b), (RANDOM_BLOCK,)))(blocks).reshape(-1)
    return jax.lax.dynamic_slice(noise, (first_row - first_block * RANDOM_BLOCK,), (num_rows,))


def _tree_add(a, b):
    return jax.tree.map(jnp.add, a, b)


def to_compute(xc, wc, center):
    """A chunk in the compute dtype, centred: ``(xc - center, wc)`` in ``center``'s dtype (no-op when
    ``center`` is None)."""
    if center is None:
        return xc, wc
    return xc.astype(center.dtype) - center, wc.astype(center.dtype)


def _fold_local(layout: Layout, chunk_fn, merge, zero, args, x_local, w_local, token, center, num_rows, device):
    """This device's fold over its own rows (with a traced ``num_rows``: only the chunks holding real rows)."""
    cs = layout.chunk_size
    chunk_fn_c = lambda a, xc, wc, row0: chunk_fn(a, *to_compute(xc, wc, center), row0)
    if layout.missing and not getattr(chunk_fn, "reads_missing", False):  # holes read as the column means
        chunk_fn_c = lambda a, xc, wc, row0: chunk_fn(a, *fill_missing(*to_compute(xc, wc, center)), row0)
    if layout.streamed:
        dtype = layout.dtype

        def body(i, acc):
            g = i * layout.num_devices + device
            xb, wb = read_chunk(layout, token, g, dtype)  # (read_rows, D), (read_rows,)

            def inner(j, acc):
                xc = jax.lax.dynamic_slice_in_dim(xb, j * cs, cs)
                wc = jax.lax.dynamic_slice_in_dim(wb, j * cs, cs)
                return merge(acc, chunk_fn_c(args, xc, wc, g * layout.read_rows + j * cs))

            if layout.chunks_per_read == 1:
                return inner(0, acc)
            if num_rows is None:
                return jax.lax.fori_loop(0, layout.chunks_per_read, inner, acc)
            # only the chunks of this read that hold rows (the last read of a file is partly padding)
            left = num_rows - g * layout.read_rows
            return jax.lax.fori_loop(0, jnp.clip((left + cs - 1) // cs, 0, layout.chunks_per_read), inner, acc)

        if num_rows is None:
            reads = layout.chunks_per_device
        else:  # global reads g = device, device + D, ... below ceil(N / read_rows)
            total = (num_rows + layout.read_rows - 1) // layout.read_rows
            reads = jnp.maximum((total - device + layout.num_devices - 1) // layout.num_devices, 0)
        return jax.lax.fori_loop(0, reads, body, zero)
    n_local = x_local.shape[0]
    if num_rows is not None:  # this device's share sits at the front of its block (a whole number of chunks)
        share = (num_rows + layout.num_devices - 1) // layout.num_devices
        count = jnp.clip(num_rows - device * share, 0, share)
        base = device * share

        def body(i, acc):
            xc = jax.lax.dynamic_slice_in_dim(x_local, i * cs, cs)
            wc = jax.lax.dynamic_slice_in_dim(w_local, i * cs, cs)
            return merge(acc, chunk_fn_c(args, xc, wc, base + i * cs))

        return jax.lax.fori_loop(0, (count + cs - 1) // cs, body, zero)
    base = device * n_local
    num_full = n_local // cs
    acc = zero
    if num_full:
        xs = x_local[: num_full * cs].reshape(num_full, cs, -1)
        ws = w_local[: num_full * cs].reshape(num_full, cs)

        def body(acc, inp):
            xc, wc, i = inp
            return merge(acc, chunk_fn_c(args, xc, wc, base + i * cs)), None

        acc, _ = jax.lax.scan(body, acc, (xs, ws, jnp.arange(num_full)))
    if n_local % cs:
        acc = merge(acc, chunk_fn_c(args, x_local[num_full * cs :], w_local[num_full * cs :], base + num_full * cs))
    return acc


def row_bucket(num_rows: int, num_features: int, itemsize: int, small_bytes: int = 1 << 26) -> int:
    """The row count a program is compiled for, >= ``num_rows``: a power of 4 (at least 256) while the
    padded array stays under ``small_bytes`` (64 MiB: a sweep over 100 .. 10,000 rows compiles 4
    programs, and padding costs memory only: the folds skip chunks without real rows), above that the
    next ``2^k * m / 8`` (m = 8 .. 15: at most 12.5% more memory)."""
    bucket = 256
    while bucket < num_rows:
        bucket *= 4
    if bucket * num_features * itemsize <= small_bytes:
        return bucket
    step = 1 << max(0, (num_rows - 1).bit_length() - 4)  # 2^k / 8 with 2^k >= num_rows
    return -(-num_rows // step) * step


def zero_dtype(zero):
    leaves = [a for a in jax.tree.leaves(zero) if jnp.issubdtype(jnp.result_type(a), jnp.floating)]
    return jnp.result_type(leaves[0]) if leaves else jnp.float64


def data_pass(layout: Layout, data: RowData, chunk_fn: Callable, zero, args, merge: Callable | None = None):
    """Fold ``merge(acc, chunk_fn(args, x_chunk, w_chunk, first_global_row))`` over every row, on every
    device, and combine the devices: ``psum`` when ``merge`` is None (sums), else ``all_gather`` and
    ``merge`` in device order. ``args`` (a pytree, replicated) holds everything traced the chunk function
    needs. Returns the same accumulator on every device."""
    fold = functools_partial(_fold_local, layout, chunk_fn, merge or _tree_add, zero)
    if layout.mesh is None:
        return fold(args, data.x, data.w, data.token, data.center, data.num_rows, 0)

    def per_device(args, x_local, w_local, token, center, num_rows):
        acc = fold(args, x_local, w_local, token, center, num_rows, jax.lax.axis_index(ROW_AXIS))
        if merge is None:
            return jax.lax.psum(acc, ROW_AXIS)
        gathered = jax.lax.all_gather(acc, ROW_AXIS)
        out = jax.tree.map(lambda a: a[0], gathered)
        for d in range(1, layout.num_devices):
            out = merge(out, jax.tree.map(lambda a, d=d: a[d], gathered))
        return out

    rows = P() if layout.streamed else P(ROW_AXIS)
    run = jax.shard_map(per_device, mesh=layout.mesh, in_specs=(P(), rows, rows, P(), P(), P()), out_specs=P(),
                        check_vma=False)
    return run(args, data.x, data.w, data.token, data.center, data.num_rows)


def map_rows(layout: Layout, data: RowData, row_fn: Callable, args, out_width: int, dtype):
    """(padded N, out_width) = ``row_fn(args, x_chunk)`` per chunk, sharded like the rows (in memory only),
    and the weighted sum of its second output ``row_fn -> (values (c, W), per_row (c,))``."""
    cs = layout.chunk_size

    def local(args, x_local, w_local, center):
        n_local = x_local.shape[0]
        num_full = n_local // cs
        parts, total = [], jnp.zeros((), dtype)
        if num_full:
            xs = x_local[: num_full * cs].reshape(num_full, cs, -1)
            ws = w_local[: num_full * cs].reshape(num_full, cs)

            def one(xw):
                xc, wc = to_compute(xw[0], xw[1], center)
                vals, per_row = row_fn(args, xc)
                return vals, jnp.sum(per_row * wc)

            vals, totals = jax.lax.map(one, (xs, ws))
            parts.append(vals.reshape(num_full * cs, out_width))
            total = total + jnp.sum(totals)
        if n_local % cs:
            xc, wc = to_compute(x_local[num_full * cs :], w_local[num_full * cs :], center)
            vals, per_row = row_fn(args, xc)
            parts.append(vals)
            total = total + jnp.sum(per_row * wc)
        return (jnp.concatenate(parts) if len(parts) > 1 else parts[0]), total

    if layout.mesh is None:
        return local(args, data.x, data.w, data.center)

    def per_device(args, x_local, w_local, center):
        vals, total = local(args, x_local, w_local, center)
        return vals, jax.lax.psum(total, ROW_AXIS)

    run = jax.shard_map(per_device, mesh=layout.mesh, in_specs=(P(), P(ROW_AXIS), P(ROW_AXIS), P()),
                        out_specs=(P(ROW_AXIS), P()), check_vma=False)
    return run(args, data.x, data.w, data.center)


def functools_partial(f, *a):
    return lambda *b: f(*a, *b)


# --------------------------------------------------------------------------- streamed rows (host reads)


def read_chunk(layout: Layout, token, g, dtype):
    """Global read ``g`` (``layout.read_rows`` rows, zero-padded, weight 0 beyond the data) from the host."""
    shapes = (jax.ShapeDtypeStruct((layout.read_rows, layout.num_features), dtype),
              jax.ShapeDtypeStruct((layout.read_rows,), dtype))
    return jax.pure_callback(read_callback, shapes, token, g)



# --------------------------------------------------------------------------- checks


def normalize_sample_weight(w):
    """Weights rescaled to sum to the number of rows with a positive weight (None stays None).

    What ``sample_weight`` means in every engine: *relative* weights. A row of weight 2 counts twice as
    much as a row of weight 1, and the weights' overall scale does not matter (1/N, 1e-6 or 1e3 times the
    same weights give the same fit). Integer weights give EM and hard EM exactly the repeated rows' fit
    (maximum likelihood does not depend on the data's total weight); the Bayesian engines (map, svi, nuts)
    see as much data as there are rows with a positive weight, N+, not sum(w): repeat the rows to give
    them more. Without this, weights summing to 1 made ``sum(w) - 1`` (the unbiased covariance's
    denominator) 2e-16."""
    if w is None:
        return None
    w = np.asarray(w, np.float64)
    return w * (np.count_nonzero(w > 0) / w.sum())


def check_sample_weight(sample_weight, num_rows: int, dtype=np.float64) -> np.ndarray | None:
    """(N,) finite non-negative weights with a positive sum, as ``dtype``; None stays None. One-line
    ``ValueError`` naming ``sample_weight`` otherwise."""
    if sample_weight is None:
        return None
    try:
        w = np.asarray(sample_weight)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValueError(f"sample_weight could not be converted to an array: {exc}") from None
    if w.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D of length {num_rows} (one weight per row), got shape {w.shape}")
    if w.shape[0] != num_rows:
        raise ValueError(f"sample_weight has length {w.shape[0]} but x has {num_rows} rows")
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == bool) or np.iscomplexobj(w):
        raise ValueError(f"sample_weight must be real numbers, got dtype {w.dtype}")
    w = w.astype(dtype, copy=False)
    if not np.isfinite(w).all():
        raise ValueError(f"sample_weight contains NaN or inf at {int((~np.isfinite(w)).sum())} row(s), first at row {int(np.flatnonzero(~np.isfinite(w))[0])}")
    if (w < 0).any():
        raise ValueError(f"sample_weight must be >= 0, got {w.min()} at row {int(np.argmin(w))}")
    if not (w > 0).any():
        raise ValueError("sample_weight is zero for every row: nothing to fit")
    return w
