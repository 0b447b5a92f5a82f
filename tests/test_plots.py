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
    fig = _render(plots.plot_data(x, z))
    assert len(fig.axes) == 1
    fig = _render(plots.plot_components(x, aligned, truth))
    assert len(fig.axes) == 1
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
    assert titles == ["weights", "correlations", "mean of height", "sd of height", "mean of width", "sd of width"]
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
    assert "of 50 shown" in fig.get_suptitle() and "aligned to the EM estimate" in fig.get_suptitle()
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
