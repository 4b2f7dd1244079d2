"""fersearch.report: metrics equal scikit-learn's, plots are real images, the pages hold the
numbers and load in a real browser, the search analysis flags what it should from the search's
own Optuna study, and nothing recorded in a results folder is ever run."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm
from typer.testing import CliRunner

from conftest import assert_one_line_error, copy_experiment, read_meta, write_meta
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.data import LABELS
from fersearch.report import analysis as an
from fersearch.report import plots
from fersearch.report.metrics import classification_report_text, compute_metrics
from fersearch.report.pages import ReportContext, write_pages
from fersearch.results.experiment import read_history, read_trials
from fersearch.results.record import load_record
from fersearch.results.study import load_study
from fersearch.results.trial_files import write_history, write_trials

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
runner = CliRunner()


def _predictions(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(7, n, p=[.13, .02, .14, .25, .17, .11, .18])
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


# ------------------------------------------------------------------ metrics
def test_metrics_equal_sklearn_on_the_same_predictions():
    y, probs = _predictions()
    m = compute_metrics(y, probs, LABELS, "test")
    pred = probs.argmax(1)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert m["loss"] == pytest.approx(skm.log_loss(y, probs, labels=range(7)), abs=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert m["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=range(7), zero_division=0)
    for i, name in enumerate(LABELS):
        assert m["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]})
    assert m["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=range(7)).tolist()
    assert m["labels"] == list(LABELS) and m["split"] == "test" and m["n"] == len(y)
    json.dumps(m)  # plain JSON types only


def test_confusion_rows_sum_to_support_and_total_to_n():
    y, probs = _predictions(n=123, seed=1)
    m = compute_metrics(y, probs, LABELS, "val")
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7)
    assert cm.sum(axis=1).tolist() == [m["per_class"][n]["support"] for n in LABELS]
    assert cm.sum() == m["n"] == 123


def test_classification_report_text_names_every_emotion():
    y, probs = _predictions()
    text = classification_report_text(y, probs, LABELS)
    for name in LABELS:
        assert re.search(rf"^\s*{name}\s+\d\.\d{{4}}", text, re.M), name
    assert "macro avg" in text and "weighted avg" in text


# ------------------------------------------------------------------ plots
def _assert_png(path: Path, min_w: int = 400, min_h: int = 250) -> None:
    with Image.open(path) as img:
        assert img.format == "PNG"
        w, h = img.size
        arr = np.asarray(img.convert("L"))
    assert min_w <= w <= 3000 and min_h <= h <= 3000, (path.name, w, h)
    assert arr.std() > 10, f"{path.name} looks blank"


def test_plots_are_real_images_of_sensible_size(tmp_path):
    y, probs = _predictions()
    m = compute_metrics(y, probs, LABELS, "test")
    plots.plot_confusion_matrix(m["confusion_matrix"], LABELS, tmp_path / "cm.png")
    plots.plot_confusion_matrix(m["confusion_matrix"], LABELS, tmp_path / "cmn.png", normalized=True)
    hist = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_acc": .2 + .05 * e, "val_acc": .2 + .04 * e}
            for e in range(1, 6)]
    plots.plot_learning_curves([hist, hist[:3]], tmp_path / "lc.png", labels=["seed 0", "seed 1"])
    for name in ("cm.png", "cmn.png", "lc.png"):
        _assert_png(tmp_path / name)


# ------------------------------------------------------------------ a hand-written experiment
def _declared(dense_dropout=(0.0, 0.7), dense=(128, 1024)) -> dict:
    from optuna.distributions import FloatDistribution, IntDistribution

    return {"dense_dropout": FloatDistribution(*dense_dropout), "dense": IntDistribution(*dense, log=True)}


def _hand_written_experiment(root: Path, *, n: int = 9, study: dict | None = None, name: str = "hand") -> Path:
    """Trials whose val_acc falls with dense_dropout (so the best sits at its low end, 0: a result,
    not a boundary to widen), the winner's dense at the top of its range, one trial of the seed
    configuration, one failed, one diverged (NaN loss, status diverged), one still running.
    `study`: declared distributions to save an Optuna study with (as a search does, in
    study.journal through Optuna's JournalStorage); None: no study (an older search)."""
    exp = root / name
    exp.mkdir(parents=True)
    write_meta(exp, {"name": name, "command": "fersearch tune --trials 9", "created": "2026-01-01T00:00:00",
                     "data": {"path": "x.csv", "sha256": "0"}, "seed": 0, "trials": n, "max_epochs": 9,
                     "grace_period": 1, "reduction_factor": 3, "scheduler": "asha"})
    rng = np.random.default_rng(0)
    rows, hist = [], []
    for i in range(n):
        p = {"dense_dropout": [0.5, 0.2, 0.1, 0.0, 0.3, 0.4, 0.6, 0.7, 0.35][i],
             "dense": [512, 128, 1024, 1024, 256, 512, 128, 1024, 256][i]}
        status, epochs = ("completed", 9) if i % 3 == 0 else ("stopped", 3)
        if i == 6:
            status, epochs = "failed", 2
        if i == 7:
            status = "diverged"
        if i == 8:
            status, epochs = "running", 2
        accs = [0.3 + 0.03 * e * (1 - p["dense_dropout"]) + rng.normal(0, 0.002) for e in range(1, epochs + 1)]
        if i == 3:
            accs[-1] -= 0.3  # the winner's last epoch collapses: judged by its best, it still wins
        for e, acc in enumerate(accs, 1):
            loss = float("nan") if i == 7 and e == 3 else 1.9 - 0.05 * e
            hist.append({"trial_id": f"t{i}", "epoch": e, "train_loss": loss, "train_acc": acc, "val_loss": loss,
                         "val_acc": acc, "lr": 1e-3, "images_per_s": 100.0, "epoch_time_s": 1.0})
        done = status != "running"
        rows.append({"trial_id": f"t{i}", "status": status, "epochs": epochs,
                     "best_val_acc": max(accs) if done else None,
                     "best_epoch": int(np.argmax(accs)) + 1 if done else None, "last_val_acc": accs[-1], "node": "n1",
                     "gpu_ids": "", "error": {"failed": "boom", "diverged": "loss nan"}.get(status, ""),
                     "config_json": TrainConfig.from_dict(p).to_json(), **{f"config/{k}": v for k, v in p.items()}})
    write_trials(exp, rows)
    write_history(exp, hist)
    if study is not None:
        _save_study(exp, name, rows, study)
    return exp


def _save_study(exp: Path, name: str, rows: list[dict], dists: dict) -> None:
    """The study a search keeps: each trial's params with the declared distributions, valued by
    its best val_acc; failed trials FAIL, running ones RUNNING."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(exp / "study.journal"))))
    for r in rows:
        params = {k: r[f"config/{k}"] for k in dists}
        state = {"failed": TrialState.FAIL, "running": TrialState.RUNNING}.get(r["status"], TrialState.COMPLETE)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=dists, state=state,
            value=r["best_val_acc"] if state == TrialState.COMPLETE else None))


def _analysis(exp: Path) -> an.SearchAnalysis:
    return an.analyze(read_trials(exp), read_history(exp), load_record(exp), load_study(exp))


def test_analysis_ranks_by_best_val_acc_and_flags_what_it_should(tmp_path):
    a = _analysis(_hand_written_experiment(tmp_path, study=_declared()))
    assert a.best_trial == "t3"
    last = a.trials.set_index("trial_id")["last_val_acc"]
    assert last["t3"] < last["t0"]  # Ray's scope="last" would not pick it
    ranked = a.trials["best_val_acc"].tolist()
    assert ranked[:-1] == sorted(ranked[:-1], reverse=True) and a.trials["trial_id"].iloc[-1] == "t7"  # diverged last
    # the running trial has no best in trials.csv yet; it is scored from its history
    assert a.trials.loc[a.trials["trial_id"] == "t8", "best_val_acc"].notna().all()
    assert a.counts == {"completed": 2, "stopped": 4, "failed": 1, "diverged": 1, "running": 1}
    assert a.failed_share == pytest.approx(1 / 9)
    assert a.diverged == ["t7"]
    assert a.seed_trial == "t0"  # dense 512, dense_dropout 0.5 = TrainConfig()
    assert a.rungs == [1, 3]
    assert a.loss_rose == []  # a NaN is no rise: t7 is diverged, and only that
    # the declared ranges come from the study: dense 1024 is the top of [128, 1024]; dense_dropout 0, the low
    # end of [0, 0.7], is no dropout at all: nothing lies beyond it
    assert a.boundary_basis == "declared" and set(a.distributions) == {"dense", "dense_dropout"}
    assert [(b.param, b.basis, b.edge) for b in a.boundaries] == [("dense", "declared", "high")]
    assert a.boundaries[0].message().startswith("dense = 1024 sits at the high end of the declared range [128, 1024]")
    assert set(a.importance) == {"PED-ANOVA", "fANOVA"}
    for imp in a.importance.values():
        assert set(imp) == {"dense", "dense_dropout"} and sum(imp.values()) == pytest.approx(1.0)
    # importance runs over the study's finished trials: 9 less the failed and the running one
    assert "over 7 finished trials" in a.importance_note and "Optuna study" in a.importance_note


def test_a_search_without_a_study_gets_no_importance_and_the_range_tried(tmp_path):
    """An older experiment (no study.journal): no importance, a note saying why, and the boundary
    check on the range of values tried."""
    exp = _hand_written_experiment(tmp_path)
    assert load_study(exp) is None
    a = _analysis(exp)
    assert a.importance == {} and a.importance_note == an.NO_STUDY_NOTE and "no Optuna study" in a.importance_note
    assert a.distributions == {} and a.boundary_basis == "tried"
    assert [(b.param, b.basis, b.low, b.high) for b in a.boundaries] == [("dense", "tried", 128, 1024)]
    assert "range tried" in a.boundaries[0].message()


def test_boundary_uses_the_declared_range_of_the_study(tmp_path):
    # 0.0 is inside a declared range starting at -0.5 (the middle-ish), so no warning for it;
    # dense 128..1024 declared as 64..4096 (log): the best's 1024 is not at an end either.
    a = _analysis(_hand_written_experiment(tmp_path, study=_declared((-0.5, 0.9), (64, 4096)), name="wide"))
    assert a.best_trial == "t3" and a.boundary_basis == "declared" and a.boundaries == []
    # declared 0..0.9 and 128..2048: dense_dropout's 0.0 is at the low end, but no dropout cannot be widened
    # (config.hard_bounds); dense 1024 is at 2/3 of the log range
    b = _analysis(_hand_written_experiment(tmp_path, study=_declared((0.0, 0.9), (128, 2048)), name="tight"))
    assert b.boundary_basis == "declared" and b.boundaries == []


def _wide_experiment(root: Path, winner: dict, name: str = "wide") -> Path:
    """Four trials of a `wide`-like space whose lr range depends on the optimiser (Adam 1e-4..1e-2,
    SGD 1e-3..0.2), saved with a study in which each trial has its own distributions, as Optuna
    records them. `winner`'s parameters get the best val_acc."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    others = [{"optimizer": "adam", "lr": 1e-3, "dropout_1": 0.25, "erasing": 0.25, "dense": 256},
              {"optimizer": "adam", "lr": 3e-3, "dropout_1": 0.1, "erasing": 0.4, "dense": 512},
              {"optimizer": "sgd", "lr": 0.01, "dropout_1": 0.3, "erasing": 0.1, "dense": 128}]
    exp = root / name
    exp.mkdir(parents=True)
    write_meta(exp, {"name": name, "command": "fersearch tune --space wide", "created": "2026-01-01T00:00:00",
                     "data": {"path": "x.csv", "sha256": "0"}, "seed": 0, "trials": 4, "max_epochs": 2,
                     "grace_period": 1, "reduction_factor": 3, "scheduler": "asha"})
    rows, hist = [], []
    for i, (p, best) in enumerate([(o, 0.3 + 0.01 * k) for k, o in enumerate(others)] + [(winner, 0.5)]):
        for e in (1, 2):
            hist.append({"trial_id": f"w{i}", "epoch": e, "train_loss": 1.9 - 0.1 * e, "train_acc": best,
                         "val_loss": 1.9 - 0.1 * e, "val_acc": best - 0.01 * (2 - e), "lr": p["lr"],
                         "images_per_s": 100.0, "epoch_time_s": 1.0})
        cfg = TrainConfig.from_dict({**{k: v for k, v in p.items() if k not in ("dropout_1",)}, "blocks": 1,
                                     "filters": (32,), "dropout": (p["dropout_1"],)})
        rows.append({"trial_id": f"w{i}", "status": "completed", "epochs": 2, "best_val_acc": best, "best_epoch": 2,
                     "last_val_acc": best, "node": "n1", "gpu_ids": "", "error": "", "config_json": cfg.to_json(),
                     **{f"config/{k}": v for k, v in p.items()}})
    write_trials(exp, rows)
    write_history(exp, hist)
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, direction="maximize",
                                storage=JournalStorage(JournalFileBackend(str(exp / "study.journal"))))
    for r in rows:
        params = {k[len("config/"):]: v for k, v in r.items() if k.startswith("config/")}
        sgd = params["optimizer"] == "sgd"
        dists = {"optimizer": CategoricalDistribution(("adam", "adamw", "sgd")),
                 "lr": FloatDistribution(1e-3, 0.2, log=True) if sgd else FloatDistribution(1e-4, 1e-2, log=True),
                 "dropout_1": FloatDistribution(0.0, 0.5, step=0.05), "erasing": FloatDistribution(0.0, 0.5),
                 "dense": IntDistribution(128, 1024, log=True)}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=r["best_val_acc"]))
    return exp


