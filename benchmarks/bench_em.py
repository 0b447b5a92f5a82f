"""EM per-iteration time against its peers on the same data and the same init, with a roofline.

Usage:  python benchmarks/bench_em.py [--iters 10] [--quick] [--devices N] [--dtypes float64,float32]
                                      [--peers sklearn,gmmx,pomegranate] [--memory]

Like every entry point of this project, it splits the CPU into ``--devices`` XLA host devices (default:
every core; ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` set before JAX starts, unless the
user set XLA_FLAGS) and EM shards its rows over all of them.

All engines run ``iters`` iterations with tol = 0 from identical initial parameters. Ours and gmmx are
timed after a warm-up call (compile excluded) as (time of 2*iters - time of iters) / iters; sklearn and
pomegranate on their own ``fit`` of ``iters`` iterations. The roofline prints, per shape, the FLOPs and
bytes of one iteration of OUR algorithm (full covariances, quadratic features F = D(D+1)/2 + D + 1: the log
joint GEMM 2NKF and the statistics GEMM 2NKF; the rest ~ N D(D+1)/2 feature products + ~25 NK for the
max / exp / sums) against this machine's GEMM rate and read bandwidth measured in the same run.
``--memory`` adds peak resident memory of EM at N = 1e7, D = 8, K = 8 in memory and streamed from a .npy
(subprocesses), each with glibc's default malloc arenas and with ``MALLOC_ARENA_MAX=2``.
"""

from __future__ import annotations

import argparse
import os
import sys


def _set_devices(argv):
    """Split the CPU into host devices before JAX starts (only if the user has not set XLA_FLAGS)."""
    count = os.cpu_count() or 1
    if "--devices" in argv:
        count = int(argv[argv.index("--devices") + 1])
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={count}").strip()


_set_devices(sys.argv)

import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from inference import fit  # noqa: E402

CASES = [(1_000_000, 2, 4), (1_000_000, 8, 8), (200_000, 16, 8)]
TARGETS = {(1_000_000, 2, 4): 25, (1_000_000, 8, 8): 20, (200_000, 16, 8): 10}


def make_data(rng, n, d, k):
    means = rng.normal(scale=4.0, size=(k, d))
    z = rng.integers(0, k, size=n)
    return means[z] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(k, d))[z]


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


# --------------------------------------------------------------------------- roofline


