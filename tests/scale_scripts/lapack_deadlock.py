"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=2: EM fits whose LAPACK batches used to deadlock on
several host devices (models.linalg); prints one JSON line {case: max |difference| to the 1-device fit}."""

import json
import sys

import jax
import numpy as np

import models  # noqa: F401  (x64)
from inference import fit

assert jax.device_count() == 2, jax.devices()
rng = np.random.default_rng(0)


def blobs(n, d, k):
    means = rng.normal(scale=4.0, size=(k, d))
    return means[rng.integers(0, k, size=n)] + rng.normal(size=(n, d))


holes = blobs(6000, 8, 8)
holes[rng.random(holes.shape) < 0.1] = np.nan
CASES = {
    "complete_d32_k8": (blobs(4000, 32, 8), 8, dict(max_iters=5)),
    "complete_d32_k6_n_init3": (blobs(3000, 32, 6), 6, dict(max_iters=4, n_init=3)),
    "holes_d8_k8": (holes, 8, dict(max_iters=5)),
}
out = {}
for name, (x, k, opts) in CASES.items():
    two = fit("em", jax.random.PRNGKey(0), x, k, devices=jax.devices(), tol=0.0, **opts)
    one = fit("em", jax.random.PRNGKey(0), x, k, devices=jax.devices()[:1], tol=0.0, **opts)
    assert two.info["num_devices"] == 2
    out[name] = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(two.params, one.params))
print(json.dumps(out))
sys.stdout.flush()
