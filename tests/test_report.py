"""report.py and analysis.py: metrics equal scikit-learn's, plots are real images, the pages
hold the numbers and load in a real browser, and the search analysis flags what it should."""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn import metrics as skm

from fersearch.report import analysis as an
from fersearch.report import pages as rp
from fersearch.config import TrainConfig
from fersearch.data.loader import LABELS
from fersearch.search.experiment import read_history, read_meta, read_trials, write_history, write_meta, write_trials

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _predictions(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.choice(7, n, p=[.13, .02, .14, .25, .17, .11, .18])
    logits = rng.normal(0, 1, (n, 7))
    logits[np.arange(n), y] += 1.5
    return y, np.exp(logits) / np.exp(logits).sum(1, keepdims=True)


# ------------------------------------------------------------------ metrics
def test_metrics_equal_sklearn_on_the_same_predictions():
    y, probs = _predictions()
    m = rp.compute_metrics(y, probs, LABELS, "test")
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
    m = rp.compute_metrics(y, probs, LABELS, "val")
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (7, 7)
    assert cm.sum(axis=1).tolist() == [m["per_class"][n]["support"] for n in LABELS]
    assert cm.sum() == m["n"] == 123


def test_classification_report_text_names_every_emotion():
    y, probs = _predictions()
    text = rp.classification_report_text(y, probs, LABELS)
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
    m = rp.compute_metrics(y, probs, LABELS, "test")
    rp.plot_confusion_matrix(m["confusion_matrix"], LABELS, tmp_path / "cm.png")
    rp.plot_confusion_matrix(m["confusion_matrix"], LABELS, tmp_path / "cmn.png", normalized=True)
    hist = [{"epoch": e, "train_loss": 2 / e, "val_loss": 2.2 / e, "train_acc": .2 + .05 * e, "val_acc": .2 + .04 * e}
            for e in range(1, 6)]
    rp.plot_learning_curves([hist, hist[:3]], tmp_path / "lc.png", labels=["seed 0", "seed 1"])
    for name in ("cm.png", "cmn.png", "lc.png"):
        _assert_png(tmp_path / name)


# ------------------------------------------------------------------ a hand-written experiment
def _hand_written_experiment(root: Path, *, n: int = 9) -> Path:
    """Trials whose val_acc falls with dense_dropout (so the best sits at its low end), one
    trial of the seed configuration, one failed, one diverged (NaN loss), one still running."""
    exp = root / "hand"
    exp.mkdir(parents=True)
    write_meta(exp, {"name": "hand", "command": "fersearch tune --trials 9", "created": "2026-01-01T00:00:00",
                     "data": {"path": "x.csv", "sha256": "0"}, "seed": 0, "trials": n, "max_epochs": 9,
                     "grace_period": 1, "reduction_factor": 3, "scheduler": "asha"})
    rng = np.random.default_rng(0)
    rows, hist = [], []
    for i in range(n):
        p = {"dense_dropout": [0.5, 0.2, 0.1, 0.0, 0.3, 0.4, 0.6, 0.7, 0.35][i],
             "dense": [512, 128, 1024, 256, 256, 512, 128, 1024, 256][i]}
        status, epochs = ("completed", 9) if i % 3 == 0 else ("stopped", 3)
        if i == 6:
            status, epochs = "failed", 2
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
                     "best_val_acc": max(accs) if done else None, "best_epoch": int(np.argmax(accs)) + 1 if done else None,
                     "last_val_acc": accs[-1], "node": "n1", "gpu_ids": "", "error": "boom" if status == "failed" else "",
                     "config_json": TrainConfig.from_dict(p).to_json(), **{f"config/{k}": v for k, v in p.items()}})
    write_trials(exp, rows)
    write_history(exp, hist)
    return exp


def _analysis(exp: Path, dists=None) -> an.SearchAnalysis:
    return an.analyze(read_trials(exp), read_history(exp), read_meta(exp), dists)


def test_analysis_ranks_by_best_val_acc_and_flags_what_it_should(tmp_path):
    a = _analysis(_hand_written_experiment(tmp_path))
    assert a.best_trial == "t3"
    last = a.trials.set_index("trial_id")["last_val_acc"]
    assert last["t3"] < last["t0"]  # Ray's scope="last" would not pick it
    ranked = a.trials["best_val_acc"].tolist()
    assert ranked == sorted(ranked, reverse=True)
    # the running trial has no best in trials.csv yet; it is scored from its history
    assert a.trials.loc[a.trials["trial_id"] == "t8", "best_val_acc"].notna().all()
    assert a.counts == {"completed": 2, "stopped": 5, "failed": 1, "running": 1}
    assert a.failed_share == pytest.approx(1 / 9)
    assert a.diverged == ["t7"]
    assert a.seed_trial == "t0"  # dense 512, dense_dropout 0.5 = TrainConfig()
    assert a.rungs == [1, 3]
    assert [b.param for b in a.boundaries] == ["dense_dropout"] and a.boundaries[0].basis == "tried"
    assert set(a.importance) == {"PED-ANOVA", "fANOVA"}
    for imp in a.importance.values():
        assert set(imp) == {"dense", "dense_dropout"} and sum(imp.values()) == pytest.approx(1.0)


