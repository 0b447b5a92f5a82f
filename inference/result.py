"""FitResult: what every engine returns (host-side numpy arrays)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from models.params import GMMParams


@dataclasses.dataclass(frozen=True)
class FitResult:
    """One engine's fit of a GMM, in a form every analysis function accepts.

    Attributes
    ----------
    method : engine name ("em", "hard_em", "map", "svi", "nuts").
    params : GMMParams point estimate, weights (K,), means (K, D), scale_tril (K, D, D).
    trace : dict of per-iteration (or per-step / per-draw) 1-D arrays; always ``log_likelihood``
        (total marginal log-likelihood from ``models.density``). EM adds ``elbo`` and ``kl``; hard EM
        adds ``classification_log_likelihood``; SVI/MAP add ``loss``; NUTS adds ``potential_energy``.
    samples : GMMParams with leading (chain, draw) dims, or None for point estimates.
    responsibilities : (N, K) posterior component probabilities at ``params`` (or the engine's own).
    converged : whether the engine's stopping rule was met before its iteration budget.
    num_iters : iterations / optimisation steps / draws per chain actually run.
    seconds : wall time of the whole fit (compile included); compile/run split in ``info``.
    info : engine-specific extras (options used, restarts, events, timings).
    """

    method: str
    params: GMMParams
    trace: dict
    samples: GMMParams | None
    responsibilities: np.ndarray
    converged: bool
    num_iters: int
    seconds: float
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_components(self) -> int:
        return int(np.shape(self.params.weights)[-1])

    @property
    def assignments(self) -> np.ndarray:
        """(N,) argmax of the responsibilities."""
        return np.argmax(self.responsibilities, axis=-1)

    def __post_init__(self):
        for name, value in (("params", self.params), ("responsibilities", self.responsibilities)):
            arrays = value if isinstance(value, tuple) else (value,)
            if not all(np.all(np.isfinite(np.asarray(a))) for a in arrays):
                raise FloatingPointError(f"{self.method}: non-finite values in {name}")
        for key, value in self.trace.items():
            if not np.all(np.isfinite(np.asarray(value))):
                raise FloatingPointError(f"{self.method}: non-finite values in trace[{key!r}]")