def test_best_gives_no_beyond_advice_at_a_hard_bound_and_still_warns_at_a_width_limit(tmp_path):
    """The issue-17 output: a winner with dropout 0 and erasing 0.008 was told to widen ranges that
    end where the config does. They are results; a dense width at the top of its range still warns."""
    exp = _wide_experiment(tmp_path, {"optimizer": "adam", "lr": 1e-3, "dropout_1": 0.0, "erasing": 0.00811,
                                      "dense": 1024})
    res = runner.invoke(app, ["best", str(exp)])
    assert res.exit_code == 0, res.output
    beyond = [ln for ln in res.stdout.splitlines() if "may lie beyond" in ln]
    assert len(beyond) == 1 and "dense = 1024 sits at the high end of the declared range [128, 1024]" in beyond[0]
    assert "dropout_1" not in " ".join(beyond) and "erasing" not in " ".join(beyond)


def test_an_sgd_winners_lr_is_judged_against_sgds_range_and_drawn_on_the_axis(tmp_path):
    """wide's lr range depends on the optimiser: an SGD winner at lr 0.05 is inside SGD's [1e-3, 0.2],
    not "at the high end of [1e-4, 1e-2]" (Adam's range, the first one the study holds)."""
    exp = _wide_experiment(tmp_path, {"optimizer": "sgd", "lr": 0.05, "dropout_1": 0.2, "erasing": 0.2,
                                      "dense": 256})
    a = _analysis(exp)
    assert a.best_trial == "w3" and a.boundary_basis == "declared" and a.boundaries == []
    # the scatter's lr axis spans both ranges, so the SGD point is on it
    assert (a.distributions["lr"].low, a.distributions["lr"].high) == (1e-4, 0.2)
    at_top = _wide_experiment(tmp_path, {"optimizer": "sgd", "lr": 0.19, "dropout_1": 0.2, "erasing": 0.2,
                                         "dense": 256}, name="top")
    assert [(b.param, b.edge, b.high) for b in _analysis(at_top).boundaries] == [("lr", "high", 0.2)]
    res = runner.invoke(app, ["best", str(exp)])
    assert res.exit_code == 0, res.output
    assert "may lie beyond" not in res.stdout
    out = tmp_path / "params.png"
    plots.plot_param_scatter(a.trials, a.params, out, a.best_trial, a.distributions, [])
    _assert_png(out)


