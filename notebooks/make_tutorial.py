"""Build notebooks/tutorial.ipynb (no outputs) with nbformat: ``python notebooks/make_tutorial.py``.

The notebook walks the seed notebook's path with this library and then answers its four closing
questions with ``analysis.sweeps``. Sizes are small so that it executes in CI in about a minute
or two on a 2-core CPU (``tests/test_notebook.py``); the markdown says how to scale up.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# Gaussian mixtures: hard EM, EM, MAP, SVI and NUTS — a tutorial

This notebook follows the seed notebook (sample a 2-component GMM, run k-means-style hard EM and EM with
per-iteration plots, compare with the truth) using this library, then adds the NumPyro engines (MAP, SVI,
NUTS) with an ArviZ summary, and finally answers the seed's four closing questions with the sweep API
(`analysis.sweeps.run_sweep`, also `gmm-report sweep <axis>` on the command line).

Sizes are kept small so that the notebook runs in CI in a minute or two; every cell says what to change
for a real run."""),
    ("code", """import time
import warnings

import jax
import numpy as np
import matplotlib.pyplot as plt

import models                                   # turns on float64
from inference import fit
from analysis import plots, score, sweeps, selection, arviz_io
from analysis.align import align_params

warnings.filterwarnings("ignore")
T0 = time.perf_counter()
N = 300                                         # the seed used 500; any N works
key = jax.random.PRNGKey(0)"""),
    ("md", """## 1. Sample from the GMM

The truth is the seed's: weights (0.3, 0.7), means (1, 1) and (-1, -1), covariances I and 0.5 I.
`models.sample` runs the declared NumPyro model (`models.gmm_model`) forward with these parameters
substituted, and returns the data **and** the true component of every row."""),
    ("code", """truth = models.seed_problem()
x, z = models.sample(jax.random.fold_in(key, 1), truth, N)
x, z = np.asarray(x), np.asarray(z)
print("x", x.shape, "  share of component 0:", (z == 0).mean())
plots.plot_data(x, z);"""),
    ("md", """## 2. Hard EM and EM, with their per-iteration pictures

`fit(method, key, x, K, **options)` is the one entry point. `init="random_from_data"` is the seed's
initialisation (means at random rows). Both engines keep a few snapshots of their estimate along the
iterations (`info["snapshots"]`), which replace the seed's one-figure-per-iteration loop."""),
    ("code", """hard = fit("hard_em", jax.random.fold_in(key, 2), x, 2, init="random_from_data")
em = fit("em", jax.random.fold_in(key, 2), x, 2, init="random_from_data")
for r in (hard, em):
    print(f"{r.method:8s} iterations {r.num_iters:3d}  converged {r.converged}  final log-lik {r.trace['log_likelihood'][-1]:.2f}")
plots.plot_em_snapshots(x, hard.info["snapshots"], hard.info["snapshot_iters"], truth=truth, method="hard_em");
plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth=truth, method="em");"""),
    ("md", """The traces: log-likelihood for both, EM's ELBO and the KL gap (log-lik − ELBO ≥ 0, the seed's third plot)."""),
    ("code", """plots.plot_traces({"hard_em": hard, "em": em});"""),
    ("md", """## 3. Compare with the truth — after alignment

Mixture components are only defined up to a permutation, so estimates are first matched to the truth
(Hungarian method on a symmetrised Gaussian KL), then compared."""),
    ("code", """for r in (hard, em):
    aligned, perm = align_params(truth, r.params)
    errs = score.component_errors(truth, aligned)
    print(f"{r.method:8s} perm {perm}  weights {np.round(aligned.weights, 3)}")
    for name, v in errs.items():
        print(f"          {name:22s} {np.round(v, 3)}")
plots.plot_components(x, {"hard_em": hard, "em": em}, truth=truth);"""),
    ("md", """## 4. MAP, SVI and NUTS on the same NumPyro model

The discrete assignments `z` are summed out (enumeration). MAP finds the posterior mode, SVI fits a
variational posterior started at the MAP point, NUTS samples the posterior. The settings below are
small for CI; the engines' defaults are larger (see `help(inference.numpyro_nuts.fit_nuts)`)."""),
    ("code", """map_opts = dict(num_steps=500, n_init=2)
map_fit = fit("map", jax.random.fold_in(key, 3), x, 2, **map_opts)
svi_fit = fit("svi", jax.random.fold_in(key, 4), x, 2, num_steps=500, num_draws=200, map_options=map_opts)
nuts_fit = fit("nuts", jax.random.fold_in(key, 5), x, 2, num_chains=1, num_warmup=150, num_samples=150,
               progress=False, map_options=map_opts)
results = {"hard_em": hard, "em": em, "map": map_fit, "svi": svi_fit, "nuts": nuts_fit}
for name, r in results.items():
    aligned, _ = align_params(truth, r.params)
    e = score.component_errors(truth, aligned)
    print(f"{name:8s} {r.seconds:6.1f} s   max mean error {e['mean_l2_error'].max():.3f}   max weight error {e['weight_abs_error'].max():.3f}")
plots.plot_components(x, results, truth=truth);"""),
    ("md", """ArviZ sees every engine through one conversion (`analysis.arviz_io.to_inference_data`): posterior draws
(NUTS, SVI) or a single draw (point engines), the pointwise log-likelihood for LOO, and the traces."""),
    ("code", """idata = arviz_io.to_inference_data(nuts_fit, x)
print("PSIS-LOO of NUTS:", {k: round(v, 2) if isinstance(v, float) else v for k, v in arviz_io.loo(idata).items()})
arviz_io.summary(idata)"""),
    ("md", """## 5. The seed's four questions, as experiments

Each question is one sweep: `run_sweep(axis, seed=..., quick=..., methods=..., repeats=...)` returns
its tables (lists of row dicts; columns in `sweeps.COLUMNS[axis]`) and `plot_sweep(axis, tables)` its
figures. `out_dir=...` (or `gmm-report sweep <axis> --out DIR`) also writes CSV, JSON, PNG and an HTML
page. Here: EM and hard EM only, few repeats and small grids; for the full experiments with every
engine run e.g. `gmm-report sweep separation` (NUTS uses fewer repeats; each sweep's page says so)."""),
    ("md", """### 5a. Different true parameters: separation, covariance shape, weight imbalance

Hard EM assigns each point to one cluster, so on overlapping clusters each cluster is truncated at the
decision boundary: the means are pushed apart and the covariances shrink. `hard_em_bias` measures this
against soft EM on the same data."""),
    ("code", """sep = sweeps.run_sweep("separation", seed=0, quick=True, methods=("em", "hard_em"), num_samples=200, repeats=2)
for row in sep["hard_em_bias"]:
    if row["scenario"] == "distance":
        print(f"d = {row['distance']:3.1f}: separation bias EM {row['separation_bias_em']:+.2f}  hard EM {row['separation_bias_hard_em']:+.2f}"
              f"   cov trace ratio EM {row['cov_trace_ratio_em']:.2f}  hard EM {row['cov_trace_ratio_hard_em']:.2f}")
sep_figs = sweeps.plot_sweep("separation", sep)"""),
    ("md", """### 5b. Different initialisations

Many seeds × each init method on one 5-component data set: how often does each reach the best mode,
after how many iterations, and how often do components collapse (EM) or empty (hard EM, re-seeded)?"""),
    ("code", """ini = sweeps.run_sweep("init", seed=0, quick=True, methods=("em", "hard_em"), repeats=6, num_samples=300)
for row in ini["summary"]:
    print(f"{row['method']:8s} {row['init']:17s} reached best {row['share_reached_best']:.0%}   median iterations {row['iters_median']:5.1f}"
          f"   runs with collapse {row['share_with_collapse']:.0%}")
ini_figs = sweeps.plot_sweep("init", ini)"""),
    ("md", """### 5c. Different numbers of samples

The error of a consistent estimator falls like 1/√n (slope −0.5 on log-log axes). Hard EM's error
stops falling: its bias does not vanish with more data."""),
    ("code", """smp = sweeps.run_sweep("samples", seed=0, quick=True, methods=("em", "hard_em"), num_samples=[50, 200, 1000, 5000], repeats=2)
for row in smp["slopes"]:
    print(f"{row['method']:8s} slope of log error vs log n: means {row['slope_mean_err']:+.2f}   covariances {row['slope_cov_err']:+.2f}")
smp_figs = sweeps.plot_sweep("samples", smp)"""),
    ("md", """### 5d. Different numbers of clusters

Fit K = 1..5 to data from a 3-component mixture and let BIC, AIC and ICL choose (sklearn's convention:
lower is better). With `methods=("em", "nuts")` the table also gets PSIS-LOO and WAIC. The same works on
your own data: `selection.select_num_components(x, ks, key)` or
`gmm-report sweep components --data points.csv`."""),
    ("code", """cmp = sweeps.run_sweep("components", seed=0, quick=True, methods=("em",), ks=range(1, 6), num_samples=300)
print("selected K:", cmp["selection"]["selected_k"], "  true K:", cmp["selection"]["true_k"])
for row in cmp["criteria"]:
    print(f"K={row['k']}  BIC {row['bic']:9.1f}  AIC {row['aic']:9.1f}  ICL {row['icl']:9.1f}")
cmp_figs = sweeps.plot_sweep("components", cmp)"""),
    ("code", """print(f"notebook ran in {time.perf_counter() - T0:.0f} s")"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src) for kind, src in CELLS]
    return nb


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).with_name("tutorial.ipynb")
    nbformat.write(build(), str(out))
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
