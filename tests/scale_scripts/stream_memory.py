"""Peak resident memory of a streamed EM fit over a .npy file larger than the budget this script sets
for itself. Prints one JSON line: file size, the peak RSS growth during the fit, and the fit."""

import json
import sys

import jax
import numpy as np

import models  # noqa: F401
from inference.em import fit_em


def rss_peak_mb():
    """This process's peak resident MB (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


path, small = sys.argv[1], sys.argv[2]
# Warm up: compile a streamed program of the same chunking on a small file (XLA's memory is not the data's).
fit_em(jax.random.PRNGKey(0), small, 4, max_iters=2, tol=0.0, chunk_size=32768)
before = rss_peak_mb()
res = fit_em(jax.random.PRNGKey(0), path, 4, max_iters=3, tol=0.0, chunk_size=32768)
after = rss_peak_mb()
print(json.dumps({"before_mb": before, "after_mb": after, "num_rows": res.info["num_rows"],
                  "log_likelihood": float(res.trace["log_likelihood"][-1])}))
