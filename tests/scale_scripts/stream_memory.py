"""Peak resident memory of a streamed EM fit over a .npy file larger than the budget this script sets
for itself. Prints one JSON line: file size, the peak RSS growth during the fit, and the fit."""

import json
import sys

import jax
import numpy as np

import models  # noqa: F401
from inference.em import fit_em


def reset_peak():
    """Start a new peak window: writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0), so the
    measured peak is the fit's own, not the warm-up compile's."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_peak_mb():
    """This process's peak resident MB (VmHWM; ru_maxrss would carry the parent's peak across exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


path, small = sys.argv[1], sys.argv[2]
# Warm up: the same program (the streamed fold reads a traced number of chunks, so a small file of the same
# columns, dtype, chunking and max_iters compiles it: XLA's memory is not the data's), then measure.
fit_em(jax.random.PRNGKey(0), small, 4, max_iters=3, tol=0.0, chunk_size=32768)
reset = reset_peak()
before = rss_peak_mb()
res = fit_em(jax.random.PRNGKey(0), path, 4, max_iters=3, tol=0.0, chunk_size=32768)
assert res.info["compile_seconds"] == 0.0, res.info["compile_seconds"]  # nothing compiled in the window
after = rss_peak_mb()
print(json.dumps({"before_mb": before, "after_mb": after, "peak_reset": reset, "num_rows": res.info["num_rows"],
                  "log_likelihood": float(res.trace["log_likelihood"][-1])}))
