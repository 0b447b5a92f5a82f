"""Writing a NetCDF4 file of named xarray groups: one job, light enough to run in a report's worker process.

:func:`write_groups` is what ``analysis.arviz_io.save_netcdf`` does once it has turned an InferenceData into
plain groups (:func:`analysis.arviz_io.netcdf_groups`: which groups, thinned, with which encodings); the report
hands it to a worker (:func:`analysis.render_pool.submit_call`), so that h5netcdf's per-variable Python work
(~0.35 s per engine file at the default report's size) runs beside the report instead of on its thread.

Imports: xarray (with h5netcdf) only (no ArviZ, no JAX): the worker imports this module alone.
"""

from __future__ import annotations

__all__ = ["write_groups", "write_groups_caught"]


def write_groups(path, attrs: dict, groups: list) -> str:
    """Write ``groups`` (``[(name, xarray.Dataset, encoding)]``, in file order) to ``path`` as NetCDF4 through
    h5netcdf, one HDF5 group each, the root carrying ``attrs``; returns ``str(path)``. Overwrites ``path``."""
    import xarray as xr

    path = str(path)
    xr.Dataset(attrs=dict(attrs)).to_netcdf(path, mode="w", engine="h5netcdf")
    for name, ds, encoding in groups:
        ds.to_netcdf(path, mode="a", group=name, engine="h5netcdf", encoding=encoding)
    return path


def write_groups_caught(path, attrs: dict, groups: list) -> list:
    """:func:`write_groups`, returning the warnings raised meanwhile as ``[(message, category, filename, lineno)]``
    (picklable), for a caller in another process to raise them again (``warnings.warn_explicit``)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        write_groups(path, attrs, groups)
    return [(str(w.message), w.category, w.filename, w.lineno) for w in caught]
