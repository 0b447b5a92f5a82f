"""Who runs the model's jitted programs: the program itself, or a caller set for a block.

Within :func:`programs_called_by` the samplers (``models.predictive``) and the draws' pointwise log-likelihood
(``models.density.draws_pointwise_log_likelihood``) run their jitted program as ``caller(program, static_argnums,
*args)`` instead of ``program(*args)``, e.g. ``inference.executable_store.stored_call``, which keeps it compiled on
disk (a new process neither traces nor lowers it). Context-local (``contextvars``): other threads are unaffected.
"""

from __future__ import annotations

import contextlib
import contextvars

_CALLER = contextvars.ContextVar("models_program_caller", default=None)


@contextlib.contextmanager
def programs_called_by(caller):
    """Within this block (this thread / context), the model's programs run as ``caller(program, static_argnums,
    *args)``; ``caller`` must return what ``program(*args)`` returns."""
    token = _CALLER.set(caller)
    try:
        yield
    finally:
        _CALLER.reset(token)


def run_program(program, static_argnums: tuple, *args):
    """``program(*args)``, or the block's caller's ``caller(program, static_argnums, *args)``."""
    caller = _CALLER.get()
    return program(*args) if caller is None else caller(program, static_argnums, *args)


__all__ = ["programs_called_by", "run_program"]
