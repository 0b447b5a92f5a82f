"""Missing values in the user-facing layer (issue 22 part 4): the CSV / .npy reader (empty cells and pandas' NA strings
as missing, inf an error, rows with nothing observed dropped and counted, real line numbers), the streamed scan, the
missingness metrics and imputed.csv, and gmm-report end to end on penguins with holes."""

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from analysis import streamed
from analysis.cli import main
from analysis.errors import ReportError
from analysis.files import NA_STRINGS, read_data
from analysis.metrics import validate_metrics
from analysis.missing_report import imputed_csv, missing_metrics

PENGUINS = Path(__file__).parent / "data" / "penguins_holes.csv"


def _write(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- the reader


def test_empty_na_nan_cells_are_missing_like_pandas(tmp_path):
    import pandas as pd
    from pandas._libs.parsers import STR_NA_VALUES

    assert NA_STRINGS == frozenset(STR_NA_VALUES)  # pandas' default na_values, the same list
    text = "a,b,c\n1,,3\nNA,2,NaN\nnan,N/A,1\n4, 5 ,null\n"
    table = read_data(_write(tmp_path, text))
    ref = pd.read_csv(tmp_path / "d.csv").to_numpy(float)
    np.testing.assert_array_equal(np.isnan(table.x), np.isnan(ref))
    np.testing.assert_array_equal(table.x[~np.isnan(ref)], ref[~np.isnan(ref)])
    assert table.columns == ["a", "b", "c"] and table.dropped.size == 0
    np.testing.assert_array_equal(table.row_index, np.arange(4))


def test_a_row_with_nothing_observed_is_dropped_and_counted(tmp_path):
    text = "a,b\n1,2\n,\n\n3,NA\nNA,NA\n5,6\n"
    table = read_data(_write(tmp_path, text))
    np.testing.assert_array_equal(table.row_index, [0, 2, 4])  # the file's data rows, 0-based
    np.testing.assert_array_equal(table.dropped, [1, 3])
    np.testing.assert_array_equal(table.dropped_lines, [3, 6])  # the blank line 4 counted as a line, not a row
    assert table.x.shape == (3, 2) and np.isnan(table.x[1, 1])
    with pytest.raises(ReportError, match="every row has every value missing"):
        read_data(_write(tmp_path, "a,b\nNA,\n,NA\n"))


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n\n3,inf\n", "d.csv: 1 row(s) with inf values (line 4); inf is not a missing value"),
    ("\n\na,b\n1,2\n\n3\n", "d.csv:6: 1 field(s), the header (line 3) has 2"),
    ("a,b\n1,2\n\n\n3,x\n", "d.csv:5: column 'b' is not numeric ('x'; missing values are empty cells or NA"),
    ("a,b\n1,-Infinity\n", "d.csv: 1 row(s) with inf values (line 2)"),
    ("a,b\n\"1\n\",2\n4,oops\n", "d.csv:4: column 'b' is not numeric"),  # a quoted field over two lines
    ("1,2\n3,4\n", "d.csv:1: the first row must be a header"),
    ("a,b,c\n1,,2\n3,NA,4\n", "d.csv: column 'b' has no observed value (every cell missing); remove it"),
])
def test_errors_are_one_line_with_the_files_real_line(tmp_path, text, message):
    with pytest.raises(ReportError) as err:
        read_data(_write(tmp_path, text))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_npy_with_nan_is_data_with_holes_and_inf_an_error(tmp_path):
    x = np.arange(12.0).reshape(6, 2)
    x[1, 0] = np.nan
    x[4] = np.nan
    np.save(tmp_path / "h.npy", x)
    table = read_data(tmp_path / "h.npy")
    np.testing.assert_array_equal(table.row_index, [0, 1, 2, 3, 5])
    np.testing.assert_array_equal(table.dropped, [4])
    assert table.dropped_lines is None and np.isnan(table.x[1, 0])
    x[2, 1] = np.inf
    np.save(tmp_path / "i.npy", x)
    with pytest.raises(ReportError, match=r"i\.npy: 1 row\(s\) with inf values \(row 2\)"):
        read_data(tmp_path / "i.npy")


def test_streamed_scan_lets_nan_through_and_refuses_inf(tmp_path):
    x = np.random.default_rng(0).normal(size=(50, 3))
    x[[3, 7], 1] = np.nan
    np.save(tmp_path / "s.npy", x)
    data = streamed.scan(streamed.open_streamed(tmp_path / "s.npy"), seed=0)
    np.testing.assert_array_equal(np.isnan(data.subsample), np.isnan(x))
    x[9, 2] = -np.inf
    np.save(tmp_path / "s.npy", x)
    with pytest.raises(ReportError, match=r"1 row\(s\) with inf values \(row 9\)"):
        streamed.scan(streamed.open_streamed(tmp_path / "s.npy"), seed=0)