def machine_rates(dtype):
    """Measured GEMM rate (FLOP/s, JAX on all devices' cores and numpy) and read bandwidth (B/s)."""
    n = 2048
    a = np.random.default_rng(0).normal(size=(n, n)).astype(dtype)
    best_np = min(_timed(lambda: a @ a) for _ in range(3))
    ja = jnp.asarray(a)
    mm = jax.jit(lambda u: u @ u)
    mm(ja).block_until_ready()
    best_jax = min(_timed(lambda: mm(ja).block_until_ready()) for _ in range(3))
    big = np.ones(2**27 // np.dtype(dtype).itemsize, dtype)  # 128 MiB
    big.sum()
    best_bw = min(_timed(lambda: big.sum()) for _ in range(3))
    return 2 * n**3 / best_np, 2 * n**3 / best_jax, big.nbytes / best_bw


def _timed(f):
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def iteration_cost(n, d, k, itemsize):
    """(GEMM FLOPs, other FLOPs, bytes read) of one full-covariance EM iteration (quadratic features)."""
    width = d * (d + 1) // 2 + d + 1
    gemm = 2 * n * k * width * 2  # log joint + sufficient statistics
    other = n * d * (d + 1) // 2 + 25 * n * k  # feature products; max, exp (~20 flops), sums, weights
    return gemm, other, n * d * itemsize


# --------------------------------------------------------------------------- engines


def ours(x, k, init, iters):
    run = lambda m: fit("em", jax.random.PRNGKey(0), x, k, init=init, tol=0.0, max_iters=m)
    warm = run(iters)
    run(2 * iters)
    short = min(run(iters).info["run_seconds"] for _ in range(2))
    long = min(run(2 * iters).info["run_seconds"] for _ in range(2))
    last = run(iters)
    return (long - short) / iters, last.trace["log_likelihood"][-2] / len(x), warm.info


def sklearn_em(x, k, init, iters):
    from sklearn.mixture import GaussianMixture

    precisions = np.linalg.inv(np.asarray(models.covariances(init), np.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weights = np.asarray(init.weights, np.float64)
        gm = GaussianMixture(k, weights_init=weights / weights.sum(), means_init=np.asarray(init.means, np.float64),
                             precisions_init=precisions, tol=0.0, max_iter=iters, reg_covar=1e-6)
        seconds = _timed(lambda: gm.fit(x))
    return seconds / iters, gm.lower_bounds_[-1]


def gmmx_em(x, k, init, iters):
    from gmmx import EMFitter, GaussianMixtureModelJax

    gmm = GaussianMixtureModelJax.from_squeezed(means=jnp.asarray(init.means, x.dtype),
                                                covariances=jnp.asarray(models.covariances(init), x.dtype),
                                                weights=jnp.asarray(init.weights, x.dtype))
    xj = jax.device_put(jnp.asarray(x), jax.devices()[0])
    run = lambda m: EMFitter(max_iter=m, tol=-1.0, reg_covar=1e-6).fit(xj, gmm)
    jax.block_until_ready(run(iters)), jax.block_until_ready(run(2 * iters))
    short = min(_timed(lambda: jax.block_until_ready(run(iters))) for _ in range(2))
    long = min(_timed(lambda: jax.block_until_ready(run(2 * iters))) for _ in range(2))
    res = run(iters)
    return (long - short) / iters, float(res.log_likelihood)


def gmmx_em_checked(x, k, init, iters):
    """gmmx (float32 only; it mixes dtypes under jax_enable_x64, so it runs with x64 off)."""
    if x.dtype != np.float32:
        raise ValueError("gmmx supports float32 only")
    with jax.enable_x64(False):
        return gmmx_em(x, k, init, iters)


def pomegranate_em(x, k, init, iters):
    import torch
    from pomegranate.distributions import Normal
    from pomegranate.gmm import GeneralMixtureModel

    tdtype = torch.float64 if x.dtype == np.float64 else torch.float32
    covs = np.asarray(models.covariances(init))
    dists = [Normal(means=torch.tensor(np.asarray(init.means[j]), dtype=tdtype),
                    covs=torch.tensor(covs[j], dtype=tdtype), covariance_type="full") for j in range(k)]
    model = GeneralMixtureModel(dists, priors=torch.tensor(np.asarray(init.weights), dtype=tdtype), max_iter=iters,
                                tol=0.0, init="first-k")
    xt = torch.tensor(x)
    seconds = _timed(lambda: model.fit(xt))
    return seconds / iters, float("nan")


PEERS = {"sklearn": sklearn_em, "gmmx": gmmx_em_checked, "pomegranate": pomegranate_em}


def bench_case(n, d, k, iters, dtype, peers, rates):
    rng = np.random.default_rng(0)
    x = make_data(rng, n, d, k).astype(dtype)
    first = fit("em", jax.random.PRNGKey(0), x, k, max_iters=1)
    init = models.GMMParams(*(np.asarray(a[0]) for a in first.info["snapshots"]))
    ours_it, ours_lb, info = ours(x, k, init, iters)
    gemm, other, nbytes = iteration_cost(n, d, k, np.dtype(dtype).itemsize)
    gemm_bound = gemm / rates[1]
    print(f"{n:>9,d} {d:>3d} {k:>3d} {dtype:>7} | ours {ours_it * 1e3:8.2f} ms/iter on {info['num_devices']} device(s), "
          f"compile {info['compile_seconds']:.2f} s | roofline: {gemm / 1e9:.2f} GFLOP GEMM + {other / 1e9:.2f} GFLOP other, "
          f"{nbytes / 2**20:.0f} MiB read -> GEMM-bound {gemm_bound * 1e3:.2f} ms, bandwidth-bound {nbytes / rates[2] * 1e3:.2f} ms; "
          f"ours = {ours_it / gemm_bound:.1f}x GEMM-bound")
    for name in peers:
        try:
            peer_it, peer_lb = PEERS[name](x, k, init, iters)
        except ImportError as exc:
            print(f"{'':>25} | {name:>11}: not installed ({exc})")
            continue
        except Exception as exc:  # a peer failing must not stop the benchmark
            print(f"{'':>25} | {name:>11}: failed: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        target = f" (target >= {TARGETS[(n, d, k)]}x)" if name == "sklearn" and (n, d, k) in TARGETS else ""
        agree = f"|Δ mean log-lik| {abs(peer_lb - ours_lb):.1e}" if np.isfinite(peer_lb) else ""
        print(f"{'':>25} | {name:>11}: {peer_it * 1e3:9.2f} ms/iter -> ours is {peer_it / ours_it:6.1f}x faster{target} {agree}")
    sys.stdout.flush()


def memory_runs():
    code = r"""
import sys, numpy as np, jax
import models
from inference import fit
from inference.em import fit_em
n, d, k = 10_000_000, 8, 8
def hwm():  # this process's peak resident MB (VmHWM: ru_maxrss would carry the parent's peak across exec)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
rng = np.random.default_rng(0)
if sys.argv[1] == "memory":
    x = np.empty((n, d))
    for i in range(0, n, 1_000_000):
        x[i : i + 1_000_000] = rng.normal(size=(1_000_000, d)) + (i < n // 2) * 4.0
    base = hwm()
    res = fit_em(jax.random.PRNGKey(0), x, k, max_iters=3, tol=0.0)
else:
    base = hwm()
    res = fit_em(jax.random.PRNGKey(0), sys.argv[2], k, max_iters=3, tol=0.0)
peak = hwm()
print(f"{sys.argv[1]}: peak RSS {peak:.0f} MB (before the fit {base:.0f} MB), data {n * d * 8 / 1e6:.0f} MB, "
      f"{res.info['num_devices']} device(s), rows from {res.info['source']}, {res.seconds:.1f} s for 3 iterations")
"""
    import tempfile

    path = os.path.join(tempfile.mkdtemp(), "big.npy")
    arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(10_000_000, 8))
    rng = np.random.default_rng(0)
    for i in range(0, 10_000_000, 1_000_000):
        arr[i : i + 1_000_000] = rng.normal(size=(1_000_000, 8)) + (i < 5_000_000) * 4.0
    arr.flush()
    del arr
    data_mb = 10_000_000 * 8 * 8 / 1e6
    print(f"memory target (issue 11): in memory <= 1.5 x data + 300 MB = {1.5 * data_mb + 300:.0f} MB; "
          f"streamed <= 300 MB + the read buffers")
    for kind in ("memory", "streamed"):
        for arenas in (None, "2"):
            env = dict(os.environ)
            if arenas:
                env["MALLOC_ARENA_MAX"] = arenas
            out = subprocess.run([sys.executable, "-c", code, kind, path], capture_output=True, text=True, env=env,
                                 cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            label = "glibc default arenas" if arenas is None else f"MALLOC_ARENA_MAX={arenas}"
            print(f"[{label}] " + (out.stdout.strip() or out.stderr[-2000:]))
    os.remove(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="10x fewer rows")
    parser.add_argument("--devices", type=int, default=None, help="XLA host devices (default: every core)")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--peers", default="sklearn,gmmx,pomegranate")
    parser.add_argument("--memory", action="store_true", help="also peak memory at N = 1e7 (in memory and streamed)")
    args = parser.parse_args()
    import sklearn

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {jax.device_count()} JAX "
          f"device(s), jax {jax.__version__}, sklearn {sklearn.__version__}, numpy {np.__version__}; {load()}")
    peers = [p for p in args.peers.split(",") if p]
    for dtype in args.dtypes.split(","):
        rates = machine_rates(dtype)
        print(f"{dtype}: GEMM (2048^3) numpy {rates[0] / 1e9:.1f} GFLOP/s, JAX {rates[1] / 1e9:.1f} GFLOP/s; "
              f"read bandwidth {rates[2] / 1e9:.1f} GB/s")
        for n, d, k in CASES:
            bench_case(n // (10 if args.quick else 1), d, k, args.iters, dtype, peers, rates)
    if args.memory:
        memory_runs()
    print(load())


if __name__ == "__main__":
    main()
