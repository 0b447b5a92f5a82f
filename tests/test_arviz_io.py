"""analysis.arviz_io: InferenceData groups/dims, NetCDF round trip, LOO, R-hat; arviz imported nowhere else."""

import pathlib
import re

import numpy as np
import pandas as pd
import pytest

import models
from analysis import arviz_io
from analysis.align import align_result, rhat_max
from analysis.arviz_io import _stack, convert
from fakes import fake_result


@pytest.fixture(scope="module")
def problem():
    truth = models.to_numpy(models.seed_problem())
    rng = np.random.default_rng(0)
    z = (rng.uniform(size=80) < 0.7).astype(int)
    x = np.asarray(truth.means)[z] + 0.7 * rng.normal(size=(80, 2))
    return truth, x


@pytest.mark.parametrize("method", ["em", "hard_em", "map", "svi", "nuts"])
def test_netcdf_round_trip_with_documented_groups_and_dims(problem, tmp_path, method):
    truth, x = problem
    r = align_result(fake_result(method, truth, x, num_draws=20, perm=[1, 0]), truth)
    idata = arviz_io.to_inference_data(r, x)
    path = tmp_path / f"{method}.nc"
    arviz_io.save_netcdf(idata, path)
    back = arviz_io.load_netcdf(path)
    groups = set(arviz_io.group_names(back))
    assert {"posterior", "log_likelihood", "sample_stats", "observed_data"} <= groups
    chains, draws = (2, 20) if method in ("nuts", "svi") else (1, 1)  # the fake SVI has 2 chains
    post = back.posterior
    assert post["weights"].dims == ("chain", "draw", "component")
    assert post["means"].dims == ("chain", "draw", "component", "dim")
    assert post["covariances"].dims == ("chain", "draw", "component", "dim", "dim_")
    assert post["means"].shape == (chains, draws, 2, 2)
    assert back.log_likelihood["x"].dims == ("chain", "draw", "obs")
    assert back.log_likelihood["x"].shape == (chains, draws, x.shape[0])
    np.testing.assert_allclose(back.observed_data["x"].values, x)
    assert back.log_likelihood["x"].dtype == np.float32  # stored at the precision LOO needs
    np.testing.assert_allclose(back.sample_stats["total_log_likelihood"].values, back.log_likelihood["x"].values.sum(-1),
                               rtol=1e-6)
    # pointwise values are the models' marginal density
    first = models.GMMParams(*(np.asarray(post[v].values[0, 0]) for v in ("weights", "means")),
                             np.linalg.cholesky(post["covariances"].values[0, 0]))
    np.testing.assert_allclose(back.log_likelihood["x"].values[0, 0], models.pointwise_log_likelihood(first, x), rtol=1e-6)
    assert post.attrs["method"] == method
    if method in ("em", "hard_em", "map", "svi"):
        assert "fit_trace" in groups and "iteration" in back["fit_trace"].dims
        np.testing.assert_allclose(back["fit_trace"]["log_likelihood"].values[: len(r.trace["log_likelihood"])],
                                   r.trace["log_likelihood"])
    if method == "em":
        assert {"elbo", "kl"} <= set(back["fit_trace"].data_vars)
    if method == "nuts":
        assert back.sample_stats["potential_energy"].dims == ("chain", "draw")
        assert back.sample_stats["diverging"].dtype == bool


