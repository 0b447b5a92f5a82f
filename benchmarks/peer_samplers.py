"""The peers' NUTS on our model: PyMC's own sampler and nutpie, for ``bench_bayes.py --peers PYTHON``.

Runs under a Python that has ``pymc`` and ``nutpie`` (not this project's: ``python -m venv peers &&
peers/bin/pip install pymc nutpie``); imports nothing of this project. Reads ``data.npy`` (N, D) and ``start.npz``
(``weights`` (K,), ``means`` (K, D), ``scale_tril`` (K, D, D): the fitted point every sampler starts from, as
``models.GMMParams``) in FOLDER, writes ``FOLDER/<sampler>.npz`` (draws of the same fields, (chain, draw, ...)) and prints one
JSON line per sampler: sampling seconds (warm-up and draws, compile excluded), leapfrog steps per draw, divergences.

The model is ``models.gmm_model`` with its default priors, written in PyMC: weights ~ Dirichlet(1), means ~
Normal(0, 10), per-dimension sds ~ LogNormal(0, 2), correlations ~ LKJ(1) (``LKJCholeskyCov`` with that sd
prior), x ~ mixture of the K full-covariance normals (z summed out, as ours enumerates it). Both samplers start
at the fitted point without jitter, 2 chains x (``--tune`` + ``--draws``), their default adaptation.

Run: ``OPENBLAS_NUM_THREADS=1 peers/bin/python benchmarks/peer_samplers.py FOLDER [--tune 500] [--draws 1000]``
(with 2 BLAS threads on a 2-core machine both ran ~30x slower, issue 24).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def build(x: np.ndarray, num_components: int):
    import pymc as pm

    num_features = x.shape[1]
    with pm.Model() as model:
        weights = pm.Dirichlet("weights", a=np.ones(num_components))
        means = pm.Normal("means", 0.0, 10.0, shape=(num_components, num_features))
        chols = []
        for k in range(num_components):
            chol, _, _ = pm.LKJCholeskyCov(f"chol{k}", n=num_features, eta=1.0,
                                           sd_dist=pm.LogNormal.dist(0.0, 2.0, shape=num_features), compute_corr=True)
            chols.append(chol)
        pm.Mixture("x", w=weights, comp_dists=[pm.MvNormal.dist(mu=means[k], chol=chols[k]) for k in range(num_components)],
                   observed=x)
    return model


def initial_point(start) -> dict:
    """The start in PyMC's value names: ``chol{k}`` is the packed lower triangle (row-major) of cov_k's Cholesky factor."""
    out = {"weights": start["weights"], "means": start["means"]}
    for k, lower in enumerate(start["scale_tril"]):
        out[f"chol{k}"] = lower[np.tril_indices(lower.shape[0])]
    return out


def draws_of(posterior, num_components: int) -> dict:
    """Draws (chain, draw, ...) of weights, means and scale_tril (each packed Cholesky factor unpacked, row-major)."""
    lowers = []
    for k in range(num_components):
        packed = np.asarray(posterior[f"chol{k}"])
        d = int(round((np.sqrt(8 * packed.shape[-1] + 1) - 1) / 2))
        rows, cols = np.tril_indices(d)
        lower = np.zeros(packed.shape[:-1] + (d, d))
        lower[..., rows, cols] = packed
        lowers.append(lower)
    return dict(weights=np.asarray(posterior["weights"]), means=np.asarray(posterior["means"]), scale_tril=np.stack(lowers, axis=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--tune", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--samplers", default="nutpie,pymc")
    args = parser.parse_args()
    import pymc as pm

    x = np.load(args.folder / "data.npy")
    start = dict(np.load(args.folder / "start.npz"))
    num_components = start["weights"].shape[0]
    initvals = initial_point(start)
    for sampler in args.samplers.split(","):
        model = build(x, num_components)
        if sampler == "nutpie":
            import nutpie

            compiled = nutpie.compile_pymc_model(model, initial_points=initvals, jitter_rvs=set())
            began = time.perf_counter()
            idata = nutpie.sample(compiled, draws=args.draws, tune=args.tune, chains=2, seed=0, progress_bar=False)
            seconds = time.perf_counter() - began
        else:
            with model:
                idata = pm.sample(draws=args.draws, tune=args.tune, chains=2, cores=2, initvals=initvals, init="adapt_diag",
                                  random_seed=0, progressbar=False, compute_convergence_checks=False)
            seconds = float(idata.sample_stats.attrs["sampling_time"])
        steps = np.asarray(idata.sample_stats["n_steps"])
        divergences = int(np.asarray(idata.sample_stats["diverging"]).sum())
        np.savez(args.folder / f"{sampler}.npz", **draws_of(idata.posterior, num_components))
        print(json.dumps(dict(sampler=sampler, version=(nutpie.__version__ if sampler == "nutpie" else pm.__version__),
                              seconds=seconds, leapfrog_per_draw=float(steps.mean()), divergences=divergences)), flush=True)


if __name__ == "__main__":
    main()
