"""analysis.plots: every figure renders under Agg with the expected number of axes (D = 1, 2, 3)."""

import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import models  # noqa: E402
from analysis import arviz_io, plots  # noqa: E402
from analysis.align import align_results  # noqa: E402
from fakes import fake_result  # noqa: E402

METHODS = ("em", "hard_em", "map", "svi", "nuts")


def _problem(d):
    truth = models.to_numpy(models.from_covariances(
        [0.3, 0.7], np.array([[1.0] * d, [-1.0] * d]), np.array([np.eye(d), 0.5 * np.eye(d)])))
    rng = np.random.default_rng(d)
    z = (rng.uniform(size=120) < 0.7).astype(int)
    x = truth.means[z] + rng.normal(size=(120, d)) * np.where(z[:, None] == 1, np.sqrt(0.5), 1.0)
    results = {m: fake_result(m, truth, x, perm=[1, 0], num_draws=10) for m in METHODS}
    aligned, _ = align_results(results, truth)
    return truth, x, z, aligned


def _render(fig):
    fig.savefig(io.BytesIO(), format="png", dpi=40)
    return fig


def _visible_axes(fig):
    return [ax for ax in fig.axes if ax.get_visible()]


@pytest.mark.parametrize("d", [1, 2, 3])
def test_figures_render_with_expected_axes(d):
    truth, x, z, aligned = _problem(d)
    pair_axes = d * (d + 1) // 2 if d > 2 else 1  # D > 2: a scatterplot matrix (lower triangle and diagonal)
    fig = _render(plots.plot_data(x, z))
    assert len(fig.axes) == pair_axes
    fig = _render(plots.plot_components(x, aligned, truth))
    assert len(fig.axes) == pair_axes
    assert fig.legends and len(fig.legends[0].get_texts()) == len(METHODS) + (2 if d > 1 else 1)
    fig = _render(plots.plot_assignments(x, aligned, truth))
    assert len(fig.axes) == len(METHODS)
    assert all(ax.get_title() for ax in fig.axes)
    fig = _render(plots.plot_traces(aligned))
    assert len(fig.axes) == 3  # log-lik/ELBO, KL, loss
    em = aligned["em"]
    fig = _render(plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], truth, truth))
    assert len(fig.axes) == len(em.info["snapshot_iters"])
    if d > 2:
        assert "principal components" in fig.get_supxlabel()


def test_traces_only_em_and_no_trace():
    truth, x, _, aligned = _problem(2)
    fig = plots.plot_traces({"em": aligned["em"]})
    assert len(fig.axes) == 2  # log-lik/ELBO and KL
    assert plots.plot_traces({"nuts": aligned["nuts"]}) is None


def test_arviz_forest_and_trace_figures():
    truth, x, _, aligned = _problem(2)
    ids = {m: arviz_io.to_inference_data(r, x) for m, r in aligned.items()}
    fig = _render(plots.plot_forest_panels(arviz_io.forest_intervals(ids), arviz_io.reference_kinds(truth),
                                           reference_label="truth", column_names=["height", "width"]))
    assert len(fig.legends) == 1
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == [plots.engine_label(m) for m in METHODS] + ["truth"]
    titles = [ax.get_title() for ax in fig.axes]
    # one panel per kind and column, each with its own scale
    assert titles == ["weights", "correlation height ~ width", "mean of height", "sd of height", "mean of width",
                      "sd of width"]
    assert "aligned to the truth" in fig.get_suptitle()
    kinds, method = arviz_io.posterior_kinds(ids["nuts"])
    assert method == "nuts" and kinds["means"].shape[:2] == (2, 10)
    fig = _render(plots.plot_trace_panels(kinds, method=method, column_names=["height", "width"]))
    assert len(fig.axes) == 2 * (1 + 2 * 2 + 1)  # weights, mean/sd of each column, one correlation
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["component 0", "component 1", "chain 0", "chain 1"]
    assert {ax.get_title(loc="left") for ax in fig.axes[::2]} >= {"weights", "mean of height", "sd of width"}


def _colour_of(fig, name):
    """The colour of engine ``name``'s legend entry in ``fig``."""
    import matplotlib.colors as mcolors

    for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            if text.get_text().startswith(plots.engine_label(name)):
                return mcolors.to_hex(handle.get_color())
    return None


