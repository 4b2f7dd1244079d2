"""`fersearch status`: a running or finished search, from its directory alone.

    st = experiment_status(exp_dir)      # plain JSON types (the --json output)
    print(format_status(st))             # header, counts, the best trial, a per-trial table

It rebuilds the search's TrialState (state.py) from trials.csv and history.csv, the
same state the live view draws while the search runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..fmt import acc, clock, render, short_params, short_value, text_table
from ..io import parse_timestamp
from . import experiment as ex
from .experiment import TrialStatus
from .record import EXPERIMENT_STATE_GLOB, META_FILE, load_record
from .rungs import search_rungs
from .state import TrialState, config_order

_QUIET_WHEN_NONE = (TrialStatus.FAILED, TrialStatus.DIVERGED)  # the counts line names these only when some are

# While a search runs, Tune rewrites its experiment_state-<time>.json every few seconds
# (the driver sets TUNE_GLOBAL_CHECKPOINT_S=2), epochs or not: a heartbeat of the driver.
HEARTBEAT_GLOB = EXPERIMENT_STATE_GLOB
HEARTBEAT_STALE_S = 60.0
STALE_AFTER_S = 300.0  # without a heartbeat file (remote storage): no file update for this long, or 5 epochs


def experiment_status(exp_dir: str | os.PathLike, now: float | None = None) -> dict[str, Any]:
    """A running or finished experiment, summarised from its directory alone (plain JSON types).

    The best trial is judged by its best val_acc over its epochs (not its last one).
    `state` is finished (every planned trial ended), running (recent updates) or
    interrupted (unfinished trials, but no file written for a while: resume it).
    """
    exp = Path(exp_dir)
    record = load_record(exp)
    settings = record.settings
    history = ex.read_history(exp)
    trials = TrialState.from_frames(ex.read_trials(exp), history, max_epochs=record.max_epochs)
    trials.total = record.planned_trials or len(trials.rows)
    now = time.time() if now is None else now
    rows = [_trial_summary(trials, tid) for tid in trials.rows]
    counts = trials.counts()
    heartbeat = list(exp.glob(HEARTBEAT_GLOB))
    files = [exp / META_FILE, exp / ex.TRIALS_FILE, exp / ex.HISTORY_FILE, *heartbeat]
    updated = max((p.stat().st_mtime for p in files if p.is_file()), default=now)
    created = parse_timestamp(record.created)
    created = updated if created is None else created
    epoch_times = [t for t in history["epoch_time_s"] if isinstance(t, (int, float)) and t == t]
    stale_after = HEARTBEAT_STALE_S if heartbeat else max(STALE_AFTER_S, 5 * max(epoch_times, default=0.0))
    unfinished = counts["pending"] + counts["running"] + counts["not_started"] > 0
    state = "finished" if not unfinished else "running" if now - updated <= stale_after else "interrupted"
    return {
        "name": record.name,
        "path": str(exp),
        "state": state,
        "created": record.created,
        "updated_s_ago": round(now - updated, 1),
        "elapsed_s": round((now if state == "running" else updated) - created, 1),
        "resumed": len(record.resumes),
        "space": record.space.name,
        "scheduler": settings and settings.scheduler, "sampler": settings and settings.sampler,
        "seed": settings and settings.seed, "max_epochs": record.max_epochs,
        "grace_period": settings and settings.grace_period,
        "reduction_factor": settings and _whole(settings.reduction_factor),
        "rungs": search_rungs(record),
        "metric": settings.metric if settings else "val_acc", "mode": settings.mode if settings else "max",
        "trials_planned": trials.total,
        "counts": counts,
        "epochs_run": int(sum(r["epochs"] or 0 for r in rows)),
        "best": _trial_summary(trials, trials.best_id) if trials.best_id is not None and trials.best() else None,
        "best_by": "best val_acc over the trial's epochs",
        "trials": sorted(rows, key=lambda r: (r["best_val_acc"] is None, -(r["best_val_acc"] or 0.0))),
    }


def _whole(x: float) -> float | int:
    """3.0 as 3 (as the command line was typed), 1.5 as it is."""
    return int(x) if float(x).is_integer() else x


def _trial_summary(trials: TrialState, trial_id: str) -> dict[str, Any]:
    row = trials.rows[trial_id]
    best, last = row["best_val_acc"], row["last_val_acc"]
    return {
        "trial_id": str(trial_id), "status": str(row["status"] or ""),
        "epochs": row["epochs"], "best_val_acc": None if best is None else float(best),
        "best_epoch": row["best_epoch"], "last_val_acc": None if last is None else float(last),
        "node": row["node"] or "", "gpu_ids": row["gpu_ids"] or "", "error": row["error"] or "",
        "params": trials.params(trial_id),
    }


def format_status(st: Mapping[str, Any], width: int | None = None) -> str:
    """`fersearch status` for people: header, counts, the best trial, a per-trial table (best first)."""
    c = st["counts"]
    state = {"finished": f"finished {clock(st['updated_s_ago'])} ago, ran {clock(st['elapsed_s'])}",
             "running": f"RUNNING for {clock(st['elapsed_s'])}, last update {clock(st['updated_s_ago'])} ago",
             "interrupted": f"INTERRUPTED? unfinished trials but no update for {clock(st['updated_s_ago'])}; "
                            f"continue with: fersearch tune --resume --name {st['name']}"}[st["state"]]
    sched = st["scheduler"] or "?"
    if sched == "asha":
        rf = st["reduction_factor"]
        reduction = short_value(float(rf)) if isinstance(rf, (int, float)) else rf
        rungs = f", rungs at epochs {', '.join(map(str, st['rungs']))}" if st.get("rungs") else ""
        sched += f" (grace {st['grace_period']}, reduction {reduction}{rungs})"
    lines = [
        f"experiment  {st['name']}  ({st['path']})",
        f"state       {state}" + (f"; resumed {st['resumed']}x" if st["resumed"] else ""),
        f"search      {st['trials_planned']} trials x <= {st['max_epochs']} epochs, {sched}, {st['sampler']} "
        f"sampler, space {st['space']}, seed {st['seed']}",
        "trials      " + ", ".join(f"{n} {s.label}" for s, n in (
            *((s, c[s]) for s in TrialStatus if s.ended), (TrialStatus.RUNNING, c["running"]),
            (TrialStatus.PENDING, c["pending"] + c["not_started"])) if n or s not in _QUIET_WHEN_NONE)
        + f"; {st['epochs_run']} epochs trained"
        + (f" of {st['trials_planned'] * st['max_epochs']} possible" if st["max_epochs"] else ""),
    ]
    best = st["best"]
    if best:
        lines.append(f"best        val_acc {best['best_val_acc']:.4f} at epoch {best['best_epoch']} of trial "
                     f"{best['trial_id']} ({best['status']}, {best['epochs']} epochs; judged by its best epoch)")
        lines.append(f"            {_params(best['params'])}")
    else:
        lines.append("best        none yet (no trial has reported an epoch)")
    if st["trials"]:
        lines += ["", *_trial_table(st["trials"], width)]
    for t in st["trials"]:
        if t["status"] in _QUIET_WHEN_NONE or (t["error"] and t["status"] == TrialStatus.RUNNING):
            lines.append(f"{t['trial_id']}: {t['error']}")
    return "\n".join(lines)


def _params(params: Mapping[str, Any]) -> str:
    return short_params(params, order=config_order())


def _trial_table(rows: list[Mapping[str, Any]], width: int | None) -> list[str]:
    multi_node = len({r["node"] for r in rows if r["node"]}) > 1
    gpus = any(r["gpu_ids"] for r in rows)
    header = [("trial", "left"), ("status", "left"), ("epochs", "right"), ("best_acc", "right"), ("@epoch", "right"),
              ("last_acc", "right")] + ([("node", "left")] if multi_node else []) \
        + ([("gpu", "left")] if gpus else []) + [("hyperparameters", "left")]
    table = [[r["trial_id"], r["status"], str(r["epochs"] if r["epochs"] is not None else "-"),
              acc(r["best_val_acc"]), str(r["best_epoch"] or "-"), acc(r["last_val_acc"])]
             + ([r["node"][:8]] if multi_node else []) + ([r["gpu_ids"] or "-"] if gpus else [])
             + [_params(r["params"])] for r in rows]
    return render(text_table(header, table), width).splitlines()
