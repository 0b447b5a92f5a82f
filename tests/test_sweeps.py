"""analysis.sweeps: every axis end to end (quick, cheap engines) with the documented columns; the CLI."""

import csv
import json

import jax
import numpy as np
import pytest

import models
from analysis import sweeps
from analysis.cli import main

FAST = ("em", "hard_em")


def _check_tables(axis, tables, out=None):
    for name, columns in sweeps.COLUMNS[axis].items():
        rows = tables[name]
        if name == "model_selection" and tables["selection"]["model_selection"] is None:
            assert rows == []  # quick: full covariances only, already the criteria table
            continue
        assert rows, f"{axis}.{name} is empty"
        for row in rows:
            assert list(row) == columns
        if out is not None:
            with open(out / f"{name}.csv") as f:
                header = next(csv.reader(f))
            assert header == columns
            doc = json.loads((out / f"{name}.json").read_text())
            assert doc["columns"] == columns and len(doc["rows"]) == len(rows)
    if out is not None:
        assert (out / "sweep.html").read_text().startswith("<!DOCTYPE html>")
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["axis"] == axis
        for fig in manifest["figures"]:
            assert (out / fig).stat().st_size > 1000


def test_separation_quick(tmp_path):
    out = tmp_path / "sep"
    tables = sweeps.run_sweep("separation", seed=1, out_dir=out, quick=True, methods=FAST, num_samples=150)
    _check_tables("separation", tables, out)
    assert {r["scenario"] for r in tables["runs"]} == {"distance", "shape", "weights"}
    assert all(r["error"] is None for r in tables["runs"])
    # well separated (d = 4): both engines recover the means
    far = [r for r in tables["runs"] if r["scenario"] == "distance" and r["distance"] == 4.0]
    assert max(r["mean_err_max"] for r in far) < 0.6
    assert {p.name for p in (out / "figures").iterdir()} >= {"separation_distance.png", "separation_hard_em_bias.png"}


def test_separation_is_repeatable():
    kw = dict(seed=3, quick=True, methods=("em",), num_samples=150, repeats=1)
    a, b = sweeps.run_sweep("separation", **kw), sweeps.run_sweep("separation", **kw)
    drop = ("seconds", "compile_seconds")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in drop} for r in rows]
    assert strip(a["runs"]) == strip(b["runs"])


def test_init_quick(tmp_path):
    out = tmp_path / "init"
    tables = sweeps.run_sweep("init", seed=0, out_dir=out, quick=True, methods=("hard_em",), repeats=4, num_samples=200)
    _check_tables("init", tables, out)
    summary = tables["summary"]
    assert {(r["method"], r["init"]) for r in summary} == {("hard_em", i) for i in sweeps.INIT_METHODS}
    assert all(r["runs"] == 4 for r in summary)
    assert any(r["share_reached_best"] > 0 for r in summary)
    for r in tables["runs"]:
        assert r["gap_per_obs"] >= 0 and r["reached_best"] == (r["gap_per_obs"] < sweeps.REACHED_BEST_TOL)


def test_samples_quick(tmp_path):
    out = tmp_path / "samples"
    tables = sweeps.run_sweep("samples", seed=0, out_dir=out, quick=True, methods=FAST, num_samples=[60, 150], repeats=2)
    _check_tables("samples", tables, out)
    assert sorted({r["n"] for r in tables["runs"]}) == [60, 150]
    assert {r["method"] for r in tables["slopes"]} == set(FAST)
    assert all(r["runs"] == 2 and r["failed"] == 0 for r in tables["summary"])


def test_components_quick_selects_true_k(tmp_path):
    out = tmp_path / "comp"
    tables = sweeps.run_sweep("components", seed=0, out_dir=out, quick=True, methods=("em",), ks=range(1, 5), num_samples=450)
    _check_tables("components", tables, out)
    sel = json.loads((out / "selection.json").read_text())
    assert set(sel) == set(sweeps.SELECTION_SCHEMA)
    assert set(sel["selected_k"]) == {"bic", "aic", "icl", "loo", "waic"}
    assert sel["selected_k"]["bic"] == 3 and sel["true_k"] == 3
    assert sel["selected_k"]["loo"] is None  # no posterior engine ran
    assert (out / "figures" / "components_fits.png").exists()