def test_top_table_and_best_text_show_counts_as_integers(tmp_path):
    a = _analysis(_hand_written_experiment(tmp_path, study=_declared()))
    top = a.top(3)
    assert len(top) == 3 and top["trial_id"].iloc[0] == "t3"
    assert all(pd.api.types.is_integer_dtype(top[c]) for c in ("epochs", "best_epoch", "dense"))
    res = runner.invoke(app, ["best", str(tmp_path / "hand")])
    assert res.exit_code == 0, res.output
    assert "best trial t3 (completed): val_acc" in res.stdout and "dense_dropout=0" in res.stdout
    row = next(ln for ln in res.stdout.splitlines() if ln.strip().startswith("t3 "))
    assert row.split()[:3] == ["t3", "completed", "9"], row  # epochs 9, not 9.0000
    out = json.loads(runner.invoke(app, ["best", str(tmp_path / "hand"), "--json"]).stdout)
    assert out["top"][0]["epochs"] == 9 and out["top"][0]["trial_id"] == "t3"


CODE_RAN = "fersearch ran code recorded in a results folder"


def _booby_trapped(exp: Path, marker: Path) -> str:
    """Edit fersearch.json so its recorded space source writes `marker` when imported or called."""
    source = (f"import pathlib\npathlib.Path({str(marker)!r}).write_text({CODE_RAN!r})\n\n\n"
              f"def space(trial):\n    pathlib.Path({str(marker)!r}).write_text({CODE_RAN!r})\n    return {{}}\n")
    meta = read_meta(exp)
    meta["space"] = {"name": "trap", "path": str(exp / "trap.py"), "source": source, "sha256": "0"}
    write_meta(exp, meta)
    return source


