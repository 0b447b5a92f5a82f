"""Overhead of the scikit-learn estimator (``inference.GaussianMixture``) over ``inference.fit``.

Usage:  python benchmarks/bench_estimator.py [--repeats 5] [--iters 20] [--quick]

Both sides do the same work: the estimator's key is derived from ``random_state`` exactly as the
estimator does it, and ``inference.fit`` gets that key and the options the estimator maps onto
(``init="kmeans"``, ``tol = 0``, ``max_iters = iters``, ``n_init = 1``). Each side is compiled
first, then timed ``repeats`` times, interleaved; the minimum of each is reported (the machine is
shared), with the median overhead as a check. Also asserts that a second estimator fit of the same
shapes compiled nothing. Run it alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import jax
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

import models  # noqa: F401  (x64)
from inference import GaussianMixture, fit
from inference.sklearn_params import key_from as _key_from

CASES = [(100_000, 2, 4), (1_000_000, 2, 4), (200_000, 8, 8)]
QUICK = [(100_000, 2, 4)]


def make_data(rng, n, d, k):
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(0, k, size=n)
    return means[z] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[z]


def bench_case(n, d, k, iters, repeats):
    x = make_data(np.random.default_rng(0), n, d, k)
    options = dict(init="kmeans", n_init=1, tol=0.0, max_iters=iters, covariance_type="full", reg_covar=1e-6)
    est = GaussianMixture(k, init_params="kmeans", tol=0.0, max_iter=iters, random_state=0)

    def run_fit():
        start = time.perf_counter()
        result = fit("em", _key_from(check_random_state(0)), x, k, **options)
        return time.perf_counter() - start, result

    def run_estimator():
        start = time.perf_counter()
        est.fit(x)
        return time.perf_counter() - start, est.result_

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol = 0 never converges, by design
        _, first = run_fit()  # compiles
        run_estimator()  # cache hit (same program)
        fit_times, est_times = [], []
        for _ in range(repeats):
            seconds, result = run_fit()
            fit_times.append(seconds)
            seconds, est_result = run_estimator()
            est_times.append(seconds)
            assert est_result.info["compile_seconds"] == 0.0, "a second estimator fit compiled"
    np.testing.assert_array_equal(est.means_, result.params.means)  # the same fit on both sides
    best_fit, best_est = min(fit_times), min(est_times)
    median_overhead = statistics.median(e / f - 1 for e, f in zip(est_times, fit_times))
    return dict(n=n, d=d, k=k, iters=iters, fit=best_fit, est=best_est, overhead=best_est / best_fit - 1,
                median_overhead=median_overhead, compile=first.info["compile_seconds"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="one case (n = 100 000)")
    args = parser.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, jax {jax.__version__}, "
          f"load average {os.getloadavg()[0]:.2f} at start")
    print("| n | d | k | iterations | inference.fit | GaussianMixture.fit | overhead (min) | overhead (median) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, d, k in QUICK if args.quick else CASES:
        r = bench_case(n, d, k, args.iters, args.repeats)
        print(f"| {n:,} | {d} | {k} | {r['iters']} | {r['fit'] * 1e3:.1f} ms | {r['est'] * 1e3:.1f} ms | "
              f"{100 * r['overhead']:+.1f}% | {100 * r['median_overhead']:+.1f}% |", flush=True)
    print(f"# load average {os.getloadavg()[0]:.2f} at end; a second fit of the same shapes compiled nothing")


if __name__ == "__main__":
    main()
