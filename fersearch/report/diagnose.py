"""What a search saw, in sentences that each name the flag to change: the rules, in one place.

    diagnose(ranked, history, record, decisions=read_decisions(exp), boundaries=..., seed_trial=...)

Shown at the end of `fersearch tune`, by `fersearch best` and in the report pages. Each
Diagnosis has a kind, a sentence and the flag it points at:

  still-improving  the winner's best epoch was its last one and it trained the whole
                   budget: more epochs would likely help (--max-epochs).
  too-short        the best is tied with other trials (paired on the validation images,
                   ties.find_ties) and it and at least one of them were still improving at
                   the end: this budget cannot rank them; how far to raise --max-epochs.
                   Said instead of still-improving.
  noise-stop       trials stopped at a rung where their val_acc could not be told apart
                   from the rung's other values, or from the majority-class rate, on
                   this many validation images (noise.NoiseRule on history.csv): the
                   rung came before the trials had learned (--grace-period). Judged
                   only for stops the scheduler did not log (older folders): a logged
                   stop was decided on a gap beyond noise, and says on which metric.
  loss-stop        trials the scheduler stopped on val_loss (scheduler.jsonl: their
                   val_acc tied within noise, their loss was above the rung's cutoff
                   loss by more than the loss margin): said with the margins (no flag).
  held             the scheduler's log (scheduler.jsonl) shows a rung where plain ASHA
                   would have stopped trials but every value sat within noise: the rung
                   decided nothing and cost a decision point (--grace-period).
  boundary         the winner's value of a parameter sits at an end of its range
                   (boundaries.find_boundaries): widen the space (--space).
  seed             the seed configuration's result next to the winner's (no flag; when
                   the seed won: more --trials or a wider --space).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..fmt import acc, plural
from ..results.decisions import Decision
from ..results.experiment import TrialStatus
from ..results.noise import NoiseRule, acc_cutoff, loss_cutoff
from ..results.record import ExperimentRecord
from ..results.rungs import search_rungs

if TYPE_CHECKING:
    from .boundaries import Boundary
    from .ties import Ties

HELD_REASONS = ("flat", "majority", "close")  # kept only because the gap was within noise


@dataclass(frozen=True)
class Diagnosis:
    kind: str
    message: str
    flag: str | None = None

    def line(self) -> str:
        return self.message


def still_improving(ranked: pd.DataFrame, history: pd.DataFrame, max_epochs: int | None) -> Diagnosis | None:
    """The winner peaked at its last epoch after training the full budget."""
    if not len(ranked) or not len(history) or not max_epochs:
        return None
    best = ranked.iloc[0]
    h = history[history["trial_id"].astype(str) == str(best["trial_id"])].sort_values("epoch")
    if len(h) < 2 or int(h["epoch"].iloc[-1]) < max_epochs:
        return None
    accs = h["val_acc"].to_numpy(dtype=float)
    if np.nanargmax(accs) != len(accs) - 1:
        return None
    back = max(0, len(accs) - 1 - max(1, len(accs) // 3))
    return Diagnosis("still-improving",
                     f"The winner (trial {best['trial_id']}) was still improving at its last epoch: val_acc "
                     f"{acc(accs[back])} at epoch {back + 1}, {acc(accs[-1])} at epoch {len(accs)} of {max_epochs}: "
                     f"raise --max-epochs.", "--max-epochs")


def too_short(ties: Ties, ranked: pd.DataFrame, max_epochs: int | None) -> Diagnosis | None:
    """The top trials tied within noise and still improving at the end (ties.budget_too_small)."""
    from .ties import budget_too_small

    found = budget_too_small(ties, ranked, max_epochs)
    if found is None:
        return None
    n = len(ties.ids)
    return Diagnosis("too-short",
                     f"This budget cannot rank the top trials: {plural(n, 'trial')} ({', '.join(ties.ids)}) are within "
                     f"noise of the best on the same validation images, and {len(found['trials'])} of them were still "
                     f"improving at epoch {max_epochs}: raise --max-epochs from {max_epochs} to about "
                     f"{found['suggest']}.", "--max-epochs")


def noise_stops(ranked: pd.DataFrame, history: pd.DataFrame, record: ExperimentRecord,
                decisions: Iterable[Decision] = ()) -> Diagnosis | None:
    """Trials stopped early whose last val_acc was within noise of the rest of their rung or of the
    majority-class rate (judged again with NoiseRule on every trial's value at that epoch), with the
    noise inputs the search recorded."""
    n_val, majority, z = record.noise.n_val, record.noise.majority, record.noise.z
    logged = {d.trial_id for d in decisions if d.stopped}
    max_epochs = record.max_epochs
    if not n_val or not len(history) or "status" not in ranked:
        return None
    rule = NoiseRule(n_val, majority, z)
    rf = record.settings.reduction_factor if record.settings else 3.0
    at = history.pivot_table(index="trial_id", columns="epoch", values="val_acc", aggfunc="last")
    at.index = at.index.astype(str)
    losses = history.pivot_table(index="trial_id", columns="epoch", values="val_loss", aggfunc="last")
    losses.index = losses.index.astype(str)
    found: dict[int, list[str]] = {}
    for _, row in ranked[ranked["status"] == TrialStatus.STOPPED].iterrows():
        tid = str(row["trial_id"])
        if tid in logged or tid not in at.index or not at.loc[tid].notna().any():
            continue
        epoch = int(at.loc[tid].last_valid_index())
        if max_epochs and epoch >= int(max_epochs):
            continue
        value = float(at.loc[tid, epoch])
        others = [float(v) for v in at[epoch].drop(tid).dropna()]
        if not others:
            continue
        other_losses = [float(v) for v in losses[epoch].drop(tid).dropna()] if epoch in losses else []
        loss = float(losses.loc[tid, epoch]) if epoch in losses and tid in losses.index else None
        reason = rule.decide(value, others, acc_cutoff(others, rf), loss, other_losses,
                             loss_cutoff(other_losses, rf) if other_losses else None).reason
        if reason not in ("stop", "loss"):  # few, above, flat, majority or close: not clearly worse
            found.setdefault(epoch, []).append(tid)
    if not found:
        return None
    count = sum(len(v) for v in found.values())
    where = ", ".join(f"{len(v)} at epoch {e}" for e, v in sorted(found.items()))
    return Diagnosis("noise-stop",
                     f"{plural(count, 'trial')} ({where}) {'was' if count == 1 else 'were'} stopped at a rung where "
                     f"their val_acc could not be "
                     f"told apart from the others or from the majority-class rate ({acc(majority)}) on {n_val} "
                     f"validation images: raise --grace-period.", "--grace-period")


def held_rungs(decisions: Iterable[Decision], first_rung: int | None = None) -> Diagnosis | None:
    """Rungs where plain ASHA would have stopped trials but the scheduler held them as noise. Held at the
    first rung (`first_rung`, rungs.search_rungs' first; None: the lowest rung held): the rung came too early, raise
    --grace-period. Held only at later rungs: the trials had learned and were within noise of one another
    there, which no flag changes (the end of the search ranks them, with its ties)."""
    held: dict[int, set[str]] = {}
    for d in decisions:
        if d.asha_would_stop and d.reason in HELD_REASONS:
            held.setdefault(d.rung_epoch, set()).add(d.trial_id)
    if not held:
        return None
    first = min(held)
    where = ", ".join(f"{len(v)} at epoch {r}" for r, v in sorted(held.items()))
    count = sum(len(v) for v in held.values())
    said = (f"{plural(count, 'trial')} ({where}) {'was' if count == 1 else 'were'} kept at a rung where plain ASHA "
            f"would have stopped {'it' if count == 1 else 'them'}, because {'its' if count == 1 else 'their'} val_acc "
            f"was within noise of the rung's others or of the majority-class rate")
    if first_rung is not None and first > first_rung:
        return Diagnosis("held", f"{said}: past the first rung (epoch {first_rung}), so not too early a rung but "
                                 f"trials within noise of one another at epoch {first}; nothing to change, the "
                                 f"ties at the end say which of them are still tied.")
    return Diagnosis("held", f"{said}: the rung at epoch {first} came before the trials could be ranked; raise "
                             f"--grace-period above {first}.", "--grace-period")


def loss_stops(decisions: Iterable[Decision]) -> Diagnosis | None:
    """Trials the scheduler stopped on val_loss where their val_acc tied: which metric decided, by how much."""
    stops = [d for d in decisions if d.stopped and d.metric == "val_loss"]
    if not stops:
        return None
    where = ", ".join(f"{n} at epoch {r}" for r, n in sorted(Counter(d.rung_epoch for d in stops).items()))
    worst = max(stops, key=lambda d: (d.loss or 0) - (d.loss_cutoff or 0))
    example = (f"trial {worst.trial_id}: val_loss {acc(worst.loss)} against the rung's cutoff loss "
               f"{acc(worst.loss_cutoff)}, more than the margin {acc(worst.loss_margin)} above it")
    return Diagnosis("loss-stop",
                     f"{plural(len(stops), 'trial')} ({where}) {'was' if len(stops) == 1 else 'were'} stopped on "
                     f"val_loss: their val_acc was within noise of the rung's cutoff, but their loss was clearly "
                     f"worse ({example}).")


def boundary_notes(boundaries: Iterable[Boundary]) -> list[Diagnosis]:
    return [Diagnosis("boundary", f"{b.message()} (--space: a copy of the space with a wider range).", "--space")
            for b in boundaries]


def seed_comparison(ranked: pd.DataFrame, seed_trial: str | None) -> Diagnosis | None:
    if not len(ranked):
        return None
    best = ranked.iloc[0]
    if seed_trial is None:
        return Diagnosis("seed", "The seed configuration was not among the trials: no seed baseline from this search.")
    srow = ranked[ranked["trial_id"].astype(str) == str(seed_trial)].iloc[0]
    if str(seed_trial) == str(best["trial_id"]):
        return Diagnosis("seed", f"The seed configuration (trial {seed_trial}) won with val_acc "
                                 f"{acc(srow['best_val_acc'])}: no proposal beat it; try more --trials or a wider "
                                 f"--space.", "--trials")
    gain = float(best["best_val_acc"]) - float(srow["best_val_acc"])
    return Diagnosis("seed", f"The seed configuration (trial {seed_trial}) reached val_acc {acc(srow['best_val_acc'])} "
                             f"({srow['status']}); the winner (trial {best['trial_id']}) {acc(best['best_val_acc'])}: "
                             f"{100 * gain:+.1f} points.")


def diagnose(ranked: pd.DataFrame, history: pd.DataFrame, record: ExperimentRecord,
             decisions: Iterable[Decision] = (), boundaries: Iterable[Boundary] = (),
             seed_trial: str | None = None, ties: Ties | None = None) -> list[Diagnosis]:
    """Every diagnosis that applies, in the order they are shown. `ranked`: trials sorted best first
    (analysis.rank_trials); `decisions`: the scheduler's log (decisions.read_decisions); `ties`: ties.Ties."""
    ranked = ranked[pd.to_numeric(ranked["best_val_acc"], errors="coerce").notna()] if len(ranked) else ranked
    decisions = list(decisions)
    max_epochs = record.max_epochs
    rungs = search_rungs(record)
    short = too_short(ties, ranked, max_epochs) if ties is not None else None
    found = [short or still_improving(ranked, history, max_epochs),
             noise_stops(ranked, history, record, decisions), loss_stops(decisions),
             held_rungs(decisions, rungs[0] if rungs else None),
             *boundary_notes(boundaries), seed_comparison(ranked, seed_trial)]
    return [d for d in found if d is not None]
