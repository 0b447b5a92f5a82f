"""MAP by ECM (``inference.map_ecm``): the same objective as the model's log joint, its optimum checked by an
optimiser no one here wrote (scipy's L-BFGS on NumPyro's log joint), the M-step against scipy on the component term,
the prior against ``models.log_prior``, the collapse flag, and the choice between ECM and Adam."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize

import models
from inference import fit
from inference._numpyro_common import enumerated_log_joint
from inference.map_ecm import (
    component_objective, from_coordinates, log_prior, newton_components, prior_arrays, to_coordinates,
)
from inference.numpyro_map import fit_map
from inference.stats import SuffStats
from models.params import GMMParams


def _blobs(rng, n=400, d=2, sep=3.0, k=2):
    centers = rng.normal(size=(k, d)) * sep
    return np.concatenate([rng.normal(size=(n // k, d)) + c for c in centers])


def _flat(params: GMMParams):
    """Unconstrained vector of a GMMParams (log weights, means, log diag + lower entries of each factor)."""
    coords = to_coordinates(jnp.asarray(params.means), jnp.asarray(params.scale_tril))
    return np.concatenate([np.log(np.asarray(params.weights)), np.asarray(coords).ravel()])


def _unflat(v, k, d):
    log_w = v[:k]
    means, lower = from_coordinates(v[k:].reshape(k, -1), d)
    return GMMParams(jax.nn.softmax(log_w), means, lower)


def _polished_by_scipy(params: GMMParams, x, **kwargs):
    """L-BFGS (scipy) on minus NumPyro's enumerated log joint from ``params``: (loss, params)."""
    k, d = params.means.shape
    loss = jax.jit(lambda v: -enumerated_log_joint(_unflat(v, k, d), x, **kwargs))
    grad = jax.jit(jax.grad(lambda v: -enumerated_log_joint(_unflat(v, k, d), x, **kwargs)))
    res = optimize.minimize(lambda v: float(loss(v)), _flat(params), jac=lambda v: np.asarray(grad(v)), method="L-BFGS-B",
                            options=dict(maxiter=5000, ftol=1e-15, gtol=1e-9))
    return res.fun, _unflat(res.x, k, d)


@pytest.mark.parametrize("case", ["plain", "weights", "holes", "k1", "d1"])
def test_the_ecm_point_is_the_models_mode(rng, case):
    """The ECM's loss is minus NumPyro's enumerated log joint at the point it returns (to 1e-9), and scipy's L-BFGS
    started there lowers it by < 1e-5 nats and moves the means by < 1e-3 (the data standardised: sd 1)."""
    d, k = (1, 3) if case == "d1" else (2, 1 if case == "k1" else 2)
    x = _blobs(rng, d=d, k=max(k, 2) if case != "k1" else 1)
    x = (x - x.mean(0)) / x.std(0)
    opts, kwargs = {}, {}
    if case == "weights":
        w = rng.uniform(0.2, 3.0, len(x))
        w = w * len(x) / w.sum()
        opts["sample_weight"] = kwargs["sample_weight"] = w
    if case == "holes":
        x = x.copy()
        x[rng.uniform(size=x.shape) < 0.15] = np.nan
        x[np.isnan(x).all(axis=1), 0] = 0.0
    result = fit_map(jax.random.PRNGKey(0), x, k, tol=1e-12, **opts)
    assert result.info["options"]["optimizer"] == "ecm" and result.converged
    params = GMMParams(*(jnp.asarray(a) for a in result.params))
    joint = float(enumerated_log_joint(params, x, **kwargs))
    assert result.info["restart_losses"].min() == pytest.approx(-joint, rel=1e-9)
    assert result.trace["loss"][-1] == pytest.approx(-joint, rel=1e-9)
    polished_loss, polished = _polished_by_scipy(params, x, **kwargs)
    assert -joint - polished_loss < 1e-5
    np.testing.assert_allclose(polished.means, params.means, atol=1e-3)


def test_the_prior_is_the_models(rng):
    """``map_ecm.log_prior`` (centred coordinates) against ``models.log_prior``, with overrides given per dimension."""
    d, k = 3, 4
    a = rng.normal(size=(k, d, d))
    params = GMMParams(rng.dirichlet(np.ones(k)), rng.normal(size=(k, d)), np.linalg.cholesky(a @ np.swapaxes(a, 1, 2) + np.eye(d)))
    prior = dict(concentration=1.7, mean_loc=(0.5, -1.0, 2.0), mean_scale=3.0, scale_loc=(0.5, 1.0, 2.0),
                 scale_log_sd=1.5, lkj_concentration=2.5)
    center = np.array([0.3, -0.2, 1.0])
    items = tuple((n, tuple(v) if isinstance(v, tuple) else v) for n, v in prior.items())
    centred = params._replace(means=params.means - center)
    got = log_prior(GMMParams(*(jnp.asarray(v)[None] for v in centred)), prior_arrays(items, d, center))[0]
    want = models.log_prior(GMMParams(*(jnp.asarray(v) for v in params)), **{n: jnp.asarray(v) for n, v in prior.items()})
    assert float(got) == pytest.approx(float(want), rel=1e-12)


