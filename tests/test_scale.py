"""Sample weights, sharded EM over host devices, and streamed (bigger-than-memory) EM.

References: repeated rows (integer weights), the single-device in-memory fit (sharding, streaming),
peak resident memory measured in a subprocess (streaming)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import models
from inference import fit
from inference.em import fit_em, fit_hard_em
from inference.init import initialize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "tests", "scale_scripts")


def three_blobs(rng, n=(150, 200, 101)):
    return np.concatenate([rng.normal(size=(n[0], 3)) + [3, 0, 0], rng.normal(size=(n[1], 3)) * [1, 2, 0.5], rng.normal(size=(n[2], 3)) - 3])


def start_of(x, covariance_type="full"):
    first = fit_em(jax.random.PRNGKey(0), x, 3, covariance_type=covariance_type, init="random_from_data", max_iters=1)
    return models.GMMParams(*(np.asarray(a[0]) for a in first.info["snapshots"]))


def assert_same_fit(a, b, rtol=1e-10, ll_scale=1.0):
    """Same fit; ``a``'s log-likelihoods times ``ll_scale`` equal ``b``'s (weights are relative: a weighted
    fit's log-likelihood counts N+ rows, its repeated rows' counts sum(w) of them)."""
    assert a.num_iters == b.num_iters
    np.testing.assert_allclose(a.trace["log_likelihood"] * ll_scale, b.trace["log_likelihood"], rtol=rtol)
    np.testing.assert_allclose(a.params.weights, b.params.weights, rtol=rtol)
    np.testing.assert_allclose(a.params.means, b.params.means, rtol=rtol, atol=rtol * np.abs(b.params.means).max())
    np.testing.assert_allclose(models.covariances(a.params), models.covariances(b.params), rtol=rtol, atol=1e-14)


# --------------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("method", ["em", "hard_em"])
@pytest.mark.parametrize("covariance_type", ["full", "diag", "spherical", "tied"])
def test_integer_weights_equal_repeated_rows(rng, method, covariance_type):
    x = three_blobs(rng)
    counts = rng.integers(0, 4, size=len(x))
    init = start_of(x, covariance_type)
    opts = dict(init=init, covariance_type=covariance_type, tol=0.0, max_iters=20)
    weighted = fit(method, jax.random.PRNGKey(0), x, 3, sample_weight=counts.astype(float), **opts)
    repeated = fit(method, jax.random.PRNGKey(0), np.repeat(x, counts, axis=0), 3, **opts)
    scale = counts.sum() / np.count_nonzero(counts)  # relative weights: sum to N+ (normalize_sample_weight)
    assert_same_fit(weighted, repeated, ll_scale=scale)
    for key in ("elbo", "classification_log_likelihood"):
        if key in repeated.trace:
            np.testing.assert_allclose(weighted.trace[key] * scale, repeated.trace[key], rtol=1e-10)
    assert weighted.info["total_weight"] == pytest.approx(np.count_nonzero(counts))


def test_weights_change_the_stopping_rule_like_repeated_rows(rng):
    """tol is on the weighted mean log-likelihood: same number of iterations as the repeated data."""
    x = three_blobs(rng)
    counts = rng.integers(1, 3, size=len(x))
    init = start_of(x)
    a = fit_em(jax.random.PRNGKey(0), x, 3, init=init, sample_weight=counts, tol=1e-4)
    b = fit_em(jax.random.PRNGKey(0), np.repeat(x, counts, axis=0), 3, init=init, tol=1e-4)
    assert_same_fit(a, b, ll_scale=counts.sum() / len(x))


def test_unit_weights_change_nothing(rng):
    x = three_blobs(rng)
    a = fit_em(jax.random.PRNGKey(4), x, 3, n_init=2)
    b = fit_em(jax.random.PRNGKey(4), x, 3, n_init=2, sample_weight=np.ones(len(x)))
    assert_same_fit(a, b, rtol=1e-12)


@pytest.mark.parametrize("init", ["random_from_data", "kmeans++", "kmeans"])
def test_initialisers_honour_weights(rng, init):
    """Rows of weight 0 are never drawn; a heavily weighted cluster draws the centers."""
    x = np.concatenate([rng.normal(size=(200, 2)) + 10, rng.normal(size=(200, 2)) - 10])
    w = np.r_[np.zeros(200), np.ones(200)]
    for seed in range(5):
        params = initialize(jax.random.PRNGKey(seed), x, 3, init, sample_weight=w)
        assert np.all(np.asarray(params.means) < -5), params.means
    res = fit_em(jax.random.PRNGKey(0), x, 2, init=init, sample_weight=w)
    assert np.all(res.params.means < -5)


@pytest.mark.parametrize(
    "weights,match",
    [
        (-np.ones(20), "sample_weight must be >= 0"),
        (np.r_[np.nan, np.ones(19)], "sample_weight contains NaN"),
        (np.r_[np.inf, np.ones(19)], "sample_weight contains NaN"),
        (np.ones(19), "sample_weight has length 19 but x has 20 rows"),
        (np.ones((20, 1)), "sample_weight must be 1-D"),
        (np.zeros(20), "sample_weight is zero for every row"),
        (np.array(["a"] * 20), "sample_weight must be real numbers"),
    ],
)
@pytest.mark.parametrize("method", ["em", "hard_em"])
def test_bad_weights_one_line_value_error(method, weights, match):
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match=match) as info:
        fit(method, jax.random.PRNGKey(0), x, 2, sample_weight=weights)
    assert "\n" not in str(info.value)


def test_too_few_weighted_rows_for_k():
    x = np.random.default_rng(0).normal(size=(20, 2))
    with pytest.raises(ValueError, match="distinct rows with sample_weight > 0"):
        fit_em(jax.random.PRNGKey(0), x, 3, sample_weight=np.r_[1.0, 1.0, np.zeros(18)])


# --------------------------------------------------------------------------- streamed rows


@pytest.mark.parametrize("method", ["em", "hard_em"])
def test_streamed_npy_equals_in_memory(rng, tmp_path, method):
    """Same key, same (random) initialiser, restarts: a .npy path and chunk iterators give the in-memory fit."""
    x = three_blobs(rng, (400, 500, 333))
    np.save(tmp_path / "x.npy", x)
    opts = dict(init="kmeans++", n_init=3, tol=1e-8, chunk_size=200)
    engine = fit_em if method == "em" else fit_hard_em
    ref = engine(jax.random.PRNGKey(1), x, 3, **opts)
    from_file = engine(jax.random.PRNGKey(1), str(tmp_path / "x.npy"), 3, **opts)
    from_callable = engine(jax.random.PRNGKey(1), lambda: (x[i : i + 77] for i in range(0, len(x), 77)), 3, **opts)
    from_list = engine(jax.random.PRNGKey(1), [x[:500], x[500:]], 3, **opts)
    for res in (from_file, from_callable, from_list):
        assert_same_fit(res, ref)
        assert res.responsibilities.shape == (0, 3) and "models.responsibilities" in res.info["responsibilities"]
        assert res.info["streamed"]


def test_streamed_weights_in_chunks_or_as_array(rng, tmp_path):
    x = three_blobs(rng)
    w = rng.uniform(0, 2, size=len(x))
    init = start_of(x)
    ref = fit_em(jax.random.PRNGKey(0), x, 3, init=init, sample_weight=w, tol=0.0, max_iters=10)
    pairs = fit_em(jax.random.PRNGKey(0), lambda: ((x[i : i + 50], w[i : i + 50]) for i in range(0, len(x), 50)), 3,
                   init=init, tol=0.0, max_iters=10, chunk_size=64)
    np.save(tmp_path / "x.npy", x)
    array = fit_em(jax.random.PRNGKey(0), tmp_path / "x.npy", 3, init=init, sample_weight=w, tol=0.0, max_iters=10, chunk_size=64)
    assert_same_fit(pairs, ref)
    assert_same_fit(array, ref)


def test_streamed_second_fit_compiles_nothing(rng, tmp_path):
    x = three_blobs(rng)
    np.save(tmp_path / "a.npy", x)
    np.save(tmp_path / "b.npy", x + 1.0)
    fit_em(jax.random.PRNGKey(0), str(tmp_path / "a.npy"), 3, max_iters=5, chunk_size=100)
    res = fit_em(jax.random.PRNGKey(1), str(tmp_path / "b.npy"), 3, max_iters=5, chunk_size=100)
    assert res.info["compile_seconds"] == 0.0


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda p: str(p / "missing.npy"), "could not read"),
        (lambda p: str(p / "x.csv"), "must name a .npy file"),
        (lambda p: iter([np.zeros((5, 2))]), "one-shot iterator"),
        (lambda p: [np.ones((5, 2)), np.ones((5, 3))], "a chunk has 3 columns"),
        (lambda p: [np.array([[0.0, np.nan]] * 5)], "column 1 has no observed value"),
        (lambda p: [np.array([[0.0, np.inf]] * 5)], "inf"),
    ],
)
def test_bad_streamed_sources(tmp_path, make, match):
    with pytest.raises(ValueError, match=match) as info:
        fit_em(jax.random.PRNGKey(0), make(tmp_path), 2)
    assert "\n" not in str(info.value)


def test_streamed_memory_is_bounded_by_the_chunks(tmp_path):
    """A 137 MB file, a budget of 64 MB above the warmed-up process: the peak resident memory of the
    streamed fit (measured with getrusage in a fresh subprocess) stays inside the budget, i.e. the fit
    never holds the file. The file is read with pread, not mapped, so its pages are the OS's cache."""
    rng = np.random.default_rng(0)
    big = tmp_path / "big.npy"
    rows = 2_250_000
    arr = np.lib.format.open_memmap(big, mode="w+", dtype=np.float64, shape=(rows, 8))
    for i in range(0, rows, 250_000):
        arr[i : i + 250_000] = rng.normal(size=(250_000, 8)) + rng.integers(0, 4, size=(250_000, 1)) * 3.0
    arr.flush()
    del arr
    np.save(tmp_path / "small.npy", rng.normal(size=(100_000, 8)))
    file_mb = os.path.getsize(big) / 2**20
    budget_mb = 64.0
    assert file_mb > 2 * budget_mb
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "stream_memory.py"), str(big), str(tmp_path / "small.npy")],
                         capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["num_rows"] == rows and np.isfinite(report["log_likelihood"])
    assert report["after_mb"] - report["before_mb"] < budget_mb, report


