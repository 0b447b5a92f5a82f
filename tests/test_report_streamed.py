"""gmm-report on a .npy streamed from disk (issue 11, item 3): only em and hard_em fit, from the path; the
full-data numbers equal an in-memory fit's; figures and checks use a stated seeded subsample; NumPyro
engines skipped with the reason; bad files are one line and exit 2; memory stays bounded."""

import json
import re
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import inference
import models
from analysis import streamed
from analysis.budget import SKIPPED
from analysis.cli import main
from analysis.engine_options import ALL_METHODS
from analysis.metrics import validate_metrics


def _blobs(n=3000, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [5.0, 5.0, 0.0], [0.0, 6.0, 6.0]])[:, :d]
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, d))


def _captions(page):
    return re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)


def _reference_fit(method, x, k, seed):
    """What the report fits, computed here from the in-memory array: the report's key for ``method`` is
    ``fold_in(PRNGKey(--seed), 1 + ALL_METHODS.index(method))``, and em / hard_em get no options."""
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1 + ALL_METHODS.index(method))
    return inference.fit(method, key, x, k)


def test_streamed_report_equals_the_in_memory_fit_and_names_its_subsample(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(streamed, "SUBSAMPLE_ROWS", 1000)
    x, seed = _blobs(), 3
    path = tmp_path / "blobs.npy"
    np.save(path, x)
    out = tmp_path / "r"
    # (svi streams too, as minibatch SVI: tests/test_minibatch_svi.py; left out here for time)
    code = main(["--data", str(path), "--stream", "always", "-k", "3", "--seed", str(seed), "--out", str(out), "--quiet",
                 "--methods", "em,hard_em,map,nuts"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count("gmm-report: note:") == 1 and "streamed from disk" in err and "map, nuts skipped" in err
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    prob = metrics["problem"]
    assert prob["streamed"] is True and prob["stream_mode"] == "always"
    assert prob["data_bytes"] == path.stat().st_size and prob["stream_threshold_bytes"] == streamed.STREAM_THRESHOLD_BYTES
    assert (prob["num_samples"], prob["num_features"], prob["subsample_rows"]) == (3000, 3, 1000)
    assert set(metrics["engines"]) == {"em", "hard_em"}
    assert set(metrics["failed"]) == {"map", "nuts"}
    for reason in metrics["failed"].values():
        assert reason.startswith(SKIPPED) and "streamed from disk" in reason and "every row in memory" in reason

    n, d, k = 3000, 3, 3
    p = (k - 1) + k * d + k * d * (d + 1) // 2
    for method in ("em", "hard_em"):
        ref = _reference_fit(method, x, k, seed)
        card = metrics["engines"][method]
        ll = float(models.log_likelihood(ref.params, x))
        assert card["log_likelihood"] == pytest.approx(ll, rel=1e-8)
        assert card["log_likelihood"] == pytest.approx(float(ref.trace["log_likelihood"][-1]), rel=1e-8)
        assert card["num_iters"] == ref.num_iters
        assert card["log_likelihood_per_obs"] == pytest.approx(ll / n, rel=1e-8)
        assert card["bic"] == pytest.approx(-2 * ll + p * np.log(n), rel=1e-8)
        # the cluster sizes of all rows (labels aligned to em: compare as multisets)
        sizes = np.bincount(np.argmax(ref.responsibilities, axis=1), minlength=k)
        assert sorted(card["cluster_sizes"]) == sorted(sizes.tolist()) and sum(card["cluster_sizes"]) == n
        assert sorted(np.round(card["weights"], 8).tolist()) == sorted(np.round(ref.params.weights, 8).tolist())
        assert card["degenerate_components"] == [] and card["warnings"] == []

    # the subsample is the one metrics.json describes: sorted default_rng([0x5B, seed]).choice(N, S, replace=False)
    assert "default_rng([91, seed])" in prob["subsample"]
    rows = np.sort(np.random.default_rng([0x5B, seed]).choice(n, size=1000, replace=False))
    from analysis import arviz_io

    idata = arviz_io.load_netcdf(out / "em.nc")
    observed = np.asarray(arviz_io.group(idata, "observed_data")["x"])
    np.testing.assert_array_equal(observed, x[rows])
    assert idata.attrs["subsample_rows"] == 1000 and idata.attrs["num_rows_in_data"] == 3000

    page = re.sub(r"base64,[^\"]*", "", (out / "report.html").read_text())
    top = page[: page.index("Scorecard</h2>")]
    assert "Streamed from disk" in top and "em, hard_em" in top and "1,000 of the 3,000 rows" in top
    assert "skipped before fitting" in top and "Partial report" not in top
    captions = _captions(page)
    from_rows = [c for c in captions if "subsample of 1,000 of the 3,000 rows" in c]
    assert len(from_rows) >= 4, captions  # data, components, assignments, EM snapshots (+ predictive checks)
    assert any("Posterior predictive check" in c for c in from_rows)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["data"]["shape"] == [3000, 3] and manifest["data"]["streamed"]["subsample_rows"] == 1000


def test_streamed_and_loaded_reports_agree(tmp_path):
    """``--stream never`` loads the same file: the same fits, the same full-data numbers."""
    path = tmp_path / "blobs.npy"
    np.save(path, _blobs(n=1500))
    cards = {}
    for mode in ("always", "never"):
        out = tmp_path / mode
        assert main(["--data", str(path), "--stream", mode, "-k", "3", "--methods", "em,hard_em", "--out", str(out),
                     "--quiet"]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["problem"]["streamed"] is (mode == "always")
        cards[mode] = metrics["engines"]
    for method in ("em", "hard_em"):
        a, b = cards["always"][method], cards["never"][method]
        assert a["log_likelihood"] == pytest.approx(b["log_likelihood"], rel=1e-10)
        assert a["bic"] == pytest.approx(b["bic"], rel=1e-10)
        assert a["cluster_sizes"] == b["cluster_sizes"] and a["num_iters"] == b["num_iters"]
        np.testing.assert_allclose(a["means"], b["means"], rtol=1e-8, atol=1e-10)


def test_auto_streams_only_a_npy_above_the_threshold(tmp_path, monkeypatch):
    path = tmp_path / "a.npy"
    np.save(path, _blobs(n=200))
    csv = tmp_path / "a.csv"
    csv.write_text("a,b\n1,2\n3,4\n")
    size = path.stat().st_size
    monkeypatch.setattr(streamed, "STREAM_THRESHOLD_BYTES", size - 1)
    assert streamed.stream_wanted(path, "auto") and not streamed.stream_wanted(path, "never")
    assert not streamed.stream_wanted(csv, "auto")
    monkeypatch.setattr(streamed, "STREAM_THRESHOLD_BYTES", size)
    assert not streamed.stream_wanted(path, "auto") and streamed.stream_wanted(path, "always")
    column = tmp_path / "column.npy"  # 1-D: auto loads it as one column, as before
    np.save(column, np.arange(1000.0))
    monkeypatch.setattr(streamed, "STREAM_THRESHOLD_BYTES", 10)
    assert not streamed.stream_wanted(column, "auto") and streamed.stream_wanted(path, "auto")


def _bad_files(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((10, 3, 2)))
    np.save(tmp_path / "objects.npy", np.array([[1, "a"], [2, "b"]], dtype=object))
    np.save(tmp_path / "column.npy", np.arange(10.0))
    np.save(tmp_path / "complex.npy", np.ones((10, 2), complex))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(np.ones((10, 2))))
    nan = _blobs(n=3000)
    nan[[7, 2500], 1] = [np.nan, np.inf]
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "notnpy.npy").write_bytes(b"hello")
    (tmp_path / "d.csv").write_text("a,b\n1,2\n3,4\n")
    np.save(tmp_path / "ok.npy", _blobs(n=300))


@pytest.mark.parametrize("name, extra, message", [
    ("cube.npy", [], r"cube\.npy: expected a 2-D array \(rows, columns\) to stream it from disk, got shape \(10, 3, 2\)"),
    ("objects.npy", [], r"objects\.npy: array is not numeric \(dtype object\)"),
    ("column.npy", [], r"column\.npy: expected a 2-D array .*got shape \(10,\) \(save a 1-D array as \(N, 1\)"),
    ("complex.npy", [], r"complex\.npy: array is not numeric \(dtype complex128\)"),
    ("fortran.npy", [], r"fortran\.npy is Fortran-ordered: save it C-ordered"),
    ("nan.npy", ["--methods", "em,hard_em"], r"nan\.npy: 1 row\(s\) with inf values \(row 2500\)"),
    ("notnpy.npy", [], r"cannot read notnpy\.npy as \.npy"),
    ("d.csv", [], r"--stream always needs a \.npy file; d\.csv is read as CSV"),
    ("ok.npy", ["--methods", "map,nuts"], r"the data are streamed from disk .*map, nuts need every row in memory: use "
                                          r"--methods em,hard_em"),
    (None, [], r"--stream always needs --data FILE\.npy"),
])
def test_bad_input_with_stream_always_is_one_line_and_exit_2(tmp_path, capsys, name, extra, message):
    _bad_files(tmp_path)
    out = tmp_path / "r"
    data = ["--data", str(tmp_path / name)] if name else []
    code = main([*data, "--stream", "always", *extra, "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("gmm-report: error: "), err
    assert re.search(message, err), err
    assert not out.exists()


def test_nan_in_a_streamed_fit_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    """Should the file change between the report's own check and the fit, the fit's pre-pass ValueError
    fails every engine: one line, exit 2, nothing written."""
    from analysis import streamed

    path = tmp_path / "ok.npy"
    np.save(path, _blobs(n=300))
    real_scan = streamed.scan

    def scan_then_spoil(data, seed, subsample_rows=None):
        scanned = real_scan(data, seed, subsample_rows)
        spoilt = _blobs(n=300)
        spoilt[123, 0] = np.inf  # NaN is a missing value now; inf is still refused
        np.save(path, spoilt)
        return scanned

    monkeypatch.setattr(streamed, "scan", scan_then_spoil)
    out = tmp_path / "r"
    code = main(["--data", str(path), "--stream", "always", "-k", "2", "--methods", "em,hard_em", "--out", str(out),
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "every engine failed" in err and "inf" in err, err
    assert not out.exists()


# --------------------------------------------------------------------------- memory


_PEAK = textwrap.dedent("""
    import resource, subprocess, sys
    code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, code.returncode)
    sys.stderr.write(code.stderr)
""")


def _peak_rss(args) -> int:
    """Peak resident bytes of ``python -m analysis ARGS`` and its child (RUSAGE_CHILDREN of a fresh parent,
    which counts the waited-for grandchild that runs the report)."""
    done = subprocess.run([sys.executable, "-c", _PEAK, sys.executable, "-m", "analysis", *args],
                          capture_output=True, text=True, timeout=900)
    peak, code = done.stdout.split()
    assert code == "0", done.stderr
    return int(peak)


def _write_blobs(path, n, d, block=500_000):
    """An (n, d) float64 .npy written in blocks (never n x d in this process's memory)."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64, shape=(n, d))
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, size=(3, d))
    for i in range(0, n, block):
        m = min(block, n - i)
        out[i : i + m] = centres[rng.integers(0, 3, m)] + rng.normal(size=(m, d))
    out.flush()
    del out


@pytest.mark.slow
def test_streamed_report_memory_is_bounded(tmp_path):
    """3,000,000 x 8 float64 (192 MB): the streamed report's peak RSS stays below the same report's peak on a
    20,000-row file (imports, compiled programs, figures: the baseline) plus the file's size. Loading that
    file instead peaked at 14.3 GB (analysis.streamed, the threshold's comment)."""
    big, small = tmp_path / "big.npy", tmp_path / "small.npy"
    _write_blobs(big, 3_000_000, 8)
    _write_blobs(small, 20_000, 8)
    file_bytes = big.stat().st_size
    common = ["--stream", "always", "-k", "3", "--quiet", "--max-seconds", "0"]
    baseline = _peak_rss(["--data", str(small), "--out", str(tmp_path / "rs"), *common])
    peak = _peak_rss(["--data", str(big), "--out", str(tmp_path / "rb"), *common])
    print(f"peak RSS: {peak / 2**20:.0f} MiB on {file_bytes / 2**20:.0f} MiB streamed; baseline {baseline / 2**20:.0f} MiB")
    assert peak < baseline + file_bytes, (peak, baseline, file_bytes)
    metrics = json.loads((tmp_path / "rb" / "metrics.json").read_text())
    assert metrics["problem"]["streamed"] and metrics["problem"]["num_samples"] == 3_000_000
    assert metrics["problem"]["subsample_rows"] == streamed.SUBSAMPLE_ROWS
    assert sum(metrics["engines"]["em"]["cluster_sizes"]) == 3_000_000


def test_report_fills_responsibilities_em_left_for_a_large_in_memory_array(monkeypatch):
    """EM reads an in-memory array of >= HOST_STREAM_BYTES in place without (N, K) responsibilities; the
    report's pipeline computes them from the fitted parameters (models.responsibilities)."""
    import numpy as np

    import inference.em as em
    import models
    from analysis.problem import MemoryData, Problem
    from analysis.report import Run, fit_engines

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(200, 2)) + 4, rng.normal(size=(200, 2))])
    monkeypatch.setattr(em, "HOST_STREAM_BYTES", 0)
    run = Run(["em"], {"em": {}}, lambda *a, **k: None)
    fit_engines(Problem(MemoryData(None, x), 2, 0, ["x0", "x1"]), run)
    results, failed = run.results, run.failed
    assert not failed and results["em"].info["source"] == "host memory, read in place"
    np.testing.assert_allclose(results["em"].responsibilities, models.responsibilities(results["em"].params, x), atol=1e-12)
    assert results["em"].responsibilities.shape == (400, 2)
