"""Writing trials.csv and history.csv (their columns and reading live in experiment.py).

trials.csv is rewritten whole, atomically (fersearch.io), so a reader always sees a
complete file; its lines are cached, so a save costs about the same at any size.
history.csv only grows: one row per epoch, appended with one write.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..fmt import int_or_none, json_value, missing
from ..io import atomic_write, cut_torn_tail
from .experiment import (
    DEPLOY_COLUMNS,
    HISTORY_COLUMNS,
    HISTORY_FILE,
    PARAM_PREFIX,
    SOURCE_COLUMN,
    TRIAL_COLUMNS,
    TRIALS_FILE,
)

if TYPE_CHECKING:
    import pandas as pd

_INT_COLUMNS = ("epochs", "best_epoch", "epoch")  # never "4.0" for 4


def _cell(column: str, v: Any) -> object:
    """A value as pandas would write it: missing -> empty; whole-number columns as ints."""
    if missing(v):
        return ""
    return int_or_none(v) if column in _INT_COLUMNS else json_value(v)


def csv_text(columns: list[str], rows: Iterable[Mapping[str, object]], header: bool = True) -> str:
    """CSV text of row dicts in `columns` (missing keys empty): the one writer of fersearch's CSV files
    (trials.csv, a search's history.csv, and a run's history.csv of `train` and `best --evaluate`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow(columns)
    writer.writerows([_cell(c, row.get(c)) for c in columns] for row in rows)
    return out.getvalue()


def write_trials(exp: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> None:
    """trials.csv from row dicts (TRIAL_COLUMNS, then `config/<param>` keys, A-Z), atomically."""
    TrialsFile(Path(exp) / TRIALS_FILE).write(rows)


class TrialsFile:
    """trials.csv of a running search. Rewritten whole each time, but a row is turned into text
    again only when it changed: a save at 1,000 trials costs little more than at 10."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._columns: list[str] = []
        self._lines: dict[str, str] = {}  # trial id -> its CSV line

    def __getstate__(self) -> dict[str, object]:
        return {"path": self.path, "_columns": [], "_lines": {}}  # a cache: not worth pickling

    def write(self, rows: Iterable[Mapping[str, Any]], changed: Iterable[str] | None = None,
              params: Iterable[str] | None = None) -> None:
        """`changed`: ids of the rows that changed since the last write (None: all);
        `params`: every `config/<param>` key of the rows (None: found from the rows)."""
        rows = list(rows)
        if params is None:
            params = {k for row in rows for k in row if str(k).startswith(PARAM_PREFIX)}
        sources = [SOURCE_COLUMN] if any(row.get(SOURCE_COLUMN) for row in rows) else []
        columns = [*TRIAL_COLUMNS, *DEPLOY_COLUMNS, *sources, *sorted(params)]
        if columns != self._columns or changed is None:  # a new parameter column: every line changes
            self._columns, self._lines = columns, {}
        for trial_id in changed or ():
            self._lines.pop(trial_id, None)
        text = [csv_text(columns, [])]
        for row in rows:
            line = self._lines.get(row["trial_id"])
            if line is None:
                line = self._lines[row["trial_id"]] = csv_text(columns, [row], header=False)
            text.append(line)
        atomic_write(self.path, "".join(text))


def write_history(exp: str | os.PathLike, rows: Iterable[Mapping[str, object]]) -> None:
    """history.csv whole from row dicts (HISTORY_COLUMNS; missing keys stay empty), atomically."""
    atomic_write(Path(exp) / HISTORY_FILE, csv_text(list(HISTORY_COLUMNS), rows))


def frame_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame (read_trials, read_history) as plain row dicts: NaN -> None, numpy -> Python,
    epochs as ints."""
    return [{k: (int_or_none(v) if k in _INT_COLUMNS else json_value(v)) for k, v in rec.items()}
            for rec in df.to_dict("records")]


class HistoryFile:
    """history.csv of a running search, appended one row (one write) at a time."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def repair(self) -> None:
        """Cut a torn last line (a crash in the middle of an append) before appending after it."""
        cut_torn_tail(self.path)

    def append(self, row: Mapping[str, object]) -> None:
        columns = self._columns()
        with open(self.path, "a", newline="") as f:  # opened at its end: tell() is its size
            f.write(csv_text(columns, [row], header=f.tell() == 0))

    def _columns(self) -> list[str]:
        """The file's own header where it has one: a search resumed from an older fersearch keeps its
        columns (the newer ones are left out) instead of appending rows longer than the header."""
        try:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), None)
        except FileNotFoundError:
            header = None
        return header if header and set(header) <= set(HISTORY_COLUMNS) else list(HISTORY_COLUMNS)