def test_streamed_scores_of_rows_with_holes_are_the_observed_data_density(tmp_path):
    """The streamed report's extra pass (all rows' log-likelihood and cluster sizes) on a file with holes."""
    from types import SimpleNamespace

    import jax

    import models

    x = np.array(models.sample(jax.random.PRNGKey(0), models.seed_problem(), 300)[0])
    x[np.random.default_rng(1).uniform(size=x.shape) < 0.2] = np.nan
    np.save(tmp_path / "s.npy", x)
    params = models.to_numpy(models.seed_problem())
    data = streamed.scan(streamed.open_streamed(tmp_path / "s.npy"), seed=0)
    scores = streamed.score_pass(data, {"em": SimpleNamespace(params=params)})["em"]
    assert scores["log_likelihood"] == pytest.approx(float(models.observed_log_likelihood(params, x)), rel=1e-12)
    labels = np.asarray(models.responsibilities(params, x)).argmax(axis=1)
    np.testing.assert_array_equal(scores["hard_counts"], np.bincount(labels, minlength=2))


def test_missing_metrics_per_column_and_pattern():
    x = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 1.0], [1.0, 2.0, 3.0], [2.0, np.nan, 1.0]])
    m = missing_metrics(x, ["a", "b", "c"], dropped=[7], dropped_lines=[10], imputed=True)
    assert m["num_cells_missing"] == 4 and m["rows_with_missing"] == 3
    assert [c["missing"] for c in m["columns"]] == [1, 3, 0]
    assert m["patterns"][0] == {"missing_columns": ["b"], "rows": 2, "percent": 50.0}
    assert {tuple(p["missing_columns"]) for p in m["patterns"]} == {("b",), ("a", "b"), ()}
    assert m["dropped_rows"]["count"] == 1 and m["dropped_rows"]["lines"] == [10]
    assert m["imputed_file"] == "imputed.csv" and "missing at random" in m["handling"]
    assert missing_metrics(np.ones((3, 2)), ["a", "b"]) is None


def test_imputed_csv_names_the_files_rows_and_columns():
    imps = {"em": (np.array([1, 0]), np.array([0, 1]), np.array([1.5, 2.5]), np.array([1.0, 2.0]), np.array([2.0, 3.0]))}
    text = imputed_csv(imps, row_index=[0, 4], columns=["a", "b,c"])
    assert text.splitlines() == ["engine,row,column,value,lower,upper", 'em,0,"b,c",2.5,2,3', "em,4,a,1.5,1,2"]


def test_predictive_statistics_see_the_observed_cells_only():
    """With holes, each data set's statistics (observed and replicated) leave out the observed data's missing cells:
    scipy's nan_policy="omit" numbers; without a mask, today's."""
    from scipy import stats

    from analysis.predictive import test_statistics

    rng = np.random.default_rng(0)
    x, missing = rng.gamma(2.0, size=(5, 40, 3)), rng.uniform(size=(40, 3)) < 0.2
    got, masked = test_statistics(x, missing), np.where(missing, np.nan, x)
    np.testing.assert_allclose(got["skewness"], stats.skew(masked, axis=-2, nan_policy="omit"), atol=1e-12)
    np.testing.assert_allclose(got["kurtosis"], stats.kurtosis(masked, axis=-2, nan_policy="omit"), atol=1e-12)
    np.testing.assert_allclose(got["sd"], np.nanstd(masked, axis=-2), atol=1e-12)
    np.testing.assert_array_equal(got["max"], np.nanmax(masked, axis=-2))
    assert all(np.array_equal(a, test_statistics(x, np.zeros((40, 3), bool))[k]) for k, a in test_statistics(x).items())


@pytest.mark.parametrize("d", [2, 3])
def test_data_figure_draws_imputed_rows_hollow(d):
    import matplotlib

    matplotlib.use("Agg", force=True)
    from analysis import plots

    rng = np.random.default_rng(0)
    x, imputed = rng.normal(size=(60, d)), np.zeros((60, d), bool)
    imputed[[2, 5, 9], 0] = True
    fig = plots.plot_data(x, column_names=[f"c{j}" for j in range(d)], imputed=imputed)
    hollow = [c for ax in fig.axes for c in ax.collections
              if len(c.get_offsets()) and len(c.get_facecolors()) == 0]  # facecolors="none"
    assert hollow and all(len(c.get_offsets()) == 3 for c in hollow)
    texts = [t.get_text() for legend in fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
             for t in legend.get_texts()]
    assert "hollow: a value imputed" in texts


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def penguins_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("penguins") / "r"
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--data", str(PENGUINS), "-k", "3", "--methods", "em,hard_em", "--out", str(out), "--quiet"])
    return code, err.getvalue(), out