def test_boundary_uses_the_declared_range_when_the_space_is_known(tmp_path):
    from optuna.distributions import FloatDistribution, IntDistribution

    exp = _hand_written_experiment(tmp_path)
    # 0.0 is inside a declared range starting at -0.5 (the middle-ish), so no warning for it;
    # dense 128..1024 declared as 64..4096 (log): the best's 128 is not at an end either.
    wide = {"dense_dropout": FloatDistribution(-0.5, 0.9), "dense": IntDistribution(64, 4096, log=True)}
    a = _analysis(exp, wide)
    assert a.best_trial == "t3" and a.boundary_basis == "declared" and a.boundaries == []
    tight = {"dense_dropout": FloatDistribution(0.0, 0.9), "dense": IntDistribution(128, 1024, log=True)}
    b = _analysis(exp, tight)
    assert {x.param for x in b.boundaries} >= {"dense_dropout"}
    assert "declared range" in b.boundaries[0].message()


def test_space_distributions_reads_a_define_by_run_space():
    def space(trial):
        trial.suggest_int("filters_1", 16, 64, step=8)
        if trial.suggest_categorical("batch_norm", [False, True]):
            trial.suggest_float("lr", 1e-4, 1e-2, log=True)

    d = an.space_distributions(space)
    assert set(d) == {"filters_1", "batch_norm", "lr"}
    assert d["lr"].log and d["filters_1"].step == 8


def test_pages_hold_the_numbers_and_embed_every_image(tmp_path):
    exp = _hand_written_experiment(tmp_path)
    a = _analysis(exp)
    out = tmp_path / "out"
    out.mkdir()
    y, probs = _predictions()
    m = rp.compute_metrics(y, probs, LABELS, "test")
    m["seeds"] = {"n": 1, "seeds": [0], "kept_seed": 0, "accuracy": {"mean": m["accuracy"], "std": 0.0}}
    rp.plot_confusion_matrix(m["confusion_matrix"], LABELS, out / "cm.png")
    rp.plot_param_scatter(a.trials, a.params, out / "params.png", a.best_trial, {}, ["dense_dropout"])
    rp.plot_trial_curves(a.history, a.trials, out / "curves.png", a.rungs, a.best_trial, a.seed_trial)
    rp.plot_importance(a.importance, out / "imp.png")
    for name in ("params.png", "curves.png", "imp.png"):
        _assert_png(out / name)
    cfg = TrainConfig.from_dict({"dense_dropout": 0.0, "dense": 256})
    ctx = rp.ReportContext(
        experiment="hand", out_dir=out, metrics=m, config=cfg.to_dict(), config_diff=an.config_diff(cfg),
        best={"trial_id": "t3", "best_val_acc": 0.51}, seed_runs=[], commands={"Search:": "fersearch tune --trials 9"},
        provenance={"data_path": "x.csv", "data_sha256": "abc"}, analysis=a,
        images={"Confusion matrix": "cm.png", "Validation accuracy against each hyperparameter": "params.png",
                "Validation accuracy per epoch, every trial": "curves.png", "Hyperparameter importance": "imp.png"})
    html_path, md_path = rp.write_pages(ctx)
    page, md = html_path.read_text(), md_path.read_text()
    for text in (page, md):
        assert f"{m['accuracy']:.4f}" in text and f"{m['macro_f1']:.4f}" in text
        for name in LABELS:
            assert f"{m['per_class'][name]['f1']:.4f}" in text
        assert "dense_dropout" in text and "boundary" in text.lower() and "fersearch tune --trials 9" in text
        assert "seed configuration ran as trial t0" in text and "Failed: 1 of 9" in text
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
    """Debian's chromium, installed with apt-get when absent (skipped only if that is impossible)."""
    exe = shutil.which("chromium")
    if exe is None:
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.skip("chromium is not installed and there is no apt-get to install it")
        try:
            subprocess.run([apt, "update"], check=True, capture_output=True, timeout=300)
            subprocess.run([apt, "install", "-y", "chromium"], check=True, capture_output=True, timeout=600,
                           env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        except (subprocess.SubprocessError, OSError) as e:
            pytest.skip(f"chromium is not installed and `apt-get install -y chromium` failed: {str(e)[:200]}")
        exe = shutil.which("chromium")
        if exe is None:
            pytest.skip("apt-get reported success but no chromium executable is on PATH")
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
