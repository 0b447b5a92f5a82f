"""Timing of the NumPyro baselines (compile vs run) on the seed problem and a 3-component 5-D problem.

Run: ``python benchmarks/bench_numpyro.py`` (prints one line per measurement).
"""

from __future__ import annotations

import time

import jax
import numpy as np

import models
from inference.numpyro_engines import fit_map, fit_nuts, fit_svi


def five_d_problem():
    """3 components in 5-D, moderately separated, random full covariances (fixed seed)."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(3, 5)) * 3.0
    a = rng.normal(size=(3, 5, 5)) * 0.4
    covs = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(5)
    return models.from_covariances([0.2, 0.3, 0.5], means, covs)


def report(name, result):
    info = result.info
    line = f"{name:<34} total {result.seconds:7.2f} s  compile {info['compile_seconds']:6.2f} s  run {info['run_seconds']:6.3f} s  iters {result.num_iters}  converged {result.converged}"
    if result.method == "nuts":
        line += f"  ess_min {info['ess_min']:.0f}  ess/s(run) {info['ess_per_second']:.0f}  divergences {info['num_divergences']}  max r_hat {max(info['r_hat_after'].values()):.3f}  mean leapfrog steps {result.trace['num_steps'].mean():.0f}"
    print(line, flush=True)


def main():
    print(f"backend {jax.default_backend()}, devices {jax.devices()}", flush=True)
    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 500)
    for attempt in ("cold", "warm"):
        report(f"seed MAP ({attempt})", fit_map(jax.random.PRNGKey(1), x, 2))
        report(f"seed SVI ({attempt})", fit_svi(jax.random.PRNGKey(2), x, 2))
        report(f"seed NUTS 2x500+500 ({attempt})", fit_nuts(jax.random.PRNGKey(3), x, 2, num_warmup=500, num_samples=500, progress=False))
    x5, _ = models.sample(jax.random.PRNGKey(4), five_d_problem(), 5000)
    start = time.perf_counter()
    result = fit_nuts(jax.random.PRNGKey(5), x5, 3, num_warmup=500, num_samples=500, progress=False)
    report("K=3 D=5 n=5000 NUTS 2x500+500", result)
    print(f"  (wall {time.perf_counter() - start:.1f} s incl. MAP start {result.info['start_seconds']:.1f} s)")


if __name__ == "__main__":
    main()