def test_an_edited_fersearch_json_runs_no_code_under_best_and_status(tmp_path):
    marker = tmp_path / "marker.txt"
    source = _booby_trapped(_hand_written_experiment(tmp_path / "results", study=_declared()), marker)
    exec(compile(source, "trap.py", "exec"), {})  # the trap is armed: running the source writes the marker
    assert marker.read_text() == CODE_RAN
    marker.unlink()
    results = str(tmp_path / "results")
    for args in (["best", "hand"], ["best", "hand", "--json"], ["status", "hand"], ["status", "hand", "--json"]):
        res = runner.invoke(app, [*args, "--results", results])
        assert res.exit_code == 0, (args, res.output)
        assert not marker.exists(), f"`fersearch {' '.join(args)}` ran the recorded source"
    # --evaluate reads the search (best, the study) before it looks for the data file, which is gone here
    res = runner.invoke(app, ["best", "hand", "--evaluate", "--results", results])
    assert_one_line_error(res, "x.csv", "is gone")
    assert not marker.exists(), "`fersearch best --evaluate` ran the recorded source"


@pytest.mark.slow
def test_an_edited_fersearch_json_of_a_real_search_runs_no_code(tuned_experiment, tmp_path):
    """The same trap in a real search's folder: `best`, `status` and a whole `best --evaluate`
    (retrain, report with the study's declared ranges and importance) run none of it."""
    marker = tmp_path / "marker.txt"
    exp = copy_experiment(tuned_experiment, tmp_path / "results")
    _booby_trapped(exp, marker)
    for args in (["best", str(exp)], ["status", str(exp)], ["best", str(exp), "--evaluate", "--epochs", "1", "--json"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, (args, res.output)
        assert not marker.exists(), f"`fersearch {' '.join(args[:1] + args[2:])}` ran the recorded source"
    page = (exp / "best" / "report.md").read_text()
    assert ("of the declared range [" in page or "Boundary check against the search space's declared ranges" in page)
    assert "Optuna study" in page


def test_pages_hold_the_numbers_and_embed_every_image(tmp_path):
    a = _analysis(_hand_written_experiment(tmp_path, study=_declared()))
    out = tmp_path / "out"
    out.mkdir()
    y, probs = _predictions()
    m = compute_metrics(y, probs, LABELS, "test")
    m["seeds"] = {"n": 1, "seeds": [0], "kept_seed": 0, "accuracy": {"mean": m["accuracy"], "std": 0.0}}
    plots.plot_confusion_matrix(m["confusion_matrix"], LABELS, out / "cm.png")
    plots.plot_param_scatter(a.trials, a.params, out / "params.png", a.best_trial, a.distributions, ["dense_dropout"])
    plots.plot_trial_curves(a.history, a.trials, out / "curves.png", a.rungs, a.best_trial, a.seed_trial)
    plots.plot_importance(a.importance, out / "imp.png")
    for name in ("params.png", "curves.png", "imp.png"):
        _assert_png(out / name)
    cfg = TrainConfig.from_dict({"dense_dropout": 0.0, "dense": 256})
    ctx = ReportContext(
        experiment="hand", out_dir=out, metrics=m, config=cfg.to_dict(), config_diff=an.config_diff(cfg),
        best={"trial_id": "t3", "best_val_acc": 0.51}, seed_runs=[], commands={"Search:": "fersearch tune --trials 9"},
        provenance={"data_path": "x.csv", "data_sha256": "abc"}, analysis=a,
        images={"Confusion matrix": "cm.png", "Validation accuracy against each hyperparameter": "params.png",
                "Validation accuracy per epoch, every trial": "curves.png", "Hyperparameter importance": "imp.png"})
    html_path, md_path = write_pages(ctx)
    page, md = html_path.read_text(), md_path.read_text()
    for text in (page, md):
        assert f"{m['accuracy']:.4f}" in text and f"{m['macro_f1']:.4f}" in text
        for name in LABELS:
            assert f"{m['per_class'][name]['f1']:.4f}" in text
        assert "dense_dropout" in text and "fersearch tune --trials 9" in text and "Failed: 1 of 9" in text
        # each finding once: the boundary and the seed are the diagnoses' (the table), nowhere else on the page
        assert text.count("dense = 1024 sits at the high end of the declared range [128, 1024]") == 1
        assert text.count("The seed configuration (trial t0) reached val_acc") == 1
        assert "seed configuration ran" not in text
        assert "non-finite training loss ended the trial): 1 (t7)" in text and "above its start" not in text
    # the boundary row of the diagnosis table is the page's warning; the top table has only what differs
    row = next(r for r in re.findall(r"<tr>.*?</tr>", page, re.S) if "dense = 1024" in r)
    assert 'class="data row' in row and " warn" in row and "<p class=warn>" not in page
    top = re.search(r'<table id="T_top".*?</table>', page, re.S).group(0)
    assert "dense_dropout" in top and "<details>" not in page  # both parameters differ between the top trials
    import dataclasses

    from fersearch.report.pages import top_tables

    same = dataclasses.replace(a, trials=a.trials.assign(**{"config/dense": 256}))
    differ, shared = top_tables(same)
    assert "dense" not in differ.columns and "dense_dropout" in differ.columns
    assert shared.to_dict("records") == [{"hyperparameter": "dense", "value": 256}]
    ctx.analysis = same
    assert "<details><summary>1 hyperparameter the same in all 9 top trials" in write_pages(ctx)[0].read_text()
    srcs = re.findall(r'<img[^>]*src="([^"]+)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:
        assert base64.b64decode(s.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (out / link).is_file(), link


# ------------------------------------------------------------------ browser
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                  "--disable-dev-shm-usage", "--hide-scrollbars"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless Chromium on PATH; skipped, saying how to get one, when absent (a test installs nothing),
    except where FERSEARCH_NEED_CHROMIUM is set (CI's .ci/run installs it): there a missing browser fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        why = ("no chromium on PATH: the report page is rendered only with one "
               "(`sudo apt-get install chromium` on Debian/Ubuntu)")
        if os.environ.get("FERSEARCH_NEED_CHROMIUM"):
            pytest.fail(why)
        pytest.skip(why)
    return exe


def render(chromium: str, page: Path, tmp: Path, screenshot: Path) -> str:
    """The DOM after an inline script marks, on <body data-images>, how many <img> elements
    decoded (naturalWidth > 0) out of how many; plus a full-page screenshot."""
    probe = page.with_name("_probe.html")
    script = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
              "document.body.dataset.images=im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+im.length;"
              "document.body.dataset.widths=im.map(i=>i.naturalWidth).join(',');"
              "document.body.dataset.height=document.documentElement.scrollHeight;});</script>")
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    try:
        dom = subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-dom'}",
                              "--window-size=1280,1000", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()],
                             capture_output=True, text=True, timeout=120).stdout
        height = re.search(r'data-height="(\d+)"', dom)
        height = min(int(height.group(1)) + 40, 16000) if height else 8000  # the whole page in one shot
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile-shot'}",
                        f"--window-size=1280,{height}", f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=120)
    finally:
        probe.unlink(missing_ok=True)
    return dom


