"""The Bayesian engines' cost where it is spent (issue 24): the potential's gradient inside a compiled loop, and
NUTS's gradients per effective draw.

Run: ``python benchmarks/bench_bayes.py [--grad-only | --nuts-only | --sharded | --peers PYTHON | --minibatch PATH | --map-vs-em] [--repeats R]`` (prints one line per
measurement and the load average; a benchmark, not a test: ratios from one run on a shared machine).

1. ms per gradient of NumPyro's potential (``models.gmm_model``, z enumerated, standardised data, float64) inside
   one ``lax.fori_loop`` of ``value_and_grad``, against the two matmuls its likelihood cannot avoid (the rows'
   quadratic features (N, F) times (F, K) coefficients, and the transpose product of the backward pass) timed in
   the same kind of loop, at (5,000, 5, 3) and (50,000, 8, 4).
2. NUTS at (5,000, 5, 3) through ``inference.fit("nuts", ...)``: leapfrog steps per draw, min bulk ESS (ArviZ,
   after relabelling, over weights / means / covariance elements) per gradient and per second of sampling, for
   the defaults, ``dense_mass=True``, and 4 vectorised chains.
3. ``--sharded`` (alone: it splits the CPU into one XLA host device per core before JAX starts, unless XLA_FLAGS says
   otherwise): ms per gradient with the rows on one device against split over every device
   (``inference.sharded_potential``), interleaved; NUTS's sampling seconds at (5,000, 5, 3), and short MAP and NUTS
   runs at (50,000, 8, 4), on 1 and all devices.
4. ``--peers PYTHON`` (alone): our NUTS (defaults, and ``laplace_mass=False``) against PyMC's NUTS and nutpie on the
   same standardised rows, model and priors, from the same fitted point (``peer_samplers.py``, run by PYTHON, a
   Python with ``pymc`` and ``nutpie``, one BLAS thread); min bulk ESS per second, and our ratio to each.
5. ``--minibatch PATH.npy`` (alone): minibatch SVI on the streamed file against EM on the same file (both from a
   cold start of their programs in this process, key 0, K = ``--components``): seconds, converged, SVI's stages
   (EM start, Newton passes, the final check in marginal posterior sd) and the ratio of the two. ``--make N`` first
   writes N rows of ``problem(1000, 8, 4)``'s truth to PATH (in 1,000,000-row pieces).
6. ``--map-vs-em`` (alone): MAP's fit (its default ECM, ``inference.map_ecm``, and Adam) against EM's at
   (50,000, 8, 4), warm, best of ``--repeats``, and NUTS's fixed cost before its first draw (MAP start + Laplace
   Hessian), warm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

if "--sharded" in sys.argv and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={os.cpu_count()}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import models  # noqa: E402
from models.quadratic import quadratic_features  # noqa: E402


def problem(num_rows: int, num_features: int, num_components: int, seed: int = 0):
    """Standardised rows of a random, moderately separated mixture (fixed seed), and the truth."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_components, num_features)) * 3.0
    a = rng.normal(size=(num_components, num_features, num_features)) * 0.4
    covs = a @ np.swapaxes(a, -1, -2) + 0.5 * np.eye(num_features)
    truth = models.from_covariances(np.full(num_components, 1.0 / num_components), means, covs)
    x, _ = models.sample(jax.random.PRNGKey(seed), truth, num_rows)
    return np.asarray(x), truth


def _loop_ms(step, carry, data, iterations: int, repeats: int, options="engines") -> float:
    """Best-of-repeats ms per iteration of ``carry = step(carry, data)`` in one compiled ``fori_loop``; ``data`` is an
    argument of the compiled program (as the rows are for NUTS's segments), not a constant XLA could fold. Compiled
    with the engines' XLA options (``inference.sharded_potential.compiler_options``) unless ``options`` is given."""
    from inference.sharded_potential import compiler_options

    options = compiler_options((carry, data)) if options == "engines" else options
    run = jax.jit(lambda c, d: jax.lax.fori_loop(0, iterations, lambda i, c: step(c, d), c)).lower(carry, data).compile(
        compiler_options=options)
    jax.block_until_ready(run(carry, data))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(carry, data))
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.min(times)) / iterations  # the best of the repeats: the machine is shared


