"""Both ArviZ stacks (0.x on Python 3.11, 1.x on Python >= 3.12) through analysis.arviz_io.

The fixtures in tests/data were written by ``tests/data/make_arviz_fixtures.py`` once on each stack:
``arviz0_*`` on ArviZ 0.23, ``arviz1_*`` on ArviZ 1.3. Every test runs on whichever stack is installed,
so CI's two legs check a file written on one stack opens on the other and that both compute the same
numbers. References that no one here wrote: the WAIC formula and importance-sampling LOO with scipy.
"""

import json
import math
import pathlib
import sys

import numpy as np
import pytest
from scipy.special import logsumexp

from analysis import arviz_io

DATA = pathlib.Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_arviz_fixtures import made_up_fit, reference  # noqa: E402

STACKS = (0, 1)


@pytest.fixture(scope="module")
def fits():
    (result, x), (other, _) = made_up_fit(0), made_up_fit(1)
    return result, other, x


@pytest.mark.parametrize("stack", STACKS)
def test_netcdf_from_either_stack_reloads_with_documented_layout(fits, stack):
    result, _, x = fits
    back = arviz_io.load_netcdf(DATA / f"arviz{stack}_nuts.nc")
    assert {"posterior", "log_likelihood", "sample_stats", "observed_data"} <= set(arviz_io.group_names(back))
    post = back.posterior
    assert post["weights"].dims == ("chain", "draw", "component")
    assert post["covariances"].dims == ("chain", "draw", "component", "dim", "dim_")
    assert back.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert back.observed_data["x"].dims == ("obs", "dim")
    np.testing.assert_allclose(post["means"].values, result.samples.means, rtol=1e-12)
    np.testing.assert_allclose(back.observed_data["x"].values, x, rtol=1e-12)
    assert post.attrs["method"] == "nuts"


def _to_0x_se(value: float, stack: int, n: int) -> float:
    """ArviZ 1.x (like R's loo) takes the pointwise variance with ddof=1 in the LOO standard error,
    ArviZ 0.x with ddof=0: the same estimate times sqrt(n / (n - 1))."""
    return value * math.sqrt((n - 1) / n) if stack >= 1 else value


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _flatten(v, f"{prefix}/{k}")
    else:
        yield prefix, tree


@pytest.mark.parametrize("stack", STACKS)
def test_same_numbers_as_the_other_stack(fits, stack):
    """summary (mean, sd, HDI, MCSE, bulk/tail ESS, rank R-hat), LOO, WAIC and compare equal those the
    other stack computed from the same draws (only LOO's standard errors differ by a known factor)."""
    result, other, x = fits
    n = x.shape[0]
    ours = reference(arviz_io.to_inference_data(result, x), arviz_io.to_inference_data(other, x))
    theirs = json.loads((DATA / f"arviz{stack}_reference.json").read_text())
    mine = dict(_flatten(ours))
    checked = 0
    for path, value in _flatten(theirs):
        if path == "/arviz_version":
            continue
        got = mine[path]
        if isinstance(value, bool):
            assert got == value, path
            continue
        if path.endswith("/se") and (path.startswith("/loo") or path.startswith("/compare")):
            value, got = _to_0x_se(value, stack, n), _to_0x_se(got, arviz_io.ARVIZ_MAJOR, n)
        assert got == pytest.approx(value, rel=1e-8, abs=1e-10, nan_ok=True), path  # constant entries: NaN on both
        checked += 1
    assert checked > 100


def test_waic_and_loo_against_formulas(fits):
    result, _, x = fits
    idata = arviz_io.to_inference_data(result, x)
    ll = np.asarray(idata.log_likelihood["x"].values).reshape(-1, x.shape[0])
    s, n = ll.shape
    # WAIC (Watanabe 2010; Vehtari, Gelman & Gabry 2017, eq. 11-13), population variance as ArviZ
    lppd_i = logsumexp(ll, axis=0) - math.log(s)
    p_i = ll.var(axis=0)
    elpd_i = lppd_i - p_i
    w = arviz_io.waic(idata)
    assert w["elpd_waic"] == pytest.approx(elpd_i.sum(), rel=1e-12)
    assert w["p_waic"] == pytest.approx(p_i.sum(), rel=1e-12)
    assert w["se"] == pytest.approx(math.sqrt(n * elpd_i.var()), rel=1e-10)
    assert arviz_io.waic_of_pointwise(ll) == pytest.approx(w, rel=1e-12)
    # LOO: p_loo = lppd - elpd_loo exactly; elpd_loo near plain importance-sampling LOO (PSIS only
    # smooths the largest weights: with well-behaved draws the two agree to a small fraction of the se)
    lo = arviz_io.loo(idata)
    assert lo["p_loo"] == pytest.approx(lppd_i.sum() - lo["elpd_loo"], rel=1e-10)
    is_loo = float(np.sum(-(logsumexp(-ll, axis=0) - math.log(s))))
    assert abs(lo["elpd_loo"] - is_loo) < 0.1 * lo["se"]
    assert abs(lo["elpd_loo"] - w["elpd_waic"]) < 0.5 * lo["se"]
    assert lo["pareto_k_max"] < 0.7 and not lo["warning"]


def test_summary_and_compare_columns_are_the_same_on_both_stacks(fits):
    result, other, x = fits
    idata = arviz_io.to_inference_data(result, x)
    s = arviz_io.summary(idata)
    assert tuple(s.columns) == arviz_io.SUMMARY_COLUMNS
    assert list(s.index[:3]) == ["weights[0]", "weights[1]", "means[0, 0]"]
    cmp = arviz_io.compare({"first": idata, "second": arviz_io.to_inference_data(other, x)})
    assert tuple(cmp.columns) == arviz_io.COMPARE_COLUMNS
    assert cmp["elpd_diff"].min() == 0.0 and (cmp["elpd_diff"] >= 0).all()
    assert list(cmp["rank"]) == [0, 1]
