"""Run in a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4: the NumPyro potential and its gradient
with the rows split over 1, 2, 3 and 4 host devices (``inference.sharded_potential``) against one device, and MAP on
2 devices against 1; prints one JSON line {case: max relative difference to one device, ...}."""

import json

import jax
import jax.numpy as jnp
import numpy as np

import models  # x64 on
from inference._numpyro_common import enumerated, make_model, model_sites, unconstrain_fn
from inference.numpyro_map import fit_map
from inference.sharded_potential import lapack_work, potential_value_and_grad, row_mesh

assert jax.device_count() == 4, jax.devices()
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(size=(400, 3)) + [2, 0, 0], rng.normal(size=(350, 3)) * [1, 1.5, 0.5], rng.normal(size=(253, 3)) - 1.5])
x = (x - x.mean(0)) / x.std(0)  # N = 1003: divisible by none of 2, 3, 4
w = rng.uniform(0.0, 3.0, size=len(x))
w[::7] = 0.0


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def leaves_rel(a, b):
    return max(rel(p, q) for p, q in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


out = {}
collectives = {}
for num_components, label, weights in ((1, "", None), (3, "", None), (3, "_weighted", jnp.asarray(w))):
    model = enumerated(make_model(num_components))
    point = models.from_covariances(np.full(num_components, 1.0 / num_components), rng.normal(size=(num_components, 3)),
                                    np.stack([np.eye(3) * (1.0 + k) + 0.3 for k in range(num_components)]))
    u = unconstrain_fn(num_components, 3)(model_sites(point, x.dtype))
    one = jax.jit(potential_value_and_grad(model, None))(u, jnp.asarray(x), weights)
    assert row_mesh(jax.devices()[:1], len(x)) is None  # one device: the very program of before, nothing wrapped
    for n in (2, 3, 4):
        mesh = row_mesh(jax.devices()[:n], len(x))
        args = jax.device_put((u, x, weights), jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
        compiled = jax.jit(potential_value_and_grad(model, mesh)).lower(*args).compile()
        value, grad = compiled(*args)
        out[f"K{num_components}{label}_devices{n}_value"] = rel(value, one[0])
        out[f"K{num_components}{label}_devices{n}_grad"] = leaves_rel(grad, one[1])
        text = compiled.as_text()  # the program's collectives: one all-reduce per gradient, nothing gathered
        collectives[f"K{num_components}{label}_devices{n}"] = [text.count(" all-reduce("), text.count(" all-gather("),
                                                                text.count(" collective-permute(")]

assert lapack_work(4, 8, 4) < 200_000 and row_mesh(None, 20_000, work=lapack_work(4, 8, 16)).devices.size == 4
assert row_mesh(None, 20_000).devices.size == 4 and row_mesh(None, 19_999) is None  # the default: AUTO_MIN_ROWS
assert row_mesh(row_mesh(jax.devices()[:2], 10), 10).devices.size == 2  # a Mesh is taken as it is
# holes, pmapped chains, LAPACK batches that deadlocked (16 vmapped gradients at D = 16, K = 8 hung): one device
for refused in (dict(missing=object()), dict(chain_method="parallel"), dict(work=lapack_work(8, 16, 16))):
    assert row_mesh(None, 10**6, **refused) is None
    try:
        row_mesh(jax.devices()[:2], 10**6, **refused)
        raise AssertionError(f"devices with {refused} must raise")
    except ValueError:
        pass

key = jax.random.PRNGKey(5)
opts = dict(init="kmeans++", n_init=1)  # the ECM to its convergence (with tol=0 its steps at the optimum are rounding)
single = fit_map(key, x, 3, devices=jax.devices()[:1], **opts)
double = fit_map(key, x, 3, devices=jax.devices()[:2], **opts)
assert double.info["options"]["devices"] == [str(d) for d in jax.devices()[:2]], double.info["options"]["devices"]
assert single.info["options"]["devices"] == [str(jax.devices()[0])]
default = fit_map(key, x, 3, **opts)  # devices=None, N below AUTO_MIN_ROWS: one device, the program of before
assert default.info["options"]["devices"] == [str(jax.devices()[0])]
out["map_default_vs_devices1_params"] = leaves_rel(default.params, single.params)  # 0: the very same program
out["map_devices2_params"] = leaves_rel(double.params, single.params)
out["map_devices2_loss"] = rel(double.trace["loss"], single.trace["loss"])
out["map_devices2_responsibilities"] = float(np.max(np.abs(double.responsibilities - single.responsibilities)))
print(json.dumps(dict(diffs=out, collectives=collectives)))
