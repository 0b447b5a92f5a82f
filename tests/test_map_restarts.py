"""MAP's restarts stop together once the rest are hopeless (``inference.numpyro_map.trailing_restarts``).

Reference for the rule: hand-built chunk histories whose answer is arithmetic. Reference for the engine: the same
fit with ``stop_trailing=False`` (every restart to convergence or the step cap, as before): the kept restart, and so
every parameter, must be identical; only the steps run differ."""

import jax
import jax.numpy as jnp
import numpy as np

from inference import fit
from inference.numpyro_map import TRAIL_LOOKBACK, TRAIL_MARGIN, trailing_restarts


def _history(num_checks, rows):
    """(chunk, loss, converged, losses) for restarts given as (chunks run, loss per chunk (callable), converged)."""
    chunk = jnp.asarray([r[0] for r in rows])
    losses = np.zeros((len(rows), num_checks, 3))
    for i, (done, loss_at, _) in enumerate(rows):
        for c in range(done):
            losses[i, c, -1] = loss_at(c)
    loss = jnp.asarray([losses[i, r[0] - 1, -1] for i, r in enumerate(rows)])
    return chunk, loss, jnp.asarray([r[2] for r in rows]), jnp.asarray(losses)


def test_a_restart_that_cannot_reach_the_converged_leader_is_hopeless():
    num_checks = 60
    leader = (10, lambda c: 100.0, True)
    # improves 1 per chunk; 50 chunks left: at TRAIL_MARGIN times that rate it gains 200 at most
    reach = TRAIL_MARGIN * 1.0 * (num_checks - 10)
    far = (10, lambda c: 100.0 + reach + 5.0 + (9 - c), False)
    near = (10, lambda c: 100.0 + reach - 5.0 + (9 - c), False)
    running, stop = trailing_restarts(*_history(num_checks, [leader, far]), num_checks)
    assert list(np.asarray(running)) == [False, True] and bool(stop)
    _, stop = trailing_restarts(*_history(num_checks, [leader, near]), num_checks)
    assert not bool(stop)  # it could still get there
    _, stop = trailing_restarts(*_history(num_checks, [leader, far, near]), num_checks)
    assert not bool(stop)  # every restart still running must be hopeless
    unconverged_leader = (10, lambda c: 100.0, False)
    _, stop = trailing_restarts(*_history(num_checks, [unconverged_leader, far]), num_checks)
    assert not bool(stop)  # the leader itself still runs
    young = (TRAIL_LOOKBACK, lambda c: 1e6, False)  # no rate measured yet
    _, stop = trailing_restarts(*_history(num_checks, [leader, young]), num_checks)
    assert not bool(stop)
    _, stop = trailing_restarts(*_history(num_checks, [leader, (10, lambda c: 150.0, True)]), num_checks)
    assert not bool(stop)  # nothing left running: the loop ends by itself, not by this rule


def test_a_restart_stuck_in_a_worse_optimum_is_stopped_and_changes_nothing():
    """(5,000, 5, 3), key 0, Adam: one of four restarts sits in a worse optimum (loss 25,035 against 23,542) and ran to
    the 3,000-step cap while the others converged in 200; it is now stopped within a few chunks of the leader. (The
    ECM converges in that optimum in ~70 passes: nothing trails there.)"""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from bench_bayes import problem

    x, _ = problem(5000, 5, 3)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    stopped = fit("map", jax.random.PRNGKey(0), x, 3, optimizer="adam")
    full = fit("map", jax.random.PRNGKey(0), x, 3, stop_trailing=False, optimizer="adam")
    assert stopped.info["restarts_stopped"] == 1 and full.info["restarts_stopped"] == 0
    assert full.info["restart_steps"].max() == 3000 and stopped.info["restart_steps"].max() <= 500
    for a, b in zip(stopped.params, full.params):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert stopped.converged and full.converged
    np.testing.assert_array_equal(stopped.trace["loss"], full.trace["loss"])


def test_the_shared_guide_set_up_leaks_no_tracer():
    """MAP's restarts and medians share one SVI / guide set up at the program's top level (``numpyro_map``): traced with
    JAX's leak checker on (a shape no other test compiles, so the program is traced here), nothing escapes the trace
    (NumPyro's guides once cached plates that leaked tracers, pyro-ppl/numpyro#1976), and the fit matches an exact
    reference: its mixture log-likelihood is the one ``models.log_likelihood`` gives its parameters."""
    import models

    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(-2.0, 0.6, (61, 3)), rng.normal(2.0, 0.9, (56, 3))])
    with jax.checking_leaks():
        r = fit("map", jax.random.PRNGKey(5), x, 2, n_init=3)
    assert r.converged
    assert np.isclose(float(r.trace["log_likelihood"][-1]), float(models.log_likelihood(r.params, x)), rtol=1e-10)
    assert np.allclose(np.sort(np.asarray(r.params.means)[:, 0]), [-2.0, 2.0], atol=0.3)
