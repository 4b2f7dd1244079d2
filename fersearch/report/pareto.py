"""Accuracy against latency: the Pareto front of a search, as a table and a plot, and the pick rule.

Every trial records its model's latency (batch 1, one CPU thread, ONNX Runtime, median; see
fersearch.deploy), parameter count and ONNX file size. The front is the set of trials that no
other trial beats on both best val_acc and latency (search/experiment.py: pareto_front, beside
the best-of rule). The winner is picked by one of two rules, said wherever it is shown:

- default: the most accurate trial (highest best val_acc), wherever it sits on the front;
- `--max-latency-ms X`: the most accurate trial whose latency is at most X ms.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..results.experiment import pareto_front
from .plots import _figure, _save, _styled

if TYPE_CHECKING:
    from .best import BestTrial

FRONT_COLUMNS = ("trial_id", "best_val_acc", "latency_ms", "params", "onnx_bytes", "status")


def rule_text(max_latency_ms: float | None) -> str:
    if max_latency_ms is None:
        return "the most accurate trial (highest best val_acc); --max-latency-ms X picks under a latency budget"
    return f"the most accurate trial with latency <= {max_latency_ms:g} ms (--max-latency-ms)"


def has_latency(trials: pd.DataFrame) -> bool:
    return "latency_ms" in trials.columns and bool(pd.to_numeric(trials["latency_ms"], errors="coerce").notna().any())


def front_table(trials: pd.DataFrame, picked: str | None = None) -> pd.DataFrame:
    """The front, fastest first, in plain units, with the picked trial marked."""
    front = pareto_front(trials)
    out = pd.DataFrame({
        "trial": front["trial_id"].astype(str),
        "best val_acc": pd.to_numeric(front["best_val_acc"]).round(4),
        "latency ms": pd.to_numeric(front["latency_ms"]).round(3),
        "params": pd.to_numeric(front["params"], errors="coerce").astype("Int64"),
        "ONNX KiB": (pd.to_numeric(front["onnx_bytes"], errors="coerce") / 1024).round(0).astype("Int64"),
        "status": front["status"].astype(str),
    })
    out["picked"] = ["<- picked" if t == picked else "" for t in out["trial"]]
    return out.reset_index(drop=True)


def format_front(trials: pd.DataFrame, picked: str, max_latency_ms: float | None) -> str:
    """What `fersearch best` prints below the winner: the front and the rule that picked it."""
    if not has_latency(trials):
        return ""
    table = front_table(trials, picked)
    on_front = picked in set(table["trial"])
    title = (f"Pareto front, accuracy vs latency (batch 1, 1 CPU thread, ONNX Runtime): {len(table)} of "
             f"{len(trials)} trials")
    lines = [title, table.to_string(index=False),
             f"picked trial {picked} by the rule: {rule_text(max_latency_ms)}"
             + ("" if on_front else " (not on the front: a trial as fast is as accurate)")]
    return "\n".join(lines)


def format_best_and_front(bt: BestTrial, max_latency_ms: float | None) -> str:
    """What `fersearch best` prints: the winner (report.console.format_best), then the front if there is one."""
    from .console import format_best

    front = format_front(bt.analysis.trials, bt.trial_id, max_latency_ms)
    return format_best(bt) + ("\n\n" + front if front else "")


def best_dict(bt: Any, max_latency_ms: float | None) -> dict[str, Any]:
    """`fersearch best --json`: the winner, the trials tied with it (report/ties.py) and the front."""
    ties = bt.analysis.ties
    return {**bt.to_dict(), "ties": ties.to_dict() if ties is not None else None,
            "pareto": front_dict(bt.analysis.trials, bt.trial_id, max_latency_ms)}


def front_dict(trials: pd.DataFrame, picked: str, max_latency_ms: float | None) -> dict[str, Any]:
    """The same for --json and the report."""
    rows = [{k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            for r in front_table(trials, picked).to_dict("records")] if has_latency(trials) else []
    return {"front": rows, "picked": picked, "rule": rule_text(max_latency_ms), "max_latency_ms": max_latency_ms}


@_styled("whitegrid")
def plot_front(trials: pd.DataFrame, path: Path, picked: str | None = None,
               max_latency_ms: float | None = None) -> Path:
    """Every trial as a point (latency ms, best val_acc), the front as a step line, the pick ringed."""
    lat = pd.to_numeric(trials["latency_ms"], errors="coerce")
    acc = pd.to_numeric(trials["best_val_acc"], errors="coerce")
    ok = lat.notna() & acc.notna()
    front = pareto_front(trials)
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.scatter(lat[ok], acc[ok], s=28, color="#9ecae1", edgecolor="#3182bd", label="trial", zorder=2)
    if len(front):
        ax.step(pd.to_numeric(front["latency_ms"]), pd.to_numeric(front["best_val_acc"]), where="post",
                color="#08519c", lw=1.5, label="Pareto front", zorder=3)
    if picked is not None and (trials["trial_id"].astype(str) == picked).any():
        row = trials[trials["trial_id"].astype(str) == picked].iloc[0]
        ax.scatter([float(row["latency_ms"])], [float(row["best_val_acc"])], s=160, facecolor="none",
                   edgecolor="#d62728", lw=2, label=f"picked ({picked})", zorder=4)
    if max_latency_ms is not None:
        ax.axvline(max_latency_ms, color="#d62728", ls="--", lw=1, label=f"budget {max_latency_ms:g} ms")
    ax.set_xlabel("latency, ms (batch 1, 1 CPU thread, ONNX Runtime)")
    ax.set_ylabel("best val_acc")
    ax.set_title("Accuracy against latency")
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)
