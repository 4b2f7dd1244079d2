"""`fersearch best --evaluate`: retrain the winning trial from scratch, evaluate it once, write best/.

    ev = evaluate("results/demo", seeds=3, tta=True)
    ev.metrics["accuracy"], ev.out_dir   # the same figures the CLI prints

The retrain uses the data file the search used (checked by content hash), the full epoch
budget (the search's --max-epochs unless told otherwise), early stopping on the
validation split with its best weights restored. A winner tied with others within the
validation noise is first told apart from them by retraining each (report/tiebreak.py, --ties),
on validation only. The test split is touched here only, once per retrained model of the
pick, after all training is done. Results are assembled in a
temporary directory and swapped in as results/<name>/best/, so a failure midway never
leaves a half-written best/ behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..data import Log, log_stderr
from ..errors import ConfigError, DataError, ExperimentError
from ..fmt import acc
from ..results.experiment import read_per_image
from ..results.record import ExperimentRecord
from . import analysis as an
from . import bestdir, tiebreak
from .best import BestTrial, best
from .bestdir import Evaluation, RetrainRun
from .metrics import classification_report_text, compute_metrics, predictions_frame, seed_summary

if TYPE_CHECKING:
    from ..data import FerData
    from ..train.loop import FitResult

BEST_DIR = bestdir.BEST_DIR
SPLITS = ("test", "val")


def evaluate(experiment: str | os.PathLike | BestTrial | None = None, *, epochs: int | None = None, seeds: int = 1,
             tta: bool = False, split: str = "test", results: str | os.PathLike | None = None,
             data: FerData | None = None, threads: int | None = None, progress: bool = False,
             log: Log | None = None, max_latency_ms: float | None = None,
             ties: int = tiebreak.DEFAULT_TIES, ready: Callable[[BestTrial], None] | None = None) -> Evaluation:
    """Retrain the best trial's configuration from scratch and evaluate it on `split`.

    experiment: a name, a path, None (the newest) or a BestTrial from `best()`.
    epochs: the budget (default: the search's --max-epochs); early stopping on val still applies.
    seeds: retrain this many times with seeds cfg.seed, cfg.seed+1, ...; keep the best-validation
    model and report mean +- std. tta: add horizontal-flip test-time augmentation figures.
    data: the FerData the search used, if it was passed in memory (default: reload the
    search's data file, checked against its recorded sha256). max_latency_ms: retrain the most
    accurate trial whose model is within this latency budget instead (report/pareto.py).
    ties: break a tie with the best by retraining up to this many tied configurations, each
    with max(seeds, 2) seeds, and keeping the highest mean best val_acc (report/tiebreak.py);
    1: retrain the winner alone. ready(best trial): called once the flags, the winner and the data
    are checked, before any training (the CLI prints the winner there)."""
    log = log or log_stderr
    check_args(epochs, seeds, split, ties)
    bt = experiment if isinstance(experiment, BestTrial) else best(experiment, results, max_latency_ms=max_latency_ms)
    a = bt.analysis
    fer, images, labels = prepare_data(bt.record, data, split, log, experiment=bt.experiment)
    if ready is not None:
        ready(bt)
    if not a.importance:
        bt.analysis = an.analyze(a.trials, a.history, bt.record, a.study, decisions=a.decisions,
                                 per_image=read_per_image(bt.experiment))
    budget = int(epochs or bt.record.max_epochs or bt.config.epochs)
    started = time.time()
    picked, fits, record = _retrain_tie_set(bt, ties, seeds, fer, budget, threads, progress, log)
    # The test split is touched here only: the pick's models, after all training is done.
    runs = [_score(fit, seed, images, tta) for seed, fit in fits]
    kept = max(range(len(runs)), key=lambda i: runs[i].fit.best_val_acc)
    ev = _assemble(picked, fer, labels, split, runs, kept, budget, tta)
    ev.ties_limit = ties
    if record:
        ev.metrics["tie_break"] = record
    ev.out_dir = write_best_dir(ev, runs[kept], fer, elapsed=time.time() - started)
    ev.files = {p.name: p for p in sorted(ev.out_dir.iterdir())}
    return ev


def check_args(epochs: int | None, seeds: int, split: str, ties: int = tiebreak.DEFAULT_TIES) -> None:
    if epochs is not None and epochs < 1:
        raise ConfigError(f"--epochs {epochs}: retrain at least 1 epoch (default: the search's --max-epochs)")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: retrain at least once")
    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    if ties < 1:
        raise ConfigError(f"--ties {ties}: retrain at least the best configuration (--ties 1: no tie-break; "
                          f"default {tiebreak.DEFAULT_TIES})")


EVALUATE_ONLY = ("epochs", "seeds", "ties", "tta", "split")  # best's flags that only --evaluate reads


def refuse_without_evaluate(given: list[str]) -> None:
    """`best` without --evaluate reads none of these: a flag given there would be silently ignored."""
    if given:
        flags = ", ".join(f"--{name}" for name in given)
        one = len(given) == 1
        raise ConfigError(f"{flags} only {'applies' if one else 'apply'} with --evaluate (the retrain); add "
                          f"--evaluate or drop {'it' if one else 'them'}")


# ---------------------------------------------------------------- data
def prepare_data(record: ExperimentRecord, data: FerData | str | os.PathLike | None, split: str, log: Log,
                 experiment: Path | None = None) -> tuple[FerData, np.ndarray, np.ndarray]:
    """(FerData, images, labels of `split`): the data set the search ran on, reloaded from its
    recorded path and checked against its recorded content hash (a changed file would make the
    comparison meaningless), with labels on the split to score."""
    from ..data import FerData, load

    held: list[str] = []  # the loader's notes are shown only once the data is known to be usable
    if isinstance(data, FerData):
        fer = data
    else:
        path = Path(data) if data is not None else _recorded_data_path(record, experiment)
        fer = load(path, log=held.append)
    want = record.data.sha256
    if want and fer.sha256 and fer.sha256 != want:
        raise ExperimentError(f"data {fer.source or record.data.path} changed since the search {record.name} ran "
                              f"(sha256 {fer.sha256[:12]}... vs recorded {want[:12]}...); "
                              "restore that file or run a new search")
    images, labels = split_with_labels(fer, split)
    for line in held:
        log(line)
    return fer, images, labels


def _recorded_data_path(record: ExperimentRecord, experiment: Path | None) -> Path:
    raw = record.data.path
    if not raw:
        raise ExperimentError(f"search {record.name} was run on data passed in memory (no file recorded); "
                              "pass the same FerData: fersearch.evaluate(..., data=...)")
    path = Path(raw).expanduser()
    # A relative path is relative to where the search ran: usually the dir holding results/.
    for candidate in (path, *([experiment.parent.parent / path] if experiment and not path.is_absolute() else [])):
        if candidate.exists():
            return candidate
    raise ExperimentError(f"data file {raw} that search {record.name} used is gone (cwd {Path.cwd()}); "
                          "run from the directory the search ran in, or restore the file")


def split_with_labels(fer: FerData, split: str) -> tuple[np.ndarray, np.ndarray]:
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


# ---------------------------------------------------------------- retrain and assemble
def _retrain_tie_set(bt: BestTrial, ties: int, seeds: int, fer: FerData, budget: int, threads: int | None,
                     progress: bool, log: Log) -> tuple[BestTrial, list[tuple[int, Any]], dict[str, Any] | None]:
    """Retrain the winner, or each configuration of its tie set (report/tiebreak.py), on validation
    only. Returns the pick, its (seed, FitResult) runs and the tie-break record (None without a tie)."""
    configs = {tid: tiebreak.trial_as_best(bt, tid) for tid in tiebreak.tie_set(bt, ties)}
    n_seeds = tiebreak.tie_seeds(seeds, list(configs))
    seed_lists = {tid: [c.config.seed + i for i in range(n_seeds)] for tid, c in configs.items()}
    if len(configs) > 1:
        log(f"tie-break: trials {', '.join(configs)} are within noise of the best on the validation images; "
            f"retraining each with {n_seeds} seeds, picking the highest mean best val_acc (test split unused)")
    fits = {tid: [_retrain(c, fer, budget, seed, threads, progress, log) for seed in seed_lists[tid]]
            for tid, c in configs.items()}
    val_accs = {tid: [float(f.best_val_acc) for f in runs] for tid, runs in fits.items()}
    picked = tiebreak.pick(val_accs)
    record = tiebreak.tie_break_record(bt, ties, seed_lists, val_accs, picked) if len(configs) > 1 else None
    return configs[picked], list(zip(seed_lists[picked], fits[picked])), record


def _retrain(bt: BestTrial, fer: FerData, budget: int, seed: int, threads: int | None, progress: bool,
             log: Log) -> FitResult:
    """One retrain of the trial's configuration from scratch: train.FitResult (validation only)."""
    from ..train import fit

    cfg = bt.config.replace(epochs=budget, seed=seed)
    log(f"retraining trial {bt.trial_id} from scratch: seed {seed}, up to {budget} epochs, "
        f"early stopping on val (patience {cfg.patience})")
    result = fit(cfg, fer, threads=threads, progress=progress)
    log(f"  seed {seed}: best val_acc {acc(result.best_val_acc)} at epoch {result.best_epoch} "
        f"of {len(result.history)}{' (stopped early)' if result.stopped_early else ''}")
    return result


def _score(result: FitResult, seed: int, images: np.ndarray, tta: bool) -> RetrainRun:
    """A retrained model's probabilities on the split to score."""
    from ..train import predict_proba

    probs = predict_proba(result.model, images)
    return RetrainRun(seed, result, probs, predict_proba(result.model, images, tta=True) if tta else None)


def _assemble(bt: BestTrial, fer: FerData, labels: np.ndarray, split: str, runs: list[RetrainRun], kept: int,
              budget: int, tta: bool) -> Evaluation:
    names = tuple(fer.names)
    run = runs[kept]
    metrics = compute_metrics(labels, run.probs, names, split)
    tta_metrics = compute_metrics(labels, run.tta_probs, names, split) if tta and run.tta_probs is not None else None
    seed_runs = [{"seed": r.seed, "best_val_acc": float(r.fit.best_val_acc), "best_epoch": int(r.fit.best_epoch),
                  "epochs": len(r.fit.history), "accuracy": float((r.probs.argmax(1) == labels).mean()),
                  "macro_f1": compute_metrics(labels, r.probs, names, split)["macro_f1"], "kept": i == kept,
                  "history": list(r.fit.history)}
                 for i, r in enumerate(runs)]
    metrics.update({
        "experiment": bt.name, "trial_id": bt.trial_id, "search_val_acc": bt.best_val_acc,
        "val_acc": float(run.fit.best_val_acc), "best_epoch": int(run.fit.best_epoch),
        "epochs_run": len(run.fit.history), "epoch_budget": budget,
        "seeds": seed_summary(seed_runs, run.seed),
    })
    if tta_metrics:
        metrics["tta"] = tta_metrics
    return Evaluation(best=bt, config=bt.config.replace(epochs=budget, seed=run.seed), metrics=metrics,
                      tta_metrics=tta_metrics, seed_runs=seed_runs, history=list(run.fit.history),
                      report=classification_report_text(labels, run.probs, names), out_dir=bt.experiment / BEST_DIR,
                      predictions=predictions_frame(labels, run.probs, names, run.tta_probs))


# ---------------------------------------------------------------- best/, all or nothing
def write_best_dir(ev: Evaluation, run: RetrainRun, fer: FerData, *, elapsed: float) -> Path:
    """Write every result file into a temp dir beside best/, then swap it in."""
    exp = ev.best.experiment
    tmp = Path(tempfile.mkdtemp(dir=exp, prefix=".best.tmp-"))
    try:
        bestdir.write_files(tmp, ev, run, fer, elapsed)
        final = exp / BEST_DIR
        _swap_in(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _swap_in(tmp: Path, final: Path) -> None:
    from ..interrupts import deferred

    tmp.chmod(0o755)  # mkdtemp makes 0700; results are meant to be read by others too
    old = None
    with deferred():  # a Ctrl+C between the two renames would leave no best/ at all: it waits for the second
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
        os.replace(tmp, final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
