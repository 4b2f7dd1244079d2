"""Experiment directories: where they are and how their files are read and written.

`fersearch tune` writes `results/<name>/`; `best`, `status` and `report` read it.
This module and record.py know the file contract (pure pandas, no Ray):

    fersearch.json  what made the experiment (record.py: one typed ExperimentRecord)
    trials.csv      one row per trial: TRIAL_COLUMNS, then `config/<param>` per space parameter
    history.csv     one row per trial per epoch: HISTORY_COLUMNS
    per_image.jsonl one line per trial per epoch: its validation images' correctness and loss
                    (fersearch.paired), for paired comparisons (ties); searches before it lack it

While a search runs, trials.csv is rewritten atomically (a reader always sees a
complete file) and history.csv grows a row per epoch (state.py writes both);
read_history leaves out a torn last line and keeps the last row of an epoch reported twice.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import TrainConfig
from ..errors import ExperimentError, ModelFileError
from ..fmt import json_value
from ..io import parse_timestamp
from ..paired import CORRECT_KEY, LOSSES_KEY
from .lines import damaged, json_objects
from .record import META_FILE, NotAnExperiment, load_record
from .values import as_count, kind

TRIALS_FILE = "trials.csv"
HISTORY_FILE = "history.csv"
PER_IMAGE_FILE = "per_image.jsonl"
DEFAULT_RESULTS = "results"



class TrialStatus(StrEnum):
    """A trial's status in trials.csv: the one vocabulary every reader (state, live, status, report) uses.
    A StrEnum, so a member equals its text as read from the CSV."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"  # ASHA stopped it before max_epochs
    FAILED = "failed"
    DIVERGED = "diverged"  # the trainer ended it at a non-finite training loss (the reason in `error`); never the best

    @property
    def ended(self) -> bool:
        return self not in (TrialStatus.PENDING, TrialStatus.RUNNING)

    @property
    def label(self) -> str:
        """How counts name it for people ("3 stopped by ASHA")."""
        return {TrialStatus.STOPPED: "stopped by ASHA", TrialStatus.FAILED: "FAILED"}.get(self, self.value)


TRIAL_COLUMNS = (
    "trial_id", "status", "epochs", "best_val_acc", "best_epoch", "last_val_acc",
    "node", "gpu_ids", "error", "config_json",
)
HISTORY_COLUMNS = (
    "trial_id", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
    "lr", "images_per_s", "epoch_time_s",
    # Where a trial's time went (search/trainable.py): training and validation seconds of the epoch, the
    # trial's setup (first report only), the previous epoch's report, and the report's unix time.
    # Optional on reading: searches made before they existed lack them.
    "train_s", "eval_s", "setup_s", "report_s", "time",
)
HISTORY_TIMING_COLUMNS = HISTORY_COLUMNS[-5:]
# Each trial's deployment figures (fersearch.deploy.measure) and the device it trained on (cpu
# or cuda: a trial holding a GPU that torch could not see says cpu), after TRIAL_COLUMNS;
# optional on reading: searches made before they existed lack them.
DEPLOY_COLUMNS = ("latency_ms", "params", "onnx_bytes", "device")
# Where each trial's configuration came from (search/sampler.py: recipe, prior, incumbent, tpe, random), after
# DEPLOY_COLUMNS; only in searches whose sampler says (--sampler mix), so optional on reading.
SOURCE_COLUMN = "source"
PARAM_PREFIX = "config/"
# Read as text so ids like "0e1" or gpu lists like "0,1" are never turned into numbers.
_COUNT_COLUMNS = {"epochs", "best_epoch", "epoch", "params", "onnx_bytes"}
_NUMBER_COLUMNS = {*_COUNT_COLUMNS, "best_val_acc", "last_val_acc", "train_loss", "train_acc", "val_loss", "val_acc",
                   "lr", "images_per_s", "epoch_time_s", "train_s", "eval_s", "setup_s", "report_s", "time",
                   "latency_ms"}
_TEXT_COLUMNS = {"trial_id": str, "status": str, "node": str, "gpu_ids": str, "error": str, "config_json": str}


# ---------------------------------------------------------------- locating
def results_root(results: str | os.PathLike | None = None) -> Path:
    """The directory experiments live in (default ./results, relative to the cwd)."""
    return Path(results if results is not None else DEFAULT_RESULTS).expanduser()


def is_experiment(path: str | os.PathLike) -> bool:
    return (Path(path) / META_FILE).is_file()


