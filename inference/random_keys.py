"""``jax.random.split`` and the report's data key as programs kept by the executable store.

Split eagerly, a key costs a small compile of its own in every new process (JAX's threefry lowering, then its
persistent cache: measured 0.07-0.33 s per engine in the warm report, 0.7 s in all). Through
:func:`inference.executable_store.stored_call` a warm process runs the stored program instead; with the store
off it is the jitted split. The keys are the same bits as ``jax.random.split``'s (tested).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .executable_store import stored_call


@functools.partial(jax.jit, static_argnums=(1,))
def _split(key, num):
    return jax.random.split(key, num)


@jax.jit
def _seed_key(seed, data):
    return jax.random.fold_in(jax.random.PRNGKey(seed), data)


def split_key(key, num: int = 2):
    """``jax.random.split(key, num)``: (num, 2) raw uint32 keys for a raw key; a typed key (``jax.random.key``) is
    split as JAX splits it (typed keys out)."""
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.split(key, num)
    return stored_call(_split, (1,), np.asarray(key) if not isinstance(key, jax.Array) else key, int(num))


def seed_key(seed: int, data: int = 0):
    """``jax.random.fold_in(jax.random.PRNGKey(seed), data)`` (a raw uint32 key) in one stored program."""
    return stored_call(_seed_key, (), np.int64(seed), np.int64(data))


__all__ = ["split_key", "seed_key"]