def test_one_colour_per_engine_in_every_figure():
    import matplotlib.colors as mcolors

    truth, x, _, aligned = _problem(2)
    ids = {m: arviz_io.to_inference_data(r, x) for m, r in aligned.items()}
    forest = plots.plot_forest_panels(arviz_io.forest_intervals(ids), arviz_io.reference_kinds(truth))
    figs = [plots.plot_components(x, aligned, truth), forest, plots.plot_traces(aligned)]
    for m in METHODS:
        seen = {_colour_of(f, m) for f in figs} - {None}
        assert seen == {mcolors.to_hex(plots.ENGINE_COLORS[m])}, (m, seen)


def test_forest_reads_at_any_scale_and_caps_its_size():
    """Old-Faithful-like scales (weights ~0.5, means ~70) get separate axes; 50 columns x K = 6 stay
    within the height cap and show a subset, saying so."""
    rng = np.random.default_rng(1)
    d = 50
    truth = models.to_numpy(models.from_covariances(np.full(6, 1 / 6), rng.normal(70, 10, size=(6, d)),
                                                    np.stack([np.eye(d) * 30] * 6)))
    x = truth.means[rng.integers(0, 6, size=300)] + rng.normal(size=(300, d)) * 5
    results = {m: fake_result(m, truth, x, num_draws=10) for m in ("em", "nuts")}
    ids = {m: arviz_io.to_inference_data(r, x) for m, r in results.items()}
    fig = _render(plots.plot_forest_panels(arviz_io.forest_intervals(ids), None, reference_label="EM estimate",
                                           column_names=[f"c{j}" for j in range(d)]))
    width, height = fig.get_size_inches()
    assert height <= plots.FOREST_MAX_HEIGHT_IN + 0.01 and width <= 10
    title = " ".join(fig.get_suptitle().split())
    assert "the first 4 of 50 columns" in title and "aligned to the EM estimate" in title
    assert "6 of 1225 pairs" in title  # the correlations drawn are said, not silently dropped
    weights_ax = fig.axes[0]
    lo, hi = weights_ax.get_xlim()
    assert hi - lo < 1.5  # weights are not squeezed onto the means' axis
    assert len(fig.legends[0].get_texts()) == 2  # no reference entry without a reference


def test_no_truth_no_truth_in_any_title_and_columns_label_axes():
    _, x, _, aligned = _problem(2)
    names = ["eruptions", "waiting"]
    figs = [plots.plot_data(x, None, column_names=names),
            plots.plot_components(x, aligned, None, column_names=names, reference_label="EM estimate"),
            plots.plot_assignments(x, aligned, None, column_names=names, reference_label="EM estimate")]
    em = aligned["em"]
    figs.append(plots.plot_em_snapshots(x, em.info["snapshots"], em.info["snapshot_iters"], None, em.params,
                                        column_names=names))
    for fig in figs:
        texts = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
        texts += [t.get_text() for leg in fig.legends for t in leg.get_texts()]
        assert not any("truth" in t for t in texts), texts
        assert {ax.get_xlabel() for ax in fig.axes} == {"eruptions"}
    assert "EM estimate" in figs[1].axes[0].get_title() and "EM estimate" in figs[2].get_suptitle()


# --------------------------------------------------------------------------- real-data figures (issue 21)

PENGUIN_COLUMNS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def _penguin_like(seed=0):
    """Three groups on penguins' scales: three columns in mm, one in grams (unscaled PCA's PC1 is body mass)."""
    rng = np.random.default_rng(seed)
    means = np.array([[38.8, 18.3, 190.0, 3700.0], [48.8, 18.4, 196.0, 3730.0], [47.5, 15.0, 217.0, 5080.0]])
    sds = np.array([2.6, 1.1, 6.5, 460.0])
    corr = 0.5 * np.ones((4, 4)) + 0.5 * np.eye(4)
    covs = np.stack([np.outer(sds, sds) * corr] * 3)
    truth = models.to_numpy(models.from_covariances([0.44, 0.2, 0.36], means, covs))
    z = rng.choice(3, size=300, p=truth.weights)
    x = np.stack([rng.multivariate_normal(means[k], covs[k]) for k in z])
    return truth, x, z


