"""The pre-fit check: identifiability from the rows (effective points per component for its covariance type) and a
cost estimate against --max-seconds."""

import json
import time

import numpy as np
import pytest

from analysis.budget import SKIPPED, estimate_seconds, plan_engines
from analysis.cli import main
from analysis.engine_options import ALL_METHODS, report_engine_options
from analysis.errors import ReportError
from analysis.selection import num_parameters

OPTIONS = report_engine_options(list(ALL_METHODS), True, None, [])


def test_the_seed_problem_is_untouched():
    plan = plan_engines(list(ALL_METHODS), OPTIONS, 500, 2, 2, None)
    assert plan.methods == list(ALL_METHODS) and not plan.skipped and not plan.notes
    assert plan.options == OPTIONS and set(plan.estimates) == set(ALL_METHODS)


def test_wide_data_falls_back_to_diagonal_em_and_skips_the_numpyro_engines():
    assert num_parameters(2, 50, "full") == 2651
    plan = plan_engines(list(ALL_METHODS), OPTIONS, 60, 50, 2, 600)
    assert plan.methods == ["em", "hard_em"]
    assert all(plan.options[m]["covariance_type"] == "diag" for m in ("em", "hard_em"))
    assert set(plan.skipped) == {"map", "svi", "nuts"}
    assert all(why.startswith(SKIPPED) and "need 51 points per component (D + 1), the 60 rows give about 30" in why
               for why in plan.skipped.values())
    assert len(plan.notes) == 1 and "diagonal" in plan.notes[0]


def test_more_parameters_than_rows_is_not_the_rule_wine_fits_full_covariances():
    """Issue 21: wine (178 x 13, K = 3) has 314 free parameters for 178 rows, but 59 rows per component for the
    14 a full covariance needs: every engine fits full covariances (sklearn and mclust do too)."""
    assert num_parameters(3, 13, "full") == 314 > 178
    plan = plan_engines(list(ALL_METHODS), OPTIONS, 178, 13, 3, 600)
    assert plan.methods == list(ALL_METHODS) and not plan.skipped and not plan.notes
    assert all("covariance_type" not in plan.options[m] for m in ("em", "hard_em"))  # the engines' default: full
    # the boundary: K (D + 1) rows
    assert plan_engines(["nuts"], {}, 42, 13, 3, None).methods == ["nuts"]
    assert plan_engines(["nuts", "em"], {}, 41, 13, 3, None).skipped.keys() == {"nuts"}


def test_a_chosen_covariance_type_is_fitted_as_asked():
    plan = plan_engines(["em"], {"em": {"covariance_type": "full"}}, 178, 13, 3, None)
    assert plan.methods == ["em"] and plan.options["em"]["covariance_type"] == "full" and not plan.notes
    # not identifiable from the rows: still fitted as asked (EM's time is bounded), with a note
    plan = plan_engines(["em"], {"em": {"covariance_type": "full"}}, 60, 50, 2, None)
    assert plan.methods == ["em"] and plan.options["em"]["covariance_type"] == "full"
    assert len(plan.notes) == 1 and "covariance_type='full' as asked" in plan.notes[0] and "degenerate" in plan.notes[0]
    plan = plan_engines(["em"], {"em": {"covariance_type": "diag"}}, 60, 50, 2, None)
    assert plan.methods == ["em"] and not plan.notes


def test_no_engine_left_names_the_fix():
    with pytest.raises(ReportError, match=r"at most 29 columns.*--methods em,hard_em"):
        plan_engines(["map", "nuts"], {}, 60, 50, 2, None)
    with pytest.raises(ReportError, match=r"--num-components 2"):  # K=4, D=10: 44 rows needed for 30; K=2: 22
        plan_engines(["nuts"], {}, 30, 10, 4, None)
    with pytest.raises(ReportError, match=r"at least 20 rows even with diagonal"):
        plan_engines(["em"], {}, 15, 2, 10, None)


