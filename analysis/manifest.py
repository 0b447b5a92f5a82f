"""manifest.json of the report: one job, the record of how a report was made.

Seed, argv, engine options, the data's source, shape and sha256, package versions, platform and the
list of files written.

Imports: the standard library and :mod:`analysis.files` (fingerprints); no JAX (the backend's name
is passed in).
"""

from __future__ import annotations

import datetime as _dt
import platform
from importlib import metadata

from analysis.files import sha256_of_array, sha256_of_file

__all__ = ["PACKAGES", "package_versions", "build_manifest"]

PACKAGES = ("gmm-reference", "jax", "jaxlib", "numpyro", "funsor", "arviz", "numpy", "scipy", "matplotlib", "xarray", "h5netcdf")


def package_versions() -> dict:
    """``{"python": version, package: version or None}`` for the packages the report depends on."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_manifest(*, tool: str, argv, seed: int, methods, engine_options: dict, source: str, data_file, x,
                   column_names, jax_backend: str, files, shape=None, streamed: dict | None = None) -> dict:
    """The manifest dict. ``x`` (N, D) is the data fitted; with ``data_file`` its sha256 is of the
    file's bytes (read in blocks), else of ``x``'s float64 C-order bytes. A streamed file: ``shape`` its
    (N, D) (``x`` is then its subsample) and ``streamed`` {subsample_rows, stream_mode} (else null)."""
    return {
        "tool": tool,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "argv": list(argv),
        "seed": int(seed),
        "methods": methods,
        "engine_options": engine_options,
        "data": {
            "source": source,
            "file": str(data_file) if data_file else None,
            "sha256": sha256_of_file(data_file) if data_file else sha256_of_array(x),
            "sha256_of": "file bytes" if data_file else "float64 C-order bytes of the simulated x",
            "shape": list(shape if shape is not None else x.shape),
            "columns": column_names,
            "streamed": streamed,
        },
        "versions": package_versions(),
        "platform": platform.platform(),
        "jax_backend": jax_backend,
        "files": sorted(files),
    }
