"""Which ArviZ is installed, and the few calls that differ between its two stacks for any group.

ArviZ 0.x (Python 3.11): ``arviz`` with ``az.InferenceData``. ArviZ 1.x (Python >= 3.12): ``arviz_base`` /
``arviz_stats`` / ``arviz_plots``, the data being an ``xarray.DataTree``. ``ARVIZ_MAJOR`` tells which one runs;
the other modules of this package take ``az`` / ``azs`` from here.
"""

from __future__ import annotations

import logging
import warnings
from importlib.metadata import version as _dist_version

import xarray as xr

ARVIZ_MAJOR = int(_dist_version("arviz").split(".")[0])

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    if ARVIZ_MAJOR >= 1:
        import arviz_base as azb  # noqa: F401  (the 1.x stack: imported once, here)
        import arviz_stats as azs

        az = None
    else:
        import arviz as az

        azs = None

# ArviZ logs "Shape validation failed" for single-chain draws (SVI); R-hat is then reported as null.
for _name in ("arviz", "arviz_base", "arviz_stats", "arviz_plots"):
    logging.getLogger(_name).setLevel(logging.ERROR)
if ARVIZ_MAJOR < 1 and isinstance(getattr(az, "_log", None), logging.Logger):  # 0.x: Logger("arviz")
    az._log.setLevel(logging.ERROR)

__all__ = ["ARVIZ_MAJOR", "az", "azs", "arviz_version", "assemble", "group", "group_names", "add_groups"]


def arviz_version() -> str:
    """The installed ``arviz`` distribution's version (0.x or 1.x)."""
    return _dist_version("arviz")


def assemble(groups: dict, attrs: dict | None = None):
    """InferenceData (ArviZ 0.x) or DataTree (ArviZ 1.x) of ``{group: Dataset}``."""
    if ARVIZ_MAJOR >= 1:
        tree = xr.DataTree.from_dict(dict(groups))
        tree.attrs.update(attrs or {})
        return tree
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "fit_trace group is not defined in the schema"
        return az.InferenceData(**groups, attrs=attrs) if attrs else az.InferenceData(**groups)


def group(idata, name: str) -> xr.Dataset:
    """The group ``name`` of ``idata`` as an ``xarray.Dataset`` (either stack)."""
    return idata[name].to_dataset() if ARVIZ_MAJOR >= 1 else getattr(idata, name)


def group_names(idata) -> list:
    """Names of the groups of ``idata`` (either stack), e.g. ``["posterior", "log_likelihood", ...]``."""
    if ARVIZ_MAJOR >= 1:
        return list(idata.children)
    return list(idata.groups())


def add_groups(idata, groups: dict):
    """``idata`` with ``groups`` ({name: Dataset}) added, on either stack; returns it."""
    if not groups:
        return idata
    if ARVIZ_MAJOR >= 1:
        for name, ds in groups.items():
            idata[name] = xr.DataTree(ds)
        return idata
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata.add_groups(dict(groups))
    return idata


def replace_group(idata, name: str, ds: xr.Dataset):
    """``idata`` with its existing group ``name`` replaced by ``ds`` (either stack); returns it."""
    if ARVIZ_MAJOR >= 1:
        idata[name] = xr.DataTree(ds)
    else:
        setattr(idata, name, ds)
    return idata
