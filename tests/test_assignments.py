"""Per-point output (issue 21 part 2): assignments.csv, the NetCDF files' assignments group and the uncertainty
figure agree with the responsibilities of the report's aligned point estimates."""

import csv
import json

import numpy as np
import pytest

import models
from analysis import arviz_io
from analysis.assignments import assignments_csv, labels_and_uncertainty, uncertainty_summary
from analysis.cli import main


def test_labels_and_uncertainty_of_responsibilities():
    resp = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.5, 0.5, 0.0]])
    label, top, unc = labels_and_uncertainty(resp)
    np.testing.assert_array_equal(label, [0, 2, 0])  # a tie goes to the lower label
    np.testing.assert_allclose(top, [0.7, 0.8, 0.5])
    np.testing.assert_allclose(unc, [0.3, 0.2, 0.5])
    assert uncertainty_summary(resp) == pytest.approx({"mean": 1.0 / 3.0, "max": 0.5, "num_uncertain": 2, "threshold": 0.2})
    text = assignments_csv({"em": resp, "map": resp[:, ::-1]}, row_index=[3, 5, 9])
    rows = list(csv.DictReader(text.splitlines()))
    assert list(rows[0]) == ["row", "em_label", "em_max_responsibility", "em_uncertainty", "map_label",
                             "map_max_responsibility", "map_uncertainty"]
    assert [r["row"] for r in rows] == ["3", "5", "9"] and [r["map_label"] for r in rows] == ["2", "0", "1"]
    assert float(rows[1]["em_uncertainty"]) == pytest.approx(0.2)


def _params_of(card):
    return models.from_covariances(np.asarray(card["weights"]), np.asarray(card["means"]), np.asarray(card["covariances"]))


def test_assignments_csv_and_netcdf_match_the_aligned_fits(tmp_path):
    """On iris (CSV), every engine's column of assignments.csv is the argmax / max of
    ``models.responsibilities`` of its aligned parameters (as metrics.json reports them), its NetCDF file holds
    the same per row, and the page shows the uncertainty figure."""
    from sklearn.datasets import load_iris

    x = load_iris().data
    path = tmp_path / "iris.csv"
    np.savetxt(path, x, delimiter=",", header="sepal_length,sepal_width,petal_length,petal_width", comments="", fmt="%.1f")
    out = tmp_path / "r"
    assert main(["--data", str(path), "-k", "3", "--methods", "em,hard_em", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "assignments.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 150 and [int(r["row"]) for r in rows] == list(range(150))
    for method, card in metrics["engines"].items():
        resp = np.asarray(models.responsibilities(_params_of(card), x))
        label = np.array([int(r[f"{method}_label"]) for r in rows])
        top = np.array([float(r[f"{method}_max_responsibility"]) for r in rows])
        unc = np.array([float(r[f"{method}_uncertainty"]) for r in rows])
        np.testing.assert_array_equal(label, resp.argmax(1))
        np.testing.assert_allclose(top, resp.max(1), atol=1e-5)
        np.testing.assert_allclose(unc, 1 - resp.max(1), atol=1e-5)
        assert card["uncertainty"]["num_uncertain"] == int(np.sum(unc > card["uncertainty"]["threshold"]))
        group = arviz_io.group(arviz_io.load_netcdf(out / card["netcdf"]), arviz_io.ASSIGNMENTS_GROUP)
        np.testing.assert_array_equal(group["label"].values, label)
        np.testing.assert_allclose(group["responsibilities"].values, resp, atol=1e-8)
        np.testing.assert_allclose(group["uncertainty"].values, unc, atol=1e-5)
        assert group["responsibilities"].dims == ("obs", "component")
    # soft EM's own assignments are the same argmax: its cluster sizes count the csv's labels
    em_labels = np.array([int(r["em_label"]) for r in rows])
    assert np.bincount(em_labels, minlength=3).tolist() == metrics["engines"]["em"]["cluster_sizes"]
    page = (out / "report.html").read_text()
    assert "Classification uncertainty</h2>" in page and "assignments.csv" in page
    assert (out / "figures" / "uncertainty.png").exists()
    assert "assignments.csv" in json.loads((out / "manifest.json").read_text())["files"]
