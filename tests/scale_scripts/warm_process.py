"""Run twice with the same argv[1] (a cache directory): SVI and MAP on the seed-like problem with JAX's
persistent cache and the executable store there, MAP with the rows on both host devices, EM and hard EM; prints one JSON
line {compile seconds, the fits' numbers}."""

import json
import sys

import jax

jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # as analysis.cli.enable_compilation_cache
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

import numpy as np  # noqa: E402

from inference import fit  # noqa: E402

rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(-2, 1, (150, 2)), rng.normal(2, 0.7, (150, 2))])
svi = fit("svi", jax.random.PRNGKey(1), x, 2, num_steps=400, check_every=100, num_draws=50, progress=False)
out = {"svi_compile": svi.info["compile_seconds"], "svi_means": np.asarray(svi.params.means).tolist(),
       "svi_loss": np.asarray(svi.trace["loss"]).tolist()}
# the rows split over both host devices (a mesh program, as MAP / SVI / NUTS from 20,000 rows): stored too
sharded = fit("map", jax.random.PRNGKey(2), x, 2, num_steps=300, devices=jax.devices()[:2])
out.update(map_compile=sharded.info["compile_seconds"], map_means=np.asarray(sharded.params.means).tolist(),
           map_loss=np.asarray(sharded.trace["loss"]).tolist(), map_devices=sharded.info["options"]["devices"])
for method in ("em", "hard_em"):  # EM's programs (rows on both host devices, the default mesh) are stored too
    result = fit(method, jax.random.PRNGKey(3), x, 2)
    out.update({f"{method}_compile": result.info["compile_seconds"], f"{method}_means": np.asarray(result.params.means).tolist(),
                f"{method}_ll": np.asarray(result.trace["log_likelihood"]).tolist()})
print(json.dumps(out))
sys.stdout.flush()
