"""Compile latency (issue 23): what a new user waits for, against scikit-learn measured in the same run.

Usage:  python benchmarks/bench_latency.py [--skip-report] [--out FILE.json]

Three measurements, each in a fresh Python process so that nothing compiled earlier helps:

1. The README's GridSearchCV example (500 rows, D = 2, K = 1..5, cv = 3, n_init = 2) with
   ``inference.GaussianMixture``: the first ``search.fit`` (cold: every program compiled) and a second one
   in the same process (warm), against sklearn's ``GaussianMixture`` on the same grid (best of 3, one BLAS
   thread via threadpoolctl: OpenBLAS threads on tiny matrices spin on a loaded 2-core machine). The
   estimator API does not use a persistent compilation cache, so a fresh process is an empty cache.
2. ``gmm-report`` (the default problem, all five engines), cold (an empty persistent cache directory via
   ``GMM_REFERENCE_CACHE``) and warm (the same directory, second run): wall time, and SVI's compile seconds
   on the warm run from ``metrics.json``.
3. EM over 20 sample sizes (100 .. 10,000 rows, K = 2, D = 2): the number of compiled EM programs.
Before these: the import of numpy, ml_dtypes and JAX in a fresh process (best of 3): every report and worker pays it.

Targets (issue 23): GridSearchCV cold <= 50x sklearn, warm <= 3x; report warm <= 0.35x cold and <= 12 s on a
quiet machine, cold <= 30 s, SVI compile on a warm run <= 1 s; the size sweep <= 5 programs. The load average
is printed before and after: on a shared 2-core machine every number here moves with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GRID = r"""
import json, time, warnings
t0 = time.perf_counter()
import jax, numpy as np
import models
from sklearn.model_selection import GridSearchCV
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits
from inference import GaussianMixture
x = np.asarray(models.sample(jax.random.PRNGKey(0), models.seed_problem(), 500)[0])
grid = {"n_components": [1, 2, 3, 4, 5]}
imports = time.perf_counter() - t0
def run(estimator):
    start = time.perf_counter()
    search = GridSearchCV(estimator, grid, cv=3).fit(x)
    return time.perf_counter() - start, search.best_params_["n_components"]
cold, k_cold = run(GaussianMixture(random_state=0, n_init=2))
warm, k_warm = run(GaussianMixture(random_state=0, n_init=2))
with threadpool_limits(1), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sk = min(run(SkGaussianMixture(random_state=0, n_init=2))[0] for _ in range(3))
    k_sk = run(SkGaussianMixture(random_state=0, n_init=2))[1]
print(json.dumps(dict(imports=imports, cold=cold, warm=warm, sklearn=sk, k=[k_cold, k_warm, k_sk])))
"""

SIZES = r"""
import json, time
import jax, numpy as np
import models
from inference import em, fit
sizes = np.unique(np.geomspace(100, 10_000, 20).astype(int))
start = time.perf_counter()
for n in sizes:
    r = np.random.default_rng(int(n))
    x = np.concatenate([r.normal(-2, 1, (n // 2, 2)), r.normal(2, 0.7, (n - n // 2, 2))])
    fit("em", jax.random.PRNGKey(0), x, 2)
print(json.dumps(dict(sizes=len(sizes), programs=len(em._COMPILED), seconds=time.perf_counter() - start)))
"""


IMPORTS = r"""
import json, time
t0 = time.perf_counter()
import numpy
t1 = time.perf_counter()
import ml_dtypes
t2 = time.perf_counter()
import jax
t3 = time.perf_counter()
print(json.dumps(dict(numpy=t1 - t0, ml_dtypes=t2 - t1, jax=t3 - t2, versions=[numpy.__version__, ml_dtypes.__version__])))
"""


def _python(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _report(cache: str, out_dir: str) -> dict:
    env = dict(os.environ, GMM_REFERENCE_CACHE=cache)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "analysis", "--out", out_dir, "--force", "--quiet"], cwd=ROOT, env=env,
                   check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    return dict(wall=wall, compile_seconds=metrics["timings"]["compile_seconds"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-report", action="store_true", help="skip the two gmm-report runs (~2 minutes)")
    parser.add_argument("--out", help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    results = {"load_before": os.getloadavg(), "cpus": os.cpu_count()}
    imports = min((_python(IMPORTS) for _ in range(3)), key=lambda r: r["ml_dtypes"])
    results["imports"] = imports
    print(f"imports in a fresh process (best of 3): numpy {imports['numpy']:.2f} s, ml_dtypes {imports['ml_dtypes']:.2f} s, "
          f"the rest of jax {imports['jax']:.2f} s (numpy {imports['versions'][0]}, ml_dtypes {imports['versions'][1]}; "
          "ml_dtypes 0.7.0 with numpy 2.4 took ~1 s: pyproject.toml leaves it out on Python 3.11)")
    grid = _python(GRID)
    results["grid"] = grid
    print(f"GridSearchCV (500 x 2, K = 1..5, cv = 3, n_init = 2): cold {grid['cold']:.2f} s, warm {grid['warm']:.3f} s, "
          f"sklearn {grid['sklearn']:.3f} s (1 BLAS thread) -> cold {grid['cold'] / grid['sklearn']:.0f}x, "
          f"warm {grid['warm'] / grid['sklearn']:.1f}x; imports {grid['imports']:.1f} s; chosen K {grid['k']}")
    sizes = _python(SIZES)
    results["sizes"] = sizes
    print(f"EM over {sizes['sizes']} sample sizes (100..10,000): {sizes['programs']} compiled programs, "
          f"{sizes['seconds']:.1f} s in all")
    if not args.skip_report:
        with tempfile.TemporaryDirectory() as tmp:
            cache = str(Path(tmp) / "cache")
            cold = _report(cache, str(Path(tmp) / "cold"))
            warm = _report(cache, str(Path(tmp) / "warm"))
        results["report"] = dict(cold=cold, warm=warm)
        svi = warm["compile_seconds"].get("svi")
        print(f"gmm-report (default problem, five engines): cold {cold['wall']:.1f} s, warm {warm['wall']:.1f} s "
              f"({warm['wall'] / cold['wall']:.2f}x); SVI compile on the warm run "
              f"{'n/a' if svi is None else f'{svi:.2f} s'}; warm compile seconds "
              + ", ".join(f"{m} {s:.2f}" for m, s in warm["compile_seconds"].items() if s is not None))
    results["load_after"] = os.getloadavg()
    print(f"load average before {results['load_before'][0]:.1f}, after {results['load_after'][0]:.1f} "
          f"({results['cpus']} CPUs)")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
