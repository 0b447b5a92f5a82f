"""The NumPyro baselines on the SAME declared model (``models.gmm_model``), each returning a FitResult.

- ``fit_map``  : enumerated MAP (AutoDelta + TraceEnum_ELBO, z summed out), ``inference.numpyro_map``.
- ``fit_svi``  : AutoNormal variational posterior, z enumerated, ``inference.numpyro_svi``.
- ``fit_nuts`` : NUTS with z enumerated out, ``inference.numpyro_nuts``.

All three fit standardised data with the prior placed in the data's units and return data-unit results
(``inference.standardize``). Every jitted step function is compiled ahead of time once per
(options, shapes) and cached (``inference._numpyro_common.compiled_call``): a second fit of the same
shapes compiles nothing.
"""

import os

from ._numpyro_common import enumerated_log_joint
from .numpyro_map import fit_map as _fit_map
from .numpyro_svi import fit_svi as _fit_svi
from .standardize import fit_standardized


def fit_map(key, x, num_components: int, **options):
    """Enumerated MAP in data units; see :func:`inference.numpyro_map.fit_map` (options) and
    :mod:`inference.standardize` (the prior in the data's units)."""
    return fit_standardized(_fit_map, key, x, num_components, **options)


def fit_svi(key, x, num_components: int, **options):
    """SVI in data units; see :func:`inference.numpyro_svi.fit_svi` and :mod:`inference.standardize`. A ``.npy``
    path as ``x`` or a ``batch_size`` runs minibatch SVI (:func:`inference.numpyro_minibatch.fit_minibatch_svi`)."""
    if isinstance(x, (str, os.PathLike)) or options.get("batch_size") is not None:
        from .numpyro_minibatch import fit_minibatch_svi

        return fit_minibatch_svi(key, x, num_components, **options)
    return fit_standardized(_fit_svi, key, x, num_components, **options)


def fit_nuts(key, x, num_components: int, **options):
    """NUTS with z enumerated out, in data units; see :func:`inference.numpyro_nuts.fit_nuts` and
    :mod:`inference.standardize`."""
    from .numpyro_nuts import fit_nuts as _fit_nuts

    return fit_standardized(_fit_nuts, key, x, num_components, **options)


__all__ = ["fit_map", "fit_svi", "fit_nuts", "enumerated_log_joint"]
