"""Predictive groups in the InferenceData (both ArviZ stacks) and the predictive check figure from ArviZ's densities."""

import jax
import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

import models  # noqa: E402
from analysis import arviz_io, plots  # noqa: E402
from analysis.predictive import num_replicates, posterior_predictive, prior_predictive  # noqa: E402
from inference import fit  # noqa: E402


def test_predictive_groups_round_trip_netcdf_with_documented_dims(tmp_path):
    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 120)
    x = np.asarray(x)
    result = fit("map", jax.random.PRNGKey(1), x, 2)
    x_rep = posterior_predictive(jax.random.PRNGKey(2), result, x.shape[0])
    prior_params, x_prior = prior_predictive(jax.random.PRNGKey(3), result.info["prior"], x.shape[0], 2, 2)
    s = num_replicates(120, 2)
    assert x_rep.shape == (s, 120, 2) and x_prior.shape == (s, 120, 2) and prior_params.means.shape == (s, 2, 2)
    idata = arviz_io.add_groups(arviz_io.to_inference_data(result, x),
                                arviz_io.predictive_groups(x_rep, prior_params, x_prior))
    path = arviz_io.save_netcdf(idata, tmp_path / "map.nc")
    back = arviz_io.load_netcdf(path)
    assert {"posterior_predictive", "prior", "prior_predictive", "observed_data"} <= set(arviz_io.group_names(back))
    assert back["posterior_predictive"]["x"].dims == ("chain", "draw", "obs", "dim")
    assert back["posterior_predictive"]["x"].shape == (1, s, 120, 2)
    assert back["prior"]["means"].dims == ("chain", "draw", "component", "dim")
    np.testing.assert_allclose(back["prior_predictive"]["x"].values[0], x_prior, rtol=1e-6)  # stored as float32
    # the prior draws are from the prior in the data's units: centred on the data's mean
    assert np.all(np.abs(np.median(prior_params.means.reshape(-1, 2), axis=0) - x.mean(0)) < 3 * 10 * x.std(0) / np.sqrt(2 * s))
    densities = arviz_io.ppc_densities(back)
    assert [d["dim"] for d in densities] == [0, 1] and len(densities[0]["replicated"]) == min(s, 50)
    grid, pdf = densities[0]["observed"]
    assert grid.shape == pdf.shape and np.all(pdf >= 0) and abs(np.trapezoid(pdf, grid) - 1) < 0.05  # a density
    fig = plots.plot_ppc(densities, title="map", column_names=["a", "b"])
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2  # one panel per dimension
    assert [ax.get_xlabel() for ax in fig.axes] == ["a", "b"]
    fig = plots.plot_ppc(arviz_io.ppc_densities(back, "prior_predictive"), group="prior_predictive")
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2


def test_ppc_figure_with_fewer_stored_replicates_than_drawn_lines():
    """Large N x D keeps only a few replicated data sets in the file (``predictive.stored_count``): the
    figure draws those instead of 50 (ArviZ's own plot refused: "num_pp_samples must be an integer
    between 1 and 2")."""
    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 100)
    x = np.asarray(x)
    result = fit("em", jax.random.PRNGKey(1), x, 2)
    x_rep = posterior_predictive(jax.random.PRNGKey(2), result, x.shape[0])[:2]
    idata = arviz_io.add_groups(arviz_io.to_inference_data(result, x), arviz_io.predictive_groups(x_rep))
    densities = arviz_io.ppc_densities(idata, num_draws=50)
    assert [len(d["replicated"]) for d in densities] == [2, 2]
    fig = plots.plot_ppc(densities, title="em")
    assert len([ax for ax in fig.axes if ax.has_data()]) == 2


def test_large_data_replicates_are_drawn_in_batches_with_the_same_checks(monkeypatch):
    """Above MAX_ELEMENTS numbers the replicates are drawn a batch at a time (never S full-size data sets
    at once): the p-values are those of all the replicates, the stored ones their first, the prior keeps
    every parameter draw."""
    import analysis.predictive as predictive
    from analysis.sweeps.common import key as rng_key

    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 150)
    x = np.asarray(x)
    result = fit("map", jax.random.PRNGKey(1), x, 2)
    monkeypatch.setattr(predictive, "MAX_ELEMENTS", 4 * 150 * 2)  # S = 10 replicates, 4 per batch
    monkeypatch.setattr(predictive, "STORED_ELEMENTS", 6 * 150 * 2)  # 6 stored: across two batches
    assert predictive.num_replicates(150, 2) == 10 and predictive._batch_size(150, 2) == 4
    batches = list(predictive.posterior_predictive_batches(rng_key(5, 7, 0, 0), result, 150))
    assert [b.shape[0] for b in batches] == [4, 4, 2]
    every = np.concatenate(batches)
    draws, p_values = predictive.predictive_checks(5, {"map": result}, x)
    want = predictive.predictive_p_values(x, every)
    for name in predictive.STATISTICS:
        np.testing.assert_array_equal(p_values["map"][name], want[name])
    np.testing.assert_array_equal(draws["map"]["x_rep"], every[:6])
    assert draws["map"]["x_prior"].shape == (6, 150, 2) and draws["map"]["prior_params"].means.shape == (10, 2, 2)
    assert len({float(b[0, 0, 0]) for b in batches}) == 3  # each batch its own key


def test_ppc_curves_share_the_observed_columns_bandwidth():
    """Every curve of a column (each replicate, the pool) is smoothed with the bandwidth ArviZ's rule picks for the
    observed column, and is the Gaussian KDE with that bandwidth: scipy's ``gaussian_kde`` agrees within 3% of the
    peak away from the grid's ends (ArviZ bins and corrects the boundaries)."""
    from scipy.stats import gaussian_kde

    x, _ = models.sample(jax.random.PRNGKey(0), models.seed_problem(), 300)
    x = np.asarray(x)
    result = fit("em", jax.random.PRNGKey(1), x, 2)
    x_rep = posterior_predictive(jax.random.PRNGKey(2), result, x.shape[0])[:5]
    idata = arviz_io.add_groups(arviz_io.to_inference_data(result, x), arviz_io.predictive_groups(x_rep))
    for column in arviz_io.ppc_densities(idata):
        j = column["dim"]
        _, _, bw = arviz_io.kde(x[:, j], return_bw=True)
        assert bw > 0
        curves = [(x[:, j], column["observed"])] + list(zip(x_rep[:, :, j], column["replicated"]))
        curves.append((x_rep[:, :, j].ravel(), column["pooled"]))
        for values, (grid, pdf) in curves:
            reference = gaussian_kde(values, bw_method=bw / values.std(ddof=1))(grid)
            inner = (grid > grid.min() + 3 * bw) & (grid < grid.max() - 3 * bw)
            assert inner.sum() > 100
            assert np.max(np.abs(pdf[inner] - reference[inner])) < 0.03 * reference.max()