def test_pairs_plot_names_every_column_and_draws_marginal_ellipses():
    """D = 4: the data and components figures are scatterplot matrices of every pair, the axes labelled with
    the columns' names (bottom row x, left column y), each panel's ellipses the pair's marginal Gaussians."""
    from matplotlib.patches import Ellipse

    truth, x, z = _penguin_like()
    results = {m: fake_result(m, truth, x, num_draws=10) for m in ("em", "nuts")}
    for fig in (plots.plot_data(x, None, column_names=PENGUIN_COLUMNS),
                plots.plot_components(x, results, None, column_names=PENGUIN_COLUMNS, reference_label="EM estimate")):
        _render(fig)
        assert len(fig.axes) == 10  # 6 pairs + 4 diagonals
        grid = fig.axes[0].get_subplotspec().get_gridspec()
        assert (grid.nrows, grid.ncols) == (4, 4)
        bottom = sorted((ax for ax in fig.axes if ax.get_subplotspec().rowspan.start == 3),
                        key=lambda ax: ax.get_subplotspec().colspan.start)
        left = sorted((ax for ax in fig.axes if ax.get_subplotspec().colspan.start == 0),
                      key=lambda ax: ax.get_subplotspec().rowspan.start)
        assert [ax.get_xlabel() for ax in bottom] == PENGUIN_COLUMNS
        assert [ax.get_ylabel() for ax in left[1:]] == PENGUIN_COLUMNS[1:]
        assert not any("PC" in ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes)
    # the panel (row flipper_length_mm, column bill_length_mm): ellipses of the 2x2 marginal covariance
    panel = next(ax for ax in fig.axes if (ax.get_subplotspec().rowspan.start, ax.get_subplotspec().colspan.start) == (2, 0))
    cov = np.asarray(models.covariances(results["em"].params))[:, [0, 2]][:, :, [0, 2]]
    widths = sorted(round(max(e.width, e.height), 6) for e in panel.patches if isinstance(e, Ellipse) and e.get_edgecolor()[:3]
                    == matplotlib.colors.to_rgb(plots.ENGINE_COLORS["em"]))
    expected = sorted(round(2 * np.sqrt(np.linalg.eigvalsh(c)[-1]), 6) for c in cov)
    np.testing.assert_allclose(widths, expected, rtol=1e-6)


def test_pairs_plot_beyond_six_columns_shows_the_informative_ones_and_says_so():
    rng = np.random.default_rng(3)
    d = 9
    means = np.zeros((2, d))
    means[1, [2, 7]] = 8.0  # only columns c2 and c7 separate the components
    truth = models.to_numpy(models.from_covariances([0.5, 0.5], means, np.stack([np.eye(d)] * 2)))
    x = rng.normal(size=(200, d)) + means[rng.integers(0, 2, 200)]
    names = [f"c{j}" for j in range(d)]
    cols, why = plots.informative_columns(d, truth)
    assert len(cols) == plots.MAX_PAIR_COLUMNS and {2, 7} <= set(cols) and "6 of 9 columns" in why
    fig = plots.plot_data(x, None, column_names=names, shown=(cols, why))
    assert len(fig.axes) == 21 and "6 of 9 columns" in fig.get_supxlabel()
    assert {ax.get_title(loc="left") for ax in fig.axes} - {""} == {names[j] for j in cols}


def test_pca_of_standardised_columns_names_its_loadings():
    """Unscaled PCA gave 'PC1 (100% of variance)' on penguins (body mass in grams): the plane is now the
    standardised columns', and each axis names the columns that load on it."""
    truth, x, z = _penguin_like()
    proj = plots.Projection(x, PENGUIN_COLUMNS)
    share = float(proj.xlabel.split("(")[1].split("%")[0])
    assert share < 90 and "std. variance" in proj.xlabel
    assert any(name in proj.xlabel for name in PENGUIN_COLUMNS) and any(name in proj.ylabel for name in PENGUIN_COLUMNS)
    # the Gaussians are projected exactly: the projected sample covariance of one group = P Sigma P^T
    sel = x[z == 0]
    means, covs = proj.gaussians(models.to_numpy(models.from_covariances([1.0], sel.mean(0, keepdims=True),
                                                                         np.cov(sel.T)[None])))
    np.testing.assert_allclose(covs[0], np.cov(proj.points(sel).T), rtol=1e-8)
    results = {m: fake_result(m, truth, x, num_draws=10) for m in ("em", "hard_em", "nuts")}
    fig = _render(plots.plot_assignments(x, results, None, column_names=PENGUIN_COLUMNS, reference_label="EM estimate"))
    assert all("std. variance" in ax.get_xlabel() for ax in fig.axes if ax.get_xlabel())
    assert "standardised" in fig.get_supxlabel()


