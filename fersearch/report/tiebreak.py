"""Ties with the best, shown and broken: what `best`, the end of `tune` and the report say about
the trials within noise of the winner (report/ties.py finds them), and how `best --evaluate`
breaks such a tie.

The tie-break (`best --evaluate`, `--ties K`, default 3): the tie set (the best, then the trials
tied with it, best first) is cut to K configurations; each is retrained from scratch with
max(--seeds, 2) seeds (one seed per configuration would pick on one run's luck: the very noise that
made the tie) and the one with the highest mean best val_acc over its seeds is picked; equal means
keep the search's order. Validation only: the test split is scored for the pick alone, after all
training, and the pick's retrains are best/'s seed runs (nothing is trained twice). A tie set of
one (no tie, `--ties 1`, a search without per-image records, or a pick under `--max-latency-ms`,
whose rule is not accuracy alone) trains `--seeds` runs of the winner, as before.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Any

import pandas as pd

from ..fmt import acc, cells, int_or_none, plural
from ..results.experiment import trial_config
from . import analysis as an
from .best import BestTrial
from .ties import Tie, Ties

# --ties 1 by default: on bench_search's 6 searches (16 x 30, 2 data sets x 3 seeds,
# benchmarks/figures/bench_tiebreak-2026-12-02-30ep.json) retraining the tied configurations changed the pick
# once, and that pick tested 1.7 points below the search's own winner retrained alone; it cost 170-250 s per
# `best --evaluate` on 2 cores and doubled the demo's time. The tie report stays; --ties K breaks ties on request.
DEFAULT_TIES = 1
MIN_TIE_SEEDS = 2
NOT_KNOWN = "ties not known (search made before per-image records)"
RULE = ("highest mean best val_acc over each tied configuration's retrain seeds (validation split only; "
        "the test split is scored for the pick alone)")


# ---------------------------------------------------------------- showing the ties
def points(v: float, sign: bool = False) -> str:
    """A difference of accuracies in percentage points, 1 decimal: -3.3, +0.0."""
    return f"{100 * v:{'+' if sign else ''}.1f}"


def tie_z(t: Tie) -> float:
    """The observed z of a trial's difference from the best (0 for identical predictions)."""
    if t.se > 0:
        return t.diff / t.se
    return 0.0 if t.diff == 0 else math.copysign(math.inf, t.diff)


def ties_table(ties: Ties) -> pd.DataFrame:
    """The tied trials with their paired test against the best: difference and SE in points, z."""
    return pd.DataFrame([{"trial": t.trial_id, "best val_acc": t.best_val_acc, "best epoch": t.best_epoch,
                          "diff (points)": points(t.diff, sign=True), "paired SE (points)": points(t.se),
                          "diff / SE": f"{tie_z(t):+.2f}"} for t in ties.tied],
                        columns=["trial", "best val_acc", "best epoch", "diff (points)", "paired SE (points)",
                                 "diff / SE"])


def ties_summary(ties: Ties | None) -> str:
    """One sentence: how many trials are within noise of the best, by which rule (or why none are known)."""
    if ties is None or not ties.known:
        return NOT_KNOWN
    rule = (f"|diff| <= {ties.z:g} x paired SE, McNemar, on the same validation images at both trials' "
            "best epochs")
    if not ties.compared:
        return f"no tie: no other trial to compare with the best ({rule})"
    if not ties.tied:
        return f"no tie: each of the other {plural(len(ties.compared), 'trial')} is beyond noise of the best ({rule})"
    return (f"tied: {len(ties.tied)} of the other {plural(len(ties.compared), 'trial')} are within noise of the best "
            f"trial {ties.best} ({rule}):")


def tie_lines(ties: Ties | None) -> list[str]:
    """What `best` and the end of `tune` print about the ties: one line, or a line and the table."""
    lines = [ties_summary(ties)]
    if ties is not None and ties.known and ties.tied:
        lines += ["  " + row for row in cells(ties_table(ties)).to_string(index=False).splitlines()]
    return lines


# ---------------------------------------------------------------- breaking them
def tie_set(bt: BestTrial, k: int) -> list[str]:
    """The configurations `best --evaluate --ties k` retrains: the winner first, then its tied trials."""
    ties = bt.analysis.ties
    if k < 2 or bt.max_latency_ms is not None or ties is None or not ties.known or ties.best != bt.trial_id:
        return [bt.trial_id]
    return ties.ids[:k]