def gradient_ms(x, num_components: int, iterations: int, repeats: int) -> float:
    """ms per ``value_and_grad`` of the enumerated potential, called as NUTS calls it (``inference.numpyro_nuts``:
    ``potential_energy`` of the funsor-enumerated model with the rows as a model argument)."""
    from numpyro.infer.util import initialize_model, potential_energy

    from inference._numpyro_common import enumerated, make_model

    xs = jnp.asarray((x - x.mean(0)) / x.std(0))
    model = make_model(num_components)
    start = initialize_model(jax.random.PRNGKey(0), model, model_args=(xs, None, None)).param_info.z
    grad = jax.value_and_grad(lambda u, rows: potential_energy(enumerated(model), (rows, None, None), {}, u, enum=True))

    def step(u, rows):
        _, g = grad(u, rows)
        return jax.tree.map(lambda a, b: a - 1e-12 * b, u, g)

    return _loop_ms(step, start, xs, iterations, repeats)


def matmul_ms(x, num_components: int, iterations: int, repeats: int) -> float:
    """ms of the two matmuls alone: (N, F) @ (F, K) and (F, N) @ (N, K), features precomputed (an argument); the
    faster of XLA's default options and the engines' (the reference is what the hardware can do)."""
    from inference.sharded_potential import _NO_YNN

    features = quadratic_features(jnp.asarray(x), True)
    coefficients = jnp.ones((features.shape[1], num_components), features.dtype)

    def step(a, f):
        return a - 1e-12 * (f.T @ (f @ a))

    return min(_loop_ms(step, coefficients, features, iterations, repeats, options) for options in (None, dict(_NO_YNN)))


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def _whitening_likelihood(means, scale_tril, component):
    """The likelihood before issue 24: ``MultivariateNormal(means[z], scale_tril[z])`` whitened per component."""
    import models.gmm as gmm

    return gmm.MultivariateNormal(means[component], scale_tril=scale_tril[component])


def gradients(repeats: int, rounds: int = 3):
    """Interleaved in one process: the model's one-matmul likelihood, the per-component whitening it replaced
    (swapped in for the measurement), and the two matmuls; ``rounds`` of each, every number a best of ``repeats``."""
    import models.gmm as gmm

    table = gmm.ComponentNormal
    for shape, iterations in (((5_000, 5, 3), 200), ((50_000, 8, 4), 40)):
        x, _ = problem(*shape)
        times = {"one-matmul likelihood": [], "whitening likelihood (before)": [], "the two matmuls": []}
        for _ in range(rounds):
            for name, likelihood in (("one-matmul likelihood", table), ("whitening likelihood (before)", _whitening_likelihood)):
                gmm.ComponentNormal = likelihood
                try:
                    times[name].append(gradient_ms(x, shape[2], iterations, repeats))
                finally:
                    gmm.ComponentNormal = table
            times["the two matmuls"].append(matmul_ms(x, shape[2], iterations, repeats))
        text = ", ".join(f"{name} " + "/".join(f"{t:.2f}" for t in values) + " ms" for name, values in times.items())
        ratio = min(times["one-matmul likelihood"]) / min(times["the two matmuls"])
        print(f"gradient of the potential at (N, D, K) = {shape}: {text}; best one-matmul / best matmuls {ratio:.1f}  [{load()}]",
              flush=True)


NUTS_SETTINGS = (
    ("defaults (2 chains, sequential; dense mass up to 100 parameters, above that the Laplace H^-1)", {}),
    ("diagonal mass adapted from draws", {"dense_mass": False, "laplace_mass": False}),
    ("laplace_mass=True (dense H^-1 at the MAP start; step size in one window; robust U-turn trees)", {"laplace_mass": True}),
    ("dense_mass=True", {"dense_mass": True}),
    ("4 chains vectorized", {"num_chains": 4, "chain_method": "vectorized"}),
    ("4 chains vectorized, dense_mass=True", {"num_chains": 4, "chain_method": "vectorized", "dense_mass": True}),
)