def test_ppc_panels_are_named_by_column_every_one_or_the_stated_subset():
    truth, x, z = _penguin_like()
    nuts = fake_result("nuts", truth, x, num_draws=10)
    idata = arviz_io.to_inference_data(nuts, x, PENGUIN_COLUMNS)
    rng = np.random.default_rng(0)
    arviz_io.add_groups(idata, arviz_io.predictive_groups(x_rep=x[None] + rng.normal(size=(5,) + x.shape),
                                                          x_prior=rng.normal(size=(5,) + x.shape) * 1000,
                                                          column_names=PENGUIN_COLUMNS))
    fig = _render(plots.plot_ppc(arviz_io.ppc_densities(idata), column_names=PENGUIN_COLUMNS))
    assert [ax.get_xlabel() for ax in fig.axes] == PENGUIN_COLUMNS  # every column, each by name
    fig = _render(plots.plot_ppc(arviz_io.ppc_densities(idata, dims=[1, 3]), column_names=PENGUIN_COLUMNS))
    assert [ax.get_xlabel() for ax in fig.axes] == ["bill_depth_mm", "body_mass_g"]  # the subset asked for
    # the prior predictive is drawn with the data: the observed density peaks inside the axes, the x axis
    # spans the data and the prior predictive's central 90%, not its extremes
    densities = arviz_io.ppc_densities(idata, "prior_predictive")
    fig = _render(plots.plot_ppc(densities, group="prior_predictive", column_names=PENGUIN_COLUMNS))
    for ax, entry in zip(fig.axes, densities):
        lo, hi = ax.get_xlim()
        assert lo <= entry["observed_range"][0] and hi >= entry["observed_range"][1]
        assert hi - lo < 1.2 * (max(entry["replicated_quantiles"][1], entry["observed_range"][1])
                                - min(entry["replicated_quantiles"][0], entry["observed_range"][0]))
        assert ax.get_ylim()[1] >= np.max(entry["observed"][1])
    assert "range of the observed data" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_forest_draws_every_correlation_of_four_columns():
    truth, x, z = _penguin_like()
    results = {m: fake_result(m, truth, x, num_draws=10) for m in ("em", "nuts")}
    ids = {m: arviz_io.to_inference_data(r, x, PENGUIN_COLUMNS) for m, r in results.items()}
    fig = _render(plots.plot_forest_panels(arviz_io.forest_intervals(ids), None, reference_label="EM estimate",
                                           column_names=PENGUIN_COLUMNS))
    titles = [ax.get_title() for ax in fig.axes]
    pairs = [f"correlation {PENGUIN_COLUMNS[a]} ~ {PENGUIN_COLUMNS[b]}" for b in range(4) for a in range(b)]
    assert sorted(t for t in titles if t.startswith("correlation")) == sorted(pairs)
    for ax in fig.axes:
        if ax.get_title().startswith("correlation"):
            assert [t.get_text() for t in ax.get_yticklabels()] == ["component 0", "component 1", "component 2"]


def test_trace_legend_names_only_what_is_drawn_and_says_what_is_clipped():
    """Every legend entry's line has points inside the axes; a line with points beyond them says which."""
    truth, x, _, aligned = _problem(2)
    fig = _render(plots.plot_traces(aligned))
    for ax in fig.axes:
        lo, hi = ax.get_ylim()
        for line, text in zip(ax.get_legend().get_lines(), ax.get_legend().get_texts()):
            drawn = next(l for l in ax.get_lines() if l.get_label() == text.get_text())
            y = np.asarray(drawn.get_ydata(), float)
            assert np.any((y >= lo) & (y <= hi)), text.get_text()
            outside = np.any((y < lo) | (y > hi))
            assert outside == ("the axis" in text.get_text()), text.get_text()
