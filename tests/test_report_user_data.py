"""gmm-report on a user's own CSV (issue 15): honest words without a truth, column names everywhere,
one engine's failure survived (exit 3), bounded output, and the small defects (help once, a directory
as --data, misspelt options, library warnings as notes)."""

import json
import re
import warnings

import numpy as np
import pytest

from analysis import report
from analysis.cli import EXIT_PARTIAL, main
from analysis.metrics import validate_metrics


def _csv(path, x, names):
    path.write_text(",".join(names) + "\n" + "\n".join(",".join(f"{v:.6g}" for v in row) for row in x) + "\n")
    return str(path)


def _faithful_like(n=272, seed=0):
    """A stand-in for Old Faithful (eruption minutes ~2 / ~4.3, waiting minutes ~55 / ~80): two scales."""
    rng = np.random.default_rng(seed)
    short = rng.uniform(size=n) < 0.35
    eruptions = np.where(short, rng.normal(2.0, 0.25, n), rng.normal(4.3, 0.4, n))
    waiting = np.where(short, rng.normal(54.5, 5.9, n), rng.normal(80.0, 5.9, n)) + 2 * (eruptions - eruptions.mean())
    return np.column_stack([eruptions, waiting])


def _captions(page):
    return re.findall(r"<figcaption>(.*?)</figcaption>", page, re.S)


