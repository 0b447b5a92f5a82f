"""Test helpers: hand-made FitResults for the tests of the analysis layer (no engine is run).

Imported by the tests as ``from fakes import fake_result`` (pytest puts ``tests/`` on ``sys.path``).
Imports: numpy, ``inference.result`` and ``models``.

``fake_result`` builds a FitResult near the truth: perturbed, optionally label-permuted parameters,
plausible traces for the named method and, for "nuts"/"svi", draws with optional label switching
between chains.
"""

from __future__ import annotations

import numpy as np

from inference.result import FitResult
from models.density import log_likelihood, responsibilities
from models.params import GMMParams, from_covariances, covariances, permute, to_numpy

__all__ = ["fake_result", "perturb"]


def perturb(truth: GMMParams, rng: np.random.Generator, scale: float = 0.05) -> GMMParams:
    """Truth with jittered weights, means and covariances (still valid)."""
    truth = to_numpy(truth)
    w = truth.weights * np.exp(scale * rng.normal(size=truth.weights.shape))
    w = w / w.sum()
    mu = truth.means + scale * rng.normal(size=truth.means.shape)
    covs = np.asarray(covariances(truth))
    d = covs.shape[-1]
    a = np.eye(d) + scale * rng.normal(size=covs.shape)
    covs = a @ covs @ np.swapaxes(a, -1, -2)
    return to_numpy(from_covariances(w, mu, covs))


def fake_result(method: str, truth: GMMParams, x, *, seed: int = 0, perm=None, num_chains: int = 2,
                num_draws: int = 50, switch_chain: bool = False, num_iters: int = 12, sampler: bool = False) -> FitResult:
    """A FitResult such as engine ``method`` might return, with components permuted by ``perm``; NUTS with
    ``sampler`` also records its sampler's statistics (energy, step size, tree depth, ...)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x)
    k = np.shape(truth.weights)[0]
    perm = np.arange(k) if perm is None else np.asarray(perm)
    params = to_numpy(permute(perturb(truth, rng), perm))
    ll_end = float(log_likelihood(params, x))
    steps = np.arange(num_iters)
    ll = ll_end - 50.0 * np.exp(-steps / 2.0)
    trace = {"log_likelihood": ll}
    info: dict = {"compile_seconds": 0.1, "run_seconds": 0.05}
    samples = None
    resp = np.asarray(responsibilities(params, x))
    if method == "em":
        kl = 5.0 * np.exp(-steps / 1.5)
        trace.update(elbo=ll - kl, kl=kl)
        snaps = [perturb(truth, rng, 0.5 / (i + 1)) for i in range(3)]
        info["snapshots"] = GMMParams(*(np.stack([np.asarray(s[j]) for s in snaps]) for j in range(3)))
        info["snapshot_iters"] = np.array([0, 1, num_iters - 1])
    elif method == "hard_em":
        trace["classification_log_likelihood"] = ll - 20.0
        resp = np.eye(k)[resp.argmax(-1)]
        info["assignments"] = resp.argmax(-1)
    elif method in ("map", "svi"):
        trace["loss"] = -ll + 10.0
    if method in ("svi", "nuts"):
        draws = [[to_numpy(permute(perturb(truth, rng, 0.05), perm)) for _ in range(num_draws)] for _ in range(num_chains)]
        if switch_chain and num_chains > 1:
            rev = np.arange(k)[::-1]
            draws[-1] = [to_numpy(permute(p, rev)) for p in draws[-1]]
        samples = GMMParams(*(np.array([[np.asarray(p[j]) for p in chain] for chain in draws]) for j in range(3)))
    if method == "nuts":
        trace = {"log_likelihood": np.full(num_chains * num_draws, ll_end) + rng.normal(size=num_chains * num_draws),
                 "potential_energy": np.full(num_chains * num_draws, -ll_end) + rng.normal(size=num_chains * num_draws)}
        info["num_divergences"] = 0
        info["diverging"] = np.zeros((num_chains, num_draws), bool)
        num_iters = num_draws
    if method == "nuts" and sampler:  # the sampler's statistics, as inference.numpyro_nuts records them (chain-major)
        trace["energy"] = trace["potential_energy"] + rng.gamma(4.0, size=num_chains * num_draws)
        trace["accept_prob"] = rng.uniform(0.6, 1.0, size=num_chains * num_draws)
        trace["num_steps"] = rng.choice([3, 7, 15], size=num_chains * num_draws)
        trace["step_size"] = np.repeat(0.3 + 0.05 * np.arange(num_chains), num_draws)
        trace["tree_depth"] = np.floor(np.log2(trace["num_steps"])).astype(int) + 1
    return FitResult(method=method, params=params, trace=trace, samples=samples, responsibilities=resp,
                     converged=True, num_iters=num_iters, seconds=0.15, info=info)
