"""The NumPyro baselines on the SAME declared model (``models.gmm_model``), each returning a FitResult.

- ``fit_map``  : enumerated MAP (AutoDelta + TraceEnum_ELBO, z summed out), ``inference.numpyro_map``.
- ``fit_svi``  : AutoNormal variational posterior, z enumerated, ``inference.numpyro_svi``.
- ``fit_nuts`` : NUTS with z enumerated out, ``inference.numpyro_nuts``.

Every jitted step function is compiled ahead of time once per (options, shapes) and cached
(``inference._numpyro_common.compiled_call``): a second fit of the same shapes compiles nothing.
"""

from ._numpyro_common import enumerated_log_joint
from .numpyro_map import fit_map
from .numpyro_svi import fit_svi


def fit_nuts(key, x, num_components: int, **options):
    """NUTS with z enumerated out; see :func:`inference.numpyro_nuts.fit_nuts`."""
    from .numpyro_nuts import fit_nuts as _fit_nuts

    return _fit_nuts(key, x, num_components, **options)


__all__ = ["fit_map", "fit_svi", "fit_nuts", "enumerated_log_joint"]