def test_penguins_with_holes_runs_end_to_end_and_says_what_it_dropped(penguins_report):
    code, err, out = penguins_report
    assert code == 0, err
    assert err.splitlines() == ["gmm-report: note: penguins_holes.csv: dropped 2 row(s) with every value missing "
                                "(lines 3, 72); the other rows' missing values are marginalised"]
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    miss = metrics["problem"]["missing"]
    table = read_data(PENGUINS)
    assert metrics["problem"]["num_samples"] == 86 == table.x.shape[0]
    assert miss["dropped_rows"] == {"count": 2, "rows": [1, 69], "lines": [3, 72],
                                    "reason": "every value missing: nothing to fit or impute from"}
    assert miss["num_cells_missing"] == int(np.isnan(table.x).sum()) == 32
    assert [c["missing"] for c in miss["columns"]] == np.isnan(table.x).sum(axis=0).tolist()
    assert sum(p["rows"] for p in miss["patterns"]) == 86 and miss["imputed_file"] == "imputed.csv"
    assert set(metrics["engines"]) == {"em", "hard_em"} and metrics["failed"] == {}

    import models

    em = metrics["engines"]["em"]
    params = models.from_covariances(np.array(em["weights"]), np.array(em["means"]), np.array(em["covariances"]))
    assert em["log_likelihood"] == pytest.approx(float(models.observed_log_likelihood(params, table.x)), rel=1e-9)

    with open(out / "imputed.csv") as f:
        rows = list(csv.DictReader(f))
    missing_cells = {(int(table.row_index[i]), table.columns[j]) for i, j in zip(*np.nonzero(np.isnan(table.x)))}
    for engine in ("em", "hard_em"):
        mine = [r for r in rows if r["engine"] == engine]
        assert {(int(r["row"]), r["column"]) for r in mine} == missing_cells  # one line per missing cell
        assert metrics["engines"][engine]["imputation"]["num_cells"] == len(mine) == 32
        for r in mine:
            assert float(r["lower"]) <= float(r["value"]) <= float(r["upper"]), r
    # the row numbers are the file's: data row 2 is line 4, "NA,19.3,193,NA"
    assert {r["column"] for r in rows if r["engine"] == "em" and r["row"] == "2"} == {"bill_length_mm", "body_mass_g"}
    assignment_rows = [int(line.split(",")[0]) for line in (out / "assignments.csv").read_text().splitlines()[1:]]
    assert assignment_rows == table.row_index.tolist() and 1 not in assignment_rows and 69 not in assignment_rows


def test_penguins_page_has_the_missingness_tables(penguins_report):
    _, _, out = penguins_report
    page = re.sub(r"base64,[^\"]*", "", (out / "report.html").read_text())
    section = page[page.index("<h2>Missing values</h2>"):page.index("<h2>Engines: warnings and priors</h2>")]
    assert "32 of 344 values missing (9.3%)" in section and "2 row(s) dropped" in section and "3, 72" in section
    assert "Per column" in section and "bill_length_mm" in section and "% of rows" in section
    assert "Per pattern (which columns are missing together)" in section and "— (complete rows)" in section
    assert "imputed.csv" in section and "missing at random" in section
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)
    assert sum("hollow" in c for c in captions) == 3  # the data, components and assignments figures mark imputed rows
    assert "imputed.csv" in json.loads((out / "manifest.json").read_text())["files"]
    from analysis import arviz_io

    for engine in ("em", "hard_em"):
        idata = arviz_io.load_netcdf(out / f"{engine}.nc")
        assert np.isfinite(arviz_io.group(idata, "log_likelihood")["x"].values).all()


@pytest.mark.slow
def test_posterior_engines_impute_from_their_draws(tmp_path):
    """SVI and NUTS on a small CSV with holes: imputed.csv holds their posterior multiple imputations."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(5, 1, (60, 2))])
    x[rng.uniform(size=x.shape) < 0.1] = np.nan
    lines = ["u,v"] + [",".join("NA" if np.isnan(v) else f"{v:.5g}" for v in row) for row in x]
    data = _write(tmp_path, "\n".join(lines) + "\n")
    out = tmp_path / "r"
    assert main(["--data", str(data), "-k", "2", "--methods", "map,svi,nuts", "--out", str(out), "--quiet",
                 "--option", "map.n_init=1", "--option", "svi.num_steps=300", "--option", "nuts.num_warmup=100",
                 "--option", "nuts.num_samples=100"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    with open(out / "imputed.csv") as f:
        rows = list(csv.DictReader(f))
    kept = x[~np.isnan(x).all(axis=1)]
    for engine in ("map", "svi", "nuts"):
        mine = [r for r in rows if r["engine"] == engine]
        assert len(mine) == int(np.isnan(kept).sum()) == metrics["engines"][engine]["imputation"]["num_cells"]
        assert all(float(r["lower"]) <= float(r["value"]) <= float(r["upper"]) for r in mine)
    assert "posterior" in metrics["engines"]["nuts"]["imputation"]["method"]