def test_loo_compare_summary_and_rhat(problem):
    truth, x = problem
    ids = {m: arviz_io.to_inference_data(align_result(fake_result(m, truth, x, num_draws=40, seed=i), truth), x)
           for i, m in enumerate(("svi", "nuts"))}
    loo = arviz_io.loo(ids["nuts"])
    assert set(loo) == {"elpd_loo", "se", "p_loo", "pareto_k_max", "warning", "draws"} and np.isfinite(loo["elpd_loo"])
    assert loo["draws"] == 80
    cmp = arviz_io.compare(ids)
    assert set(cmp.index) == {"svi", "nuts"}
    # LOO computed once: compare from the engines' precomputed results is the same table, loo the same summary
    results = {m: arviz_io.loo_result(idata) for m, idata in ids.items()}
    pd.testing.assert_frame_equal(arviz_io.compare(ids, results), cmp, rtol=1e-12)
    assert arviz_io.loo(ids["nuts"], results["nuts"]) == loo
    s = arviz_io.summary(ids["nuts"])
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(s.columns) and len(s) == 2 + 4 + 8
    switched = fake_result("nuts", truth, x, num_draws=40, switch_chain=True).samples
    assert arviz_io.rhat_of_samples(switched)["means"] > 1.5
    # the aligned draws' R-hat of the report (inference.diagnostics) is ArviZ's number
    for samples in (switched, fake_result("nuts", truth, x, num_draws=40, seed=5).samples):
        ours, theirs = rhat_max(samples), arviz_io.rhat_of_samples(samples)
        assert set(ours) == set(theirs)
        for name in ours:
            assert ours[name] == pytest.approx(theirs[name], rel=1e-12), name


def test_log_likelihood_is_thinned_to_what_loo_needs_and_loo_stays_within_its_se(problem, tmp_path, monkeypatch):
    """Above LOGLIK_MAX_VALUES the pointwise log-likelihood keeps evenly spaced draws of each chain (never
    fewer than LOGLIK_MIN_DRAWS); the totals keep every draw; LOO moves far less than its standard error."""
    truth, x = problem
    r = align_result(fake_result("nuts", truth, x, num_draws=400, seed=3), truth)
    full = arviz_io.to_inference_data(r, x)
    assert full.log_likelihood["x"].shape == (2, 400, 80)  # 64,000 values: under the default limit
    monkeypatch.setattr(convert, "LOGLIK_MIN_DRAWS", 60)
    thin = _stack.assemble(convert.group_datasets(r, x, max_values=80 * 100))
    ll = thin.log_likelihood["x"]
    assert ll.shape == (2, 50, 80)
    np.testing.assert_array_equal(ll["draw"].values, np.linspace(0, 399, 50).round().astype(int))
    assert thin.sample_stats["total_log_likelihood"].shape == (2, 400)
    np.testing.assert_allclose(ll.values[1, -1], full.log_likelihood["x"].values[1, -1])
    a, b = arviz_io.loo(full), arviz_io.loo(thin)
    assert abs(a["elpd_loo"] - b["elpd_loo"]) < 0.1 * a["se"]
    # the file is compressed: smaller than its float64 payload
    arviz_io.save_netcdf(full, tmp_path / "f.nc")
    assert (tmp_path / "f.nc").stat().st_size < 0.8 * full.log_likelihood["x"].values.nbytes  # float64 would not fit


def test_loo_reads_more_draws_than_the_file_keeps(problem, tmp_path, monkeypatch):
    """PSIS's Pareto k needs many draws (at 50,000 rows 100 thinned draws gave k up to 2.7 and a warning, all 2,000
    gave 0.27): in memory, where the report's LOO reads, the group keeps every draw up to LOO_MAX_VALUES values;
    the file is thinned to LOGLIK_MAX_VALUES, evenly spaced draws of each chain, and says how many LOO used."""
    truth, x = problem
    r = align_result(fake_result("nuts", truth, x, num_draws=400, seed=3), truth)
    monkeypatch.setattr(convert, "LOGLIK_MAX_VALUES", 80 * 100)
    monkeypatch.setattr(convert, "LOGLIK_MIN_DRAWS", 60)
    idata = arviz_io.to_inference_data(r, x)
    assert idata.log_likelihood["x"].shape == (2, 400, 80)
    assert arviz_io.loo(idata)["draws"] == 800
    arviz_io.save_netcdf(idata, tmp_path / "n.nc")
    back = arviz_io.load_netcdf(tmp_path / "n.nc")
    ll = back.log_likelihood["x"]
    assert ll.shape == (2, 50, 80) and ll.attrs.get("loo_draws_in_report", back.log_likelihood.attrs.get("loo_draws_in_report")) == 800
    kept = np.linspace(0, 399, 50).round().astype(int)
    np.testing.assert_array_equal(ll["draw"].values, kept)
    np.testing.assert_allclose(ll.values, idata.log_likelihood["x"].values[:, kept], rtol=1e-6)  # float32 in the file
    assert back.posterior["means"].shape[:2] == (2, 400) and back.sample_stats["total_log_likelihood"].shape == (2, 400)
    assert arviz_io.loo(back)["draws"] == 100
    dropped = arviz_io.drop_loo_draws(idata)  # the report gives the extra draws' memory back after LOO
    np.testing.assert_array_equal(dropped.log_likelihood["x"]["draw"].values, kept)
    assert dropped.posterior["means"].shape[:2] == (2, 400)


