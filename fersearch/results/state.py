"""The one state of a search's trials: Tune's events in, trials.csv and history.csv out.

    TrialState.load(exp_dir)                                      # the state, rebuilt from the files

search/recorder.py's Ray Tune callback (make_recorder) feeds a TrialState with every Tune event; the files persist
it, and the live view (search/live.py) and `fersearch status` (status.py) draw it. Saving costs
the same however large the search grows: each epoch appends one row to history.csv, and
trials.csv is rewritten (atomically) when a trial ends, when the search ends, and
otherwise at most every recorder.SAVE_EVERY_S seconds. So history.csv may hold a (trial_id,
epoch) twice (a retried trial reports an epoch again) or end in a torn line (a crash
mid-append); experiment.read_history keeps the last of each and drops the torn line.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..fmt import short_params
from .experiment import (
    DEPLOY_COLUMNS,
    HISTORY_COLUMNS,
    PARAM_PREFIX,
    TrialStatus,
    best_score,
    read_history,
    read_trials,
)
from .trial_files import frame_rows, write_trials

if TYPE_CHECKING:
    import pandas as pd


def end_status(stop_decided: bool, epochs: int, max_epochs: int | None) -> str:
    """How a trial that ended without error is recorded: 'stopped' when the scheduler (ASHA)
    stopped it before max_epochs (its last result came with done=True), else 'completed'
    (ran out, or the trainer's own early stopping). ASHA also says stop at max_t: completed."""
    if not stop_decided:
        return TrialStatus.COMPLETED
    return TrialStatus.STOPPED if max_epochs is None or epochs < max_epochs else TrialStatus.COMPLETED


@functools.lru_cache(maxsize=1)
def config_order() -> tuple[str, ...]:
    """TrainConfig's field order (architecture first, then training): reads better than the CSV's A-Z."""
    from dataclasses import fields

    from ..config import TrainConfig

    return tuple(f.name for f in fields(TrainConfig))


def _finite(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


class TrialState:
    """Every trial of one search: its trials.csv row, and the val_acc of each epoch it reported.

    Keyed by trial id (and epoch), so a retried or resumed trial that reports an epoch again
    replaces that value. Each event costs the same however many trials there are.
    """

    def __init__(self, total: int = 0, max_epochs: int | None = None):
        self.total = total  # trials planned
        self.max_epochs = max_epochs
        self.rows: dict[str, dict[str, Any]] = {}  # trials.csv, in Tune's order
        self.accs: dict[str, dict[int, float | None]] = {}  # trial -> epoch -> val_acc
        self._stop_decided: dict[str, bool] = {}
        self._order: dict[str, int] = {}
        self.best_id: str | None = None  # ties go to the earlier row, as experiment.best_trial
        self.changed: set[str] = set()  # rows changed since the writer last took this set
        self.param_columns: set[str] = set()  # every `config/<param>` key of any row

    # ---- loading
    @classmethod
    def load(cls, exp_dir: str | os.PathLike, total: int = 0, max_epochs: int | None = None) -> TrialState:
        """The state an experiment's files hold (what a resumed search and `status` start from)."""
        return cls.from_frames(read_trials(exp_dir), read_history(exp_dir), total, max_epochs)

    @classmethod
    def from_frames(cls, trials: pd.DataFrame, history: pd.DataFrame, total: int = 0,
                    max_epochs: int | None = None) -> TrialState:
        state = cls(total, max_epochs)
        for row in frame_rows(trials):
            state._put(row)
        for h in frame_rows(history):
            state.accs.setdefault(h["trial_id"], {})[int(h["epoch"])] = _finite(h.get("val_acc"))
        for trial_id in state.rows:
            state._catch_up(trial_id)
        state._rank_all()
        return state

    def _put(self, row: dict[str, Any]) -> None:
        self._order.setdefault(row["trial_id"], len(self._order))
        self.rows[row["trial_id"]] = row
        self.changed.add(row["trial_id"])
        self.param_columns.update(k for k in row if k.startswith(PARAM_PREFIX))

    def _catch_up(self, trial_id: str) -> None:
        """history.csv is appended at once, trials.csv a few seconds later: after a crash the
        history may know epochs the row does not."""
        row, accs = self.rows[trial_id], self.accs.get(trial_id)
        if not accs or max(accs) <= (row["epochs"] or 0):
            return
        last = max(accs)
        self.changed.add(trial_id)
        row.update(epochs=last, last_val_acc=accs[last],
                   status=TrialStatus.RUNNING if row["status"] == TrialStatus.PENDING else row["status"])
        self._score(trial_id)

    # ---- Tune's events
    def add(self, trial_id: str, config_json: str, params: Mapping[str, object], source: str = "") -> None:
        """A trial Tune created (not started yet); known trials are left as they are. `source`: where
        its configuration came from (the mix sampler's word: trials.csv's source column), if said."""
        if trial_id in self.rows:
            return
        self._put({"trial_id": trial_id, "status": TrialStatus.PENDING, "epochs": 0, "best_val_acc": None,
                   "best_epoch": None, "last_val_acc": None, "node": "", "gpu_ids": "", "error": "",
                   "config_json": config_json, **({"source": source} if source else {}),
                   **{PARAM_PREFIX + k: v for k, v in params.items()}})
        if trial_id in self.accs:  # reported before a crash, before trials.csv was saved
            self._catch_up(trial_id)

    def start(self, trial_id: str) -> None:
        self.rows[trial_id]["status"] = TrialStatus.RUNNING
        self.changed.add(trial_id)

    def result(self, trial_id: str, metrics: Mapping[str, Any], stop_decided: bool = False) -> dict[str, Any]:
        """One epoch's metrics; returns its history.csv row. `stop_decided`: the scheduler
        ends the trial after this result; `diverged` in the metrics (the trainer's reason):
        the trial diverged, and ends."""
        epoch = int(metrics.get("epoch", metrics.get("training_iteration", 0)))
        acc = metrics.get("val_acc")
        self.accs.setdefault(trial_id, {})[epoch] = _finite(acc)
        row = self.rows[trial_id]
        row.update(status=TrialStatus.RUNNING, epochs=epoch, last_val_acc=acc,
                   node=metrics.get("node", row["node"]), gpu_ids=metrics.get("gpu_ids", row["gpu_ids"]),
                   **{c: metrics[c] for c in DEPLOY_COLUMNS if c in metrics})
        if metrics.get("diverged"):  # the trainer's last report: the trial ends here, never the best
            row.update(status=TrialStatus.DIVERGED, error=str(metrics["diverged"]))
            if trial_id == self.best_id:
                self._rank_all()
        self._score(trial_id)
        self._stop_decided[trial_id] = stop_decided
        self.changed.add(trial_id)
        return {**{c: metrics.get(c) for c in HISTORY_COLUMNS}, "trial_id": trial_id, "epoch": epoch}

    def end(self, trial_id: str) -> str:
        """Finished without error: ASHA stopped it before max_epochs, or it ran out (or early-stopped);
        a trial that diverged stays diverged."""
        row = self.rows[trial_id]
        if row["status"] != TrialStatus.DIVERGED:
            row["status"] = end_status(self._stop_decided.get(trial_id, False), int(row["epochs"] or 0),
                                       self.max_epochs)
        self.changed.add(trial_id)
        return row["status"]

    def retry(self, trial_id: str, error: str) -> None:
        self.rows[trial_id].update(status=TrialStatus.RUNNING, error=f"retried after: {error}")
        self.changed.add(trial_id)

    def fail(self, trial_id: str, error: str) -> None:
        self.rows[trial_id].update(status=TrialStatus.FAILED, error=error)
        self.changed.add(trial_id)

    def reconcile(self, known: Iterable[str]) -> None:
        """After a crash, keep only trials Ray's saved state knows: a trial recorded after Ray's
        last snapshot is gone from the search (Ray samples a new one in its place)."""
        known = set(known)
        for trial_id, row in list(self.rows.items()):
            if trial_id in known or row["status"] in [s for s in TrialStatus if s.ended]:
                continue
            if not row["epochs"]:
                del self.rows[trial_id]  # never trained: nothing lost
            else:
                row.update(status=TrialStatus.FAILED, error="lost in a crash before Ray saved it; not resumed")
                self.changed.add(trial_id)
        self._rank_all()

    # ---- the best
    def _score(self, trial_id: str) -> None:
        """The trial's best epoch (its highest val_acc; the earlier epoch on a tie), and the search's."""
        row = self.rows[trial_id]
        scored = [(a, -e) for e, a in self.accs.get(trial_id, {}).items() if a is not None]
        before = row["best_val_acc"]
        if scored:
            acc, neg_epoch = max(scored)
            row.update(best_val_acc=acc, best_epoch=-neg_epoch)
        if trial_id == self.best_id and before is not None and (row["best_val_acc"] or 0.0) < before:
            self._rank_all()  # a retry replaced the best epoch with a worse one (rare): look again
        elif self._beats(trial_id, self.best_id):
            self.best_id = trial_id

    def _beats(self, a: str, b: str | None) -> bool:
        """experiment.best_score's rule, one pair at a time: each event costs the same however many trials."""
        acc = best_score(self.rows[a]["status"], self.rows[a]["best_val_acc"])
        if acc is None:
            return False
        if b is None or b not in self.rows:
            return True
        other = best_score(self.rows[b]["status"], self.rows[b]["best_val_acc"])
        return other is None or acc > other or (acc == other and self._order[a] < self._order[b])

    def _rank_all(self) -> None:
        self.best_id = None
        for trial_id in self.rows:
            if self._beats(trial_id, self.best_id):
                self.best_id = trial_id

    def best(self) -> dict[str, Any] | None:
        """The row of the trial with the highest best_val_acc (judged by its best epoch), or None."""
        return self.rows[self.best_id] if self.best_id in self.rows else None

    def best_acc(self) -> float | None:
        best = self.best()
        return best["best_val_acc"] if best else None

    # ---- what the views draw
    def counts(self) -> dict[str, int]:
        """Trials by status; not_started: planned trials Tune has not created yet."""
        c = {s.value: 0 for s in TrialStatus}
        for row in self.rows.values():
            if row["status"] in c:
                c[row["status"]] += 1
        c["not_started"] = max(0, self.total - len(self.rows))
        return c

    def params(self, trial_id: str) -> dict[str, Any]:
        """A trial's hyperparameters (the space's, not its constants), in TrainConfig's order."""
        order = config_order()

        def rank(name: str) -> tuple[int, str]:
            stem, _, idx = name.rpartition("_")
            key = stem if stem and idx.isdigit() else name  # filters_2 sorts with filters
            return (order.index(key) if key in order else len(order), name)

        found = {k[len(PARAM_PREFIX):]: v for k, v in self.rows[trial_id].items() if k.startswith(PARAM_PREFIX)}
        return dict(sorted(found.items(), key=lambda kv: rank(kv[0])))

    def short_params(self, trial_id: str, width: int | None = None) -> str:
        """A trial's hyperparameters in one short line (filters=32/64 lr=1e-3)."""
        return short_params(self.params(trial_id), width, order=config_order())

    def running(self) -> list[dict[str, Any]]:
        return [row for row in self.rows.values() if row["status"] == TrialStatus.RUNNING]


def mark_unfinished(exp_dir: str | os.PathLike) -> None:
    """After a search stops (finished or interrupted), no trial is running: those that were are pending."""
    state = TrialState.load(exp_dir)
    for row in state.running():
        row["status"] = TrialStatus.PENDING
    if state.rows:
        write_trials(exp_dir, state.rows.values())
