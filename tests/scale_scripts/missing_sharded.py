"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=4: EM on rows with NaN holes on 1, 2, 3 and 4
host devices; prints one JSON line {case/devices: max relative difference to the 1-device fit}."""

import json
import os
import sys
import tempfile

import jax
import numpy as np

import models  # noqa: F401  (x64)
from inference.em import fit_em, fit_hard_em

assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(size=(400, 3)) + [4, 0, 0], rng.normal(size=(350, 3)) * [1, 2, 0.5], rng.normal(size=(253, 3)) - 3])
x[rng.random(x.shape) < 0.2] = np.nan
x[[3, 500]] = np.nan
w = rng.uniform(0.0, 3.0, size=len(x))
path = os.path.join(tempfile.mkdtemp(), "x.npy")
np.save(path, x)

CASES = {
    "em_full_kmeans++_n_init2": (fit_em, x, dict(init="kmeans++", n_init=2, tol=0.0, max_iters=15)),
    "hard_em_diag_random_weighted": (fit_hard_em, x, dict(init="random_from_data", covariance_type="diag", sample_weight=w, tol=0.0, max_iters=10)),
    "em_streamed_npy_tied": (fit_em, path, dict(init="kmeans", covariance_type="tied", tol=0.0, max_iters=10, chunk_size=128)),
}


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))) if a.size else 0.0


out = {}
for name, (engine, data, opts) in CASES.items():
    ref = engine(jax.random.PRNGKey(3), data, 3, devices=jax.devices()[:1], **opts)
    for n in (2, 3, 4):
        res = engine(jax.random.PRNGKey(3), data, 3, devices=jax.devices()[:n], **opts)
        assert res.info["num_devices"] == n and res.info["missing"] == ref.info["missing"]
        out[f"{name}/{n}"] = max(rel(res.trace["log_likelihood"], ref.trace["log_likelihood"]),
                                 rel(res.params.weights, ref.params.weights),
                                 max(rel(a, b) for a, b in zip(models.covariances(res.params), models.covariances(ref.params))),
                                 float(np.max(np.abs(res.params.means - ref.params.means)) / np.abs(ref.params.means).max()),
                                 float(np.max(np.abs(res.responsibilities - ref.responsibilities), initial=0.0)),
                                 float(res.num_iters != ref.num_iters))
print(json.dumps(out))
sys.stdout.flush()
