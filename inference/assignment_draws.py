"""Posterior draws of the assignments z for NUTS's parameter draws: ``infer_discrete`` at temperature 1 on the
declared model (z enumerated out of the sampler), or Bayes' rule for a weighted fit (whose model has no z site);
and each row's posterior mode over them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from models.gmm import params_from_sites
from models.params import GMMParams

from ._numpyro_common import compiled_call, data_component_log_prob, discrete_assignments, make_model, missing_of, model_sites
from .random_keys import split_key

__all__ = ["assignment_draws", "posterior_mode"]


def _build_assignment_draws(num_components, prior):
    """``(keys (M,), sites (M, ...), x, missing) -> z (M, N)``: infer_discrete at temperature 1 per draw."""
    model = make_model(num_components, prior)
    draw = lambda k, s, x, m: discrete_assignments(k, model, s, x, temperature=1, missing=m)
    return lambda keys, sites, x, m: jax.vmap(draw, in_axes=(0, 0, None, None))(keys, sites, x, m)


def _build_bayes_draws():
    """``(keys (M,), sites (M, ...), x, missing) -> z (M, N)``: one draw of z from p(z | x, theta_m) per parameter
    draw (the weighted model has no z site; the same distribution as ``infer_discrete`` at temperature 1)."""
    draw = lambda k, s, x, m: jax.random.categorical(k, data_component_log_prob(params_from_sites(s), x, m), axis=-1)
    return lambda keys, sites, x, m: jax.vmap(draw, in_axes=(0, 0, None, None))(keys, sites, x, m)


def assignment_draws(key, aligned: GMMParams, x, num_components, prior, num_draws, weighted=False):
    """z draws (M, N) from ``infer_discrete`` (Bayes' rule for a weighted fit) at M evenly spaced ALIGNED
    parameter draws."""
    if num_draws == 0:
        return np.zeros((0, x.shape[0]), np.int64), 0.0, 0.0
    flat = GMMParams(*(np.asarray(a).reshape((-1,) + np.shape(a)[2:]) for a in aligned))
    index = np.linspace(0, flat.weights.shape[0] - 1, min(num_draws, flat.weights.shape[0])).round().astype(int)
    sites = model_sites(GMMParams(*(a[index] for a in flat)), x.dtype)
    build, static = (_build_bayes_draws, ()) if weighted else (_build_assignment_draws, (num_components, prior))
    z, c, r = compiled_call(build, static, split_key(key, index.size), sites, jnp.asarray(x), missing_of(x))
    return np.asarray(z), c, r


def posterior_mode(draws: np.ndarray, num_components: int) -> np.ndarray:
    """Most frequent component of each column of ``draws`` (M, N)."""
    counts = np.stack([(draws == k).sum(0) for k in range(num_components)], axis=-1)
    return np.argmax(counts, axis=-1)