def test_the_budget_skips_the_most_expensive_engines_first():
    est = {m: estimate_seconds(m, 100_000, 4, 10, OPTIONS[m]) for m in ALL_METHODS}
    assert est["em"] < est["map"] and est["em"] < est["nuts"]
    plan = plan_engines(list(ALL_METHODS), OPTIONS, 100_000, 10, 4, 100)
    assert plan.methods == ["em", "hard_em"] and set(plan.skipped) == {"map", "svi", "nuts"}
    assert "--max-seconds 100" in plan.notes[0]
    with pytest.raises(ReportError, match="--max-seconds"):
        plan_engines(["em"], {}, 1_000_000, 2, 2, 1.0)
    # SVI and NUTS without this report's MAP point pay for their own MAP start
    assert estimate_seconds("nuts", 500, 2, 2, {}, map_point=False) > estimate_seconds("nuts", 500, 2, 2, {})


def test_nuts_under_the_laplace_metric_is_charged_a_depth_4_tree():
    """Above 100 parameters NUTS runs under the Laplace metric with robust U-turn checks (7-12.6 steps per draw
    measured from 1,000 to 50,000 rows at K = 4, D = 8): L = 16, not 8 p^(1/4) = 29 at p = 179."""
    from analysis.budget import LAPLACE_STEPS, gradient_seconds

    t = gradient_seconds(50_000, 4, 8)
    laplace = estimate_seconds("nuts", 50_000, 4, 8, {})
    assert laplace == pytest.approx(8.0 + 2 * 1500 * LAPLACE_STEPS * t)
    forced_off = estimate_seconds("nuts", 50_000, 4, 8, {"laplace_mass": False})
    assert forced_off == pytest.approx(8.0 + 2 * 1500 * 8 * 179 ** 0.25 * t)
    assert estimate_seconds("nuts", 500, 2, 2, {}) == estimate_seconds("nuts", 500, 2, 2, {"laplace_mass": False})


def test_the_cost_grows_with_rows_and_columns():
    for m in ALL_METHODS:
        assert estimate_seconds(m, 10_000, 2, 5, {}) > estimate_seconds(m, 1_000, 2, 5, {})
        assert estimate_seconds(m, 1_000, 2, 10, {}) > estimate_seconds(m, 1_000, 2, 5, {})


@pytest.fixture
def wide_csv(tmp_path):
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(0, 1, (30, 50)), rng.normal(1.5, 1, (30, 50))])
    path = tmp_path / "wide.csv"
    np.savetxt(path, x, delimiter=",", header=",".join(f"c{j}" for j in range(50)), comments="")
    return path


def test_60_rows_by_50_columns_gets_an_answer_in_seconds(wide_csv, tmp_path, capsys):
    """The issue's case: 25 minutes of silence before; now EM / hard EM with diagonal covariances, the
    NumPyro engines skipped with the reason (metrics.json "failed"), exit 0, well within 60 s."""
    out = tmp_path / "r"
    t0 = time.perf_counter()
    code = main(["--data", str(wide_csv), "-k", "2", "--out", str(out), "--quiet"])
    seconds = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 0, err
    assert seconds < 60, seconds
    assert err.count("gmm-report: note:") == 1 and "the 60 rows give about 30" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["engines"]) == {"em", "hard_em"}
    assert set(metrics["failed"]) == {"map", "svi", "nuts"}
    assert all(v.startswith(SKIPPED) for v in metrics["failed"].values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert "diag" in json.dumps(manifest)  # the fallback is in the engine options on record
    assert {c["covariance_type"] for c in metrics["engines"].values()} == {"diag"}  # and in each engine's metrics
    assert any("fit diagonal covariances instead" in n for n in metrics["notes"])
    page = (out / "report.html").read_text()
    assert page.count("covariance_type=diag") == 2 and "fit diagonal covariances instead" in page
    print(f"60 x 50 CSV: {seconds:.1f}s")


def test_over_budget_is_one_line_and_exit_2(wide_csv, tmp_path, capsys):
    out = tmp_path / "r"
    code = main(["--data", str(wide_csv), "-k", "2", "--out", str(out), "--quiet", "--max-seconds", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--max-seconds" in err, err
    assert not out.exists()