def list_experiments(results: str | os.PathLike | None = None) -> list[Path]:
    """Experiment dirs under the results root, oldest first (by fersearch.json `created`). One whose
    fersearch.json is damaged is left out with a one-line note on stderr (the others still list);
    a `fersearch train` run is no experiment and is left out without one."""
    root = results_root(results)
    if not root.is_dir():
        return []
    found = []
    for p in sorted(root.iterdir()):
        if not (p.is_dir() and is_experiment(p)):
            continue
        try:
            created = parse_timestamp(load_record(p).created)
        except NotAnExperiment:
            continue
        except ExperimentError as e:
            print(f"note: skipped {p}: {e}", file=sys.stderr)
            continue
        found.append((created if created is not None else float("-inf"), p.name, p))
    return [p for *_, p in sorted(found)]


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
    if given.is_file() or (root / given).is_file():
        where = given if given.is_file() else root / given
        raise ExperimentError(f"{where} is a file, not an experiment folder; pass a folder made by `fersearch tune`")
    if given.is_dir() or (root / given).is_dir():
        where = given if given.is_dir() else root / given
        raise ExperimentError(f"{where} has no {META_FILE}; it is not a fersearch experiment (was the search started?)")
    names = ", ".join(p.name for p in list_experiments(root)[-5:]) or "none"
    raise ExperimentError(f"experiment {str(name_or_path)!r} not found as a path or under {root}/ (recent: {names})")


# ---------------------------------------------------------------- reading
def _read_csv(path: Path, columns: Iterable[str], whole_lines: bool = False) -> pd.DataFrame:
    """whole_lines: leave out a last line without its newline (a file being appended to). A file that is
    not CSV, lacks a column, or holds text where a number belongs is one ExperimentError naming it."""
    columns = list(columns)
    source: Any = path
    try:
        if whole_lines and path.is_file():
            text = path.read_text()
            source = io.StringIO(text if text.endswith("\n") else text[: text.rfind("\n") + 1])
        if not path.is_file() or (whole_lines and not source.getvalue()):
            return pd.DataFrame({c: pd.Series(dtype=_TEXT_COLUMNS.get(c, "float64")) for c in columns})
        dtype = {c: t for c, t in _TEXT_COLUMNS.items() if c in columns}
        # Only empty cells are missing (a node or error text "NA" stays text); text columns keep "".
        df = pd.read_csv(source, dtype=dtype, keep_default_na=False, na_values=[""])
        df[list(dtype)] = df[list(dtype)].fillna("")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ExperimentError(f"{path} cannot be read as CSV ({str(e).splitlines()[0]}); the file is damaged") from None
    except OSError as e:
        raise ExperimentError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ExperimentError(f"{path} lacks column(s) {', '.join(missing)}; "
                              "it was not written by this fersearch version")
    return _checked(df, path)