def test_loo_in_a_worker_process_is_the_in_process_loo(problem, monkeypatch):
    """arviz_io.loo_pool: the report's LOO of a large engine runs in a worker process; same numbers as here
    (elpd, se, p_loo, every Pareto k, the draws), and computed here when the worker cannot start."""
    from analysis.arviz_io import loo_pool

    truth, x = problem
    idata = arviz_io.to_inference_data(align_result(fake_result("nuts", truth, x, num_draws=200, seed=4), truth), x)
    here = arviz_io.loo_result(idata)
    monkeypatch.setattr(loo_pool, "MIN_VALUES", 0)
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pending = arviz_io.submit_loo(idata)
        assert pending.in_worker
        worker = pending.result()
        pending._thread = None
        gc.collect()  # the worker's Popen and its pipes are garbage now: nothing left open (the 25M report's notes)
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
    assert pending.worker_error is None  # the worker's own answer
    assert arviz_io.loo(idata, worker) == arviz_io.loo(idata, here)
    np.testing.assert_array_equal(np.asarray(worker["pareto_k"] if arviz_io.ARVIZ_MAJOR < 1 else worker.pareto_k),
                                  np.asarray(here["pareto_k"] if arviz_io.ARVIZ_MAJOR < 1 else here.pareto_k))
    monkeypatch.setattr(loo_pool.sys, "executable", "/nonexistent/python")
    fallback = arviz_io.submit_loo(idata)
    assert fallback.in_worker and arviz_io.loo(idata, fallback.result()) == arviz_io.loo(idata, here)
    assert "nonexistent" in fallback.worker_error
    monkeypatch.setattr(loo_pool, "MIN_VALUES", 10**12)
    assert not arviz_io.submit_loo(idata).in_worker  # small: computed here (a worker's start-up would cost more)


def test_arviz_is_imported_only_in_arviz_io():
    """Only the modules of the package analysis/arviz_io/ import ArviZ (arviz, arviz_base, arviz_stats,
    arviz_plots), at module level or inside a function; every other file gets it through the adapter."""
    root = pathlib.Path(__file__).resolve().parents[1]
    adapter = root / "analysis" / "arviz_io"
    offenders = []
    for layer in ("analysis", "inference", "models"):
        for path in (root / layer).rglob("*.py"):
            text = path.read_text()
            if path.parent != adapter and re.search(r"^\s*(import arviz|from arviz)", text, re.M):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []
    assert any(re.search(r"^\s*import arviz", p.read_text(), re.M) for p in adapter.glob("*.py"))  # the check sees it


# --------------------------------------------------------------------------- NUTS's sampler statistics (issue 21)


def test_nuts_sample_stats_carry_arviz_names_and_give_bfmi(problem, tmp_path):
    truth, x = problem
    r = align_result(fake_result("nuts", truth, x, num_draws=40, perm=[1, 0], sampler=True), truth)
    arviz_io.save_netcdf(arviz_io.to_inference_data(r, x), tmp_path / "nuts.nc")
    back = arviz_io.load_netcdf(tmp_path / "nuts.nc")
    stats = back.sample_stats
    assert {"energy", "diverging", "step_size", "tree_depth", "n_steps", "acceptance_rate"} <= set(stats.data_vars)
    assert stats["energy"].dims == ("chain", "draw") and stats["energy"].shape == (2, 40)
    energy = np.asarray(r.trace["energy"]).reshape(2, 40)
    by_hand = np.square(np.diff(energy, axis=1)).sum(1) / np.square(energy - energy.mean(1, keepdims=True)).sum(1)
    np.testing.assert_allclose(arviz_io.bfmi(back), by_hand, rtol=1e-10)  # Betancourt's E-BFMI, per chain
    sampler = arviz_io.sampler_stats(back, max_tree_depth=10)
    assert sampler["bfmi"] == pytest.approx(list(by_hand)) and sampler["step_size"] == pytest.approx([0.3, 0.35])
    assert sampler["tree_depth_max"] == 4 and sampler["hit_max_tree_depth"] == 0.0 and sampler["divergences"] == 0
    ranks = arviz_io.rank_histograms(back, [1])
    assert [t for t, _ in ranks["panels"]][:3] == ["weight of component 0", "weight of component 1", "mean of 1, component 0"]
    assert all(c.shape == (2, 20) and c.sum() == 80 for _, c in ranks["panels"])
    assert arviz_io.sampler_stats(arviz_io.to_inference_data(fake_result("em", truth, x), x)) is None