def tie_seeds(seeds: int, candidates: list[str]) -> int:
    """Retrain seeds per configuration: --seeds, at least MIN_TIE_SEEDS when there is a tie to break."""
    return max(seeds, MIN_TIE_SEEDS) if len(candidates) > 1 else seeds


def trial_as_best(bt: BestTrial, trial_id: str) -> BestTrial:
    """`bt` with another trial of the same search as the winner (the tie-break's pick)."""
    if trial_id == bt.trial_id:
        return bt
    trials = bt.analysis.trials
    row = trials[trials["trial_id"].astype(str) == trial_id].iloc[0]
    return replace(bt, trial_id=trial_id, status=str(row["status"]), best_val_acc=float(row["best_val_acc"]),
                   best_epoch=int_or_none(row["best_epoch"]), epochs=int_or_none(row["epochs"]),
                   config=trial_config(row), params=an.trial_params(row))


def pick(val_accs: dict[str, list[float]]) -> str:
    """The configuration with the highest mean best val_acc (dict order breaks equal means)."""
    return max(val_accs, key=lambda tid: statistics.fmean(val_accs[tid]))


def tie_break_record(bt: BestTrial, k: int, seeds: dict[str, list[int]], val_accs: dict[str, list[float]],
                     picked: str) -> dict[str, Any]:
    """metrics.json's and best/fersearch.json's `tie_break`: who was tied, each one's retrains, the pick.
    Per configuration: its search val_acc, its paired test against the best (diff, se; None for the
    best itself), its retrain seeds and their best val_acc, their mean, whether it was picked."""
    ties = bt.analysis.ties
    assert ties is not None  # tie_set() retrains more than one configuration only with known ties
    vs_best = {t.trial_id: t for t in ties.compared}
    trials = bt.analysis.trials.set_index(bt.analysis.trials["trial_id"].astype(str))
    configs = [{"trial_id": tid, "search_val_acc": float(trials.loc[tid, "best_val_acc"]),
                "diff": vs_best[tid].diff if tid in vs_best else None,
                "se": vs_best[tid].se if tid in vs_best else None,
                "seeds": seeds[tid], "val_acc": val_accs[tid], "mean_val_acc": statistics.fmean(val_accs[tid]),
                "picked": tid == picked} for tid in val_accs]
    return {"rule": RULE, "z": ties.z, "tied": ties.ids, "ties_limit": k, "retrained": list(val_accs),
            "left_out": ties.ids[k:], "seeds_per_config": len(next(iter(seeds.values()))), "configs": configs,
            "search_best": bt.trial_id, "picked": picked, "changed": picked != bt.trial_id}


def tie_break_table(record: dict[str, Any]) -> pd.DataFrame:
    """The tie-break, one row per retrained configuration (the report page's table)."""
    return pd.DataFrame([{"trial": c["trial_id"], "search val_acc": c["search_val_acc"],
                          "diff vs best (points)": None if c["diff"] is None else points(c["diff"], sign=True),
                          "paired SE (points)": None if c["se"] is None else points(c["se"]),
                          "retrain val_acc per seed": ", ".join(acc(v) for v in c["val_acc"]),
                          "mean val_acc": c["mean_val_acc"], "picked": "<- picked" if c["picked"] else ""}
                         for c in record["configs"]])


def tie_break_summary(record: dict[str, Any]) -> str:
    """One sentence: what was retrained, by which rule, and what it picked."""
    left = f"; left out by --ties {record['ties_limit']}: {', '.join(record['left_out'])}" if record["left_out"] else ""
    outcome = (f"picked trial {record['picked']} over the search's best {record['search_best']}" if record["changed"]
               else f"kept the search's best, trial {record['picked']}")
    return (f"tie-break: {plural(len(record['retrained']), 'tied configuration')} retrained with "
            f"{plural(record['seeds_per_config'], 'seed')} each{left}; {outcome} by the rule: {record['rule']}")


def tie_break_lines(record: dict[str, Any] | None) -> list[str]:
    """What `best --evaluate` prints about the tie-break (nothing when there was none)."""
    if not record:
        return []
    table = tie_break_table(record)
    return [tie_break_summary(record), *("  " + row for row in cells(table).to_string(index=False).splitlines())]
