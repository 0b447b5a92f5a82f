"""Write the cross-stack ArviZ fixtures of tests/test_arviz_stacks.py on the running ArviZ stack.

    python tests/data/make_arviz_fixtures.py                     # Python 3.11: ArviZ 0.x
    ../shared/tools/newest-python -- python tests/data/make_arviz_fixtures.py     # ArviZ 1.x

Writes ``arviz<major>_nuts.nc`` (an InferenceData of made-up NUTS-like draws, written by
``arviz_io.save_netcdf``) and ``arviz<major>_reference.json`` (what that stack's ArviZ computes from it:
summary, LOO, WAIC, compare, R-hat). The test reads every file on every stack.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from analysis import arviz_io  # noqa: E402
from inference.result import FitResult  # noqa: E402
from models.params import GMMParams, to_numpy  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def made_up_fit(seed: int, num_chains: int = 2, num_draws: int = 100):
    """(FitResult, x): 60 rows of a 2-component 2-D mixture and draws scattered around its truth."""
    rng = np.random.default_rng(seed)
    z = (rng.uniform(size=60) < 0.6).astype(int)
    centres = np.array([[1.0, 1.0], [-1.0, -1.0]])
    x = centres[z] + 0.8 * rng.normal(size=(60, 2))
    shape = (num_chains, num_draws)
    w0 = rng.beta(24, 36, size=shape)
    weights = np.stack([w0, 1 - w0], -1)
    means = centres + 0.15 * rng.normal(size=shape + (2, 2))
    scales = 0.8 * np.exp(0.1 * rng.normal(size=shape + (2, 1, 1)))
    scale_tril = scales * np.eye(2)
    samples = GMMParams(weights, means, scale_tril)
    params = to_numpy(GMMParams(*(a.mean((0, 1)) for a in samples)))
    result = FitResult(method="nuts", params=params, trace={}, samples=samples,
                       responsibilities=np.full((60, 2), 0.5), converged=True, num_iters=num_draws, seconds=0.0,
                       info={})
    return result, x


def reference(idata, other) -> dict:
    s = arviz_io.summary(idata)
    return {
        "arviz_version": arviz_io.arviz_version(),
        "summary": {row: {c: float(s.loc[row, c]) for c in s.columns} for row in s.index},
        "loo": arviz_io.loo(idata),
        "waic": arviz_io.waic(idata),
        "compare": {str(name): {c: (bool(v) if c == "warning" else float(v)) for c, v in row.items()}
                    for name, row in arviz_io.compare({"first": idata, "second": other}).iterrows()},
    }


def main() -> None:
    result, x = made_up_fit(0)
    other, _ = made_up_fit(1)
    idata = arviz_io.to_inference_data(result, x)
    other_idata = arviz_io.to_inference_data(other, x)
    major = arviz_io.ARVIZ_MAJOR
    arviz_io.save_netcdf(idata, HERE / f"arviz{major}_nuts.nc")
    (HERE / f"arviz{major}_reference.json").write_text(json.dumps(reference(idata, other_idata), indent=1) + "\n")
    print(f"wrote arviz{major}_nuts.nc and arviz{major}_reference.json (arviz {arviz_io.arviz_version()})")


if __name__ == "__main__":
    main()
