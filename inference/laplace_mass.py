"""NUTS's mass matrix from the curvature at its start: the Laplace approximation of the posterior.

With N rows the posterior of a GMM concentrates like a Gaussian of covariance ~ H^-1 / N around its mode (the
Bernstein-von Mises theorem), H the Hessian of the negative log joint in NumPyro's unconstrained space
(Jacobians included: what NUTS samples). Using ``H^-1`` at the MAP start as NUTS's dense inverse mass matrix
makes that Gaussian standard normal in the sampler's coordinates from the first iteration (Girolami &
Calderhead 2011 use the local metric the same way; Stan and NumPyro instead estimate it from warm-up draws).
The warm-up then only adapts the step size.

Why not the windowed estimate: NumPyro's warm-up replaces the mass matrix by a regularised sample covariance
of each window's draws; a dense one over P parameters from ~25-250 draws is rank-deficient for P > ~100
(K = 4, D = 8 has P = 179), so the default keeps a diagonal there (``DENSE_MASS_MAX_DIM``), and a diagonal
leaves the posterior's correlations (means with covariances, weights with each other) to the integrator:
15 leapfrog steps per draw at (50,000, 8, 4) where PyMC and nutpie took 7.4-8.5 (issue 24).

The Hessian is exact: one Hessian-vector product per parameter (``jax.linearize`` of the gradient, the
forward pass shared), ``P`` products in batches of 16, then one Cholesky factor; ``H^-1`` comes from two
triangular solves against the identity (the mass matrix is what NumPyro's kernel takes). When H is not
positive definite and finite (a start away from a mode, an overflow) there is no Laplace matrix: NUTS
adapts its mass matrix from draws as before, and ``info`` says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from models.linalg import cholesky, solve_lower

from ._numpyro_common import enumerated, make_model

__all__ = ["build_laplace_inverse_mass", "basis_hvps"]


def basis_hvps(energy, flat, pick=None):
    """``pick(i, H e_i)`` for every coordinate i of ``flat`` (H the Hessian of ``energy`` there), one
    Hessian-vector product each (``jax.linearize`` of the gradient: the forward pass is shared), in batches of
    16; ``pick`` None keeps the whole row, giving the dense H (P, P). Shared by this module and
    ``inference.numpyro_svi.laplace_scales`` (which keeps ``H_ii`` only)."""
    _, hvp = jax.linearize(jax.grad(energy), flat)
    size = flat.size
    pick = pick or (lambda i, row: row)
    return lax.map(lambda i: pick(i, hvp(jax.nn.one_hot(i, size, dtype=flat.dtype))), jnp.arange(size),
                   batch_size=min(size, 16))


def build_laplace_inverse_mass(num_components: int, prior):
    """``(start (unconstrained sites), x, sample_weight, missing) -> (inverse mass (P, P), ok)``: ``H^-1`` at
    ``start`` in ``ravel_pytree`` order (NumPyro's), and whether H was positive definite and finite (else the
    identity is returned and must not be used)."""
    model = enumerated(make_model(num_components, prior))

    def inverse_mass(start, x, w, m):
        flat, unravel = ravel_pytree(start)
        energy = lambda v: potential_energy(model, (x, w, m), {}, unravel(v), enum=w is None)
        eye = jnp.eye(flat.size, dtype=flat.dtype)
        hessian = basis_hvps(energy, flat)
        hessian = 0.5 * (hessian + hessian.T)
        lower = cholesky(hessian)
        ok = jnp.all(jnp.isfinite(lower)) & jnp.all(jnp.diagonal(lower) > 0)
        lower = jnp.where(ok, lower, eye)
        whitened = solve_lower(lower, eye)  # L^-1, so H^-1 = L^-T L^-1
        return whitened.T @ whitened, ok

    return inverse_mass
