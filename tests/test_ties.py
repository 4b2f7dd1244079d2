"""Ties with the best: on a crafted study folder whose per-image records make two trials
tied with the best and one clearly not, `find_ties` gives exactly the trials within z paired SE,
`fersearch best` lists them, and `best --evaluate` retrains the tied configurations (validation
only) and keeps the highest mean val_acc; `--ties 1` retrains the best alone."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, write_meta
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.paired import encode
from fersearch.report import tiebreak
from fersearch.report.analysis import rank_trials
from fersearch.report.best import best
from fersearch.report.console import closing_lines
from fersearch.report.ties import find_ties
from fersearch.results.experiment import PER_IMAGE_FILE, read_history, read_per_image, read_trials
from fersearch.results.trial_files import write_history, write_trials

runner = CliRunner()
Z = 2.0
# A small CNN that trains an epoch on the tiny set in about a second; the trials differ by lr.
FAST = {"blocks": 2, "filters": [8, 16], "dropout": [0.0, 0.0], "dense": 32, "dense_dropout": 0.0,
        "batch_norm": True, "batch_size": 32, "normalize": "standardize", "epochs": 1, "patience": 1}
LR = {"best": 3e-3, "near": 2e-3, "close": 1e-3, "far": 5e-3}


def correct_vectors(n: int) -> dict[str, np.ndarray]:
    """best right on the first 2n/3 images; near misses one of them; close misses 4 and gets one
    other; far gets only the first n/6 right (far beyond the noise)."""
    k = 2 * n // 3
    best_ = np.arange(n) < k
    near = best_.copy()
    near[k - 1] = False
    close = best_.copy()
    close[k - 4:k] = False
    close[k] = True
    far = np.arange(n) < n // 6
    return {"best": best_, "near": near, "close": close, "far": far}


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """diff and paired SE of acc(a) - acc(b), written out here (Dietterich 1998) to check ties.py."""
    n, only_a, only_b = len(a), int((a & ~b).sum()), int((b & ~a).sum())
    return (only_a - only_b) / n, math.sqrt((only_a + only_b) - (only_a - only_b) ** 2 / n) / n


@pytest.fixture(scope="module")
def tied_study(tmp_path_factory, tiny_csv, tiny_data):
    """results/tied/: 4 finished trials of 1 epoch written with the project's writers; their
    per-image records make `near` and `close` tied with `best`, and `far` not."""
    from fersearch.data import load

    exp = tmp_path_factory.mktemp("results") / "tied"
    exp.mkdir()
    n_val = int((tiny_data.split == 1).sum())
    vectors = correct_vectors(n_val)
    rows, history, records = [], [], []
    for tid, correct in vectors.items():
        cfg = TrainConfig.from_dict({**FAST, "lr": LR[tid]})
        val_acc = float(correct.mean())
        rows.append({"trial_id": tid, "status": "completed", "epochs": 1, "best_val_acc": val_acc, "best_epoch": 1,
                     "last_val_acc": val_acc, "config_json": json.dumps(cfg.to_dict()), "config/lr": LR[tid]})
        history.append({"trial_id": tid, "epoch": 1, "train_loss": 1.5, "train_acc": 0.4, "val_loss": 1.6,
                        "val_acc": val_acc})
        records.append({"trial_id": tid, "epoch": 1, **encode(correct, np.full(n_val, 1.0))})
    write_trials(exp, rows)
    write_history(exp, history)
    (exp / PER_IMAGE_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    fer = load(tiny_csv, log=lambda *_: None)
    write_meta(exp, {"name": "tied", "created": "2026-12-02T00:00:00+00:00", "trials": 4, "max_epochs": 1,
                     "scheduler": "fifo", "data": {"path": str(tiny_csv), "format": fer.format, "sha256": fer.sha256},
                     "noise": {"n_val": n_val, "majority": 0.25, "z": Z}})
    return exp


# ------------------------------------------------------------------ (a) who is tied
def test_find_ties_gives_exactly_the_trials_within_z_paired_se(tied_study):
    ranked = rank_trials(read_trials(tied_study), read_history(tied_study))
    ties = find_ties(ranked, read_per_image(tied_study), Z)
    n_val = json.loads((tied_study / "fersearch.json").read_text())["noise"]["n_val"]
    vectors = correct_vectors(n_val)
    expected = []
    for tid in ("near", "close", "far"):
        diff, se = mcnemar(vectors[tid], vectors["best"])
        t = next(t for t in ties.compared if t.trial_id == tid)
        assert t.diff == pytest.approx(diff) and t.se == pytest.approx(se), tid
        if abs(diff) <= Z * se:
            expected.append(tid)
    assert expected == ["near", "close"]  # the crafted vectors do what they say
    assert ties.known and ties.best == "best" and ties.ids == ["best", "near", "close"]
    assert [t.trial_id for t in ties.tied] == expected


# ------------------------------------------------------------------ (b) `best` lists them
def test_best_text_and_json_list_the_tied_trials_with_their_paired_test(tied_study):
    res = runner.invoke(app, ["best", str(tied_study)])
    assert res.exit_code == 0, res.output
    assert "tied: 2 of the other 3 trials are within noise of the best trial best" in res.stdout
    table = res.stdout.split("within noise of the best", 1)[1].split("\n\n", 1)[0]
    ties = best(tied_study).analysis.ties
    assert ties is not None
    for t in ties.tied:
        assert t.trial_id in table and f"{100 * t.diff:+.1f}" in table and f"{100 * t.se:.1f}" in table
        assert f"{t.diff / t.se:+.2f}" in table
    assert "far" not in table
    out = json.loads(runner.invoke(app, ["best", str(tied_study), "--json"]).stdout)
    assert out["ties"]["tied"] == ["near", "close"] and out["ties"]["best"] == "best"
    assert out["ties"] == json.loads(json.dumps(ties.to_dict()))
    # the end of `tune` says the same (closing_lines is what the CLI prints after the summary)
    closing = "\n".join(closing_lines(best(tied_study)))
    assert "tied: 2 of the other 3 trials are within noise of the best trial best" in closing


def test_no_tie_and_old_folders_take_one_line(tied_study, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tied_study, old)
    (old / PER_IMAGE_FILE).unlink()
    res = runner.invoke(app, ["best", str(old)])
    assert res.exit_code == 0 and tiebreak.NOT_KNOWN in res.stdout
    assert json.loads(runner.invoke(app, ["best", str(old), "--json"]).stdout)["ties"]["known"] is False
    lone = tmp_path / "lone"
    shutil.copytree(tied_study, lone)
    records = (lone / PER_IMAGE_FILE).read_text().splitlines()
    lines = [ln for ln in records if '"near"' not in ln and '"close"' not in ln]
    (lone / PER_IMAGE_FILE).write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["best", str(lone)])
    assert "no tie: each of the other 1 trial is beyond noise of the best" in res.stdout
    assert "within noise of the best trial" not in res.stdout


def test_ties_zero_is_a_one_line_error_and_the_default_is_the_library_s(tied_study):
    import inspect

    from fersearch.cli import best_cmd
    from fersearch.report.evaluate import evaluate

    assert_one_line_error(runner.invoke(app, ["best", str(tied_study), "--evaluate", "--ties", "0"]),
                          "--ties 0", "--ties 1")
    assert not (tied_study / "best").exists()
    cli_default = inspect.signature(best_cmd).parameters["ties"].default
    assert cli_default == inspect.signature(evaluate).parameters["ties"].default == tiebreak.DEFAULT_TIES


# ------------------------------------------------------------------ (c) the tie-break
@pytest.fixture
def counted(monkeypatch):
    """Every fit (its lr) and every scoring of a retrained model (how many images) of best --evaluate."""
    import fersearch.train as train

    seen: dict[str, list] = {"fit": [], "scored": []}
    fit, predict_proba = train.fit, train.predict_proba
    monkeypatch.setattr(train, "fit", lambda cfg, *a, **k: seen["fit"].append(cfg.lr) or fit(cfg, *a, **k))
    monkeypatch.setattr(train, "predict_proba",
                        lambda model, images, **k: seen["scored"].append(len(images)) or predict_proba(model, images,
                                                                                                         **k))
    return seen


def test_evaluate_ties_2_retrains_both_tied_configs_and_picks_the_highest_mean_val(tied_study, tmp_path, counted):
    import shutil

    exp = shutil.copytree(tied_study, tmp_path / "tied")
    res = runner.invoke(app, ["best", str(exp), "--evaluate", "--ties", "2"])
    assert res.exit_code == 0, res.output
    m = json.loads((exp / "best" / "metrics.json").read_text())
    tb = m["tie_break"]
    assert tb["tied"] == ["best", "near", "close"] and tb["retrained"] == ["best", "near"]
    assert tb["left_out"] == ["close"] and tb["ties_limit"] == 2 and tb["seeds_per_config"] == 2
    means = {c["trial_id"]: c["mean_val_acc"] for c in tb["configs"]}
    for c in tb["configs"]:
        assert c["seeds"] == [0, 1] and c["mean_val_acc"] == pytest.approx(np.mean(c["val_acc"]))
    assert tb["picked"] == max(means, key=means.get) == m["trial_id"]
    assert [c["trial_id"] for c in tb["configs"] if c["picked"]] == [tb["picked"]]
    # two seeds of each tied configuration trained, nothing twice; the test split scored for the pick alone
    assert sorted(counted["fit"]) == sorted([LR["best"]] * 2 + [LR["near"]] * 2)
    assert counted["scored"] == [m["n"]] * 2
    assert m["seeds"]["seeds"] == [0, 1] and m["seeds"]["val_acc"]["values"] == pytest.approx(
        next(c["val_acc"] for c in tb["configs"] if c["picked"]))
    assert json.loads((exp / "best" / "config.json").read_text())["lr"] == LR[tb["picked"]]
    prov = json.loads((exp / "best" / "fersearch.json").read_text())
    assert prov["tie_break"] == tb and prov["command"].endswith("--ties 2")
    # the console and both pages say who was tied and how the tie was broken
    assert "tie-break: 2 tied configurations retrained with 2 seeds each" in res.stdout
    for page in ("report.html", "report.md"):
        text = (exp / "best" / page).read_text()
        assert "Ties with the best" in text and "left out by --ties 2: close" in text
        assert f"{means[tb['picked']]:.4f}" in text and "picked" in text


def test_evaluate_ties_1_trains_the_best_alone(tied_study, tmp_path, counted):
    import shutil

    exp = shutil.copytree(tied_study, tmp_path / "tied")
    res = runner.invoke(app, ["best", str(exp), "--evaluate", "--ties", "1", "--json"])
    assert res.exit_code == 0, res.output
    m = json.loads((exp / "best" / "metrics.json").read_text())
    assert "tie_break" not in m and m["trial_id"] == "best" and m["seeds"]["n"] == 1
    assert counted["fit"] == [LR["best"]] and counted["scored"] == [m["n"]]
    assert json.loads((exp / "best" / "fersearch.json").read_text())["tie_break"] is None