def test_user_csv_never_claims_a_truth_and_names_columns_and_reference(tmp_path):
    data = _csv(tmp_path / "faithful.csv", _faithful_like(), ["eruptions", "waiting"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em,hard_em", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["problem"]["columns"] == ["eruptions", "waiting"]
    assert metrics["alignment"]["reference"] == "em" and metrics["failed"] == {}
    page = re.sub(r"base64,[^\"]*", "", (out / "report.html").read_text())  # the text, not the embedded PNGs
    captions = _captions(page)
    assert len(captions) >= 5
    for caption in captions:
        assert "truth" not in caption.replace("no truth is known", ""), caption
    assert sum("EM estimate" in c for c in captions) >= 3  # the reference engine is named
    assert "eruptions" in page and "waiting" in page
    assert "Δ vs truth" not in page and "ARI" not in page
    assert "truth" not in page.replace("No truth is known", "").replace("no truth is known", "")
    for card in metrics["engines"].values():
        assert card["prior"] is None and card["warnings"] == [] and card["degenerate_components"] == []


def test_one_failing_engine_leaves_a_partial_report(tmp_path, capsys, monkeypatch):
    import inference

    real_fit = inference.fit

    def fit(method, *a, **k):
        if method == "hard_em":
            raise ValueError("zero-size array to reduction operation minimum which has no identity")
        return real_fit(method, *a, **k)

    monkeypatch.setattr(inference, "fit", fit)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["eruptions", "waiting"])
    out = tmp_path / "r"
    code = main(["--data", data, "-k", "2", "--methods", "em,hard_em", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert code == EXIT_PARTIAL == 3
    assert err.count("\n") == 1 and "partial report" in err and "hard_em" in err
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert metrics["failed"] == {"hard_em": "zero-size array to reduction operation minimum which has no identity"}
    assert set(metrics["engines"]) == {"em"} and (out / "em.nc").exists() and not (out / "hard_em.nc").exists()
    page = (out / "report.html").read_text()
    top = page[: page.index("Scorecard</h2>")]
    assert "Partial report: 1 engine(s) failed" in top and "zero-size array" in top


def test_every_engine_failing_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    import inference

    def fit(method, *a, **k):
        raise FloatingPointError("overflow")

    monkeypatch.setattr(inference, "fit", fit)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["a", "b"])
    assert main(["--data", data, "-k", "2", "--methods", "em,hard_em", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "every engine failed" in err and "FloatingPointError: overflow" in err
    assert not (tmp_path / "r").exists()


def test_engine_warnings_and_prior_go_to_metrics_and_the_top_of_the_engine_part(tmp_path, monkeypatch):
    import dataclasses

    import inference

    real_fit = inference.fit

    def fit(method, *a, **k):
        r = real_fit(method, *a, **k)
        info = dict(r.info, warnings=["component 1 is degenerate: variance collapsed"],
                    degenerate_components=[{"component": 1, "reasons": ["variance collapsed"]}],
                    prior={"description": "weights ~ Dirichlet(1); means ~ Normal(data mean, 10 sd)", "alpha": 1.0})
        return dataclasses.replace(r, info=info)

    monkeypatch.setattr(inference, "fit", fit)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["eruptions", "waiting"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em", "--out", str(out), "--quiet"]) == 0
    card = json.loads((out / "metrics.json").read_text())["engines"]["em"]
    assert card["warnings"] == ["component 1 is degenerate: variance collapsed"]
    assert card["degenerate_components"] == [{"component": 1, "reasons": ["variance collapsed"]}]
    assert card["prior"]["description"].startswith("weights ~ Dirichlet")
    page = (out / "report.html").read_text()
    engines = page[page.index("Engines: warnings and priors</h2>"):]
    assert engines.index("variance collapsed") < engines.index("Prior used") < engines.index("Scorecard</h2>")
    assert page.index("variance collapsed") < page.index("Scorecard</h2>")  # also in the summary box at the top


def test_library_warnings_become_notes_not_stderr(tmp_path, capsys, monkeypatch):
    from analysis import plots

    real = plots.plot_data

    def noisy(*a, **k):
        warnings.warn("Tight layout not applied. tight_layout cannot make Axes height small enough", UserWarning)
        return real(*a, **k)

    monkeypatch.setattr(plots, "plot_data", noisy)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["a", "b"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em", "--out", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    notes = json.loads((out / "metrics.json").read_text())["notes"]
    assert any(n.startswith("UserWarning: Tight layout not applied") for n in notes)
    assert "Tight layout not applied" in (out / "report.html").read_text()


def test_a_figure_that_fails_is_a_note(tmp_path, monkeypatch):
    from analysis import plots

    def broken(*a, **k):
        raise RuntimeError("no room")

    monkeypatch.setattr(plots, "plot_assignments", broken)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["a", "b"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em", "--out", str(out), "--quiet"]) == 0
    notes = json.loads((out / "metrics.json").read_text())["notes"]
    assert "figure 'assignments' could not be drawn: RuntimeError: no room" in notes
    assert not (out / "figures" / "assignments.png").exists() and (out / "figures" / "components.png").exists()


def test_a_netcdf_file_that_cannot_be_written_is_a_note(tmp_path, monkeypatch):
    """The engines' NetCDF files are written beside the report (a render worker): one that fails is removed, its
    card's ``netcdf`` is null and a note says why; the report and its other files stand."""
    import analysis.netcdf_file
    from analysis.metrics import validate_metrics

    def full(path, attrs, groups):
        raise OSError("disk full")

    monkeypatch.setattr(analysis.netcdf_file, "write_groups_caught", full)
    data = _csv(tmp_path / "d.csv", _faithful_like(), ["a", "b"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert "em.nc could not be written: OSError: disk full" in metrics["notes"]
    assert metrics["engines"]["em"]["netcdf"] is None and not (out / "em.nc").exists()
    assert (out / "report.html").exists() and (out / "figures" / "components.png").exists()


def test_warnings_of_a_worker_written_file_are_raised_in_the_report(tmp_path):
    """``finish_writes`` raises the warnings a worker caught while writing (``write_groups_caught``) in the report's
    process, where its ``catch_warnings`` turns them into notes."""
    from analysis.progress import Progress
    from analysis.render_pool import PendingCall
    from analysis.report import Run, finish_writes

    run = Run(["em"], {}, Progress(False, "gmm-report"), out_dir=tmp_path)
    run.writes["em"] = PendingCall(lambda: [("float32 rounding", RuntimeWarning, "netcdf_file.py", 7)], (), None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finish_writes(run)
    assert [(str(w.message), w.category, w.lineno) for w in caught] == [("float32 rounding", RuntimeWarning, 7)]
    assert run.writes == {} and run.notes == []


def test_help_is_printed_once(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.count("usage: gmm-report") == 1


def test_a_directory_as_data_says_so(tmp_path, capsys):
    assert main(["--data", str(tmp_path), "--quiet", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "is a directory" in err and "not found" not in err


def test_misspelt_option_in_the_api_names_the_valid_ones():
    import jax

    from inference import fit

    x = np.random.default_rng(0).normal(size=(40, 2))
    with pytest.raises(ValueError, match=r"unknown em option 'max_iter' \(did you mean 'max_iters'\?\); valid options: "
                                         r"chunk_size, covariance_type, .*max_iters, .*tol"):
        fit("em", jax.random.PRNGKey(0), x, 2, max_iter=5)
    with pytest.raises(ValueError, match=r"unknown nuts option 'num_sample' \(did you mean 'num_samples'\?\)"):
        fit("nuts", jax.random.PRNGKey(0), x, 2, num_sample=5)


def test_bounded_output_on_a_moderately_large_csv(tmp_path, monkeypatch):
    """20,000 x 6 rows, K = 3, EM and hard EM: the NetCDF files, figures and page stay small (what grows
    with N: the data, 20,000 x 6 float64 = 0.96 MB per file, and the posterior predictive replicates,
    stored as float32)."""
    rng = np.random.default_rng(2)
    centres = rng.normal(0, 5, size=(3, 6))
    x = centres[rng.integers(0, 3, 20_000)] + rng.normal(size=(20_000, 6))
    data = _csv(tmp_path / "big.csv", x, [f"feature_{j}" for j in range(6)])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "3", "--methods", "em,hard_em", "--out", str(out), "--quiet"]) == 0
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    html_size = (out / "report.html").stat().st_size
    assert html_size < 2_000_000, html_size  # 1.56 MB: eight figures, the two PPC ones ~0.26 MB each as base64
    # each .nc: the data (0.9 MB compressed) + 8 posterior predictive replicates in float32 (3.8 MB)
    assert total < 12_000_000, total
    assert (out / "em.nc").stat().st_size < 5_000_000
    page = (out / "report.html").read_text()
    assert "feature_5" in page  # column names label the tables (az.summary rows, columns list)


def test_degenerate_components_are_named_in_the_aligned_labels(tmp_path, monkeypatch, capsys):
    """Issue 19 part 5: integer ratings collapse components onto one value of a column; every degeneracy
    entry, warning (metrics, page, stderr) names the ALIGNED component whose covariance in the report is the
    collapsed one, also for an engine whose own numbering differs from the aligned one."""
    import dataclasses

    import inference
    from inference.dispatch import with_degeneracy_check
    from models.params import permute

    real_fit = inference.fit
    fitted = {}

    def fit(method, key, x, k, **options):
        if method != "hard_em":
            fitted[method] = real_fit(method, key, x, k, **options)
            return fitted[method]
        # an engine that found EM's fit under other labels: its own numbering is EM's rotated by one
        em, perm = fitted["em"], np.roll(np.arange(k), 1)
        info = {key_: v for key_, v in em.info.items() if key_ not in ("degenerate_components", "warnings")}
        info["assignments"] = np.argsort(perm)[np.argmax(em.responsibilities, axis=1)]
        r = dataclasses.replace(em, method="hard_em", params=permute(em.params, perm),
                                responsibilities=np.asarray(em.responsibilities)[:, perm], info=info)
        return with_degeneracy_check(r, x)

    monkeypatch.setattr(inference, "fit", fit)
    ratings = np.random.default_rng(0).integers(1, 6, (300, 2))
    data = _csv(tmp_path / "ratings.csv", ratings, ["taste", "price"])
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "3", "--methods", "em,hard_em", "--out", str(out)]) == 0
    stderr = capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    page = (out / "report.html").read_text()
    flagged = {}
    for method, card in metrics["engines"].items():
        covs = np.asarray(card["covariances"])
        collapsed = {k for k in range(3) if np.sqrt(np.diagonal(covs[k])).min() < 0.05}  # sd < 1/20 of a rating step
        named = {d["component"] for d in card["degenerate_components"]}
        assert named == collapsed, (method, named, covs)
        warned = {int(w.split()[1]) for w in card["warnings"] if w.startswith("component ") and "is degenerate" in w}
        assert warned == named
        for w in card["warnings"]:
            assert f"{method} warning: {w}" in stderr and w.split(":")[0] in page
        for d in card["degenerate_components"]:  # its effective points are about its cluster's size
            assert abs(d["effective_count"] - card["cluster_sizes"][d["component"]]) < 0.2 * d["effective_count"] + 5
        flagged[method] = named
    assert flagged["em"] and flagged["hard_em"] == flagged["em"]  # the same components, whatever the engine's numbering


def _sklearn_csv(path, loader):
    """A scikit-learn toy data set (``load_wine``, ``load_iris``) as the CSV a user would have: feature names as header."""
    bunch = loader()
    return _csv(path, bunch.data, [n.replace(" (cm)", "").replace(" ", "_") for n in bunch.feature_names])


@pytest.mark.slow
def test_wine_runs_every_engine_with_full_covariances_and_says_so(tmp_path):
    """Issue 21 part 1: wine (178 x 13, K = 3; 314 free parameters for 178 rows) has 59 rows per component for the
    14 a full covariance needs: all five engines fit full covariances, stated per engine on the page and in
    metrics.json. Few NUTS / SVI steps keep the test short; the shape of the answer is what is tested."""
    from sklearn.datasets import load_wine

    data = _sklearn_csv(tmp_path / "wine.csv", load_wine)
    out = tmp_path / "r"
    code = main(["--data", data, "-k", "3", "--out", str(out), "--quiet", "--option", "nuts.num_warmup=100",
                 "--option", "nuts.num_samples=100", "--option", "svi.num_steps=400", "--option", "map.n_init=1"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["engines"]) == ["em", "hard_em", "map", "svi", "nuts"] and metrics["failed"] == {}
    assert not any("diagonal" in n for n in metrics["notes"])
    for card in metrics["engines"].values():
        assert card["covariance_type"] == "full"
        covs = np.asarray(card["covariances"])
        assert covs.shape == (3, 13, 13) and np.abs(covs - covs * np.eye(13)).max() > 0  # correlations were fitted
    page = (out / "report.html").read_text()
    engines = page[page.index("Engines: warnings and priors</h2>"):page.index("Scorecard</h2>")]
    assert engines.count("covariance_type=full") == 5 and "13 x 13 covariance matrix" in engines


def _three_clusters_csv(path, n=300, seed=3):
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 3, n)
    x = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])[z] + rng.normal(size=(n, 2))
    return _csv(path, x, ["a", "b"])


@pytest.mark.slow
def test_without_k_the_report_chooses_k_by_bic_and_says_so(tmp_path):
    """Issue 21 part 3: user data without --num-components: BIC over K and the four covariance types (here K =
    1..4 to keep the test short; the default is 1..9) picks the 3 well-separated clusters, every engine fits K = 3,
    and the page and metrics.json say how K was chosen and what each engine fitted."""
    data = _three_clusters_csv(tmp_path / "three.csv")
    out = tmp_path / "r"
    assert main(["--data", data, "--max-k", "4", "--methods", "em,hard_em", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    sel = metrics["model_selection"]
    assert sel["k"] == 3 and metrics["problem"]["num_components"] == 3 and sel["criterion"] == "bic"
    assert sel["covariance_types"] == ["full", "diag", "spherical", "tied"] and len(sel["table"]) == 16
    assert sel["num_rows"] == 300
    eligible = [r for r in sel["table"] if r["error"] is None and not r["degenerate"]]
    best = min(eligible, key=lambda r: r["bic"])
    assert best["k"] == 3 and sel["icl_choice"]["k"] == 3
    assert metrics["engines"]["em"]["bic"] == pytest.approx(best["bic"], abs=0.1)  # the report's EM is the chosen fit
    for card in metrics["engines"].values():
        assert len(card["weights"]) == 3 and card["covariance_type"] == sel["covariance_type"]
    assert metrics["notes"][0].startswith("K = 3 chosen by BIC")
    page = (out / "report.html").read_text()
    assert "Choosing K</h2>" in page and "<b>K = 3</b>" in page and "★" in page
    assert (out / "figures" / "model_selection.png").exists()


def test_with_k_nothing_is_chosen(tmp_path):
    data = _three_clusters_csv(tmp_path / "three.csv", n=60)
    out = tmp_path / "r"
    assert main(["--data", data, "-k", "2", "--methods", "em", "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model_selection"] is None and metrics["problem"]["num_components"] == 2
    assert "Choosing K" not in (out / "report.html").read_text()
