"""gmm-report end to end on small problems, and every bad input exits 2 with one line on stderr."""

import json
import re

import numpy as np
import pytest

from analysis import report
from analysis.cli import main
from analysis.errors import ReportError
from analysis.files import atomic_output_dir, finalize_output_dir, prepare_output_dir, write_atomically
from analysis.html_page import render_html, table_html
from analysis.metrics import METRICS_SCHEMA, validate_metrics
from analysis.progress import REPORT_STAGES

FAST = ["--num-samples", "150", "--quiet"]


def _check_output(out, methods):
    files = {p.name for p in out.iterdir()}
    assert {"report.html", "metrics.json", "manifest.json"} <= files
    assert {f"{m}.nc" for m in methods} <= files
    metrics = json.loads((out / "metrics.json").read_text())
    validate_metrics(metrics)
    assert set(metrics["engines"]) == set(methods)
    manifest = json.loads((out / "manifest.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{64}", manifest["data"]["sha256"])
    assert manifest["versions"]["arviz"] and manifest["versions"]["jax"]
    page = (out / "report.html").read_text()
    figures = sorted(p.stem for p in (out / "figures").glob("*.png"))
    assert figures
    for name in figures:  # every figure is embedded in the HTML
        assert f'data-name="{name}"' in page
    assert page.count("data:image/png;base64,") == len(figures)
    assert "src=\"http" not in page and "<script src" not in page  # self-contained
    for m in methods:
        assert f"<td>{m}</td>" in page
    return metrics, manifest, page


def _stages(err: str) -> list:
    """The documented stage (``REPORT_STAGES``) of each progress line of ``err`` that names one, in order."""
    lines = [re.sub(r"^\[gmm-report +[\d.]+s\] (\[\d+/\d+\] )?", "", line) for line in err.splitlines()
             if line.startswith("[gmm-report")]
    return [s for s in (next((s for s in REPORT_STAGES if line.startswith(s)), None) for line in lines) if s]


def test_report_em_hard_em_end_to_end(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["--methods", "em,hard_em", "--out", str(out), "--seed", "3", *FAST[:2]]) == 0
    stages = _stages(capsys.readouterr().err)  # every long stage names itself when it starts, in the documented order
    assert [REPORT_STAGES.index(s) for s in stages] == sorted(REPORT_STAGES.index(s) for s in stages)
    assert stages.count("fitting") == stages.count("aligning labels and scoring") == stages.count("InferenceData") == 2
    assert set(stages) == {"sampling", "fitting", "aligning labels and scoring", "responsibilities", "predictive checks",
                           "drawing figure", "InferenceData", "figure", "writing"}
    metrics, manifest, page = _check_output(out, ["em", "hard_em"])
    assert stages.count("figure") + stages.count("drawing figure") == len(list((out / "figures").glob("*.png")))
    assert stages.count("drawing figure") == 6  # data, components, assignments, uncertainty, traces, em_snapshots
    assert metrics["problem"]["source"] == "seed_problem" and metrics["problem"]["num_samples"] == 150
    for card in metrics["engines"].values():
        assert card["ari"] > 0.5 and card["summary"]["mean_l2_error_max"] < 0.6
    assert {"data", "components", "assignments", "traces", "em_snapshots", "forest"} <= {
        p.stem for p in (out / "figures").glob("*.png")}
    assert manifest["seed"] == 3 and manifest["argv"][:2] == ["--methods", "em,hard_em"]
    assert "rank-normalised split R-hat" in page
    # refuses to overwrite without --force, replaces with it
    assert main(["--methods", "em", "--out", str(out), *FAST]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["--methods", "em", "--out", str(out), "--force", *FAST]) == 0
    assert capsys.readouterr().err == ""  # --quiet
    assert set(json.loads((out / "metrics.json").read_text())["engines"]) == {"em"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_report_on_user_csv_without_truth(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-2, 0.5, size=(60, 3)), rng.normal(2, 0.5, size=(40, 3))])
    path = tmp_path / "points.csv"
    path.write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in row) for row in x) + "\n")
    out = tmp_path / "r"
    assert main(["--data", str(path), "--num-components", "2", "--methods", "em", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "fitting em" in err  # progress lines without --quiet
    metrics, manifest, page = _check_output(out, ["em"])
    assert metrics["problem"]["truth"] is None and metrics["problem"]["num_features"] == 3
    card = metrics["engines"]["em"]
    assert card["ari"] is None and card["components"] is None and sorted(card["cluster_sizes"]) == [40, 60]
    assert manifest["data"]["columns"] == ["a", "b", "c"]
    assert "principal components" in page or (out / "figures" / "components.png").exists()


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    from analysis import plots

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_traces", boom)
    out = tmp_path / "r"
    assert main(["--methods", "em", "--out", str(out), *FAST]) == 130
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def csv_file(tmp_path):
    def make(text, name="d.csv"):
        path = tmp_path / name
        path.write_text(text)
        return str(path)

    return make


@pytest.mark.parametrize(
    "text, args, message",
    [
        ("a,b\n1,2\n3\n", [], "d.csv:3: 1 field(s), the header (line 1) has 2"),
        ("a,b\n1,2\n3,x\n", [], "column 'b' is not numeric"),
        ("a,b\n1,2\n\n3,inf\n4,-inf\n", [], "d.csv: 2 row(s) with inf values (line 4, 5)"),
        ("a,b\n1,2\n3,4\n", ["--num-components", "3"], "exceeds the number of rows"),
        ("1,2\n3,4\n", [], "header"),
        ("", [], "empty"),
        ("a,b\n1,2\n3,4\n5,7\n", ["--methods", "em,bogus"], "unknown method 'bogus'"),
        ("a,b\n" + "".join(f"{i},{i * i % 7}\n" for i in range(20)), ["--methods", "em", "--option", "em.tol=-1"], "tol"),
        ("a,b\n" + "".join(f"{i},{i * i % 7}\n" for i in range(20)), ["--methods", "em", "--option", "em.max_iter=5"],
         "unknown em option 'max_iter' (did you mean 'max_iters'?)"),
        ("a,b\n1,2\n3,4\n5,7\n", ["--num-components", "x"], "invalid int value"),
    ],
)
def test_bad_input_exits_2_with_one_line(csv_file, tmp_path, capsys, text, args, message):
    out = tmp_path / "out"
    code = main(["--data", csv_file(text), "--out", str(out), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("gmm-report: error:"), err
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()


def test_bad_npy_and_missing_file(tmp_path, capsys):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    assert main(["--data", str(tmp_path / "s.npy"), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "not numeric" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "missing.csv"), "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--num-components", "3", "--quiet", "--out", str(tmp_path / "o")]) == 2
    assert "seed problem has 2 components" in capsys.readouterr().err


def test_schema_is_documented_for_every_engine_key():
    assert set(METRICS_SCHEMA) == {"schema_version", "problem", "model_selection", "alignment", "engines", "compare",
                                   "failed", "notes", "timings"}
    with pytest.raises(ValueError, match="missing keys"):
        validate_metrics({"schema_version": 1})


def test_page_and_output_helpers(tmp_path):
    page = render_html("T", [("One", "<p>x</p>"), ("Two", table_html(["a", "b"], [["r", 1.5]]))])
    assert page.startswith("<!DOCTYPE html>") and "<h2>Two</h2>" in page and "<td>r</td>" in page
    write_atomically(tmp_path / "sub" / "f.txt", "hello")
    assert (tmp_path / "sub" / "f.txt").read_text() == "hello"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("1")
    with pytest.raises(ReportError):
        prepare_output_dir(tmp_path / "full", force=False)
    tmp = prepare_output_dir(tmp_path / "full", force=True)
    (tmp / "new").write_text("2")
    finalize_output_dir(tmp, tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["new"]
    with pytest.raises(KeyboardInterrupt), atomic_output_dir(tmp_path / "gone", force=False) as tmp:
        (tmp / "half").write_text("3")
        raise KeyboardInterrupt
    assert not (tmp_path / "gone").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_entry_points_resolve_to_the_command_line():
    """``gmm-report = "analysis.cli:main"`` (pyproject.toml) and ``python -m analysis``; the pipeline
    (``analysis.report``) does not import the command line."""
    import importlib
    import pathlib
    import tomllib

    root = pathlib.Path(__file__).resolve().parents[1]
    target = tomllib.loads((root / "pyproject.toml").read_text())["project"]["scripts"]["gmm-report"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is main
    assert "analysis.cli" in (root / "analysis" / "__main__.py").read_text()
    assert not hasattr(report, "main")


def _schema_paths(schema, prefix=""):
    """Every documented key as a dotted path; ``<method>`` stands for each engine."""
    for key, sub in schema.items():
        yield prefix + key
        if isinstance(sub, dict):
            yield from _schema_paths(sub, f"{prefix}{key}.")


def _metrics_paths(metrics, schema, prefix=""):
    for key, sub in schema.items():
        values = metrics.items() if key == "<method>" else [(key, metrics[key])]
        for _, value in values:
            yield prefix + key
            if isinstance(sub, dict):
                yield from _metrics_paths(value, sub, f"{prefix}{key}.")


def test_every_schema_name_is_produced_in_schema_order(tmp_path):
    """The structure of metrics.json, cheaply: every name METRICS_SCHEMA lists is there, and the
    sections come in the schema's order (the file's bytes depend on it)."""
    out = tmp_path / "r"
    assert main(["--methods", "em", "--out", str(out), *FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(_metrics_paths(metrics, METRICS_SCHEMA)) == set(_schema_paths(METRICS_SCHEMA))
    assert list(metrics) == list(METRICS_SCHEMA)
    for section in ("problem", "alignment", "timings"):
        assert list(metrics[section]) == list(METRICS_SCHEMA[section])
    assert set(metrics["engines"]["em"]) == set(METRICS_SCHEMA["engines"]["<method>"])


@pytest.mark.slow
def test_report_map_svi_nuts_small(tmp_path, capsys):
    out = tmp_path / "r"
    small_map = "{'num_steps': 200, 'n_init': 1}"
    args = ["--methods", "map,svi,nuts", "--out", str(out), *FAST[:2], "--num-draws", "60",
            "--option", "map.num_steps=300", "--option", "map.n_init=1",
            "--option", "svi.num_steps=300", "--option", f"svi.map_options={small_map}",
            "--option", "nuts.num_warmup=60", "--option", "nuts.num_assignment_draws=10",
            "--option", f"nuts.map_options={small_map}"]
    assert main(args) == 0
    stages = _stages(capsys.readouterr().err)
    assert [REPORT_STAGES.index(s) for s in stages] == sorted(REPORT_STAGES.index(s) for s in stages)
    assert stages.count("az.summary and LOO") == 2 and stages.count("az.compare") == 1
    assert stages.count("predictive checks") == 6  # replicated data, then the prior predictive, per engine
    metrics, _, page = _check_output(out, ["map", "svi", "nuts"])
    nuts = metrics["engines"]["nuts"]
    assert nuts["posterior"]["num_draws"] == 120 and 0.0 <= nuts["posterior"]["coverage"] <= 1.0
    assert nuts["loo"] is not None and nuts["diagnostics"]["ess_bulk_min"] > 0
    assert nuts["rhat_after"]["means"] is not None
    assert metrics["compare"] and {row["engine"] for row in metrics["compare"]} == {"svi", "nuts"}
    assert "az.compare" in page and (out / "figures" / "nuts_trace.png").exists()


def test_posterior_section_shows_mcmc_diagnostics_for_nuts_only_and_the_svi_caveat():
    """Issue 21: SVI's draws are independent draws of its guide, so R-hat / ESS / MCSE (which measured the random
    number generator: 790 / 896 on two data sets) are not shown for it, and its calibration caveat is; NUTS gets
    R-hat / ESS and its sampler's BFMI, step size and tree depth."""
    import models
    from analysis import arviz_io, report_page
    from analysis.metrics import diagnostics_metrics
    from fakes import fake_result

    truth = models.to_numpy(models.seed_problem())
    rng = np.random.default_rng(0)
    x = np.asarray(truth.means)[(rng.uniform(size=80) < 0.7).astype(int)] + 0.7 * rng.normal(size=(80, 2))
    names = ["eruptions", "waiting"]
    idatas = {m: arviz_io.to_inference_data(fake_result(m, truth, x, num_draws=40, sampler=True), x, names)
              for m in ("svi", "nuts")}
    summaries = {m: arviz_io.summary(idata) for m, idata in idatas.items()}
    cards = {"svi": {"diagnostics": None, "sampler": arviz_io.sampler_stats(idatas["svi"])},
             "nuts": {"diagnostics": diagnostics_metrics(summaries["nuts"]),
                      "sampler": arviz_io.sampler_stats(idatas["nuts"], max_tree_depth=10)}}
    assert cards["svi"]["sampler"] is None
    html = report_page._diagnostics_section(cards, summaries, None, names)
    svi = html[html.index("az.summary: svi"):]
    svi = svi[: svi.index("<h3>", 1)] if "<h3>" in svi[1:] else svi
    nuts = html[html.index("az.summary: nuts"):]
    nuts = nuts[: nuts.index("az.summary: svi")] if "az.summary: svi" in nuts else nuts
    caveat, table = svi.split("</p>", 1)
    for column in ("r_hat", "ess_bulk", "ess_tail", "mcse_mean", "mcse_sd"):
        assert column not in table, column
    assert "77%" in caveat and "too narrow" in caveat and "means[0, waiting]" in table and "hdi_5%" in table
    assert "ess_bulk" in nuts and "r_hat" in nuts
    mcmc_table = html[: html.index("az.summary")]
    assert "<td>nuts</td>" in mcmc_table and "<td>svi</td>" not in mcmc_table.split("NUTS sampler")[0]
    assert "BFMI per chain" in mcmc_table and "step size per chain" in mcmc_table and "max tree depth" in mcmc_table


def test_only_the_commands_own_process_freezes_its_garbage_collector(tmp_path):
    """``gc.freeze()`` (the warm report's full collections 0.8 -> 0.3 s) and the larger collection thresholds happen in
    the command's child process and never in a caller's: ``main(argv)`` from a notebook or a test leaves the caller's
    collector as it was. Run in subprocesses, so that this test's own process is not changed either way."""
    import gc
    import subprocess
    import sys

    from analysis.cli import GC_THRESHOLDS
    from analysis.interrupt import _CHILD_CODE

    code = ("import gc, sys; from analysis.cli import main; "
            "code = main(['--methods', 'em', '--out', sys.argv[1], '--num-samples', '150', '--quiet'], own_process={own}); "
            "print(code, gc.get_freeze_count(), *gc.get_threshold())")
    counts = {}
    for own in (False, True):
        out = subprocess.run([sys.executable, "-c", code.format(own=own), str(tmp_path / f"r{own}")], capture_output=True,
                             text=True, check=True)
        exit_code, frozen, *threshold = out.stdout.split()[-5:]
        assert exit_code == "0"
        counts[own] = (int(frozen), tuple(int(t) for t in threshold))
    assert counts[False] == (0, gc.get_threshold())  # the caller's collector as it was
    assert counts[True][0] > 10_000 and counts[True][1] == GC_THRESHOLDS  # every module object of JAX, NumPyro, ArviZ, ...
    assert "own_process=True" in _CHILD_CODE  # the command's child is its own process