def min_bulk_ess(samples) -> float:
    """Min ArviZ bulk ESS over every varying element of the aligned draws (weights, means, covariances)."""
    import arviz as az

    from inference.diagnostics import parameter_draws

    values = [np.asarray(v, np.float64) for v in parameter_draws(samples).values()]
    flat = np.concatenate([v.reshape(v.shape[:2] + (-1,)) for v in values], axis=-1)
    return min(float(az.ess(flat[..., i], method="bulk")) for i in range(flat.shape[-1]) if np.ptp(flat[..., i]) > 0)


def nuts(repeats: int, settings=NUTS_SETTINGS, shape=(5_000, 5, 3)):
    """NUTS at ``shape`` (N, D, K) per setting: leapfrog steps per draw, min bulk ESS per 1,000 gradients and per second."""
    from inference import fit

    x, _ = problem(*shape)
    for repeat in range(repeats):
        for name, options in settings:
            result = fit("nuts", jax.random.PRNGKey(repeat), x, shape[2], progress=False, num_assignment_draws=0, **options)
            steps = np.asarray(result.trace["num_steps"])  # the kept draws' leapfrog steps, every chain
            ess = min_bulk_ess(result.samples)
            run = result.info["sampling_seconds"]  # warm-up and draws of every chain, compile excluded
            gradients = steps.sum() + result.info["warmup_leapfrog_steps"]
            warmup_iterations = result.info["options"]["num_warmup"] * result.info["options"]["num_chains"]
            print(f"NUTS {shape} {name}: leapfrog/draw {steps.mean():.1f}, min bulk ESS {ess:.0f}, "
                  f"ESS per 1,000 gradients {1e3 * ess / steps.sum():.1f}, sampling+warm-up {run:.1f} s, ESS/s {ess / run:.1f}, "
                  f"warm-up leapfrog/iteration {result.info['warmup_leapfrog_steps'] / max(1, warmup_iterations):.1f}, "
                  f"ms per leapfrog (warm-up included) {1e3 * run / gradients:.2f}, "
                  f"max R-hat {max(result.info['r_hat_after'].values()):.3f}, divergences {result.info['num_divergences']}, "
                  f"converged {result.converged}  [{load()}]", flush=True)


