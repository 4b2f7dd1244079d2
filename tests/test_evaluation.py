"""`fersearch best [--evaluate]` on a real search (the session's `tuned_experiment`): the winner
is judged by its best epoch, the retrain writes every promised file with scikit-learn's
figures, a failed re-run leaves best/ intact, and user mistakes are one-line errors."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm
from typer.testing import CliRunner

from conftest import EVALUATE_ARGS, assert_one_line_error, copy_experiment, read_meta, write_meta
from fersearch.cli import app
from fersearch.data import LABELS
from fersearch.report import evaluate as evaluation
from fersearch.report.best import best
from fersearch.results.experiment import read_trials
from fersearch.results.trial_files import write_trials

runner = CliRunner()
BEST_FILES = {"config.json", "metrics.json", "classification_report.txt", "confusion_matrix.png",
              "confusion_matrix_normalized.png", "learning_curves.png", "model.pt", "model.onnx",
              "fersearch.json", "report.html", "report.md", "predictions.csv", "history.csv"}


# ------------------------------------------------------------------ best (no retrain)
@pytest.mark.slow
def test_best_names_the_trial_with_the_highest_best_val_acc(tuned_experiment):
    trials = read_trials(tuned_experiment)
    winner = trials.loc[trials["best_val_acc"].astype(float).idxmax()]
    res = runner.invoke(app, ["best", "--results", str(tuned_experiment.parent)])  # default: the newest
    assert res.exit_code == 0, res.output
    assert f"best trial {winner['trial_id']}" in res.stdout and f"{winner['best_val_acc']:.4f}" in res.stdout
    assert "best val_acc over its epochs" in res.stdout and "last epoch" in res.stdout
    assert "top 5 trials" in res.stdout or f"top {len(trials)} trials" in res.stdout
    out = json.loads(runner.invoke(app, ["best", str(tuned_experiment), "--json"]).stdout)
    bt = best(tuned_experiment)
    assert out["trial_id"] == bt.trial_id == winner["trial_id"]
    assert out["best_val_acc"] == pytest.approx(float(winner["best_val_acc"]))
    assert out["config"] == json.loads(winner["config_json"])
    assert [t["trial_id"] for t in out["top"]][0] == bt.trial_id
    assert set(bt.params) == {"filters_1", "filters_2", "lr"}
    # the declared ranges come from the search's own Optuna study (study.journal), not from its source
    a = bt.analysis
    assert a.study is not None and a.boundary_basis == "declared"
    assert {p: (d.low, d.high) for p, d in a.distributions.items()} == {
        "filters_1": (8, 16), "filters_2": (16, 32), "lr": (1e-3, 5e-3)}
    assert a.distributions["lr"].log and a.distributions["filters_2"].step == 16


@pytest.mark.slow
def test_best_works_while_the_search_is_still_running(tuned_experiment, tmp_path):
    exp = copy_experiment(tuned_experiment, tmp_path / "results")
    trials = read_trials(exp)
    finished = trials["best_val_acc"].astype(float)
    # Pretend the two best trials are still running and have not written their row summary.
    running = finished.nlargest(2).index
    trials.loc[running, "status"] = "running"
    trials.loc[running, ["best_val_acc", "best_epoch"]] = None
    write_trials(exp, trials.to_dict("records"))
    bt = best(exp)
    assert bt.in_progress == 2
    # its history still counts: a running trial's best so far can win
    assert bt.best_val_acc == pytest.approx(finished.max())
    res = runner.invoke(app, ["best", str(exp)])
    assert res.exit_code == 0 and "search still running or interrupted" in res.stdout


def test_no_experiment_and_bad_flags_are_one_line_errors(in_tmp):
    assert_one_line_error(runner.invoke(app, ["best"]), "no experiments", "fersearch tune")
    assert_one_line_error(runner.invoke(app, ["best", "nope"]), "'nope' not found")
    (in_tmp / "results" / "x").mkdir(parents=True)
    write_meta(in_tmp / "results" / "x", {"name": "x", "created": "2026"})
    assert_one_line_error(runner.invoke(app, ["best", "x"]), "no trial has reported")
    assert_one_line_error(runner.invoke(app, ["best", "x", "--evaluate", "--seeds", "0"]), "--seeds 0")
    assert_one_line_error(runner.invoke(app, ["best", "x", "--evaluate", "--split", "train"]), "--split",
                          "'train' is not one of 'test', 'val'")
    assert_one_line_error(runner.invoke(app, ["best", "x", "--evaluate", "--epochs", "0"]), "--epochs 0")


# ------------------------------------------------------------------ best --evaluate
@pytest.mark.slow
def test_evaluate_writes_every_promised_file(evaluated_experiment):
    best = evaluated_experiment / "best"
    assert BEST_FILES <= {p.name for p in best.iterdir()}
    assert not list(evaluated_experiment.glob(".best*")), "temporary dirs left behind"
    out = (evaluated_experiment.parent.parent / "best_evaluate.out").read_text()
    report_txt = (best / "classification_report.txt").read_text()
    assert report_txt.split("\n\n", 1)[1].strip() in out  # the classification report is printed
    assert str(best) in out and "report.html" in out
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "learning_curves.png",
                 "search_params.png", "search_curves.png"):
        with Image.open(best / name) as img:
            assert img.format == "PNG" and 400 <= img.size[0] <= 3000 and 250 <= img.size[1] <= 3000, name
            assert np.asarray(img.convert("L")).std() > 10, f"{name} looks blank"
    payload = torch.load(best / "model.pt", weights_only=True)
    assert payload["format"] == "fersearch-model"
    assert payload["config"] == json.loads((best / "config.json").read_text())
    prov = json.loads((best / "fersearch.json").read_text())
    meta = read_meta(evaluated_experiment)
    assert prov["data"]["sha256"] == meta["data"]["sha256"] and prov["experiment"]["name"] == meta["name"]
    assert prov["command"].startswith(f"fersearch best {evaluated_experiment}")
    assert prov["versions"]["torch"] and prov["seeds"] == [0, 1] and prov["tta"]


@pytest.mark.slow
def test_metrics_json_equals_sklearn_on_the_saved_predictions(evaluated_experiment):
    best = evaluated_experiment / "best"
    m = json.loads((best / "metrics.json").read_text())
    preds = pd.read_csv(best / "predictions.csv", index_col="index")
    y = preds["true"].map(LABELS.index).to_numpy()
    probs = preds[[f"p_{n}" for n in LABELS]].to_numpy()
    pred = preds["predicted"].map(LABELS.index).to_numpy()
    assert (probs.argmax(1) == pred).all()
    meta = read_meta(evaluated_experiment)
    assert m["split"] == "test" and m["labels"] == list(LABELS)
    assert m["n"] == len(preds) == sum(meta["data"]["counts"]["test"].values())
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs / probs.sum(1, keepdims=True), labels=range(7)), abs=1e-6)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    for i, name in enumerate(LABELS):
        assert m["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    cm = np.array(m["confusion_matrix"])
    assert cm.tolist() == skm.confusion_matrix(y, pred, labels=range(7)).tolist()
    assert cm.sum(axis=1).tolist() == [m["per_class"][n]["support"] for n in LABELS]
    assert cm.sum() == m["n"]
    # TTA and seeds reported beside the plain figures
    assert 0 <= m["tta"]["accuracy"] <= 1 and m["tta"]["n"] == m["n"]
    tta_pred = preds["predicted_tta"].map(LABELS.index).to_numpy()
    assert m["tta"]["accuracy"] == pytest.approx(skm.accuracy_score(y, tta_pred), abs=1e-12)
    seeds = m["seeds"]
    assert seeds["n"] == 2 and seeds["seeds"] == [0, 1]
    assert seeds["accuracy"]["mean"] == pytest.approx(np.mean(seeds["accuracy"]["values"]))
    assert seeds["accuracy"]["std"] == pytest.approx(np.std(seeds["accuracy"]["values"], ddof=1))
    kept = seeds["seeds"].index(seeds["kept_seed"])
    assert seeds["val_acc"]["values"][kept] == max(seeds["val_acc"]["values"])
    assert seeds["accuracy"]["values"][kept] == pytest.approx(m["accuracy"])
    # the retrain stayed within its budget and kept its best epoch
    hist = pd.read_csv(best / "history.csv")
    assert len(hist) <= 2 and m["epochs_run"] == len(hist) and m["epoch_budget"] == 2
    assert m["val_acc"] == pytest.approx(hist["val_acc"].max())
    assert m["best_epoch"] == int(hist.loc[hist["val_acc"].idxmax(), "epoch"])


@pytest.mark.slow
def test_report_pages_hold_the_numbers_and_the_search_analysis(evaluated_experiment):
    best = evaluated_experiment / "best"
    m = json.loads((best / "metrics.json").read_text())
    page, md = (best / "report.html").read_text(), (best / "report.md").read_text()
    for text in (page, md):
        for figure in (m["accuracy"], m["macro_f1"], m["weighted_f1"], m["loss"], m["tta"]["accuracy"]):
            assert f"{figure:.4f}" in text
        for name in LABELS:
            assert f"{m['per_class'][name]['f1']:.4f}" in text
        assert f"fersearch best {evaluated_experiment} --evaluate --epochs 2 --seeds 2 --tta" in text  # reproduces it
        # the boundary check, against the study's declared ranges: a finding in the diagnoses, or "none"
        assert "of the declared range [" in text or "Boundary check against the search space" in text
        assert re.search(r"Failed: \d+ of 6", text) and "ASHA rungs at epochs 1, 2" in text
        assert "Search analysis" in text and "Top trials" in text
        assert "own Optuna study with the distributions" in text  # importance over the real study
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) >= 5 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page  # self-contained
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (best / link).is_file(), link


@pytest.mark.slow
def test_a_failed_rerun_leaves_the_previous_best_intact(evaluated_experiment, tmp_path):
    """A re-run that fails while writing (here: a confusion matrix that cannot be drawn) must
    leave the earlier best/ exactly as it was and no temporary directory behind."""
    exp = copy_experiment(evaluated_experiment, tmp_path / "results")
    import shutil

    shutil.copytree(evaluated_experiment / "best", exp / "best")
    before = {p.name: p.read_bytes() for p in (exp / "best").iterdir()}
    bt = best(exp)
    from fersearch.data import load
    from fersearch.model import load_model
    from fersearch.train import FitResult

    model, cfg, _ = load_model(exp / "best" / "model.pt")
    fit = FitResult(model=model, history=[], best_epoch=1, best_val_acc=0.0, stopped_early=False, device="cpu",
                    images_per_s=0.0)
    run = evaluation.RetrainRun(seed=0, fit=fit, probs=np.full((3, 7), 1 / 7), tta_probs=None)
    metrics = json.loads((exp / "best" / "metrics.json").read_text())
    metrics["confusion_matrix"] = [[1, 2], [3]]  # ragged: plotting fails after several files were written
    ev = evaluation.Evaluation(best=bt, config=cfg, metrics=metrics, tta_metrics=None, seed_runs=[], history=[],
                               report="", out_dir=exp / "best", predictions=pd.DataFrame({"true": ["Happy"]}))
    fer = load(bt.record.data.path, log=lambda *_: None)
    with pytest.raises(ValueError):
        evaluation.write_best_dir(ev, run, fer, elapsed=0.0)
    assert {p.name: p.read_bytes() for p in (exp / "best").iterdir()} == before
    assert not list(exp.glob(".best*"))


@pytest.mark.slow
def test_a_changed_data_file_is_a_one_line_error(tuned_experiment, tmp_path):
    exp = copy_experiment(tuned_experiment, tmp_path / "results")
    meta = read_meta(exp)
    data = tmp_path / "fer2013.csv"
    lines = open(meta["data"]["path"]).read().splitlines()
    first = lines[1].split(",")
    first[1] = "0 " + first[1].split(" ", 1)[1] if not first[1].startswith("0 ") else "1 " + first[1].split(" ", 1)[1]
    lines[1] = ",".join(first)
    data.write_text("\n".join(lines) + "\n")
    # recorded relative to where the search ran (the dir holding results/), not to today's cwd
    meta["data"]["path"] = data.name
    write_meta(exp, meta)
    assert_one_line_error(runner.invoke(app, ["best", str(exp), "--evaluate"]), "changed since the search", data.name)
    data.unlink()
    assert_one_line_error(runner.invoke(app, ["best", str(exp), "--evaluate"]), "is gone", data.name)


@pytest.mark.slow
def test_kaggle_data_without_test_labels_offers_split_val(tuned_experiment, tiny_data, tmp_path):
    """A Kaggle train.csv + test.csv (no labels): one line pointing at --split val, which works."""
    from fersearch.data import load

    kaggle = tmp_path / "kaggle"
    kaggle.mkdir()
    pix = [" ".join(map(str, im.ravel())) for im in tiny_data.images]
    train = tiny_data.split != 2
    train_rows = pd.DataFrame({"emotion": tiny_data.labels[train], "pixels": np.array(pix)[train]})
    train_rows.to_csv(kaggle / "train.csv", index=False)
    pd.DataFrame({"pixels": np.array(pix)[~train]}).to_csv(kaggle / "test.csv", index=False)
    exp = copy_experiment(tuned_experiment, tmp_path / "results")
    meta = read_meta(exp)
    fer = load(kaggle, log=lambda *_: None)
    meta["data"].update(path=str(kaggle), sha256=fer.sha256)
    write_meta(exp, meta)
    assert_one_line_error(runner.invoke(app, ["best", str(exp), "--evaluate"]), "has no labels", "--split val")
    res = runner.invoke(app, ["best", str(exp), "--evaluate", "--split", "val", "--epochs", "1", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["metrics"]["split"] == "val" and out["metrics"]["n"] == int((fer.split == 1).sum())
    assert json.loads((exp / "best" / "metrics.json").read_text())["split"] == "val"
    assert set(EVALUATE_ARGS)  # the shared fixture's arguments stay importable for other tests