# --------------------------------------------------------------------------- sharded rows


def test_sharded_equals_single_device_on_1_to_4_host_devices():
    """1, 2, 3, 4 CPU host devices (a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4),
    N = 1003 (divisible by none of 2, 3, 4), random initialisers, restarts, weights, hard EM, streaming:
    every fit equals the 1-device fit to 1e-10 relative."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, os.path.join(SCRIPTS, "sharded_equals_single.py")], capture_output=True,
                         text=True, cwd=ROOT, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    diffs = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(diffs) == 15
    bad = {k: v for k, v in diffs.items() if not v < 1e-10}
    assert not bad, bad


def test_devices_and_mesh_options(rng):
    x = three_blobs(rng)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("anything",))
    a = fit_em(jax.random.PRNGKey(0), x, 3, mesh=mesh)
    b = fit_em(jax.random.PRNGKey(0), x, 3, devices=jax.devices()[:1])
    assert_same_fit(a, b, rtol=1e-14)
    with pytest.raises(ValueError, match="either mesh or devices"):
        fit_em(jax.random.PRNGKey(0), x, 3, mesh=mesh, devices=jax.devices())
    with pytest.raises(ValueError, match="devices must be"):
        fit_em(jax.random.PRNGKey(0), x, 3, devices=["cpu"])


@pytest.mark.slow
def test_two_process_jax_distributed_equals_one_process(tmp_path):
    """Two processes on localhost (jax.distributed, CPU collectives over gloo), each holding its own half
    of the rows, give the one-process fit."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    script = os.path.join(SCRIPTS, "two_process.py")
    ref = subprocess.run([sys.executable, script, "0", "-1", str(tmp_path / "ref.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    procs = [subprocess.Popen([sys.executable, script, str(port), str(p), str(tmp_path / f"p{p}.json")], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in (0, 1)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    one, two = (json.load(open(tmp_path / name)) for name in ("ref.json", "p0.json"))
    assert one["num_devices"] == 1 and two["num_devices"] == 2 and two["local_rows"] == 301
    np.testing.assert_allclose(two["log_likelihood"], one["log_likelihood"], rtol=1e-10)
    np.testing.assert_allclose(two["means"], one["means"], rtol=1e-10)
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-10)


# --------------------------------------------------------------------------- large in-memory arrays, read in place


def test_large_array_is_read_in_place_and_equals_the_device_fit(rng, monkeypatch):
    """Arrays of HOST_STREAM_BYTES or more are streamed from host memory (no device copy): same fit, no
    (N, K) responsibilities, final counts and data covariance in info, degeneracy still checked."""
    import inference.em as em

    x = three_blobs(rng)
    device = fit("em", jax.random.PRNGKey(0), x, 3, tol=0.0, max_iters=15, chunk_size=64)
    monkeypatch.setattr(em, "HOST_STREAM_BYTES", 0)
    in_place = fit("em", jax.random.PRNGKey(0), x, 3, tol=0.0, max_iters=15, chunk_size=64)
    assert device.info["source"] == "device arrays" and in_place.info["source"] == "host memory, read in place"
    assert_same_fit(in_place, device)
    assert in_place.responsibilities.shape == (0, 3)
    np.testing.assert_allclose(in_place.info["final_counts"], device.responsibilities.sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(in_place.info["data_covariance"], np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(device.info["data_covariance"], np.cov(x, rowvar=False), rtol=1e-12)
    assert in_place.info["degenerate_components"] == device.info["degenerate_components"] == []


def test_streamed_degenerate_component_is_flagged_from_counts(rng, monkeypatch):
    """A component on 2 of 300 rows (< D + 1 effective points) is flagged without the responsibilities."""
    import inference.em as em

    x = np.concatenate([rng.normal(size=(298, 3)), [[50.0, 50.0, 50.0], [50.1, 50.0, 50.2]]])
    start = models.from_covariances([0.5, 0.5], [[0.0, 0.0, 0.0], [50.0, 50.0, 50.1]], [np.eye(3), np.eye(3)])
    monkeypatch.setattr(em, "HOST_STREAM_BYTES", 0)
    res = fit("em", jax.random.PRNGKey(0), x, 2, init=start, max_iters=50)
    assert res.info["streamed"] and res.responsibilities.shape[0] == 0
    flagged = {d["component"]: d for d in res.info["degenerate_components"]}
    assert 1 in flagged and flagged[1]["effective_count"] == pytest.approx(2.0, abs=1e-6)


def test_streamed_inf_names_the_row_in_the_whole_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(70_000, 2))
    x[69_000, 1] = np.inf  # (NaN is a missing value: tests/test_missing_em.py)
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ValueError, match="first at row 69000"):
        fit_em(jax.random.PRNGKey(0), str(tmp_path / "x.npy"), 2)


def test_streamed_hard_em_counts_are_its_assignments(rng, monkeypatch):
    """A streamed hard-EM fit's final counts are the column sums of its in-memory (one-hot) responsibilities."""
    import inference.em as em

    x = three_blobs(rng)
    device = fit("hard_em", jax.random.PRNGKey(0), x, 3, tol=0.0, max_iters=10, chunk_size=64)
    monkeypatch.setattr(em, "HOST_STREAM_BYTES", 0)
    in_place = fit("hard_em", jax.random.PRNGKey(0), x, 3, tol=0.0, max_iters=10, chunk_size=64)
    np.testing.assert_array_equal(in_place.info["final_counts"], device.responsibilities.sum(axis=0))
    assert np.all(np.mod(in_place.info["final_counts"], 1.0) == 0)
