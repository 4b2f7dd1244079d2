"""What goes into results/<name>/best/: the files, the plots, the pages, the provenance.

`Evaluation` is what `best --evaluate` found (metrics, the kept retrain's history, its
predictions); `write_files(out, ev, run, fer, elapsed)` fills a directory (the temporary one that
evaluate.py swaps in as best/). Also here: the CLI command that reproduces an evaluation
and the notes a reader should see first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..config import TrainConfig
from ..io import atomic_write_text, timestamp, versions, write_json
from ..results.experiment import results_root
from . import analysis as an
from . import pareto, plots
from .best import BestTrial
from .metrics import report_file_text
from .pages import PARETO, ReportContext, write_pages
from .run import history_csv
from .tiebreak import DEFAULT_TIES

if TYPE_CHECKING:
    from ..data import FerData
    from ..train.loop import FitResult

BEST_DIR = "best"


@dataclass
class Evaluation:
    best: BestTrial
    config: TrainConfig  # retrained (epochs = budget, seed = the kept run's seed)
    metrics: dict[str, Any]  # metrics.json
    tta_metrics: dict[str, Any] | None
    seed_runs: list[dict[str, Any]]
    history: list[dict[str, Any]]  # per-epoch metrics of the kept run
    report: str  # scikit-learn's classification report (text)
    out_dir: Path
    predictions: pd.DataFrame  # predictions.csv: per image true/predicted emotion and probabilities
    files: dict[str, Path] = field(default_factory=dict)
    ties_limit: int = DEFAULT_TIES  # --ties: how many tied configurations a tie-break may retrain

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": str(self.best.experiment), "trial_id": self.best.trial_id, "metrics": self.metrics,
                "config": self.config.to_dict(), "out_dir": str(self.out_dir),
                "files": {k: str(v) for k, v in self.files.items()}}


@dataclass
class RetrainRun:
    """One retrain: its seed, what fit returned, and its predicted probabilities on the split."""

    seed: int
    fit: FitResult
    probs: np.ndarray
    tta_probs: np.ndarray | None


def write_files(out: Path, ev: Evaluation, run: RetrainRun, fer: FerData, elapsed: float) -> None:
    from ..deploy import ONNX_FILE, export_onnx
    from ..model import save_model
    from ..train.predict import MODEL_FILE

    bt, m = ev.best, ev.metrics
    write_json(out / "config.json", ev.config.to_dict())
    write_json(out / "metrics.json", m)
    atomic_write_text(out / "classification_report.txt", report_file_text(bt.name, bt.trial_id, m, ev.report))
    atomic_write_text(out / "predictions.csv", ev.predictions.to_csv(index_label="index"))
    atomic_write_text(out / "history.csv", history_csv(ev.history))  # as `fersearch train` writes it
    images = write_plots(out, ev)
    if pareto.has_latency(bt.analysis.trials):
        atomic_write_text(out / "pareto.csv", pareto.front_table(bt.analysis.trials, bt.trial_id).to_csv(index=False))
    save_model(out / MODEL_FILE, run.fit.model, ev.config,
               meta={"experiment": bt.name, "trial_id": bt.trial_id, "data_sha256": fer.sha256,
                     "split": m["split"], "accuracy": m["accuracy"], "val_acc": m["val_acc"]})
    export_onnx(copy.deepcopy(run.fit.model).to("cpu").eval(), out / ONNX_FILE, ev.config)
    record = provenance(ev, fer, elapsed, run)
    write_json(out / "fersearch.json", record)
    write_pages(ReportContext(
        experiment=bt.name, out_dir=out, metrics=m, config=ev.config.to_dict(),
        config_diff=an.config_diff(ev.config),
        best={"trial_id": bt.trial_id, "best_val_acc": bt.best_val_acc, "best_epoch": bt.best_epoch,
              "epochs": bt.epochs, "status": bt.status},
        seed_runs=ev.seed_runs, commands=reproduce_commands(ev, fer), provenance=_report_provenance(record),
        analysis=bt.analysis, tta_metrics=ev.tta_metrics, images=images, notes=_notes(ev, fer),
        pareto=pareto.front_table(bt.analysis.trials, bt.trial_id) if pareto.has_latency(bt.analysis.trials) else None,
        pareto_rule=pareto.rule_text(bt.max_latency_ms), tie_break=m.get("tie_break"),
    ))


def write_plots(out: Path, ev: Evaluation) -> dict[str, str]:
    """Every plot of the report into `out`; returns {title: file name} for the pages."""
    m, a, names = ev.metrics, ev.best.analysis, ev.metrics["labels"]
    title = f"{m['split']} split, n={m['n']}, accuracy {m['accuracy']:.3f}"
    plots.plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix.png",
                                title=f"Confusion matrix ({title})")
    plots.plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix_normalized.png", normalized=True)
    runs = ev.seed_runs or [{"seed": ev.config.seed, "history": ev.history, "kept": True}]
    plots.plot_learning_curves([r["history"] for r in runs], out / "learning_curves.png",
                               kept=next(i for i, r in enumerate(runs) if r["kept"]),
                               labels=[f"seed {r['seed']}" for r in runs])
    images = {"Confusion matrix": "confusion_matrix.png",
              "Confusion matrix, normalised": "confusion_matrix_normalized.png",
              "Learning curves": "learning_curves.png"}
    if a.params:
        plots.plot_param_scatter(a.trials, a.params, out / "search_params.png", a.best_trial, a.distributions,
                                 [b.param for b in a.boundaries])
        images["Validation accuracy against each hyperparameter"] = "search_params.png"
    if len(a.history):
        plots.plot_trial_curves(a.history, a.trials, out / "search_curves.png", a.rungs, a.best_trial, a.seed_trial)
        images["Validation accuracy per epoch, every trial"] = "search_curves.png"
    if a.importance:
        plots.plot_importance(a.importance, out / "importance.png")
        images["Hyperparameter importance"] = "importance.png"
    if pareto.has_latency(a.trials):
        pareto.plot_front(a.trials, out / "pareto.png", ev.best.trial_id, ev.best.max_latency_ms)
        images[PARETO] = "pareto.png"
    return images


def evaluate_command(ev: Evaluation) -> str:
    """The CLI command equivalent to this evaluation (whether it ran from the CLI or the API)."""
    bt, m = ev.best, ev.metrics
    under_default = bt.experiment.parent.resolve() == results_root().resolve()
    flags = f" --epochs {m['epoch_budget']}"
    flags += f" --seeds {m['seeds']['n']}" if m["seeds"]["n"] > 1 else ""
    flags += " --tta" if ev.tta_metrics else ""
    flags += " --split val" if m["split"] == "val" else ""
    flags += f" --max-latency-ms {bt.max_latency_ms:g}" if bt.max_latency_ms is not None else ""
    flags += f" --ties {ev.ties_limit}" if ev.ties_limit != DEFAULT_TIES else ""
    return f"fersearch best {bt.name if under_default else bt.experiment} --evaluate{flags}"


def reproduce_commands(ev: Evaluation, fer: FerData) -> dict[str, str]:
    bt = ev.best
    data = bt.record.data.path or fer.source
    return {
        "The search (from its fersearch.json):": bt.record.command or "",
        "Retrain the winner (and any trials tied with it) and rebuild this report:": evaluate_command(ev),
        "Train the winning configuration alone (kept seed, same epoch budget):":
            f"fersearch train --data {data} --config {bt.experiment / BEST_DIR / 'config.json'}",
    }


def _notes(ev: Evaluation, fer: FerData) -> list[str]:
    notes = []
    if getattr(fer, "synthetic", False):
        notes.append("These figures are on the synthetic stand-in data set, not on FER2013; put fer2013.csv in "
                     "data/ (or pass --data) to measure the real thing.")
    if ev.best.unfinished:
        notes.append(f"The search was still running or was interrupted: {ev.best.unfinished} trial(s) had not "
                     "finished when this report was made; the winner is the best of what had reported.")
    return notes


def provenance(ev: Evaluation, fer: FerData, elapsed: float, run: RetrainRun) -> dict[str, Any]:
    """best/fersearch.json: what made these results (command, data, seeds, device, versions)."""
    bt = ev.best
    return {
        "command": evaluate_command(ev),
        "created": timestamp(),
        "experiment": {"name": bt.name, "path": str(bt.experiment), "trial_id": bt.trial_id,
                       "search_command": bt.record.command, "search_val_acc": bt.best_val_acc},
        "data": {"path": bt.record.data.path or fer.source, "format": fer.format, "sha256": fer.sha256},
        "split": ev.metrics["split"], "epoch_budget": ev.metrics["epoch_budget"], "seeds": ev.metrics["seeds"]["seeds"],
        "tta": ev.tta_metrics is not None, "device": str(run.fit.device), "elapsed_s": round(elapsed, 1),
        "tie_break": ev.metrics.get("tie_break"),  # None: no tie to break (report/tiebreak.py)
        "versions": versions(),
    }


def _report_provenance(p: dict[str, Any]) -> dict[str, Any]:
    """The provenance rows the report page shows (data first: it is what a reader checks)."""
    return {"data_path": p["data"]["path"], "data_sha256": p["data"]["sha256"], "data_format": p["data"]["format"],
            "evaluated by": p["command"], "created": p["created"], "device": p["device"],
            "retrain + evaluation time (s)": p["elapsed_s"], "versions": p["versions"]}
