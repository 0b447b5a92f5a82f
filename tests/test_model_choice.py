"""analysis.model_choice: K and the covariance type chosen by BIC when the user gives no K (issue 21 part 3).
The whole report without -k: tests/test_report_user_data.py (slow)."""

import numpy as np
import pytest

from analysis.errors import ReportError
from analysis.model_choice import candidate_ks, choose_model, fitted_text, selection_metrics


def test_candidate_ks_are_the_identifiable_ones():
    assert candidate_ks(300, 2, "full") == list(range(1, 10))
    assert candidate_ks(178, 13, "full") == list(range(1, 10))  # wine: 178 // 14 = 12 > 9
    assert candidate_ks(60, 13, "full") == [1, 2, 3, 4]  # 60 // 14
    assert candidate_ks(60, 50, "full") == [1] and candidate_ks(60, 50, "diag") == list(range(1, 10))
    assert candidate_ks(10, 61, "full") == []


def test_bic_picks_three_separated_clusters_and_skips_degenerate_fits():
    rng = np.random.default_rng(3)
    z = rng.integers(0, 3, 240)
    x = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])[z] + rng.normal(size=(240, 2))
    lines = []
    choice = choose_model(x, seed=0, progress=lines.append, max_k=4, covariance_types=("spherical",))
    assert lines == [f"choosing K: EM with spherical covariances, K = {k} of 1..4 (5 restarts)" for k in range(1, 5)]
    assert (choice.k, choice.covariance_type) == (3, "spherical") and choice.icl_choice == {"k": 3, "covariance_type": "spherical"}
    assert [r["k"] for r in choice.table] == [1, 2, 3, 4] and all(r["error"] is None for r in choice.table)
    bics = {r["k"]: r["bic"] for r in choice.table}
    assert bics[3] < min(bics[1], bics[2], bics[4])
    metrics = selection_metrics(choice, ["em", "nuts"])
    assert metrics["k"] == 3 and metrics["covariance_types"] == ["spherical"] and len(metrics["table"]) == 4
    assert fitted_text(choice, ["em", "nuts"]) == ("em fit K = 3 with spherical covariances; nuts fit K = 3 with full "
                                                   "covariances (their model's only type)")
    # integer ratings: every K > 1 collapses onto shared values (degenerate: not eligible), K = 1 is chosen
    ratings = np.random.default_rng(0).integers(1, 6, (300, 2)).astype(float)
    choice = choose_model(ratings, seed=0, max_k=2, covariance_types=("full",))
    assert all(r["k"] == choice.k or r["degenerate"] or r["bic"] > min(q["bic"] for q in choice.table if not q["degenerate"])
               for r in choice.table)
    assert not next(r for r in choice.table if r["k"] == choice.k)["degenerate"]


def test_no_eligible_fit_is_one_line():
    t = np.random.default_rng(0).normal(size=50)
    x = np.column_stack([t, 2.0 * t + 1.0])  # rows on a line: every full covariance is singular (degenerate)
    with pytest.raises(ReportError, match="give --num-components"):
        choose_model(x, max_k=1, covariance_types=("full",))


def test_the_figure_zooms_on_the_choice_and_names_what_it_leaves_out():
    from analysis.plots.selection import plot_model_selection

    table = [{"covariance_type": cov, "k": k, "bic": base + 100.0 * (k - 3) ** 2, "icl": base + 100.0 * (k - 3) ** 2 + 5,
              "degenerate": 1 if k == 5 else 0, "error": None}
             for cov, base in (("full", 7000.0), ("diag", 7050.0), ("tied", 7100.0), ("spherical", 20000.0))
             for k in range(1, 6)]
    fig = plot_model_selection(table, {"k": 3, "covariance_type": "full"}, {"k": 3, "covariance_type": "full"})
    bic_ax = fig.axes[0]
    assert bic_ax.get_ylim()[1] < 20000 and "3, full" in bic_ax.get_title()
    assert any("above the axis: spherical" in t.get_text() for t in bic_ax.texts)
