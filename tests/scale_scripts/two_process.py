"""One process of a two-process jax.distributed EM run on localhost (CPU collectives: gloo).

Usage: python two_process.py PORT PROCESS_ID OUT.json   (PROCESS_ID -1: the one-process reference)
Each process holds its own rows (process p: rows p::2 of the data, i.e. its own half) and calls the
same fit; the fitted parameters are written to OUT.json by process 0 (or by the reference)."""

import json
import sys

import jax

port, pid, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if pid >= 0:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402

import models  # noqa: E402
from inference.em import fit_em  # noqa: E402

rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(size=(300, 2)) - 2, rng.normal(size=(301, 2)) * 0.5 + 2])[rng.permutation(601)]
init = models.from_covariances([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], np.stack([np.eye(2)] * 2))
# The reference sees the rows in the order the two processes hold them: process 0's, then process 1's.
rows = x[: 301] if pid == 0 else x[301:] if pid == 1 else x
res = fit_em(jax.random.PRNGKey(0), rows, 2, init=init, tol=0.0, max_iters=20)
if pid <= 0:
    with open(out, "w") as f:
        json.dump({"log_likelihood": res.trace["log_likelihood"].tolist(), "means": res.params.means.tolist(),
                   "weights": res.params.weights.tolist(), "num_devices": res.info["num_devices"],
                   "local_rows": int(res.responsibilities.shape[0])}, f)
if pid >= 0:
    jax.distributed.shutdown()
