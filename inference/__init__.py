"""inference: every engine returns one FitResult.

>>> from inference import fit
>>> result = fit("em", jax.random.PRNGKey(0), x, num_components=2)

Engines: "em" (soft EM), "hard_em" (classification EM), "map" (enumerated MAP), "svi"
(variational posterior, z enumerated), "nuts" (NUTS with z enumerated out).

``fit`` and its registry live in ``inference.dispatch``; this file only re-exports.
``inference.GaussianMixture`` is the scikit-learn estimator over ``fit`` (``inference.estimator``;
imported on first use, needs scikit-learn).
"""

from __future__ import annotations

import models  # noqa: F401  (turns on x64 before any engine builds arrays)

from .dispatch import (ENGINES, METHODS, fit, fit_em, fit_hard_em, get_engine, valid_options,  # noqa: F401
                       with_degeneracy_check)
from .result import FitResult


def __getattr__(name):
    # The scikit-learn estimator is imported on first use: `import inference` needs no sklearn.
    if name == "GaussianMixture":
        from .estimator import GaussianMixture

        return GaussianMixture
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


__all__ = ["fit", "FitResult", "METHODS", "ENGINES", "get_engine", "valid_options", "fit_em", "fit_hard_em", "GaussianMixture"]
