"""EM per-iteration time against sklearn's GaussianMixture on the same data and the same init.

Usage:  python benchmarks/bench_em.py [--iters 10] [--quick]

Both engines run ``iters`` iterations with tol = 0 from identical initial parameters, in float64. Ours
is timed after a warm-up call (compile excluded; the compile time is printed separately) as the
difference between 2*iters and iters iterations; sklearn is timed on its own ``fit`` (its E-step for
the final labels included, about one iteration in ``iters``). Also prints the cold time (compile included) of fitting the seed problem.
Run it alone: both engines use both cores.
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import jax
import numpy as np

import models
from inference import fit

CASES = [(1_000_000, 2, 4), (1_000_000, 8, 8), (200_000, 16, 8)]


def make_data(rng, n, d, k):
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(0, k, size=n)
    return means[z] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[z]


def sklearn_precisions(params):
    return np.linalg.inv(np.asarray(models.covariances(params)))


def bench_case(n, d, k, iters):
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    x = make_data(rng, n, d, k)
    first = fit("em", jax.random.PRNGKey(0), x, k, max_iters=1)
    init = models.GMMParams(*(np.asarray(a[0]) for a in first.info["snapshots"]))
    # Per iteration = (time of 2*iters - time of iters) / iters: the final responsibilities pass and
    # the copy of (N, K) responsibilities to the host cancel out.
    warm = fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=iters)  # compiles
    fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=2 * iters)  # compiles
    short = long = np.inf
    for _ in range(2):
        ours = fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=iters)
        short = min(short, ours.info["run_seconds"])
        long = min(long, fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=2 * iters).info["run_seconds"])
    best = long - short
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(k, weights_init=np.asarray(init.weights), means_init=np.asarray(init.means),
                             precisions_init=sklearn_precisions(init), tol=0.0, max_iter=iters, reg_covar=1e-6)
        start = time.perf_counter()
        gm.fit(x)
        sk_seconds = time.perf_counter() - start
    agree = np.abs(ours.trace["log_likelihood"][-2] / n - gm.lower_bounds_[-1])
    ours_it, sk_it = best / iters, sk_seconds / iters
    print(f"{n:>9,d} {d:>3d} {k:>3d} | {ours_it * 1e3:9.2f} ms {sk_it * 1e3:10.2f} ms | {sk_it / ours_it:6.1f}x"
          f" | compile {warm.info['compile_seconds']:5.2f} s | |Δ lower bound| {agree:.1e}")


def cold_seed_fit():
    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 500)
    x = np.asarray(x)
    start = time.perf_counter()
    res = fit("em", jax.random.PRNGKey(1), x, 2)
    total = time.perf_counter() - start
    print(f"cold fit of the seed problem (n=500, compile included): {total:.2f} s "
          f"(compile {res.info['compile_seconds']:.2f} s, run {res.info['run_seconds'] * 1e3:.1f} ms, {res.num_iters} iterations)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="10x fewer rows")
    args = parser.parse_args()
    import sklearn

    print(f"machine: {platform.processor() or platform.machine()}, {jax.local_device_count()} JAX device(s), "
          f"jax {jax.__version__}, sklearn {sklearn.__version__}, numpy {np.__version__}")
    cold_seed_fit()
    print(f"{'n':>9} {'d':>3} {'k':>3} | {'ours/iter':>12} {'sklearn/iter':>13} | {'ratio':>7}")
    for n, d, k in CASES:
        bench_case(n // (10 if args.quick else 1), d, k, args.iters)


if __name__ == "__main__":
    main()
