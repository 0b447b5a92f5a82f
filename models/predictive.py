"""Forward sampling, prior and posterior predictive draws from the one declared model, through
``numpyro.infer.Predictive``.

``sample`` runs ``gmm_model`` forward with given parameters (one replicate of the posterior predictive).

``sample_prior`` runs ``gmm_model`` forward from its prior: parameters AND data (x, z) per draw.
``sample_posterior_predictive`` runs it forward with the parameters fixed at each posterior draw (or
at a point estimate, once per replicate): replicated data (x, z) per draw. Each is one jitted program per
shape (the draw count, N, D, K and the prior are static), host arrays going in as they are (no eager ``jnp`` call
before it: each would compile a small program of its own). Within :func:`programs_called_by` (``models.program_caller``) the programs run
through a caller instead, e.g. ``inference.executable_store.stored_call``, which keeps them compiled on disk.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from .gmm import gmm_model, params_from_sites, sites_from_params
from .params import GMMParams
from .program_caller import programs_called_by, run_program

__all__ = ["sample", "sample_prior", "sample_posterior_predictive", "programs_called_by"]

def _host_or_device(a):
    """``a`` as it is when it is a JAX array (or tracer), else a numpy array: no eager ``jnp.asarray``."""
    return a if isinstance(a, jax.Array) else np.asarray(a)


def _prior_items(prior: dict) -> tuple:
    items = []
    for name in sorted(prior):
        value = np.asarray(prior[name], np.float64)
        items.append((name, float(value) if value.ndim == 0 else tuple(value.ravel().tolist())))
    return tuple(items)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _prior_jit(key, num_draws, num_samples, num_features, num_components, prior_items):
    prior = {name: (jnp.asarray(v) if isinstance(v, tuple) else v) for name, v in prior_items}
    predictive = Predictive(gmm_model, num_samples=num_draws)
    draws = predictive(key, num_components=num_components, num_features=num_features, num_samples=num_samples, **prior)
    return params_from_sites(draws), draws["x"], draws["z"]


def sample_prior(key, num_draws: int, num_samples: int, num_features: int, num_components: int, **prior):
    """Draws from ``gmm_model``'s prior and prior predictive.

    Parameters
    ----------
    key : jax PRNG key.
    num_draws : S, parameter draws; num_samples : N rows per draw; num_features : D; num_components : K.
    **prior : ``gmm_model`` prior keywords (concentration, mean_loc, mean_scale, scale_loc,
        scale_log_sd, lkj_concentration; scalars or (D,) arrays).

    Returns
    -------
    params : GMMParams with a leading (S,) dim; x : (S, N, D); z : (S, N) int.
    """
    for name, value in (("num_draws", num_draws), ("num_samples", num_samples), ("num_features", num_features),
                        ("num_components", num_components)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    return run_program(_prior_jit, (1, 2, 3, 4, 5), key, int(num_draws), int(num_samples), int(num_features),
                int(num_components), _prior_items(prior))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _posterior_predictive_jit(key, samples: GMMParams, num_samples: int, num_replicates: int | None):
    if samples.weights.ndim == 1:  # a point estimate, repeated
        samples = GMMParams(*(jnp.broadcast_to(a, (num_replicates,) + a.shape) for a in samples))
    leading = samples.weights.shape[:-1]
    flat = GMMParams(*(a.reshape((-1,) + a.shape[len(leading):]) for a in samples))
    num_components, num_features = flat.means.shape[-2:]
    sites = sites_from_params(flat)
    predictive = Predictive(gmm_model, posterior_samples=sites, return_sites=["x", "z"])
    draws = predictive(key, num_components=num_components, num_features=num_features, num_samples=num_samples)
    return draws["x"].reshape(leading + draws["x"].shape[1:]), draws["z"].reshape(leading + draws["z"].shape[1:])


def sample_posterior_predictive(key, samples: GMMParams, num_samples: int, num_replicates: int | None = None):
    """Replicated data sets from ``gmm_model`` with the parameters fixed at each draw.

    Parameters
    ----------
    key : jax PRNG key.
    samples : GMMParams with any leading dims, e.g. (chain, draw) posterior draws, or a point estimate
        (weights (K,)), which is repeated ``num_replicates`` times (default 1).
    num_samples : N rows per replicated data set.

    Returns
    -------
    x : (*leading, N, D) and z : (*leading, N), one replicate per draw (point estimate:
    leading = (num_replicates,)).
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    samples = GMMParams(*(_host_or_device(a) for a in samples))
    reps = (1 if num_replicates is None else int(num_replicates)) if samples.weights.ndim == 1 else None
    return run_program(_posterior_predictive_jit, (2, 3), key, samples, int(num_samples), reps)


def sample(key, params: GMMParams, num_samples: int):
    """Draw data from ``gmm_model`` run forward with ``params`` substituted.

    The same sampler as the posterior predictive (:func:`sample_posterior_predictive`, NumPyro's
    ``Predictive``) at one point: one replicate.

    Parameters
    ----------
    key : jax PRNG key.
    params : GMMParams, weights (K,), means (K, D), scale_tril (K, D, D).
    num_samples : N.

    Returns
    -------
    x : (N, D) samples, z : (N,) int true component of each row.
    """
    if int(num_samples) < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    x, z = sample_posterior_predictive(key, params, int(num_samples), num_replicates=1)
    return x[0], z[0]
