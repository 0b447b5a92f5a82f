"""The NumPyro engines' rows (MAP, SVI, NUTS) split over devices: the potential's log-likelihood, a sum over rows,
computed by every device, its value and gradient combined by one all-reduce.

A program built for a mesh (:func:`inference.rows.make_mesh`, one axis ``"rows"``) takes its arguments replicated
and constrains its row arguments (x, sample weights) to the rows axis on entry (:func:`rows_on_mesh`); XLA's SPMD
partitioner then computes every row-wise term of the declared model (the quadratic features, the (N, K) table of
``models.gmm.ComponentNormal``, the logsumexp over the enumerated z) on the device that holds the row, and the sums
over rows (the potential and the two sums of its gradient) meet in ONE all-reduce per gradient (XLA combines them;
``tests/test_sharded_potential.py`` reads the compiled program). The model is unchanged: nothing here knows its
sites. A row count not divisible by the device count needs no padding rows here: XLA pads the last block inside the
program and reduces the padding as zeros. With one device (or ``mesh`` None) nothing is wrapped: the very program of
before. Outputs come back to the host (numpy), so that later single-device steps never meet mesh arrays.

Batched LAPACK calls (the K (D, D) triangular solves of the coefficients, ``models.linalg``) run on every device: on
CPU host devices jaxlib splits a big batch over XLA's one thread pool and waits, and several devices doing so at once
deadlock (``models.linalg``'s docstring; seen here: 16 vmapped gradients at D = 16, K = 8 hung on 2 host devices).
``row_mesh`` keeps such programs on one device (:func:`lapack_work`: vmapped copies x the calls' batch work).

Why not ``shard_map`` around the sum in ``log_prob``: funsor sums z and the rows outside the distribution, so a
``shard_map`` there would only split the table, and the partitioner splits it anyway (the same single all-reduce).
Rows with NaN holes (``Missing``) stay on one device: their per-pattern tables are gathered per row, untested here.
"""

from __future__ import annotations

import functools

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from numpyro.infer.util import potential_energy

from models.linalg import JAXLIB_PARALLEL_WORK, SMALL_WORK

from .rows import ROW_AXIS, make_mesh

# devices=None splits the rows from this many: measured (benchmarks/bench_bayes.py --sharded, 2 host devices on 2 cores,
# load 1-3) the gradient at (5,000, 5, 3) took 0.27-0.29 ms on 1 device and 0.29-0.35 on 2, and NUTS there sampled in
# 16-17 s against 26 s; at (20,000, 8, 4) 4.2 against 2.6-3.5 ms, at (50,000, 8, 4) 11.1 against 4.9-11.0 ms.
AUTO_MIN_ROWS = 20_000


