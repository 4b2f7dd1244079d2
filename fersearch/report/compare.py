"""`fersearch compare A B [C ...]`: searches side by side (this week's against last week's, TPE against random).

One row per search from its own files (fersearch.json, trials.csv, history.csv, best/metrics.json),
so a search still running compares too. The plot's x axis is epochs trained, not trials or
seconds: an ASHA search and a FIFO search spend their budget differently, and epochs are what
both pay for (wall time depends on the machine and on what else ran).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import ExperimentError
from ..io import parse_timestamp
from ..results import experiment as ex
from ..results.metrics_file import read_metrics
from ..results.record import ExperimentRecord, load_record


@dataclass
class SearchRow:
    name: str
    path: str
    data_sha256: str | None
    val_images: int | None  # the validation split's labelled images (a different split: a different yardstick)
    space: str | None
    sampler: str | None
    scheduler: str | None
    trials: int  # trials started so far
    planned: int | None
    epochs_trained: int
    wall_s: float | None
    best_val_acc: float | None
    best_trial: str | None
    test_acc: float | None  # the winner's test accuracy, once `best --evaluate` ran
    running: bool
    curve: list[tuple[int, float]] = field(default_factory=list)  # (epochs trained, best val_acc so far)


def _wall_s(record: ExperimentRecord, running: bool) -> float | None:
    parts = record.search_seconds
    done = sum(parts)
    if running:  # the part in progress: since the last start
        started = parse_timestamp(record.last_start)
        return done + (time.time() - started if started else 0.0)
    return done if parts else None


def best_so_far(history: pd.DataFrame, trials: pd.DataFrame) -> list[tuple[int, float]]:
    """history.csv in arrival order as (epochs trained, best val_acc so far); diverged trials never count."""
    if history.empty:
        return []
    diverged = set(trials.loc[trials["status"] == ex.TrialStatus.DIVERGED, "trial_id"])
    acc = pd.to_numeric(history["val_acc"], errors="coerce").where(~history["trial_id"].isin(diverged))
    best = acc.cummax()
    return [(i + 1, float(b)) for i, b in enumerate(best) if pd.notna(b)]


def search_row(exp: Path) -> SearchRow:
    record = load_record(exp)
    trials, history = ex.read_trials(exp), ex.read_history(exp)
    statuses = set(trials["status"]) if len(trials) else set()
    running = bool(statuses & {ex.TrialStatus.PENDING, ex.TrialStatus.RUNNING}) or record.running
    best = ex.best_trial(trials)
    metrics = read_metrics(exp) or {}
    test_acc = metrics.get("accuracy")
    val = record.data.labelled("val") or record.data.labelled("PublicTest")
    settings = record.settings
    return SearchRow(
        name=exp.name, path=str(exp), data_sha256=record.data.sha256,
        val_images=sum(val.values()) if val else record.noise.n_val or None,
        space=record.space.label, sampler=settings.sampler if settings else None,
        scheduler=settings.scheduler if settings else None,
        trials=len(trials), planned=record.planned_trials, epochs_trained=len(history),
        wall_s=_wall_s(record, running),
        best_val_acc=float(best["best_val_acc"]) if best else None, best_trial=best["trial_id"] if best else None,
        test_acc=float(test_acc) if isinstance(test_acc, (int, float)) else None, running=running,
        curve=best_so_far(history, trials))


def compare(names: list[str], results: str | Path | None = None) -> tuple[list[SearchRow], list[str]]:
    """The rows of the searches named (names or paths) and the warnings about comparing them."""
    if len(names) < 2:
        raise ExperimentError("compare needs at least two searches: fersearch compare A B [C ...]")
    rows = [search_row(ex.resolve_experiment(n, results)) for n in names]
    warnings = []
    if len({r.data_sha256 for r in rows}) > 1:
        warnings.append("warning: the searches ran on different data (sha256 "
                        + ", ".join(f"{r.name} {str(r.data_sha256)[:12]}" for r in rows)
                        + "): their val_acc are not comparable")
    elif len({r.val_images for r in rows}) > 1:
        warnings.append("warning: the searches used different validation splits ("
                        + ", ".join(f"{r.name} {r.val_images} images" for r in rows) + ")")
    for r in rows:
        if r.running:
            warnings.append(f"note: {r.name} is still running ({r.trials} of {r.planned} trials so far)")
    return rows, warnings


def to_dict(rows: list[SearchRow], warnings: list[str]) -> dict[str, Any]:
    return {"searches": [asdict(r) for r in rows], "warnings": warnings}


def format_table(rows: list[SearchRow]) -> str:
    def f(v: Any, spec: str = "") -> str:
        return "-" if v is None else format(v, spec)

    header = ("search", "data", "space", "sampler", "scheduler", "trials", "epochs", "wall", "best val_acc",
              "test acc")
    body = [(r.name + (" (running)" if r.running else ""), str(r.data_sha256 or "-")[:12], f(r.space),
             f(r.sampler), f(r.scheduler), f"{r.trials}/{f(r.planned)}", str(r.epochs_trained),
             f(None if r.wall_s is None else round(r.wall_s), "d") + (" s" if r.wall_s is not None else ""),
             f(r.best_val_acc, ".4f"), f(r.test_acc, ".4f")) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(header)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *body])


def plot(rows: list[SearchRow], out: str | Path) -> Path:
    """Best val_acc so far against epochs trained, one line per search."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for r in rows:
        if r.curve:
            x, y = zip(*r.curve)
            ax.step(x, y, where="post", label=f"{r.name} ({r.sampler}, {r.scheduler})")
    ax.set(xlabel="epochs trained (all trials)", ylabel="best val_acc so far", title="Searches compared")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out
