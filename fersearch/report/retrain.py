"""`fersearch best [--evaluate]`: pick the winning trial, retrain it, evaluate it once, report.

    bt = best("results/demo")            # the winner, judged by each trial's best val_acc
    ev = evaluate("results/demo", seeds=3, tta=True)
    ev.metrics["accuracy"], ev.out_dir   # the same figures the CLI prints

The retrain uses the data file the search used (checked by content hash), the full epoch
budget (the search's --max-epochs unless told otherwise), early stopping on the
validation split with its best weights restored. The test split is touched here only,
once per retrained model, after all training is done. Results are assembled in a
temporary directory and swapped in as results/<name>/best/, so a failure midway never
leaves a half-written best/ behind.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import analysis as an
from . import pages as rp
from ..config import TrainConfig
from ..data.loader import Log, log_stderr
from ..errors import ConfigError, DataError, ExperimentError
from ..search.experiment import read_history, read_meta, read_trials, resolve_experiment, results_root, trial_config
from ..train.predict import MODEL_FILE, SCRIPTED_FILE, export_torchscript
from ..io import atomic_write_text, versions, write_json

BEST_DIR = "best"
SPLITS = ("test", "val")
TOP_N = 5


# ==================================================================== best
@dataclass
class BestTrial:
    experiment: Path
    name: str
    trial_id: str
    status: str
    best_val_acc: float
    best_epoch: int | None
    epochs: int | None
    config: TrainConfig
    params: dict[str, Any]
    meta: dict[str, Any]
    analysis: an.SearchAnalysis
    in_progress: int  # trials still pending or running: the search is not over

    def top(self, n: int = TOP_N) -> pd.DataFrame:
        return self.analysis.top(n)

    @property
    def unfinished(self) -> int:
        """Trials pending or running, plus those the search planned but has not started."""
        planned = int(self.meta.get("trials") or 0)
        return self.in_progress + max(0, planned - len(self.analysis.trials))

    def to_dict(self, n: int = TOP_N) -> dict[str, Any]:
        top = self.top(n)
        return {
            "experiment": str(self.experiment), "name": self.name, "trial_id": self.trial_id,
            "status": self.status, "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
            "epochs": self.epochs, "judged_by": "each trial's best val_acc over its epochs",
            "params": self.params, "config": self.config.to_dict(), "counts": self.analysis.counts,
            "in_progress": self.in_progress, "unfinished": self.unfinished,
            "top": [{k: _json_value(v) for k, v in r.items()} for r in top.to_dict("records")],
        }


def best(experiment: str | os.PathLike | None = None, results: str | os.PathLike | None = None,
         importance: bool = False) -> BestTrial:
    """The winning trial of an experiment (default: the newest under results/), judged by its
    best validation accuracy over its epochs. Works while the search runs: it uses every
    trial that has reported at least one epoch. `importance=True` adds Optuna's
    hyperparameter-importance estimates to `.analysis` (a few seconds; evaluate always does)."""
    exp = resolve_experiment(experiment, results)
    meta = read_meta(exp)
    trials = read_trials(exp)
    analysis = an.analyze(trials, read_history(exp), meta, declared_distributions(meta), importance=importance)
    if analysis.best_trial is None:
        raise ExperimentError(f"{exp}: no trial has reported a validation accuracy yet ({len(trials)} trials listed); "
                              "wait for the first epochs (`fersearch status`) and try again")
    row = analysis.trials.iloc[0]
    return BestTrial(
        experiment=exp, name=str(meta.get("name", exp.name)), trial_id=str(row["trial_id"]), status=str(row["status"]),
        best_val_acc=float(row["best_val_acc"]), best_epoch=_int_or_none(row["best_epoch"]),
        epochs=_int_or_none(row["epochs"]), config=trial_config(row), params=an.trial_params(row), meta=meta,
        analysis=analysis,
        in_progress=int(trials["status"].isin(["pending", "running"]).sum()),
    )


def declared_distributions(meta: dict[str, Any]) -> dict[str, Any]:
    """The search space's declared ranges, from the space source recorded in fersearch.json
    ({} when it cannot be run here; the boundary check then uses the range tried)."""
    space = meta.get("space") or {}
    if not space.get("source"):
        return {}
    from ..search.spaces import SpaceFunction

    try:
        return an.space_distributions(SpaceFunction(str(space.get("path", "space.py")), space["source"]))
    except Exception:  # noqa: BLE001 - a space that no longer runs here only costs the declared ranges
        return {}


# ==================================================================== evaluate
@dataclass
class Evaluation:
    best: BestTrial
    config: TrainConfig  # what was retrained (epochs = budget, seed = the kept run's seed)
    metrics: dict[str, Any]  # metrics.json
    tta_metrics: dict[str, Any] | None
    seed_runs: list[dict[str, Any]]
    history: list[dict[str, Any]]  # per-epoch metrics of the kept run
    report: str  # scikit-learn's classification report (text)
    out_dir: Path
    predictions: pd.DataFrame  # predictions.csv: per image true/predicted emotion and probabilities
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])

    def to_dict(self) -> dict[str, Any]:
        return {"experiment": str(self.best.experiment), "trial_id": self.best.trial_id, "metrics": self.metrics,
                "config": self.config.to_dict(), "out_dir": str(self.out_dir),
                "files": {k: str(v) for k, v in self.files.items()}}


@dataclass
class _Run:
    seed: int
    fit: Any  # train.FitResult
    probs: np.ndarray
    tta_probs: np.ndarray | None


def evaluate(experiment: str | os.PathLike | BestTrial | None = None, *, epochs: int | None = None, seeds: int = 1,
             tta: bool = False, split: str = "test", results: str | os.PathLike | None = None,
             data: Any = None, threads: int | None = None, progress: bool = False,
             log: Log | None = None) -> Evaluation:
    """Retrain the best trial's configuration from scratch and evaluate it on `split`.

    experiment: a name, a path, None (the newest) or a BestTrial from `best()`.
    epochs: the budget (default: the search's --max-epochs); early stopping on val still applies.
    seeds: retrain this many times with seeds cfg.seed, cfg.seed+1, ...; keep the best-validation
    model and report mean +- std. tta: add horizontal-flip test-time augmentation figures.
    data: the FerData the search used, if it was passed in memory (default: reload the
    search's data file, checked against its recorded sha256)."""
    log = log or log_stderr
    check_args(epochs, seeds, split)
    bt = experiment if isinstance(experiment, BestTrial) else best(experiment, results)
    if not bt.analysis.importance:
        bt.analysis = an.analyze(bt.analysis.trials, bt.analysis.history, bt.meta, bt.analysis.distributions)
    fer, images, labels = prepare_data(bt.meta, data, split, log, experiment=bt.experiment)
    budget = int(epochs or bt.meta.get("max_epochs") or bt.config.epochs)
    started = time.time()
    runs = [_retrain(bt, fer, images, budget, bt.config.seed + i, tta, threads, progress, log) for i in range(seeds)]
    kept = max(range(len(runs)), key=lambda i: runs[i].fit.best_val_acc)
    ev = _assemble(bt, fer, labels, split, runs, kept, budget, tta)
    ev.out_dir = write_best_dir(ev, runs[kept], fer, elapsed=time.time() - started)
    ev.files = {p.name: p for p in sorted(ev.out_dir.iterdir())}
    return ev


def check_args(epochs: int | None, seeds: int, split: str) -> None:
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs {epochs}: retrain at least 1 epoch (default: the search's --max-epochs)")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: retrain at least once")
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")


def prepare_data(meta: dict[str, Any], data: Any, split: str, log: Log,
                 experiment: Path | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """(FerData, images, labels of `split`): the data set the search ran on, reloaded from its
    recorded path and checked against its recorded content hash (a changed file would make the
    comparison meaningless), with labels on the split to score."""
    from ..data.loader import FerData, load

    rec = meta.get("data") or {}
    held: list[str] = []  # the loader's notes are shown only once the data is known to be usable
    if isinstance(data, FerData):
        fer = data
    else:
        path = Path(data) if data is not None else _recorded_data_path(rec, meta, experiment)
        fer = load(path, log=held.append)
    want = rec.get("sha256")
    if want and fer.sha256 and fer.sha256 != want:
        raise ExperimentError(f"data {fer.source or rec.get('path')} changed since the search {meta.get('name')} ran "
                              f"(sha256 {fer.sha256[:12]}... vs recorded {want[:12]}...); "
                              "restore that file or run a new search")
    images, labels = split_with_labels(fer, split)
    for line in held:
        log(line)
    return fer, images, labels


def _recorded_data_path(rec: dict[str, Any], meta: dict[str, Any], experiment: Path | None) -> Path:
    raw = rec.get("path")
    if not raw:
        raise ExperimentError(f"search {meta.get('name')} was run on data passed in memory (no file recorded); "
                              "pass the same FerData: fersearch.evaluate(..., data=...)")
    path = Path(raw).expanduser()
    # A relative path is relative to where the search ran: usually the dir holding results/.
    for candidate in (path, *([experiment.parent.parent / path] if experiment and not path.is_absolute() else [])):
        if candidate.exists():
            return candidate
    raise ExperimentError(f"data file {raw} that search {meta.get('name')} used is gone (cwd {Path.cwd()}); "
                          "run from the directory the search ran in, or restore the file")


def split_with_labels(fer: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = fer.subset(split)
    if len(labels) == 0:
        raise DataError(f"data {fer.source} has no {split} split; evaluate on another with --split "
                        f"{'val' if split == 'test' else 'test'}")
    if (labels < 0).all():
        hint = " (a Kaggle test.csv has none)" if split == "test" else ""
        raise DataError(f"the {split} split of {fer.source} has no labels{hint}, so there is nothing to score; "
                        "evaluate on the validation split with --split val")
    known = labels >= 0
    return images[known], labels[known]


def _retrain(bt: BestTrial, fer: Any, images: np.ndarray, budget: int, seed: int, tta: bool,
             threads: int | None, progress: bool, log: Log) -> _Run:
    from ..train.loop import fit, predict_proba

    cfg = bt.config.replace(epochs=budget, seed=seed)
    log(f"retraining trial {bt.trial_id} from scratch: seed {seed}, up to {budget} epochs, "
        f"early stopping on val (patience {cfg.patience})")
    result = fit(cfg, fer, threads=threads, progress=progress)
    log(f"  seed {seed}: best val_acc {result.best_val_acc:.4f} at epoch {result.best_epoch} "
        f"of {len(result.history)}{' (stopped early)' if result.stopped_early else ''}")
    probs = predict_proba(result.model, images)
    return _Run(seed, result, probs, predict_proba(result.model, images, tta=True) if tta else None)


def _assemble(bt: BestTrial, fer: Any, labels: np.ndarray, split: str, runs: list[_Run], kept: int,
              budget: int, tta: bool) -> Evaluation:
    names = tuple(fer.names)
    run = runs[kept]
    metrics = rp.compute_metrics(labels, run.probs, names, split)
    tta_metrics = rp.compute_metrics(labels, run.tta_probs, names, split) if tta else None
    seed_runs = [{"seed": r.seed, "best_val_acc": float(r.fit.best_val_acc), "best_epoch": int(r.fit.best_epoch),
                  "epochs": len(r.fit.history), "accuracy": float((r.probs.argmax(1) == labels).mean()),
                  "macro_f1": rp.compute_metrics(labels, r.probs, names, split)["macro_f1"], "kept": i == kept,
                  "history": list(r.fit.history)}
                 for i, r in enumerate(runs)]
    metrics.update({
        "experiment": bt.name, "trial_id": bt.trial_id, "search_val_acc": bt.best_val_acc,
        "val_acc": float(run.fit.best_val_acc), "best_epoch": int(run.fit.best_epoch),
        "epochs_run": len(run.fit.history), "epoch_budget": budget,
        "seeds": _seed_summary(seed_runs, runs[kept].seed),
    })
    if tta_metrics:
        metrics["tta"] = tta_metrics
    cfg = bt.config.replace(epochs=budget, seed=run.seed)
    return Evaluation(best=bt, config=cfg, metrics=metrics, tta_metrics=tta_metrics, seed_runs=seed_runs,
                      history=list(run.fit.history), report=rp.classification_report_text(labels, run.probs, names),
                      out_dir=bt.experiment / BEST_DIR, predictions=predictions_frame(labels, run, list(names)))


def _seed_summary(seed_runs: list[dict[str, Any]], kept_seed: int) -> dict[str, Any]:
    def stats(key: str) -> dict[str, Any]:
        values = [r[key] for r in seed_runs]
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values}

    return {"n": len(seed_runs), "seeds": [r["seed"] for r in seed_runs], "kept_seed": kept_seed,
            "kept_by": "best val_acc", "std": "sample (n-1)",
            "val_acc": stats("best_val_acc"), "accuracy": stats("accuracy"), "macro_f1": stats("macro_f1")}


# ==================================================================== files
def write_best_dir(ev: Evaluation, run: _Run, fer: Any, *, elapsed: float) -> Path:
    """Write every result file into a temp dir beside best/, then swap it in."""
    exp = ev.best.experiment
    tmp = Path(tempfile.mkdtemp(dir=exp, prefix=".best.tmp-"))
    try:
        _write_files(tmp, ev, run, fer, elapsed)
        final = exp / BEST_DIR
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    tmp.chmod(0o755)  # mkdtemp makes 0700; results are meant to be read by others too
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_files(out: Path, ev: Evaluation, run: _Run, fer: Any, elapsed: float) -> None:
    from ..model import save_model

    bt = ev.best
    write_json(out / "config.json", ev.config.to_dict())
    write_json(out / "metrics.json", ev.metrics)
    atomic_write_text(out / "classification_report.txt", _report_text(ev))
    atomic_write_text(out / "predictions.csv", ev.predictions.to_csv(index_label="index"))
    atomic_write_text(out / "history.csv", pd.DataFrame(ev.history).to_csv(index=False))
    images = _write_plots(out, ev)
    save_model(out / MODEL_FILE, run.fit.model, ev.config,
               meta={"experiment": bt.name, "trial_id": bt.trial_id, "data_sha256": fer.sha256,
                     "split": ev.metrics["split"], "accuracy": ev.metrics["accuracy"], "val_acc": ev.metrics["val_acc"]})
    export_torchscript(_cpu_copy(run.fit.model), out / SCRIPTED_FILE)
    provenance = _provenance(ev, fer, elapsed, run)
    write_json(out / "fersearch.json", provenance)
    ctx = rp.ReportContext(
        experiment=bt.name, out_dir=out, metrics=ev.metrics, config=ev.config.to_dict(),
        config_diff=an.config_diff(ev.config), best={"trial_id": bt.trial_id, "best_val_acc": bt.best_val_acc,
                                                     "best_epoch": bt.best_epoch, "epochs": bt.epochs, "status": bt.status},
        seed_runs=ev.seed_runs, commands=reproduce_commands(ev, fer), provenance=_report_provenance(provenance),
        analysis=bt.analysis, tta_metrics=ev.tta_metrics, images=images, notes=_notes(ev, fer),
    )
    rp.write_pages(ctx)


def _report_text(ev: Evaluation) -> str:
    m = ev.metrics
    head = (f"fersearch {ev.best.name}: trial {ev.best.trial_id} retrained, {m['split']} split, n={m['n']}\n"
            f"accuracy {m['accuracy']:.4f}  loss {m['loss']:.4f}  macro F1 {m['macro_f1']:.4f}  "
            f"weighted F1 {m['weighted_f1']:.4f}\n\n")
    return head + ev.report


def predictions_frame(labels: np.ndarray, run: _Run, names: list[str]) -> pd.DataFrame:
    """One row per evaluated image (in split order): true and predicted emotion, probabilities."""
    df = pd.DataFrame({"true": [names[i] for i in labels], "predicted": [names[i] for i in run.probs.argmax(1)]})
    if run.tta_probs is not None:
        df["predicted_tta"] = [names[i] for i in run.tta_probs.argmax(1)]
    for j, n in enumerate(names):
        df[f"p_{n}"] = run.probs[:, j]
    return df


def _write_plots(out: Path, ev: Evaluation) -> dict[str, str]:
    m, a, names = ev.metrics, ev.best.analysis, ev.metrics["labels"]
    title = f"{m['split']} split, n={m['n']}, accuracy {m['accuracy']:.3f}"
    rp.plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix.png",
                             title=f"Confusion matrix ({title})")
    rp.plot_confusion_matrix(m["confusion_matrix"], names, out / "confusion_matrix_normalized.png", normalized=True)
    runs = ev.seed_runs or [{"seed": ev.config.seed, "history": ev.history, "kept": True}]
    rp.plot_learning_curves([r["history"] for r in runs], out / "learning_curves.png",
                            kept=next(i for i, r in enumerate(runs) if r["kept"]),
                            labels=[f"seed {r['seed']}" for r in runs])
    images = {"Confusion matrix": "confusion_matrix.png", "Confusion matrix, normalised": "confusion_matrix_normalized.png",
              "Learning curves": "learning_curves.png"}
    if a.params:
        rp.plot_param_scatter(a.trials, a.params, out / "search_params.png", a.best_trial, a.distributions,
                              [b.param for b in a.boundaries])
        images["Validation accuracy against each hyperparameter"] = "search_params.png"
    if len(a.history):
        rp.plot_trial_curves(a.history, a.trials, out / "search_curves.png", a.rungs, a.best_trial, a.seed_trial)
        images["Validation accuracy per epoch, every trial"] = "search_curves.png"
    if a.importance:
        rp.plot_importance(a.importance, out / "importance.png")
        images["Hyperparameter importance"] = "importance.png"
    return images


def _cpu_copy(model: Any) -> Any:
    import copy

    return copy.deepcopy(model).to("cpu").eval()


def evaluate_command(ev: Evaluation) -> str:
    """The CLI command equivalent to this evaluation (whether it ran from the CLI or the API)."""
    bt, m = ev.best, ev.metrics
    under_default = bt.experiment.parent.resolve() == results_root().resolve()
    flags = f" --epochs {m['epoch_budget']}"
    flags += f" --seeds {m['seeds']['n']}" if m["seeds"]["n"] > 1 else ""
    flags += " --tta" if ev.tta_metrics else ""
    flags += " --split val" if m["split"] == "val" else ""
    return f"fersearch best {bt.name if under_default else bt.experiment} --evaluate{flags}"


def reproduce_commands(ev: Evaluation, fer: Any) -> dict[str, str]:
    bt = ev.best
    data = bt.meta.get("data", {}).get("path") or fer.source
    return {
        "The search (from its fersearch.json):": str(bt.meta.get("command", "")),
        "Retrain the winner and rebuild this report:": evaluate_command(ev),
        "Train the winning configuration alone (kept seed, same epoch budget):":
            f"fersearch train --data {data} --config {bt.experiment / BEST_DIR / 'config.json'}",
    }


def _notes(ev: Evaluation, fer: Any) -> list[str]:
    notes = []
    if getattr(fer, "synthetic", False):
        notes.append("These figures are on the synthetic stand-in data set, not on FER2013; put fer2013.csv in "
                     "data/ (or pass --data) to measure the real thing.")
    if ev.best.unfinished:
        notes.append(f"The search was still running or was interrupted: {ev.best.unfinished} trial(s) had not "
                     "finished when this report was made; the winner is the best of what had reported.")
    return notes


def _provenance(ev: Evaluation, fer: Any, elapsed: float, run: _Run) -> dict[str, Any]:
    bt = ev.best
    rec = bt.meta.get("data", {})
    return {
        "command": evaluate_command(ev),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "experiment": {"name": bt.name, "path": str(bt.experiment), "trial_id": bt.trial_id,
                       "search_command": bt.meta.get("command"), "search_val_acc": bt.best_val_acc},
        "data": {"path": rec.get("path") or fer.source, "format": fer.format, "sha256": fer.sha256},
        "split": ev.metrics["split"], "epoch_budget": ev.metrics["epoch_budget"], "seeds": ev.metrics["seeds"]["seeds"],
        "tta": ev.tta_metrics is not None, "device": str(run.fit.device), "elapsed_s": round(elapsed, 1),
        "versions": versions(),
    }


def _report_provenance(p: dict[str, Any]) -> dict[str, Any]:
    """The provenance rows the report page shows (data first: it is what a reader checks)."""
    return {"data_path": p["data"]["path"], "data_sha256": p["data"]["sha256"], "data_format": p["data"]["format"],
            "evaluated by": p["command"], "created": p["created"], "device": p["device"],
            "retrain + evaluation time (s)": p["elapsed_s"], "versions": p["versions"]}


# ==================================================================== helpers
def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def _int_or_none(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else int(f)