def test_cli_components_on_user_data(tmp_path, capsys):
    truth = models.from_covariances([0.5, 0.5], [[-4.0, 0.0, 1.0], [4.0, 0.0, -1.0]], np.stack([np.eye(3)] * 2))
    x, _ = models.sample(jax.random.PRNGKey(2), truth, 200)
    path = tmp_path / "points.csv"
    np.savetxt(path, np.asarray(x), delimiter=",", header="a,b,c", comments="")
    out = tmp_path / "out"
    code = main(["sweep", "components", "--data", str(path), "--ks", "1-2", "--quick", "--quiet", "--out", str(out)])
    assert code == 0
    assert capsys.readouterr().err == ""
    sel = json.loads((out / "selection.json").read_text())
    assert sel["selected_k"]["bic"] == 2 and sel["true_k"] is None and sel["data_file"] == str(path)
    # existing non-empty --out is refused without --force: one line, exit 2, nothing run
    code = main(["sweep", "components", "--data", str(path), "--ks", "1-2", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--force" in err


@pytest.mark.parametrize("argv, needle", [
    (["sweep", "banana"], "invalid choice"),
    (["sweep", "samples", "--methods", "em,foo"], "unknown method"),
    (["sweep", "samples", "--data", "x.csv"], "components axis only"),
    (["sweep", "components", "--ks", "0-3"], "--ks"),
    (["sweep", "components", "--data", "/nonexistent.csv"], "not found"),
    (["sweep", "init", "--repeats", "0"], "--repeats"),
])
def test_cli_errors_are_one_line(argv, needle, tmp_path, capsys):
    code = main(argv + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_components_with_nuts_has_loo_and_waic(tmp_path):
    tables = sweeps.run_sweep("components", seed=0, out_dir=tmp_path / "c", quick=True, methods=("em", "nuts"),
                              ks=[2, 3], num_samples=200)
    nuts_rows = [r for r in tables["criteria"] if r["method"] == "nuts"]
    assert all(r["loo"] is not None and r["waic"] is not None for r in nuts_rows)
    assert tables["selection"]["criterion_method"]["loo"] == "nuts"
    assert tables["selection"]["selected_k"]["loo"] in (2, 3)


def test_components_on_a_csv_claims_no_true_k_and_names_its_columns(tmp_path):
    """Issue 21: on a user's data the page said "data with a known K" and "the dotted line the true K", neither of
    which exists there; the fits figure labelled its axes x0 / x1 with an equal aspect that squeezed Faithful."""
    rng = np.random.default_rng(4)
    short = rng.uniform(size=200) < 0.35
    x = np.column_stack([np.where(short, rng.normal(2.0, 0.25, 200), rng.normal(4.3, 0.4, 200)),
                         np.where(short, rng.normal(54.5, 5.9, 200), rng.normal(80.0, 5.9, 200))])
    path = tmp_path / "faithful.csv"
    np.savetxt(path, x, delimiter=",", header="eruptions,waiting", comments="", fmt="%.4f")
    out = tmp_path / "out"
    assert main(["sweep", "components", "--data", str(path), "--ks", "1-3", "--quick", "--quiet", "--out", str(out)]) == 0
    page = (out / "sweep.html").read_text()
    text = page.split("<img")[0] + "".join(part.split(">", 1)[-1] for part in page.split("<img")[1:])
    for claim in ("known K", "true K", "truth dashed"):
        assert claim not in text, claim
    assert "eruptions, waiting" in text
    tables = sweeps.run_sweep("components", data=x, ks=[1, 2, 3], quick=True, column_names=["eruptions", "waiting"])
    assert "known K" not in tables["intro"] and "true K" not in " ".join(tables["captions"].values())
    fits = sweeps.plot_sweep("components", tables)["components_fits"]
    assert [ax.get_xlabel() for ax in fits.axes] == ["eruptions"] * len(fits.axes)
    assert fits.axes[0].get_ylabel() == "waiting"
    assert all(ax.get_aspect() == "auto" for ax in fits.axes)
    lo, hi = fits.axes[0].get_xlim()
    assert hi - lo < 3 * np.ptp(x[:, 0])  # the data's own range, not stretched to waiting's


def test_components_searches_covariance_types_like_mclust(tmp_path):
    """Issue 21: the components sweep searched full covariances only. Three axis-aligned clusters with very
    different variances per column: EM's BIC over (K, type) picks K = 3 with diagonal covariances (fewer
    parameters, same fit), and the search is written, drawn and stated."""
    rng = np.random.default_rng(5)
    centers = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    z = rng.integers(0, 3, 450)
    x = centers[z] + rng.normal(size=(450, 2)) * np.array([[1.0, 0.3], [0.4, 1.2], [0.8, 0.8]])[z]
    tables = sweeps.run_sweep("components", data=x, ks=[1, 2, 3, 4], methods=("em",), covariance_types=("full", "diag"),
                              out_dir=tmp_path / "c")
    search = tables["selection"]["model_selection"]
    assert (search["k"], search["covariance_type"]) == (3, "diag")
    assert {r["covariance_type"] for r in tables["model_selection"]} == {"full", "diag"}
    assert len(tables["model_selection"]) == 8
    assert (tmp_path / "c" / "figures" / "components_model_selection.png").exists()
    assert "diag covariances: K = 3, diag" in (tmp_path / "c" / "sweep.html").read_text()
    quick = sweeps.run_sweep("components", data=x, ks=[1, 2], quick=True)
    assert quick["selection"]["model_selection"] is None and quick["model_selection"] == []
    assert any("full covariances only" in n for n in quick["notes"])