def peers(python: str, shape=(5_000, 5, 3), samplers="nutpie,pymc"):
    """Ours against PyMC's NUTS and nutpie (``peer_samplers.py``, run by ``python``, which has them) on one posterior:
    the rows of ``problem(*shape)`` standardised (so every sampler's priors are the same in the same units), every
    sampler started at EM's fit, 2 chains x (500 + 1,000); min bulk ESS (ArviZ, after relabelling every draw against
    that start, ``models.alignment.relabel_draws``) per second of warm-up and draws, compile excluded. Ours also with
    ``laplace_mass=False`` (its fallback) where the model has at most 100 parameters."""
    import json
    import subprocess
    import tempfile
    from pathlib import Path

    from inference import fit
    from inference.numpyro_nuts import DENSE_MASS_MAX_DIM
    from models.alignment import relabel_draws
    from models.criteria import num_parameters

    x, _ = problem(*shape)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    start = fit("em", jax.random.PRNGKey(0), x, shape[2]).params
    folder = Path(tempfile.mkdtemp(prefix="peers-"))
    np.save(folder / "data.npy", x)
    np.savez(folder / "start.npz", **{name: np.asarray(v) for name, v in start._asdict().items()})
    rates = {}
    ours = [("this project, defaults", {})]
    if num_parameters(shape[2], shape[1], "full") <= DENSE_MASS_MAX_DIM:
        ours.append(("this project, laplace_mass=False", {"laplace_mass": False}))
    for name, options in ours:
        result = fit("nuts", jax.random.PRNGKey(0), x, shape[2], progress=False, num_assignment_draws=0, **options)
        ess, run = min_bulk_ess(result.samples), result.info["sampling_seconds"]
        rates[name] = ess / run
        print(f"peers {shape} {name}: sampling+warm-up {run:.1f} s, leapfrog/draw {np.mean(result.trace['num_steps']):.1f}, "
              f"min bulk ESS {ess:.0f}, ESS/s {ess / run:.1f}, divergences {result.info['num_divergences']}, "
              f"metric {str(result.info['options']['laplace_mass'])[:60]}, converged {result.converged}  [{load()}]", flush=True)
    threads = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    done = subprocess.run([python, str(Path(__file__).with_name("peer_samplers.py")), str(folder), "--samplers", samplers],
                          capture_output=True, text=True, env=dict(os.environ, **threads))
    if done.returncode:
        print(f"peers: {python} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
        return
    for line in done.stdout.splitlines():
        if not line.startswith("{"):
            continue
        peer = json.loads(line)
        draws = dict(np.load(folder / f"{peer['sampler']}.npz"))
        aligned, _ = relabel_draws(models.GMMParams(**draws), start)
        ess = min_bulk_ess(aligned)
        rates[peer["sampler"]] = ess / peer["seconds"]
        print(f"peers {shape} {peer['sampler']} {peer['version']}: sampling+warm-up {peer['seconds']:.1f} s, leapfrog/draw "
              f"{peer['leapfrog_per_draw']:.1f}, min bulk ESS {ess:.0f}, ESS/s {ess / peer['seconds']:.1f}, divergences "
              f"{peer['divergences']}  [{load()}]", flush=True)
    our_rate = rates["this project, defaults"]
    print("peers: our defaults' ESS/s over " + ", ".join(f"{name} {our_rate / rate:.2f}x" for name, rate in rates.items()
                                                       if name != "this project, defaults"), flush=True)


def sharded_gradient_ms(x, num_components: int, mesh, iterations: int, repeats: int) -> float:
    """ms per ``value_and_grad`` of the enumerated potential with the rows split over ``mesh`` (None: one device), the
    rows split once at the program's entry as the engines do (``inference.sharded_potential.rows_on_mesh``)."""
    from jax.sharding import NamedSharding, PartitionSpec

    from inference._numpyro_common import enumerated, make_model, model_sites, unconstrain_fn
    from inference.sharded_potential import potential_value_and_grad, rows_on_mesh

    xs = (x - x.mean(0)) / x.std(0)
    start = unconstrain_fn(num_components, x.shape[1])(model_sites(models.from_covariances(
        np.full(num_components, 1.0 / num_components), xs[:num_components], np.stack([np.eye(x.shape[1])] * num_components)), xs.dtype))
    grad = potential_value_and_grad(enumerated(make_model(num_components)), mesh)

    def step(u, rows):
        _, g = grad(u, rows, None)
        return jax.tree.map(lambda a, b: a - 1e-12 * b, u, g)

    run = jax.jit(rows_on_mesh(lambda c, d: jax.lax.fori_loop(0, iterations, lambda i, c: step(c, d), c), mesh, (1,)))
    args = (start, jnp.asarray(xs)) if mesh is None else jax.device_put((start, xs), NamedSharding(mesh, PartitionSpec()))
    jax.block_until_ready(run(*args))
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        jax.block_until_ready(run(*args))
        times.append(time.perf_counter() - begin)
    return 1e3 * float(np.min(times)) / iterations


def sharded(repeats: int, rounds: int = 2, nuts_too: bool = True):
    """One device against every device, interleaved ``rounds`` times: ms per gradient, then NUTS at (5,000, 5, 3)."""
    from inference import fit
    from inference.sharded_potential import row_mesh

    every = len(jax.devices())
    for shape, iterations in (((5_000, 5, 3), 200), ((20_000, 8, 4), 80), ((50_000, 8, 4), 40)):
        x, _ = problem(*shape)
        for _ in range(rounds):
            for n in (1, every):
                ms = sharded_gradient_ms(x, shape[2], row_mesh(jax.devices()[:n], shape[0]), iterations, repeats)
                print(f"gradient at (N, D, K) = {shape} on {n} device(s): {ms:.2f} ms  [{load()}]", flush=True)
    if nuts_too:
        x, _ = problem(5_000, 5, 3)
        for _ in range(rounds):
            for n in (1, every):
                result = fit("nuts", jax.random.PRNGKey(0), x, 3, progress=False, num_assignment_draws=0, devices=jax.devices()[:n])
                steps = np.asarray(result.trace["num_steps"])
                print(f"NUTS (5000, 5, 3) on {n} device(s): sampling+warm-up {result.info['sampling_seconds']:.1f} s, "
                      f"leapfrog/draw {steps.mean():.1f}, converged {result.converged}  [{load()}]", flush=True)
        x, truth = problem(50_000, 8, 4)  # short runs: MAP's optimisation, and NUTS from the truth (no MAP start)
        for _ in range(rounds):
            for n in (1, every):
                result = fit("map", jax.random.PRNGKey(0), x, 4, n_init=1, num_steps=500, tol=0.0, devices=jax.devices()[:n],
                             optimizer="adam")  # 500 gradient steps, as measured before the ECM
                print(f"MAP (50000, 8, 4), 500 steps, on {n} device(s): run {result.info['run_seconds']:.1f} s  [{load()}]", flush=True)
                result = fit("nuts", jax.random.PRNGKey(0), x, 4, init=truth, num_chains=1, num_warmup=150, num_samples=150,
                             progress=False, num_assignment_draws=0, devices=jax.devices()[:n])
                steps = np.asarray(result.trace["num_steps"])
                print(f"NUTS (50000, 8, 4), 1 chain, 150 + 150 draws from the truth, on {n} device(s): sampling+warm-up "
                      f"{result.info['sampling_seconds']:.1f} s, leapfrog/draw {steps.mean():.1f}  [{load()}]", flush=True)


def map_vs_em(repeats: int) -> None:
    """MAP (its default ECM, and Adam) against EM's fit at (50,000, 8, 4), warm (each program compiled by a first fit),
    interleaved, key 0; and NUTS's fixed cost before its first draw (its MAP start and the Laplace metric's Hessian)."""
    from inference import fit

    x, _ = problem(50_000, 8, 4)
    runs = {"em": {}, "map": {}, "map_adam": {"optimizer": "adam"}}
    seconds = {name: [] for name in runs}
    for attempt in range(repeats + 1):  # the first round compiles
        for name, options in runs.items():
            start = time.perf_counter()
            r = fit(name.split("_")[0], jax.random.PRNGKey(0), x, 4, **options)
            if attempt:
                seconds[name].append(time.perf_counter() - start)
                loss = r.info.get("restart_losses", np.array([np.nan])).min()
                print(f"{name}: {seconds[name][-1]:.3f} s, converged {r.converged}, {r.num_iters} iterations/passes/steps, "
                      f"loss {loss:.6f}  [{load()}]", flush=True)
    best = {name: min(v) for name, v in seconds.items()}
    print(f"MAP (ECM) / EM: {best['map'] / best['em']:.2f}x (target <= 5x); MAP (Adam) / EM: "
          f"{best['map_adam'] / best['em']:.1f}x  (best of {repeats} each)", flush=True)
    common = dict(num_chains=2, num_warmup=10, num_samples=10, progress=False, num_assignment_draws=0)
    for attempt in range(repeats + 1):
        start = time.perf_counter()
        r = fit("nuts", jax.random.PRNGKey(0), x, 4, **common)
        wall = time.perf_counter() - start
        if attempt:  # the MAP start's own seconds leave out its initialiser; the wall time less sampling does not
            print(f"NUTS fixed cost: MAP start {r.info['start_seconds']:.2f} s + Laplace Hessian "
                  f"{r.info['laplace_mass_seconds']:.2f} s; the whole fit less its chains' sampling "
                  f"{wall - r.info['sampling_seconds']:.2f} s (target <= 3 s warm)  [{load()}]", flush=True)


def minibatch(path: str, num_components: int, make: int | None) -> None:
    """Minibatch SVI against EM on one streamed ``.npy`` (module docstring, item 5)."""
    from inference import fit

    if make:
        _, truth = problem(1000, 8, 4)
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(make, 8))
        keys = jax.random.split(jax.random.PRNGKey(0), -(-make // 1_000_000))
        for i, first in enumerate(range(0, make, 1_000_000)):
            rows = min(1_000_000, make - first)
            out[first:first + rows] = np.asarray(models.sample(keys[i], truth, rows)[0])
        out.flush()
        del out
    seconds = {}
    for method in ("em", "svi"):
        start = time.perf_counter()
        r = fit(method, jax.random.PRNGKey(0), path, num_components, **({"progress": False} if method == "svi" else {}))
        seconds[method] = time.perf_counter() - start
        line = f"{method}: {seconds[method]:.1f} s, converged {r.converged}, {r.num_iters} iterations/steps"
        if method == "svi":
            mb = r.info["minibatch"]
            line += (f"; EM start {mb['start_em'].get('iterations')} passes ({mb['start_em'].get('seconds', 0):.1f} s), "
                     f"Newton {mb['start_newton']}, final check {mb['full_check']:.3g} ({mb['full_check_kind']}), "
                     f"warnings {r.info['warnings']}")
        print(line, flush=True)
    print(f"minibatch SVI / EM: {seconds['svi'] / seconds['em']:.2f}x  ({load()})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grad-only", action="store_true")
    parser.add_argument("--nuts-only", action="store_true")
    parser.add_argument("--sharded", action="store_true", help="rows on 1 device against every device (alone)")
    parser.add_argument("--no-nuts", action="store_true", help="with --sharded: gradients only")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--nuts-shape", default="5000,5,3", help="N,D,K of the NUTS comparison (default 5000,5,3)")
    parser.add_argument("--settings", default=None, help="comma-separated indices into NUTS_SETTINGS (default: all)")
    parser.add_argument("--peers", metavar="PYTHON", default=None,
                        help="alone: ours against PyMC and nutpie at --nuts-shape, run by PYTHON (which has pymc and nutpie)")
    parser.add_argument("--peer-samplers", default="nutpie,pymc", help="with --peers: which (PyMC did not finish (50,000, 8, 4) in 21 min)")
    parser.add_argument("--minibatch", metavar="PATH", default=None, help="alone: minibatch SVI against EM on a streamed .npy")
    parser.add_argument("--make", type=int, default=None, help="with --minibatch: first write this many rows to PATH")
    parser.add_argument("--components", type=int, default=4, help="with --minibatch: K (default 4)")
    parser.add_argument("--map-vs-em", action="store_true", help="alone: MAP (ECM, Adam) against EM and NUTS's fixed cost")
    args = parser.parse_args()
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), {os.cpu_count()} cores, {load()}", flush=True)
    if args.minibatch:
        minibatch(args.minibatch, args.components, args.make)
        return
    if args.map_vs_em:
        map_vs_em(args.repeats)
        return
    if args.sharded:
        sharded(args.repeats, nuts_too=not args.no_nuts)
        return
    if args.peers:
        peers(args.peers, tuple(int(v) for v in args.nuts_shape.split(",")), args.peer_samplers)
        return
    if not args.nuts_only:
        gradients(args.repeats)
    if not args.grad_only:
        chosen = NUTS_SETTINGS if args.settings is None else tuple(NUTS_SETTINGS[int(i)] for i in args.settings.split(","))
        nuts(1, chosen, tuple(int(v) for v in args.nuts_shape.split(",")))


if __name__ == "__main__":
    main()