def lapack_work(num_components: int, num_features: int, num_mapped: int = 1, dense_dim: int = 0) -> int:
    """The largest batched LAPACK call's work (matrices x D^3) in a program of the potential: ``num_mapped`` vmapped
    copies (restarts, particles, Laplace's Hessian batch, vectorised chains) of the K (D, D) solves, cut by
    ``models.linalg.small_batches``, or of NUTS's dense (P, P) mass matrix (``dense_dim`` P, 0 if none)."""
    cube = num_features**3
    return max(num_mapped * min(num_components, max(1, SMALL_WORK // cube)) * cube, num_mapped * dense_dim**3 if num_mapped > 1 else 0)


def row_mesh(devices, num_rows: int, missing=None, chain_method: str | None = None, work: int = 0):
    """The mesh an engine's programs split their rows over, or None (one device: the programs of before).

    Parameters
    ----------
    devices : None (every device JAX sees when there are ``AUTO_MIN_ROWS`` rows or more, else one), a list of
        ``jax.Device`` (every one of them, whatever the rows) or a ``jax.sharding.Mesh`` (its devices).
    num_rows : N.
    missing : the rows' holes (``inference._numpyro_common.Missing``) or None; with holes: one device.
    chain_method : NUTS's resolved chain method; "parallel" (pmap over chains) keeps the rows on one device.
    work : :func:`lapack_work` of the program; from jaxlib's parallel threshold on CPU: one device (module docstring).
    """
    unsafe = work >= JAXLIB_PARALLEL_WORK and jax.default_backend() == "cpu"
    if devices is None:
        if num_rows < AUTO_MIN_ROWS or missing is not None or chain_method == "parallel" or unsafe:
            return None
        mesh = make_mesh()
    else:
        mesh = make_mesh(mesh=devices) if isinstance(devices, jax.sharding.Mesh) else make_mesh(devices)
        if mesh.devices.size > 1 and (missing is not None or chain_method == "parallel" or unsafe):
            why = ("rows with missing values run on one device" if missing is not None else "chain_method='parallel' "
                   "gives the devices to the chains" if chain_method == "parallel" else f"this program's batched LAPACK "
                   f"calls (work {work}) deadlock on several CPU host devices (models.linalg)")
            raise ValueError(f"devices: {why}; pass devices=None or one device")
    return mesh if mesh.devices.size > 1 else None


def devices_used(mesh) -> list[str]:
    """The devices a program ran on, as text (``info``; JSON-friendly)."""
    return [str(jax.devices()[0])] if mesh is None else [str(d) for d in mesh.devices.ravel()]


def rows_on_mesh(fn, mesh, row_args: tuple):
    """``fn`` whose positional arguments at ``row_args`` (arrays with rows first, or None) are split over ``mesh``'s
    rows axis on entry; ``fn`` itself when ``mesh`` is None."""
    if mesh is None:
        return fn
    rows = NamedSharding(mesh, P(ROW_AXIS))

    def split(*args):
        args = [jax.lax.with_sharding_constraint(a, rows) if i in row_args and a is not None else a for i, a in enumerate(args)]
        return fn(*args)

    return split


# XLA's CPU backend sends the potential's dots and its reductions over the enumerated z (the (K, N) table's leading
# axis) to YNNPACK fusions. Measured (benchmarks/bench_bayes.py's loop of value_and_grad, 2 cores, one device, load
# ~1.5), ms per gradient with them / without: (50,000, 8, 4) 9.4 / 5.6, (20,000, 8, 4) 3.9 / 1.5, (20,000, 2, 3)
# 1.3 / 0.5, (100,000, 2, 3) 6.2 / 2.3, (10,000, 8, 4) 1.01 / 0.84; but (5,000, 5, 3) 0.27 / 0.32 and (500, 2, 2)
# 0.014 / 0.021 (a profile at 50,000 rows: a 4 x 50,000 reduce-and-divide fusion alone took 2.5 ms). So the
# programs of data with YNN_MAX_ROWS rows or more are compiled without them (``compiler_options``, per program:
# nothing else in the process changes). EM's programs (another layout) measured the same either way. The same
# reduction-in-YNN slowdown is public: jax-ml/jax#37465 (workaround ``-reduce``; YNN on dots only measured 6.8-7.5 ms
# here, so every fusion type is off), openxla/xla#46351.
YNN_MAX_ROWS = 10_000
_NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.lru_cache(maxsize=1)
def _no_ynn_accepted() -> bool:
    """Whether this jaxlib compiles with ``_NO_YNN`` (an option it does not know is an error; then nothing is set)."""
    try:
        jax.jit(lambda a: a + 1).lower(jax.numpy.zeros(2)).compile(compiler_options=_NO_YNN)
        return True
    except Exception:  # noqa: BLE001 - any refusal means: compile with the defaults
        return False


def compiler_options(args) -> dict | None:
    """XLA options for a NumPyro-engine program whose arguments are ``args``: YNNPACK fusions off on the CPU when
    its data (the largest 2-D float array: the rows x) has ``YNN_MAX_ROWS`` rows or more, else None (defaults)."""
    rows = [a.shape[0] for a in jax.tree.leaves(args)
            if getattr(a, "ndim", 0) == 2 and jax.numpy.issubdtype(a.dtype, jax.numpy.floating)]
    if jax.default_backend() != "cpu" or max(rows, default=0) < YNN_MAX_ROWS or not _no_ynn_accepted():
        return None
    return dict(_NO_YNN)


def compile_on_mesh(fn, mesh, args, extra_options=None):
    """``jax.jit(fn)`` compiled for ``args`` placed replicated on ``mesh`` (outputs replicated), with
    :func:`compiler_options` and ``extra_options`` (a dict, e.g. ``inference.executable_store.FRESH_OPTIONS``);
    returns (executable, placed args). ``mesh`` None: compiled for ``args`` as they are."""
    options = {**(compiler_options(args) or {}), **(extra_options or {})} or None
    if mesh is None:
        return jax.jit(fn).lower(*args).compile(compiler_options=options), args
    replicated = NamedSharding(mesh, P())
    args = jax.device_put(args, replicated)
    return jax.jit(fn, out_shardings=replicated).lower(*args).compile(compiler_options=options), args


def place(args, mesh):
    """``args`` replicated on ``mesh`` (as :func:`compile_on_mesh` compiled them); unchanged when ``mesh`` is None."""
    return args if mesh is None else jax.device_put(args, NamedSharding(mesh, P()))


def potential_value_and_grad(model, mesh):
    """Jit-able ``(unconstrained, x, sample_weight) -> (potential, gradient)`` of ``model`` (z enumerated, the
    engines' ``inference._numpyro_common.enumerated`` model) with the rows split over ``mesh`` (None: one device):
    what NUTS computes every leapfrog step, for the tests and ``benchmarks/bench_bayes.py``."""

    def value_and_grad(u, x, w):
        energy = lambda v: potential_energy(model, (x, w, None), {}, v, enum=w is None)
        return jax.value_and_grad(energy)(u)

    return rows_on_mesh(value_and_grad, mesh, (1, 2))


__all__ = ["row_mesh", "lapack_work", "rows_on_mesh", "compile_on_mesh", "compiler_options", "YNN_MAX_ROWS", "place", "potential_value_and_grad", "devices_used", "AUTO_MIN_ROWS"]
