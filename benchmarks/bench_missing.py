"""EM per-iteration time on data with NaN holes against the complete-data EM on the same rows, and
sklearn's GaussianMixture (complete rows, one thread).

Usage:  python benchmarks/bench_missing.py [--rows 1000000] [--dims 8] [--components 8] [--fraction 0.1]
                                           [--iters 5] [--devices N] [--no-sklearn]

Cells are missing completely at random with probability ``--fraction``. Ours is timed after a warm-up call
(compile excluded) as (time of 4*iters - time of iters) / (3 iters), fastest of 3 interleaved runs each, from the same initial parameters, tol = 0;
sklearn on its own ``fit`` of ``iters`` iterations under ``threadpoolctl.threadpool_limits(1)``. Prints the
ratios and the machine's load average (other processes share the cores: read the ratios, not the seconds).

Measured 2026-11-30 (2-core machine, a helper's tests running beside it, float64, 233 patterns, 57% of
rows with a hole), after the rows were grouped by pattern (inference.missing_blocks):

* ``--rows 1000000`` (2 host devices): complete 84.6 ms, holes 95.4 ms per iteration, **1.13x**; sklearn
  (one thread, complete rows) 2054 ms (load 1.5-1.8);
* ``--rows 1000000 --devices 1``: complete 204.7 ms, holes 216.4 ms, **1.06x** (load 1.9-2.0).

Before (per-row table gathers, now the streamed path only): 1065 ms against 41 ms at (2e5, 8, 8), ~26x.
"""

from __future__ import annotations

import argparse
import os
import sys


def _set_devices(argv):
    count = os.cpu_count() or 1
    if "--devices" in argv:
        count = int(argv[argv.index("--devices") + 1])
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()


_set_devices(sys.argv)

import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from inference import fit  # noqa: E402


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def per_iteration(x, k, init, iters):
    """Seconds per EM iteration (compile excluded) and the fit's info."""
    run = lambda m: fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=m)
    warm = run(iters)
    run(4 * iters)
    shorts, longs = [], []
    for _ in range(3):  # interleaved, the fastest of each: other processes share the cores
        shorts.append(run(iters).info["run_seconds"])
        longs.append(run(4 * iters).info["run_seconds"])
    return (min(longs) - min(shorts)) / (3 * iters), warm.info


def sklearn_per_iteration(x, k, init, iters):
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    precisions = np.linalg.inv(np.asarray(models.covariances(init), np.float64))
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.simplefilter("ignore")
        gm = GaussianMixture(k, weights_init=np.asarray(init.weights), means_init=np.asarray(init.means),
                             precisions_init=precisions, tol=0.0, max_iter=iters, reg_covar=1e-6)
        start = time.perf_counter()
        gm.fit(x)
        return (time.perf_counter() - start) / iters


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dims", type=int, default=8)
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--devices", type=int, default=None)
    parser.add_argument("--no-sklearn", action="store_true")
    args = parser.parse_args(argv)
    n, d, k = args.rows, args.dims, args.components
    rng = np.random.default_rng(0)
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(0, k, size=n)
    x = means[z] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[z]
    holes = x.copy()
    holes[rng.random(x.shape) < args.fraction] = np.nan
    init = models.from_covariances(np.full(k, 1.0 / k), x[rng.choice(n, k, replace=False)], np.stack([np.cov(x.T)] * k))
    print(f"N={n} D={d} K={k}, {np.isnan(holes).mean():.1%} of cells missing at random "
          f"({np.isnan(holes).any(axis=1).mean():.1%} of rows), {jax.device_count()} host devices; {load()}")
    complete, _ = per_iteration(x, k, init, args.iters)
    print(f"complete-data EM   {complete * 1e3:8.1f} ms / iteration   ({load()})")
    missing, info = per_iteration(holes, k, init, args.iters)
    print(f"EM with the holes  {missing * 1e3:8.1f} ms / iteration   {missing / complete:5.2f} x complete  "
          f"({info['missing']['patterns']} patterns, chunk {info['chunk_size']}; {load()})")
    if not args.no_sklearn:
        sk = sklearn_per_iteration(x, k, init, args.iters)
        print(f"sklearn (1 thread) {sk * 1e3:8.1f} ms / iteration on the complete rows; ours with holes "
              f"{sk / missing:5.2f} x faster, complete {sk / complete:5.2f} x  ({load()})")


if __name__ == "__main__":
    main()
