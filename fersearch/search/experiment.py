"""Experiment directories: where they are and how their files are read and written.

`fersearch tune` writes `results/<name>/`; `best`, `status` and `report` read it.
This module is the one place that knows the file contract (pure pandas, no Ray):

    fersearch.json  what made the experiment (command, data hash, space source, seed, versions)
    trials.csv      one row per trial: TRIAL_COLUMNS, then `config/<param>` per space parameter
    history.csv     one row per trial per epoch: HISTORY_COLUMNS

Both CSVs are rewritten atomically while the search runs, so a reader may open
them at any moment and sees a complete file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from ..config import TrainConfig
from ..errors import ExperimentError
from ..io import atomic_write_text, read_json, write_json

META_FILE = "fersearch.json"
TRIALS_FILE = "trials.csv"
HISTORY_FILE = "history.csv"
DEFAULT_RESULTS = "results"

STATUSES = ("pending", "running", "completed", "stopped", "failed")
TRIAL_COLUMNS = (
    "trial_id", "status", "epochs", "best_val_acc", "best_epoch", "last_val_acc",
    "node", "gpu_ids", "error", "config_json",
)
HISTORY_COLUMNS = (
    "trial_id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
    "lr", "images_per_s", "epoch_time_s",
)
PARAM_PREFIX = "config/"
# Read as text so ids like "0e1" or gpu lists like "0,1" are never turned into numbers.
_TEXT_COLUMNS = {"trial_id": str, "status": str, "node": str, "gpu_ids": str, "error": str, "config_json": str}


# ---------------------------------------------------------------- locating
def results_root(results: str | os.PathLike | None = None) -> Path:
    """The directory experiments live in (default ./results, relative to the cwd)."""
    return Path(results if results is not None else DEFAULT_RESULTS).expanduser()


def is_experiment(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def list_experiments(results: str | os.PathLike | None = None) -> list[Path]:
    """Experiment dirs under the results root, oldest first (by fersearch.json `created`)."""
    root = results_root(results)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_experiment(p)]
    return sorted(found, key=lambda p: (_created(p), p.name))


def _created(exp: Path) -> str:
    try:
        return str(read_json(exp / META_FILE).get("created", ""))
    except (OSError, ValueError):
        return ""


def resolve_experiment(name_or_path: str | os.PathLike | None = None, results: str | os.PathLike | None = None) -> Path:
    """An experiment dir from a path, a name under the results root, or (None) the newest one."""
    root = results_root(results)
    if name_or_path is None or str(name_or_path) == "":
        found = list_experiments(root)
        if not found:
            raise ExperimentError(f"no experiments in {root}/; run `fersearch tune` first or pass a name or path")
        return found[-1]
    given = Path(name_or_path).expanduser()
    for candidate in (given, root / given):
        if is_experiment(candidate):
            return candidate
    if given.is_dir() or (root / given).is_dir():
        where = given if given.is_dir() else root / given
        raise ExperimentError(f"{where} has no {META_FILE}; it is not a fersearch experiment (was the search started?)")
    names = ", ".join(p.name for p in list_experiments(root)[-5:]) or "none"
    raise ExperimentError(f"experiment {str(name_or_path)!r} not found as a path or under {root}/ (recent: {names})")


# ---------------------------------------------------------------- reading
def read_meta(exp: str | os.PathLike) -> dict[str, Any]:
    path = Path(exp) / META_FILE
    try:
        meta = read_json(path)
    except FileNotFoundError:
        raise ExperimentError(f"{path} not found; is {exp} a fersearch experiment?") from None
    except ValueError as e:
        raise ExperimentError(f"{path} is not valid JSON ({e}); the experiment record is damaged") from None
    if not isinstance(meta, dict):
        raise ExperimentError(f"{path} must hold a JSON object; the experiment record is damaged")
    return meta


def _read_csv(path: Path, columns: Iterable[str]) -> pd.DataFrame:
    columns = list(columns)
    if not path.is_file():
        return pd.DataFrame({c: pd.Series(dtype=_TEXT_COLUMNS.get(c, "float64")) for c in columns})
    dtype = {c: t for c, t in _TEXT_COLUMNS.items() if c in columns}
    try:
        # Only empty cells are missing (a node or error text "NA" stays text); text columns keep "".
        df = pd.read_csv(path, dtype=dtype, keep_default_na=False, na_values=[""])
        df[list(dtype)] = df[list(dtype)].fillna("")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ExperimentError(f"{path} cannot be read as CSV ({str(e).splitlines()[0]}); the file is damaged") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ExperimentError(f"{path} lacks column(s) {', '.join(missing)}; it was not written by this fersearch version")
    return df


def read_trials(exp: str | os.PathLike) -> pd.DataFrame:
    """trials.csv as a DataFrame (empty with the contract's columns if no trial reported yet)."""
    return _read_csv(Path(exp) / TRIALS_FILE, TRIAL_COLUMNS)


def read_history(exp: str | os.PathLike) -> pd.DataFrame:
    """history.csv as a DataFrame (one row per trial per epoch)."""
    return _read_csv(Path(exp) / HISTORY_FILE, HISTORY_COLUMNS)


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The `config/<param>` columns: the search-space parameters."""
    return [c for c in trials.columns if str(c).startswith(PARAM_PREFIX)]


def trial_config(row: Mapping[str, Any] | pd.Series) -> TrainConfig:
    """The full resolved TrainConfig a trial trained with (from its config_json)."""
    raw = row["config_json"]
    try:
        d = json.loads(raw)
    except (TypeError, ValueError):
        raise ExperimentError(f"trial {row.get('trial_id', '?')}: config_json is not valid JSON; trials.csv is damaged") from None
    return TrainConfig.from_dict(d)


# ---------------------------------------------------------------- writing
def write_meta(exp: str | os.PathLike, meta: Mapping[str, Any]) -> None:
    write_json(Path(exp) / META_FILE, dict(meta))


def trials_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (dicts with TRIAL_COLUMNS and optional `config/<param>` keys) in contract column order."""
    df = pd.DataFrame(list(rows))
    params = sorted({c for c in df.columns if str(c).startswith(PARAM_PREFIX)})
    df = df.reindex(columns=[*TRIAL_COLUMNS, *params])
    # nullable ints: a trial without a best epoch yet must not turn "4" into "4.0"
    return df.astype({"epochs": "Int64", "best_epoch": "Int64"})


def write_trials(exp: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    atomic_write_text(Path(exp) / TRIALS_FILE, trials_frame(rows).to_csv(index=False))


def write_history(exp: str | os.PathLike, rows: Iterable[Mapping[str, Any]]) -> None:
    df = pd.DataFrame(list(rows)).reindex(columns=list(HISTORY_COLUMNS))
    atomic_write_text(Path(exp) / HISTORY_FILE, df.to_csv(index=False))


def rows_from_frame(df: pd.DataFrame) -> list[dict[str, Any]]:
    """DataFrame back to plain row dicts (NaN -> None), e.g. to extend a resumed experiment's files."""
    return [{k: (None if _is_nan(v) else v) for k, v in rec.items()} for rec in df.to_dict("records")]


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


def best_trial(trials: pd.DataFrame) -> dict[str, Any] | None:
    """The trial with the highest best_val_acc (the playbook judges a trial by its best value), or None."""
    scored = trials[pd.to_numeric(trials["best_val_acc"], errors="coerce").notna()] if len(trials) else trials
    if not len(scored):
        return None
    return rows_from_frame(scored.loc[[scored["best_val_acc"].astype(float).idxmax()]])[0]


def end_status(stop_decided: bool, epochs: int, max_epochs: int | None) -> str:
    """How a trial that ended without error is recorded: 'stopped' when the scheduler (ASHA)
    stopped it before max_epochs (its last result came with done=True), else 'completed'
    (ran out, or the trainer's own early stopping). ASHA also says stop at max_t: completed.
    The live view (monitor.LiveView) uses the same rule."""
    if not stop_decided:
        return "completed"
    return "stopped" if max_epochs is None or epochs < max_epochs else "completed"


class TrialTable:
    """The in-memory trials.csv + history.csv of a running search (the recorder's state).

    Keyed by trial id (and epoch for history), so a retried or resumed trial that
    reports an epoch again replaces that row instead of adding a duplicate.
    """

    def __init__(self, exp_dir: str | os.PathLike, max_epochs: int):
        self.exp_dir = Path(exp_dir)
        self.max_epochs = max_epochs
        self.rows: dict[str, dict[str, Any]] = {}
        self.history: dict[tuple[str, int], dict[str, Any]] = {}
        self._stop_decided: dict[str, bool] = {}

    def load(self) -> None:
        """Pick up what an earlier (interrupted) run of this search wrote."""
        self.rows = {r["trial_id"]: r for r in rows_from_frame(read_trials(self.exp_dir))}
        for r in self.rows.values():  # CSV turns int columns with gaps into floats
            for k in ("epochs", "best_epoch"):
                r[k] = None if r[k] is None else int(r[k])
        for r in rows_from_frame(read_history(self.exp_dir)):
            self.history[(r["trial_id"], int(r["epoch"]))] = r

    def reconcile(self, known: Iterable[str]) -> None:
        """After a crash, keep only trials Ray's saved state knows: a trial recorded after Ray's
        last snapshot is gone from the search (Ray samples a new one in its place)."""
        known = set(known)
        for trial_id, row in list(self.rows.items()):
            if trial_id in known or row["status"] in ("completed", "stopped", "failed"):
                continue
            if not row["epochs"]:
                del self.rows[trial_id]  # never trained: nothing lost
            else:
                row.update(status="failed", error="lost in a crash before Ray saved it; not resumed")

    def add(self, trial_id: str, config_json: str, params: Mapping[str, Any]) -> None:
        self.rows[trial_id] = {
            "trial_id": trial_id, "status": "pending", "epochs": 0, "best_val_acc": None, "best_epoch": None,
            "last_val_acc": None, "node": "", "gpu_ids": "", "error": "", "config_json": config_json,
            **{PARAM_PREFIX + k: v for k, v in params.items()},
        }

    def start(self, trial_id: str) -> None:
        self.rows[trial_id]["status"] = "running"

    def result(self, trial_id: str, metrics: Mapping[str, Any], stop_decided: bool = False) -> None:
        """One epoch's metrics; `stop_decided`: the scheduler ends the trial after this result."""
        epoch = int(metrics.get("epoch", metrics.get("training_iteration", 0)))
        self.history[(trial_id, epoch)] = {"trial_id": trial_id, **{c: metrics.get(c) for c in HISTORY_COLUMNS[2:]},
                                           "epoch": epoch}
        mine = sorted((e, h["val_acc"]) for (t, e), h in self.history.items() if t == trial_id and h["val_acc"] is not None)
        row = self.rows[trial_id]
        row.update(status="running", epochs=epoch, last_val_acc=metrics.get("val_acc"),
                   node=metrics.get("node", row["node"]), gpu_ids=metrics.get("gpu_ids", row["gpu_ids"]))
        if mine:
            best_epoch, best = max(mine, key=lambda ev: (ev[1], -ev[0]))
            row.update(best_val_acc=best, best_epoch=best_epoch)
        self._stop_decided[trial_id] = stop_decided

    def end(self, trial_id: str) -> None:
        """Finished without error: ASHA stopped it before --max-epochs, or it ran out (or early-stopped)."""
        row = self.rows[trial_id]
        row["status"] = end_status(self._stop_decided.get(trial_id, False), int(row["epochs"] or 0), self.max_epochs)

    def retry(self, trial_id: str, error: str) -> None:
        self.rows[trial_id].update(status="running", error=f"retried after: {error}")

    def fail(self, trial_id: str, error: str) -> None:
        self.rows[trial_id].update(status="failed", error=error)

    def save(self) -> None:
        write_trials(self.exp_dir, self.rows.values())
        write_history(self.exp_dir, (self.history[k] for k in sorted(self.history)))


def mark_unfinished(exp: str | os.PathLike) -> None:
    """After a search stops (finished or interrupted), no trial is running: those that were are pending."""
    table = TrialTable(exp, max_epochs=0)
    table.load()
    running = [r for r in table.rows.values() if r["status"] == "running"]
    for row in running:
        row["status"] = "pending"
    if running:
        table.save()