def test_netcdf_dims_are_named_by_column(problem, tmp_path):
    truth, x = problem
    r = align_result(fake_result("nuts", truth, x, num_draws=20), truth)
    idata = arviz_io.to_inference_data(r, x, ["eruptions", "waiting"])
    arviz_io.save_netcdf(idata, tmp_path / "n.nc")
    back = arviz_io.load_netcdf(tmp_path / "n.nc")
    for name in ("dim", "dim_"):
        assert list(back.posterior[name].values) == ["eruptions", "waiting"]
    assert list(back.observed_data["dim"].values) == ["eruptions", "waiting"]
    assert float(back.posterior["means"].sel(dim="waiting", component=1).mean()) == pytest.approx(
        float(r.samples.means[..., 1, 1].mean()))
    index = list(arviz_io.summary(back).index)
    assert "means[0, waiting]" in index and "covariances[1, eruptions, waiting]" in index
    assert list(arviz_io.to_inference_data(r, x).posterior["dim"].values) == [0, 1]  # no names: 0, 1, ...


@pytest.mark.timeout(600)
def test_nuts_netcdf_passes_arviz_bfmi(tmp_path):
    """A real NUTS fit's nuts.nc holds the energy ArviZ's BFMI needs (az.bfmi raised "Energy variable was not
    found" before): through the adapter and through the running stack's own function (arviz.bfmi on 0.x,
    arviz_stats.bfmi on 1.x)."""
    import jax

    from inference import fit

    truth = models.seed_problem()
    x, _ = models.sample(jax.random.PRNGKey(5), truth, 150)
    x = np.asarray(x)
    r = fit("nuts", jax.random.PRNGKey(6), x, 2, init=truth, num_warmup=150, num_samples=150, progress=False,
            num_assignment_draws=0)
    r = align_result(r, models.to_numpy(truth))
    arviz_io.save_netcdf(arviz_io.to_inference_data(r, x, ["a", "b"]), tmp_path / "nuts.nc")
    back = arviz_io.load_netcdf(tmp_path / "nuts.nc")
    ours = arviz_io.bfmi(back)
    if arviz_io.ARVIZ_MAJOR >= 1:
        import arviz_stats

        theirs = arviz_stats.bfmi(back)
        theirs = theirs["energy"] if hasattr(theirs, "data_vars") else theirs
    else:
        import arviz

        theirs = arviz.bfmi(back)
    theirs = np.asarray(getattr(theirs, "values", theirs), float)
    assert ours.shape == (2,) and np.all(np.isfinite(ours)) and np.all(ours > 0.3)  # a healthy two-Gaussian posterior
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)
    stats = back.sample_stats
    assert np.all(stats["step_size"].values > 0) and np.all(np.ptp(stats["step_size"].values, axis=1) == 0)  # adapted, then fixed
    assert np.all(stats["tree_depth"].values >= 1) and np.all(stats["tree_depth"].values <= 10)
    steps = stats["n_steps"].values
    assert np.all((2 ** (stats["tree_depth"].values - 1) <= steps) & (steps <= 2 ** stats["tree_depth"].values - 1))
    assert 0.5 < float(stats["acceptance_rate"].values.mean()) <= 1.0
