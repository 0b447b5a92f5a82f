"""Batched Cholesky factors and triangular solves that cannot deadlock on several CPU host devices.

jaxlib's CPU LAPACK kernels (``ParallelBatchMap`` in ``jaxlib/cpu/lapack_kernels.cc``) split a batch whose
work exceeds ~200,000 (matrices x cost per matrix) over XLA's intra-op thread pool and block until it is
done. When several host devices run one program (EM sharded over ``--xla_force_host_platform_device_count``
devices, which ``gmm-report`` sets), every device's copy of the call can hold a pool thread while its tasks
wait behind the others': a deadlock. Seen with gdb (both pool threads in ``BlockingCounter::Wait`` under
``lapack_dtrsm_ffi``) for complete-data EM at D = 32, K = 8 and for the missing-value pattern tables at
D = 8, P x K = 512, on 2 host devices of a 2-core machine; ``--xla_cpu_multi_thread_eigen=false`` does not
avoid it. Calls here pass at most ``max(1, SMALL_WORK // D^3)`` matrices to LAPACK at once (a ``lax.map``
over the flattened batch beyond that), so that jaxlib runs them inline on the calling thread; a batch that
fits is ONE call, exactly as before. Under ``vmap`` (EM's restarts) the batch is multiplied by the mapped
size, hence the 10x margin below jaxlib's threshold.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular

SMALL_WORK = 20_000  # matrices x D^3 per LAPACK call
JAXLIB_PARALLEL_WORK = 200_000  # jaxlib's kMinWorkPerTask: a bigger batch is split over the thread pool


def small_batches(fn, *stacks):
    """``fn(*stacks)`` for stacks of (..., D, D) / (..., D, M) matrices sharing their batch shape, at most
    ``max(1, SMALL_WORK // D^3)`` matrices per call (D = the first stack's last dimension)."""
    batch_shape = stacks[0].shape[:-2]
    total = math.prod(batch_shape)
    limit = max(1, SMALL_WORK // stacks[0].shape[-1] ** 3)
    if total <= limit:
        return fn(*stacks)
    flat = tuple(s.reshape((total,) + s.shape[-2:]) for s in stacks)
    out = jax.lax.map(lambda xs: fn(*xs), flat, batch_size=limit)
    return out.reshape(batch_shape + out.shape[1:])


def vmap_is_safe(num_mapped: int, num_features: int) -> bool:
    """Whether ``vmap`` over ``num_mapped`` copies of a program that calls :func:`small_batches` keeps every
    LAPACK call inline (each call's batch is multiplied by ``num_mapped``); otherwise map sequentially."""
    return num_mapped * max(SMALL_WORK, num_features**3) < JAXLIB_PARALLEL_WORK


def cholesky(a):
    """Lower Cholesky factors of (..., D, D) symmetric positive-definite ``a`` (``jnp.linalg.cholesky``)."""
    return small_batches(jnp.linalg.cholesky, a)


def solve_lower(lower, b):
    """``lower^{-1} b`` for (..., D, D) lower-triangular ``lower`` and (..., D, M) ``b`` (same batch)."""
    return small_batches(lambda l, r: solve_triangular(l, r, lower=True), lower, b)


def inverse_lower(lower):
    """``W = lower^{-1}`` (..., D, D), by a triangular solve against the identity (never an inverse)."""
    eye = jnp.broadcast_to(jnp.eye(lower.shape[-1], dtype=lower.dtype), lower.shape)
    return solve_lower(lower, eye)


__all__ = ["SMALL_WORK", "JAXLIB_PARALLEL_WORK", "small_batches", "vmap_is_safe", "cholesky", "solve_lower", "inverse_lower"]