def _checked(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """The frame with its number columns as numbers: text in one, or a count that is not a whole number
    >= 0, is one ExperimentError naming the file, the row and the column; a status outside TrialStatus too."""
    for column in [c for c in df.columns if c in _NUMBER_COLUMNS]:
        numbers = pd.to_numeric(df[column], errors="coerce")
        for i in numbers.index[numbers.isna() & df[column].notna()]:
            try:
                float(df.at[i, column])
            except (TypeError, ValueError):
                raise _bad_cell(path, i, column, df.at[i, column], "a number") from None
        if column in _COUNT_COLUMNS:
            bad = numbers.notna() & ~((numbers >= 0) & (numbers < 2**53) & (numbers % 1 == 0))
            if bad.any():
                i = numbers.index[bad][0]
                raise _bad_cell(path, i, column, df.at[i, column], "a whole number >= 0")
        df[column] = numbers
    if "status" in df.columns:
        unknown = ~df["status"].isin([*TrialStatus, ""])
        if unknown.any():
            i = df.index[unknown][0]
            raise _bad_cell(path, i, "status", df.at[i, "status"], "one of " + ", ".join(TrialStatus))
    return df


def _bad_cell(path: Path, i: object, column: str, value: object, want: str) -> ExperimentError:
    row = int(str(i)) + 2  # the file's line: the header is line 1 (the index is the row number)
    return ExperimentError(f"{path}: line {row}, column {column} must be {want}, not {str(value)[:40]!r}; "
                           "the file is damaged")


def read_trials(exp: str | os.PathLike) -> pd.DataFrame:
    """trials.csv as a DataFrame (empty with the contract's columns if no trial reported yet)."""
    return _read_csv(Path(exp) / TRIALS_FILE, TRIAL_COLUMNS)


def read_history(exp: str | os.PathLike) -> pd.DataFrame:
    """history.csv as a DataFrame, one row per trial per epoch, by trial and epoch. The search
    appends to it: an epoch a retried trial reported again keeps its last row, and a torn
    last line (a crash in the middle of an append) is left out."""
    df = _read_csv(Path(exp) / HISTORY_FILE, [c for c in HISTORY_COLUMNS if c not in HISTORY_TIMING_COLUMNS],
                   whole_lines=True)
    for column in HISTORY_TIMING_COLUMNS:
        if column not in df:
            df[column] = float("nan")
    df = df.drop_duplicates(["trial_id", "epoch"], keep="last")
    return df.sort_values(["trial_id", "epoch"], kind="stable").reset_index(drop=True)


def read_per_image(exp: str | os.PathLike) -> dict[str, dict[int, dict[str, Any]]]:
    """per_image.jsonl: trial id -> epoch -> its record (the last one of an epoch reported twice);
    {} without the file. A torn last line is left out; any other line that is not a record (its
    trial_id, a whole epoch, its per-image strings) is one ExperimentError naming the file and line."""
    path = Path(exp) / PER_IMAGE_FILE
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for n, rec in json_objects(path):
        trial, epoch = rec.get("trial_id"), as_count(rec.get("epoch"))
        if not isinstance(trial, (str, int)) or isinstance(trial, bool):
            raise damaged(path, n, f"trial_id must be text, not {kind(trial)}")
        if epoch is None:
            raise damaged(path, n, f"epoch must be a whole number >= 0, not {kind(rec.get('epoch'))}")
        for key in (CORRECT_KEY, LOSSES_KEY):
            if rec.get(key) is not None and not isinstance(rec[key], str):
                raise damaged(path, n, f"{key} must be text, not {kind(rec[key])}")
        out.setdefault(str(trial), {})[epoch] = rec
    return out


def param_columns(trials: pd.DataFrame) -> list[str]:
    """The `config/<param>` columns: the search-space parameters."""
    return [c for c in trials.columns if str(c).startswith(PARAM_PREFIX)]


def trial_config(row: Mapping[str, Any] | pd.Series) -> TrainConfig:
    """The full resolved TrainConfig a trial trained with (from its config_json)."""
    raw = row["config_json"]
    try:
        d = json.loads(raw)
    except (TypeError, ValueError):
        raise ExperimentError(f"trial {row.get('trial_id', '?')}: config_json is not valid JSON; "
                              "trials.csv is damaged") from None
    return TrainConfig.from_dict(d)


# ---------------------------------------------------------------- the best trial
def best_score(status: Any, best_val_acc: Any) -> float | None:
    """What a trial is ranked by: its best val_acc over its epochs (the playbook judges a trial by its
    best value); None when it cannot be the best (no finite value yet, or it diverged: whatever its
    epochs before the loss went non-finite). Ties go to the earlier trial. TrialState (incremental)
    and best_trial (a frame) both rank with this."""
    try:
        v = float(best_val_acc)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and status != TrialStatus.DIVERGED else None


def best_trial(trials: pd.DataFrame) -> dict[str, Any] | None:
    """A frame of trials in (trials.csv's columns), the best row out (plain JSON values), or None."""
    if not len(trials):
        return None
    scores = pd.Series([best_score(s, v) for s, v in zip(trials["status"], trials["best_val_acc"])],
                       index=trials.index, dtype="float64")
    if scores.isna().all():
        return None
    return {k: json_value(v) for k, v in trials.loc[scores.idxmax()].items()}  # idxmax: the first of a tie


def pareto_front(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials no other trial beats on both best_val_acc (higher) and latency_ms (lower), fastest
    first; diverged trials and trials without both figures never count."""
    if "latency_ms" not in trials.columns or not len(trials):
        return trials.iloc[0:0]
    # A trial counts as it does for best_trial (best_score: a finite best val_acc, not diverged).
    acc = pd.Series([best_score(s, v) for s, v in zip(trials["status"], trials["best_val_acc"])],
                    index=trials.index, dtype="float64")
    lat = pd.to_numeric(trials["latency_ms"], errors="coerce")
    ok = acc.notna() & lat.notna()
    scored = trials[ok].assign(_acc=acc[ok], _lat=lat[ok]).sort_values(["_lat", "_acc"], ascending=[True, False])
    keep, best_acc = [], -1.0
    for i, row in scored.iterrows():  # fastest first: a point is on the front if it beats every faster one
        if row["_acc"] > best_acc:
            keep.append(i)
            best_acc = row["_acc"]
    return scored.loc[keep].drop(columns=["_acc", "_lat"])


def best_under_latency(trials: pd.DataFrame, max_latency_ms: float) -> dict[str, Any] | None:
    """The best_trial rule among the trials whose latency_ms is at most the budget (None: none is)."""
    lat = pd.to_numeric(trials["latency_ms"], errors="coerce") if "latency_ms" in trials.columns else None
    if lat is None:
        return None
    return best_trial(trials[lat <= max_latency_ms])


def newest_best_model(results: str | os.PathLike | None = None) -> Path:
    """best/model.pt of the newest experiment that has one (what `fersearch predict` uses by default)."""
    root = results_root(results)
    for exp in reversed(list_experiments(root)):
        if (exp / "best" / "model.pt").is_file():
            return exp / "best" / "model.pt"
    raise ModelFileError(f"no evaluated experiment under {root}/ (no */best/model.pt); "
                         "run `fersearch best --evaluate` first or pass --model PATH")