@pytest.mark.slow
def test_report_html_loads_in_a_real_browser(chromium, evaluated_experiment, tmp_path):
    page = evaluated_experiment / "best" / "report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    dom = render(chromium, page, tmp_path, shot)
    m = re.search(r'data-images="(\d+)/(\d+)"', dom)
    assert m, f"the probe did not run; chromium printed: {dom[:300]!r}"
    loaded, total = map(int, m.groups())
    assert total >= 5 and loaded == total, f"{loaded} of {total} images loaded"
    widths = [int(w) for w in re.search(r'data-widths="([\d,]+)"', dom).group(1).split(",")]
    assert min(widths) >= 400
    metrics = json.loads((evaluated_experiment / "best" / "metrics.json").read_text())
    assert f"{metrics['accuracy']:.4f}" in dom
    with Image.open(shot) as img:
        assert img.size[0] >= 1000 and np.asarray(img.convert("L")).std() > 10
    shutil.copy(page, ARTIFACTS / "report.html")


def test_every_status_has_its_own_colour():
    """plots.STATUS_COLORS covers the one status vocabulary: a diverged curve is not drawn in running grey."""
    from fersearch.results.experiment import TrialStatus

    assert set(plots.STATUS_COLORS) == set(TrialStatus)
    assert len(set(plots.STATUS_COLORS.values())) == len(TrialStatus)
    assert plots.STATUS_COLORS["diverged"] != plots.STATUS_COLORS["running"]  # trials.csv's text finds it
