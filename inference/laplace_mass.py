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
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from models.linalg import cholesky, solve_lower

from ._numpyro_common import enumerated, make_model

__all__ = ["build_laplace_inverse_mass", "basis_hvps", "gaussian_step_size", "laplace_warmup_verdict"]

# a Gaussian's NUTS trajectory turns after half a period, ~pi / step leapfrog steps, and tree doubling at most
# doubles that: a warm-up averaging over ORBIT_MARGIN * pi / step steps per iteration is not sampling a Gaussian
ORBIT_MARGIN = 4.0
# dual averaging's step on a d-dimensional standard normal at the default target 0.8: 0.45 (179 / d)^(1/4)
# (measured at d = 179; leapfrog's energy error grows like d step^4); a warm-up ending below STEP_MARGIN of it
# had to shrink its step for a region the Gaussian does not have (0.80-0.99 of it on near-Gaussian posteriors)
STEP_MARGIN = 0.25


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


def gaussian_step_size(num_params: int) -> float:
    """Dual averaging's step size (target acceptance 0.8) on a standard normal of ``num_params`` dimensions."""
    return 0.45 * (179.0 / num_params) ** 0.25


def laplace_warmup_verdict(warmup, step_axis: int, num_params: int):
    """Whether a warm-up under the Laplace metric saw the Gaussian it assumes: None if so, else the reason (words).

    ``warmup``: the warm-up's records (``num_steps``, ``diverging``, ``step_size``; iterations along ``step_axis``,
    chains along another axis if any); ``num_params``: the unconstrained dimension. Read over the warm-up's second
    half, once dual averaging has found the step size's scale. Under the right metric the posterior is standard
    normal in the sampler's coordinates, so: the leapfrog integrator cannot diverge (it is stable below step 2);
    the final step is near a standard normal's (``gaussian_step_size``), not below ``STEP_MARGIN`` of it; and a
    trajectory turns after ~pi / step steps, so trees average at most ``ORBIT_MARGIN * pi / step``. A failure
    means a direction the curvature at the mode does not describe (overlapping components, a component with no
    data of its own, K near N). Measured (2 x 500 warm-up iterations, seed 0; README): all three pass with
    margin on (5,000, 5, 3), the seed problem, 1-D K = 1 and (1,000, 8, 4); 1-9 divergences on two overlapping
    problems; 8-17x the tree bar on one Gaussian fitted with K = 2; a step of 0.02 of a Gaussian's on 12 rows
    fitted with K = 4.
    """
    take = lambda name: np.moveaxis(np.asarray(warmup[name]), step_axis, -1)
    steps, diverging, step_size = take("num_steps"), take("diverging").astype(bool), take("step_size")
    half = steps.shape[-1] // 2
    divergences = int(diverging[..., half:].sum())
    if divergences:
        return f"{divergences} divergent transition(s) in the second half of its warm-up"
    final, gaussian = step_size[..., -1], gaussian_step_size(num_params)
    if np.any(final < STEP_MARGIN * gaussian):
        return f"its step size fell to {float(np.min(final)):.3g}, against {gaussian:.2f} on a Gaussian of {num_params} dimensions"
    mean_steps, bar = steps[..., half:].mean(axis=-1), ORBIT_MARGIN * np.pi / final
    if np.any(mean_steps > bar):
        return (f"{float(np.max(mean_steps)):.0f} leapfrog steps per warm-up iteration, over the {float(np.min(bar)):.0f} "
                f"a Gaussian needs at its step size")
    return None
