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
    fig = _render(arviz_io.plot_forest(ids, truth))
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert len(legends) == 1
    texts = [t.get_text() for t in legends[0].get_texts()]
    assert "true value" in texts and set(METHODS) <= set(texts)
    fig = _render(arviz_io.plot_trace(ids["nuts"]))
    assert len(fig.axes) == 4  # weights, means x (density, trace)
