"""Restarts that run in lock-step and the rule that stops the hopeless ones (MAP by Adam and by ECM).

Restarts advance together (vmapped), so the slowest sets the run's time; :func:`trailing_restarts` ends the run
once the best restart has converged and every restart still running could not reach its loss in time.
"""

from __future__ import annotations

import jax.numpy as jnp

TRAIL_LOOKBACK = 4  # chunks a trailing restart's rate is measured over
TRAIL_MARGIN = 4.0  # ... and how much faster it may still improve without being stopped


def trailing_restarts(chunk, loss, converged, losses, num_checks: int, min_checks: int = 1):
    """Which restarts still run, and whether the run can end now because every one still running is hopeless.

    A restart still running is hopeless when the leader (lowest loss) has converged and the restart, improving at
    ``TRAIL_MARGIN`` times its rate over its last ``TRAIL_LOOKBACK`` chunks until the step cap, would still end
    above the leader's loss: restarts run in lock-step (vmapped), so one stuck in a worse optimum held every restart
    to the step cap (MAP at 50,000 rows: 37-46 s against 3.4-3.7 s when all converge; README). Adam's step decays
    exponentially and an ECM's gain per pass shrinks geometrically, so a restart's rate falls; the rule errs only
    where a restart would leave a plateau faster than that margin. Shapes: ``chunk``, ``loss``, ``converged`` (R,); ``losses`` (R, num_checks, check_every).

    Returns
    -------
    (running (R,) bool, stop () bool)
    """
    running = (chunk < num_checks) & ((chunk < min_checks) | ~converged)
    finite = jnp.where(jnp.isfinite(loss), loss, jnp.inf)
    leader = jnp.argmin(finite)
    past = jnp.take_along_axis(losses[..., -1], jnp.clip(chunk - 1 - TRAIL_LOOKBACK, 0, num_checks - 1)[:, None], axis=1)[:, 0]
    reach = TRAIL_MARGIN * jnp.maximum(past - loss, 0.0) / TRAIL_LOOKBACK * (num_checks - chunk)
    hopeless = running & (chunk > TRAIL_LOOKBACK) & (loss - finite[leader] > reach)
    return running, converged[leader] & ~running[leader] & jnp.any(running) & jnp.all(~running | hopeless)
