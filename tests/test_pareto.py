"""Accuracy and latency together: `tune --objectives val_acc,latency` makes a two-objective Optuna
study, every trial records latency_ms, params and onnx_bytes in trials.csv, `best` shows the Pareto
front and the rule that picked the winner, `best --max-latency-ms X` picks the most accurate trial
within the budget and `best --evaluate` retrains that one; mistakes are one-line errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TUNED, assert_one_line_error, copy_experiment
from fersearch.cli import app
from fersearch.results.experiment import best_under_latency, pareto_front, read_trials, trial_config

runner = CliRunner()


def _trials(rows):
    return pd.DataFrame(rows, columns=["trial_id", "status", "best_val_acc", "latency_ms"])


def test_the_front_keeps_only_trials_nothing_beats_on_both():
    t = _trials([("a", "completed", 0.70, 1.0), ("b", "completed", 0.60, 0.5), ("c", "stopped", 0.65, 2.0),
                 ("d", "completed", 0.75, 3.0), ("e", "diverged", 0.99, 0.1), ("f", "completed", 0.60, 0.6),
                 ("g", "running", None, 0.2)])
    assert pareto_front(t)["trial_id"].tolist() == ["b", "a", "d"]  # fastest first; c, f dominated; e diverged
    assert best_under_latency(t, 2.0)["trial_id"] == "a"
    assert best_under_latency(t, 0.55)["trial_id"] == "b"
    assert best_under_latency(t, 0.4) is None
    assert pareto_front(t.drop(columns="latency_ms")).empty  # a search made before latency was measured


@pytest.fixture(scope="module")
def two_objective(tmp_path_factory, fast_space, tiny_csv):
    """A real search through the CLI with --objectives val_acc,latency (4 trials x 2 epochs)."""
    results = tmp_path_factory.mktemp("results")
    settings = {**TUNED, "trials": 4, "max_epochs": 2}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    res = runner.invoke(app, ["tune", "--space", str(fast_space), "--data", str(tiny_csv), "--name", "mo",
                              "--results", str(results), "--objectives", "val_acc,latency", "-q", *flags])
    assert res.exit_code == 0, res.output
    return results / "mo"


@pytest.mark.slow
def test_every_trial_records_its_latency_and_the_study_has_both_objectives(two_objective):
    from fersearch.model import build_model, count_parameters
    from fersearch.results.study import load_study

    trials = read_trials(two_objective)
    assert len(trials) == 4
    for _, row in trials.iterrows():
        assert 0 < row["latency_ms"] < 100 and row["onnx_bytes"] > 4 * row["params"]  # float32 weights
        assert row["params"] == count_parameters(build_model(trial_config(row)))
    study = load_study(two_objective)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    by_number = {t.number: t.values for t in study.trials if t.state.name == "COMPLETE"}
    assert len(by_number) == 4
    recorded = sorted(zip(trials["best_val_acc"].round(6), trials["latency_ms"].round(6)))
    assert sorted((round(a, 6), round(lat, 6)) for a, lat in by_number.values()) == recorded
    assert json.loads((two_objective / "fersearch.json").read_text())["objectives"] == ["val_acc", "latency"]


@pytest.mark.slow
def test_best_shows_the_front_and_picks_under_a_latency_budget(two_objective):
    trials = read_trials(two_objective)
    front = pareto_front(trials)
    res = runner.invoke(app, ["best", str(two_objective)])
    assert res.exit_code == 0, res.output
    assert f"Pareto front, accuracy vs latency (batch 1, 1 CPU thread, ONNX Runtime): {len(front)} of 4" in res.stdout
    assert "picked trial" in res.stdout and "by the rule: the most accurate trial" in res.stdout
    budget = float(front["latency_ms"].iloc[0])  # only the fastest trial on the front fits
    expected = best_under_latency(trials, budget)["trial_id"]
    out = json.loads(runner.invoke(app, ["best", str(two_objective), "--max-latency-ms", f"{budget}", "--json"]).stdout)
    assert out["trial_id"] == expected == front["trial_id"].iloc[0]
    assert out["pareto"]["picked"] == expected and "latency <=" in out["pareto"]["rule"]
    assert [r["trial"] for r in out["pareto"]["front"]] == front["trial_id"].tolist()


@pytest.mark.slow
def test_best_evaluate_retrains_the_trial_within_the_budget(two_objective, tmp_path):
    exp = copy_experiment(two_objective, tmp_path / "results")
    trials = read_trials(exp)
    budget = float(pareto_front(trials)["latency_ms"].iloc[0])
    expected = best_under_latency(trials, budget)["trial_id"]
    res = runner.invoke(app, ["best", str(exp), "--evaluate", "--epochs", "1", "--max-latency-ms", str(budget)])
    assert res.exit_code == 0, res.output
    best = exp / "best"
    assert json.loads((best / "metrics.json").read_text())["trial_id"] == expected
    assert (best / "pareto.png").stat().st_size > 0 and (best / "model.onnx").is_file()
    table = pd.read_csv(best / "pareto.csv")
    assert table.loc[table["picked"] == "<- picked", "trial"].tolist() == [expected]
    assert f"--max-latency-ms {budget:g}" in json.loads((best / "fersearch.json").read_text())["command"]
    page = (best / "report.html").read_text()
    assert "latency &lt;= " in page and "<h2>Accuracy against latency (Pareto front)</h2>" in page
    assert page.count('alt="Accuracy against latency (Pareto front)"') == 1  # the plot, drawn once
    assert f" >{expected}</td>" in page.split("Accuracy against latency (Pareto front)</h2>")[1]  # the table
    assert "## Accuracy against latency (Pareto front)" in (best / "report.md").read_text()


def test_an_unknown_objective_is_a_one_line_error_before_ray(ray_never_started, in_tmp):
    for bad, what in (("val_acc,speed", "unknown objective 'speed'"), ("latency", "val_acc must come first"),
                      ("val_acc,val_acc", "each once")):
        assert_one_line_error(runner.invoke(app, ["tune", "--objectives", bad, "--trials", "1"]), what,
                              "val_acc,latency")
    assert not (in_tmp / "results").exists()


@pytest.mark.slow
def test_a_budget_no_trial_meets_is_a_one_line_error_and_changes_nothing(two_objective):
    fastest = float(pd.to_numeric(read_trials(two_objective)["latency_ms"]).min())
    before = sorted(p.name for p in two_objective.iterdir())
    for flags in ([], ["--evaluate"]):
        assert_one_line_error(runner.invoke(app, ["best", str(two_objective), "--max-latency-ms",
                                                  f"{fastest / 10}", *flags]), "within --max-latency-ms",
                              "raise the budget")
    assert_one_line_error(runner.invoke(app, ["best", str(two_objective), "--max-latency-ms", "0"]), "above 0 ms")
    assert sorted(p.name for p in two_objective.iterdir()) == before
