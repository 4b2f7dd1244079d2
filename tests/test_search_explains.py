"""The search explains itself: the scheduler's log, the diagnoses in `best`, and bench_search --quick (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fersearch import paired
from fersearch.cli import app
from fersearch.results.decisions import read_decisions
from fersearch.results.experiment import read_history, read_per_image
from fersearch.results.noise import REASONS

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_search.py"
LEARNS, STUCK = 5e-3, 1e-6  # learning rates of the fast CNN: learns within 2 epochs / stays at chance


def stuck_or_learning(trial):
    """The fast test CNN at a learning rate that learns or one that cannot (warm-start points fix the order)."""
    trial.suggest_categorical("lr", (LEARNS, STUCK))
    return {"blocks": 2, "filters_1": 16, "filters_2": 32, "dropout": [0.0, 0.0], "dense": 64, "dense_dropout": 0.0,
            "batch_norm": True, "batch_size": 16, "normalize": "standardize"}


stuck_or_learning.points = [{"lr": lr} for lr in (LEARNS, LEARNS, STUCK, LEARNS, STUCK, STUCK)]


@pytest.mark.slow
def test_asha_search_logs_its_decisions_and_best_explains_the_search(tuned_experiment):
    decisions = read_decisions(tuned_experiment)
    assert decisions, "an ASHA search logs a decision at each rung it reaches"
    assert {d.reason for d in decisions} <= set(REASONS)
    assert all(d.rung in (1, 2) and d.action in ("CONTINUE", "STOP") for d in decisions)  # grace 1, rf 2, max 3
    meta = json.loads((tuned_experiment / "fersearch.json").read_text())
    val = meta["data"]["counts"]["val"]
    first = next(d for d in decisions if d.reason not in ("few", "no value"))
    n_val = sum(val.values())  # the margin is computed on the validation split's size
    # the noise inputs the scheduler used, recorded once when the search started (noise.noise_inputs)
    assert meta["noise"] == {"n_val": n_val, "majority": pytest.approx(max(val.values()) / n_val), "z": 2.0}
    unpaired = 2 * ((first.value * (1 - first.value) + first.cutoff * (1 - first.cutoff)) / n_val) ** 0.5
    assert first.unpaired_margin == pytest.approx(unpaired)
    # Paired: the margin is z * the McNemar SE against the rung's cutoff trial, on the same images,
    # whose per-image record the log holds beside its own decision at that rung.
    assert first.paired and first.ref_trial
    ref = next(d for d in decisions if d.trial_id == first.ref_trial and d.rung == first.rung)
    mine, theirs = first.images, ref.images
    assert mine.n == theirs.n == n_val and mine.acc == pytest.approx(first.value, abs=1e-6)
    assert first.margin == pytest.approx(2 * paired.acc_diff_se(mine, theirs))
    # Every epoch of every trial wrote its per-image record (per_image.jsonl), for ties after the search.
    records = read_per_image(tuned_experiment)
    history = read_history(tuned_experiment)
    assert sum(len(v) for v in records.values()) == len(history)
    assert all(paired.decode(r).n == n_val for v in records.values() for r in v.values())
    result = CliRunner().invoke(app, ["best", str(tuned_experiment)])
    assert result.exit_code == 0, result.output
    assert "what the search saw:" in result.output
    assert "seed configuration was not among the trials" in result.output  # the fast space has no seed point


@pytest.mark.slow
def test_bench_search_quick_reports_every_line_and_the_targets(tmp_path):
    out, log = tmp_path / "bench.json", tmp_path / "runs.jsonl"

    curves = tmp_path / "curves.jsonl"

    def bench():
        proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--log", str(log), "--out", str(out),
                               "--curves", str(curves), "--keep", str(tmp_path / "keep")],
                              check=False, capture_output=True, text=True, timeout=400, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(out.read_text())
        assert json.loads(proc.stdout) == report
        return report

    report = bench()
    assert len(log.read_text().splitlines()) == 4  # one line per finished run
    assert bench()["results"] == report["results"]  # run again: every run read back from the log,
    assert len(log.read_text().splitlines()) == 4  # none trained again
    lines = report["results"]["hard"]
    assert set(lines) == {"default", "random_fifo", "seed+standardize", "point:std"}
    for line in lines.values():
        assert 0 <= line["best_val_acc"]["mean"] <= 1 and 0 <= line["test_acc"]["mean"] <= 1
    assert lines["random_fifo"]["epochs"]["mean"] == 4 * 2  # FIFO: every trial to --max-epochs
    assert lines["point:std"]["epochs"]["mean"] == 2
    t = report["targets"]["hard"]
    assert set(t) == {"default", "random_fifo"}  # no floor (it needs every warm-start point) nor oracle here
    assert t["random_fifo"]["epochs_share"] == 1.0 and 0 < t["default"]["epochs_share"] <= 1.0
    assert t["default"]["recipe_winners"] in (0.0, 1.0)  # 4 trials, all warm-start points: a recipe won
    # random_fifo's curves, every epoch with its per-image record, for replay_rungs.py (written once: the rerun
    # trained nothing); they replay through the paired and the unpaired rule.
    (search,) = [json.loads(line) for line in curves.read_text().splitlines()]
    assert len(search["curves"]) == 4 and search["noise"]["n_val"] > 0
    assert all(len(c["val_correct"]) == len(c["val_acc"]) == 2 and all(c["val_correct"]) for c in search["curves"])
    proc = subprocess.run([sys.executable, str(BENCH.parent / "replay_rungs.py"), str(curves), "--graces", "1",
                           "--reduction-factors", "2"], check=True, capture_output=True, text=True, timeout=120)
    replayed = json.loads(proc.stdout)
    assert set(replayed["searches"][0]["replays"]) >= {"paired/grace1/rf2", "noise/grace1/rf2"}
    assert replayed["paired"]["grace1/rf2"]["stops_against_unpaired_guard"] == 0
    # The tie set `best` prints, against one recomputed from the kept folders' files alone.
    proc = subprocess.run([sys.executable, str(BENCH.parent / "bench_ties.py"), str(tmp_path / "keep")], check=True,
                          capture_output=True, text=True, timeout=120)
    checked = json.loads(proc.stdout)
    assert checked["searches_checked"] == 2 and checked["all_equal"], checked


@pytest.mark.slow
def test_report_pages_show_the_diagnoses(evaluated_experiment):
    md = (evaluated_experiment / "best" / "report.md").read_text()
    html = (evaluated_experiment / "best" / "report.html").read_text()
    assert "### What the search saw" in md and "What the search saw</h3>" in html
    assert "seed configuration was not among the trials" in md


@pytest.mark.slow
def test_tune_ends_with_the_diagnoses(tuned_experiment, monkeypatch):
    from fersearch.search import driver

    monkeypatch.setattr(driver, "tune", lambda options: driver.load_result(tuned_experiment))
    result = CliRunner().invoke(app, ["tune", "--trials", "6", "--quiet"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.index("next: fersearch best") < out.index("what the search saw:")
    assert "  - The seed configuration was not among the trials" in out


@pytest.mark.slow
def test_a_real_search_stops_trials_clearly_below_the_rung_and_only_those(tmp_path):
    """Through Ray: 1,000 faces (100 validation images), trials that learn fill the rung at epoch 2,
    the ones stuck at chance are clearly below it and stopped there; the log says why."""
    from fersearch.data.synth import synthetic_data
    from fersearch.search.driver import tune

    result = tune(space=stuck_or_learning, data=synthetic_data(1000, 0), trials=6, max_epochs=4, grace_period=2,
                  reduction_factor=2, cpus_per_trial=1, gpus=0, seed=0, results=tmp_path, name="stops", verbose=False)
    trials = result.trials.set_index("trial_id")
    stuck = trials["config/lr"] == STUCK
    assert (trials.loc[~stuck, "status"] == "completed").all()
    stops = [d for d in read_decisions(result.path) if d.action == "STOP"]
    assert stops and all(d.reason in ("stop", "loss") and d.rung == 2 for d in stops)
    assert all(d.cutoff - d.value > d.margin if d.metric == "val_acc"  # clearly below: beyond the noise
               else d.loss - d.loss_cutoff > d.loss_margin for d in stops)
    assert set(trials.index[trials["status"] == "stopped"]) == {d.trial_id for d in stops}
    assert set(trials.index[trials["status"] == "stopped"]) <= set(trials.index[stuck])
