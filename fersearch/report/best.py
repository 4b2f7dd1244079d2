"""`fersearch best`: the winning trial of a search, judged by each trial's best val_acc.

    bt = best("results/demo")            # works while the search still runs
    bt.trial_id, bt.best_val_acc, bt.config, bt.top(5)

Reads only data files of the experiment folder (fersearch.json, trials.csv, history.csv and
the Optuna study in study.journal); it never runs code recorded there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TrainConfig
from ..errors import ConfigError, ExperimentError
from ..fmt import int_or_none, json_value
from ..results.decisions import read_decisions
from ..results.experiment import (
    TrialStatus,
    best_under_latency,
    read_history,
    read_per_image,
    read_trials,
    resolve_experiment,
    trial_config,
)
from ..results.record import ExperimentRecord, load_record
from ..results.study import load_study
from . import analysis as an

TOP_N = 5


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
    record: ExperimentRecord
    analysis: an.SearchAnalysis
    in_progress: int  # trials still pending or running: the search is not over
    max_latency_ms: float | None = None  # the latency budget the pick was made under (report/pareto.py)

    def top(self, n: int = TOP_N) -> pd.DataFrame:
        return self.analysis.top(n)

    @property
    def unfinished(self) -> int:
        """Trials pending or running, plus those the search planned but has not started."""
        return self.in_progress + max(0, (self.record.planned_trials or 0) - len(self.analysis.trials))

    def to_dict(self, n: int = TOP_N) -> dict[str, Any]:
        top = self.top(n)
        top = top.astype(object).where(top.notna(), None)  # pandas' NA (Int64 gaps) -> null
        return {
            "experiment": str(self.experiment), "name": self.name, "trial_id": self.trial_id,
            "status": self.status, "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
            "epochs": self.epochs, "judged_by": "each trial's best val_acc over its epochs",
            "params": self.params, "config": self.config.to_dict(), "counts": self.analysis.counts,
            "in_progress": self.in_progress, "unfinished": self.unfinished,
            "top": [{k: json_value(v) for k, v in r.items()} for r in top.to_dict("records")],
            "diagnoses": [{"kind": d.kind, "message": d.message, "flag": d.flag} for d in self.analysis.diagnoses],
        }


def best(experiment: str | os.PathLike | None = None, results: str | os.PathLike | None = None,
         importance: bool = False, max_latency_ms: float | None = None) -> BestTrial:
    """The winning trial of an experiment (default: the newest under results/), judged by its
    best validation accuracy over its epochs. Works while the search runs: it uses every
    trial that has reported at least one epoch. `importance=True` adds Optuna's
    hyperparameter-importance estimates to `.analysis` (a few seconds; evaluate always does).
    `max_latency_ms`: the most accurate trial whose model's latency is within the budget."""
    exp = resolve_experiment(experiment, results)
    record = load_record(exp)
    trials = read_trials(exp)
    analysis = an.analyze(trials, read_history(exp), record, load_study(exp), importance=importance,
                          decisions=read_decisions(exp), per_image=read_per_image(exp))
    if analysis.best_trial is None and analysis.counts.get("diverged"):
        raise ExperimentError(f"{exp}: every trial that reported diverged ({analysis.counts['diverged']}, non-finite "
                              "training loss); narrow the space's learning-rate range and search again")
    if analysis.best_trial is None:
        raise ExperimentError(f"{exp}: no trial has reported a validation accuracy yet ({len(trials)} trials listed); "
                              "wait for the first epochs (`fersearch status`) and try again")
    row = analysis.trials.iloc[0] if max_latency_ms is None else _under_budget(exp, analysis.trials, max_latency_ms)
    return BestTrial(
        experiment=exp, name=record.name, trial_id=str(row["trial_id"]), status=str(row["status"]),
        best_val_acc=float(row["best_val_acc"]), best_epoch=int_or_none(row["best_epoch"]),
        epochs=int_or_none(row["epochs"]), config=trial_config(row), params=an.trial_params(row), record=record,
        analysis=analysis, in_progress=int(trials["status"].isin([s for s in TrialStatus if not s.ended]).sum()),
        max_latency_ms=max_latency_ms,
    )


def _under_budget(exp: Path, ranked: pd.DataFrame, max_latency_ms: float) -> pd.Series:
    if not max_latency_ms > 0:
        raise ConfigError(f"--max-latency-ms {max_latency_ms}: give a budget above 0 ms")
    lat = pd.to_numeric(ranked["latency_ms"], errors="coerce") if "latency_ms" in ranked.columns else None
    if lat is None or lat.isna().all():
        raise ExperimentError(f"{exp}: its trials recorded no latency (a search made before latency was measured); "
                              "run a new search to pick under --max-latency-ms")
    pick = best_under_latency(ranked, max_latency_ms)
    if pick is None:
        raise ExperimentError(f"no trial of {exp.name} is within --max-latency-ms {max_latency_ms:g}: the fastest "
                              f"takes {lat.min():.3f} ms; raise the budget")
    return ranked[ranked["trial_id"].astype(str) == str(pick["trial_id"])].iloc[0]
