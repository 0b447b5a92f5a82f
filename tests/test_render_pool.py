"""The report's figure render workers (analysis.render_pool): the PNG bytes a worker returns are the bytes this
process renders (reference: ``html_page.figure_png`` here), and every way a worker can fail falls back to them."""

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis import render_pool
from analysis.html_page import figure_png


def _figure(seed=0, panels=3):
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(3 * panels, 3), layout="constrained")
    for ax in fig.subplots(1, panels):
        ax.scatter(*rng.normal(size=(2, 300)), s=4, c=rng.uniform(size=300))
        ax.set_title(f"panel {seed}")
    return fig


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setenv("GMM_RENDER_WORKERS", "2")
    render_pool.shutdown()
    yield
    render_pool.shutdown()


def test_workers_return_the_bytes_rendered_here(two_workers):
    figures = [_figure(seed) for seed in range(4)]
    pending = [render_pool.submit(fig) for fig in figures]
    assert all(p._future is not None for p in pending)  # really sent to a worker
    for fig, p in zip(figures, pending):
        assert p.result() == figure_png(fig)
    assert render_pool.start() == 2


def test_an_unpicklable_figure_renders_here(two_workers):
    fig = _figure()
    fig.axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, pos: f"<{v:g}>"))  # a lambda does not pickle
    pending = render_pool.submit(fig)
    assert pending._future is None
    assert pending.result() == figure_png(fig)


def test_a_dead_worker_falls_back_to_this_process(two_workers):
    render_pool.start()
    for worker in render_pool._WORKERS:
        worker.process.kill()
        worker.process.wait(timeout=30)
    fig = _figure(1)
    assert render_pool.submit(fig).result() == figure_png(fig)  # no live worker: rendered here
    render_pool.shutdown()
    render_pool.start()
    worker = render_pool._WORKERS[0]
    pending = render_pool._WORKERS[0].submit(b"not a pickle")
    with pytest.raises(RuntimeError, match="UnpicklingError|pickle"):
        pending.result(timeout=60)
    assert worker.process.poll() is None  # a bad job does not kill the worker


def test_no_workers_when_asked_and_none_left_after_shutdown(monkeypatch, two_workers):
    processes = [w.process for w in (render_pool.start() and render_pool._WORKERS)]
    render_pool.shutdown()
    assert all(p.wait(timeout=30) == 0 for p in processes)  # stdin closed: each worker exits cleanly
    monkeypatch.setenv("GMM_RENDER_WORKERS", "0")
    fig = _figure(2)
    pending = render_pool.submit(fig)
    assert pending._future is None and render_pool._WORKERS == []
    assert pending.result() == figure_png(fig)


def test_a_call_runs_in_a_worker_and_a_failing_one_runs_here(two_workers, tmp_path):
    """``submit_call``: the worker's result is the function's; a job the worker cannot run (here: a directory that
    does not exist in its view either) is run here, and its own error is what the caller sees."""
    import math

    pending = render_pool.submit_call(math.comb, 40, 20)
    assert pending._future is not None and pending.result() == 137846528820
    from analysis.netcdf_file import write_groups

    missing = tmp_path / "no" / "such" / "dir" / "f.nc"
    failing = render_pool.submit_call(write_groups, missing, {}, [])
    with pytest.raises(Exception):  # noqa: B017 - the error of the here-run, whatever h5py calls it
        failing.result()
    assert not missing.exists()


def test_a_netcdf_file_written_by_a_worker_is_the_one_written_here(two_workers, tmp_path):
    """The report's NetCDF files are written by a render worker (``netcdf_groups`` pickled, ``write_groups`` there):
    reloaded, every group, variable, dtype (float32 groups included) and attribute equals ``save_netcdf``'s."""
    import jax

    import models
    from analysis import arviz_io
    from analysis.netcdf_file import write_groups
    from inference import fit

    truth = models.seed_problem()
    x, _ = models.sample(jax.random.PRNGKey(0), truth, 200)
    idata = arviz_io.to_inference_data(fit("em", jax.random.PRNGKey(1), x, 2), x)
    here = arviz_io.save_netcdf(idata, tmp_path / "here.nc")
    pending = render_pool.submit_call(write_groups, tmp_path / "worker.nc", *arviz_io.netcdf_groups(idata))
    assert pending._future is not None
    there = pending.result()
    a, b = arviz_io.load_netcdf(here), arviz_io.load_netcdf(there)
    assert arviz_io.group_names(a) == arviz_io.group_names(b) and len(arviz_io.group_names(a)) >= 4
    for name in arviz_io.group_names(a):
        ga, gb = arviz_io.group(a, name), arviz_io.group(b, name)
        assert ga.identical(gb), name
        assert {v: ga[v].dtype for v in ga.variables} == {v: gb[v].dtype for v in gb.variables}