def test_the_m_step_maximises_each_components_term(rng):
    """Damped Newton from a far start reaches the maximiser scipy finds for the same term (a few rows' moments, so the
    prior matters: LKJ, LogNormal scales, Normal means)."""
    d = 3
    rows = rng.normal(size=(6, d)) @ np.array([[1.0, 0.0, 0.0], [0.8, 0.5, 0.0], [0.1, -0.3, 0.2]])
    r = rng.uniform(0.3, 1.0, len(rows))
    stats = SuffStats(r.sum()[None], (r @ rows)[None], np.einsum("n,ni,nj->ij", r, rows, rows)[None])
    prior = prior_arrays((), d, np.zeros(d))
    start = to_coordinates(jnp.zeros((1, d)), jnp.eye(d)[None] * 3.0)
    got = newton_components(start, *stats, prior)
    objective = lambda v: -float(component_objective(jnp.asarray(v)[None], *stats, prior)[0])
    grad = jax.jit(jax.grad(lambda v: -component_objective(v[None], *stats, prior)[0]))
    res = optimize.minimize(objective, np.asarray(start[0]), jac=lambda v: np.asarray(grad(jnp.asarray(v))), method="BFGS",
                            options=dict(gtol=1e-10, maxiter=10_000))
    assert objective(got[0]) <= res.fun + 1e-9
    np.testing.assert_allclose(got[0], res.x, atol=1e-5)


def test_collapsed_restarts_are_flagged_not_converged(rng):
    """K near N (12 rows, 10 components): the posterior is unbounded (a component on two rows in 2-D, its correlation
    going to +-1 under LKJ(1)); the ECM follows it, every restart collapses, and the fit says so."""
    x = rng.normal(size=(12, 2))
    result = fit("map", jax.random.PRNGKey(0), x, 10)
    assert not result.converged
    assert result.info["restarts_degenerate"] == result.info["options"]["n_init"]
    assert any("collapsed" in line for line in result.info["warnings"])


def test_scale_free_and_offset_free(rng):
    """Data x 1e-6 and x 1e6 + 1e9 (data units, ``fit``): the same fit in standardised terms, the same loss."""
    x = _blobs(rng, sep=4.0)
    base = fit("map", jax.random.PRNGKey(0), x, 2)
    for scale, shift in ((1e-6, 0.0), (1e6, 1e9)):
        moved = fit("map", jax.random.PRNGKey(0), x * scale + shift, 2)
        assert moved.converged and moved.info["options"]["optimizer"] == "ecm"
        np.testing.assert_allclose((moved.params.means - shift) / scale, base.params.means, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(moved.params.scale_tril / scale, base.params.scale_tril, rtol=1e-6, atol=1e-8)


def test_auto_takes_adam_beyond_twenty_features(rng):
    x = rng.normal(size=(200, 21))
    assert fit("map", jax.random.PRNGKey(0), x, 1, num_steps=100).info["options"]["optimizer"] == "adam"
    assert fit("map", jax.random.PRNGKey(0), x[:, :20], 1).info["options"]["optimizer"] == "ecm"
    with pytest.raises(ValueError, match="optimizer"):
        fit("map", jax.random.PRNGKey(0), x, 1, optimizer="lbfgs")


def test_points_repeated_many_times_are_refused_or_flagged():
    """Replay of scikit-learn#7953: two distinct rows, each repeated 500 times. With 5 components: a one-line error
    (fewer distinct rows than components). With 2, each component sits on its point, where the model's posterior
    only stops shrinking the covariance at scales of ~e^-2000 (the LogNormal prior on the scales against 500 rows):
    the fit is flagged, never reported converged."""
    x = np.repeat(np.array([[0.0, 1.0], [3.0, -2.0]]), 500, axis=0)
    with pytest.raises(ValueError, match="num_components"):
        fit("map", jax.random.PRNGKey(0), x, 5)
    result = fit("map", jax.random.PRNGKey(0), x, 2)
    assert not result.converged
    assert any("collapsed" in line for line in result.info["warnings"])
