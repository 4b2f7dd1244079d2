"""Which trials are tied with the best: the paired test on the shared validation images.

The best of 16 trials on 600 images sits about 1.8 standard errors above its true accuracy
by chance alone (SEARCH-NOTES.md), so a winner that leads by less than the noise is one of a
tie. Each trial is compared with the best at both trials' best epochs, image by image
(fersearch.paired, McNemar): tied when |difference| <= z * paired SE, the z of the search's
noise rule (fersearch.json's `noise` block). A search made before the per-image records
(per_image.jsonl) has no ties to report: `Ties.known` is False.

`budget_too_small` says when the top of a finished search cannot be ranked at this budget:
the best is tied with others, and it and at least one of them were still improving at the end
(they trained the whole budget and their best epoch is in its last tenth).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..fmt import int_or_none
from ..paired import decode, paired_test
from ..results.experiment import TrialStatus


@dataclass(frozen=True)
class Tie:
    trial_id: str
    best_val_acc: float
    best_epoch: int
    diff: float  # its best-epoch accuracy minus the best trial's, on the same images
    se: float  # paired SE of that difference
    tied: bool

    def to_dict(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "best_val_acc": self.best_val_acc, "best_epoch": self.best_epoch,
                "diff": self.diff, "se": self.se, "tied": self.tied}


@dataclass(frozen=True)
class Ties:
    best: str | None  # the best trial's id
    z: float
    known: bool  # per-image records were there for the best trial
    compared: list[Tie] = field(default_factory=list)  # every other scored trial with records, best first

    @property
    def tied(self) -> list[Tie]:
        """The trials within noise of the best (the best itself not included)."""
        return [t for t in self.compared if t.tied]

    @property
    def ids(self) -> list[str]:
        """The tie set: the best first, then the trials tied with it, best first."""
        return [self.best, *(t.trial_id for t in self.tied)] if self.best else []

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best, "z": self.z, "known": self.known, "tied": [t.trial_id for t in self.tied],
                "compared": [t.to_dict() for t in self.compared]}


def find_ties(ranked: pd.DataFrame, per_image: Mapping[str, Mapping[int, Mapping[str, object]]], z: float) -> Ties:
    """The trials tied with the best. `ranked`: trials best first (analysis.rank_trials), with
    best_val_acc and best_epoch; `per_image`: experiment.read_per_image; `z`: the noise rule's."""
    scored = ranked[pd.to_numeric(ranked["best_val_acc"], errors="coerce").notna()
                    & (ranked["status"] != TrialStatus.DIVERGED)] if len(ranked) else ranked
    if not len(scored):
        return Ties(None, z, False)
    records = {}
    for row in scored.itertuples(index=False):
        epoch = int_or_none(row.best_epoch)
        if epoch is None:
            continue
        rec = decode(per_image.get(str(row.trial_id), {}).get(epoch))
        if rec is not None:
            records[str(row.trial_id)] = (row, epoch, rec)
    best_id = str(scored.iloc[0]["trial_id"])
    if best_id not in records:
        return Ties(best_id, z, False)
    _, _, best_rec = records.pop(best_id)
    compared = []
    for tid, (row, epoch, rec) in records.items():
        test = paired_test(rec, best_rec, z)
        if rec.n == best_rec.n and math.isfinite(float(test["se"])):
            compared.append(Tie(tid, float(row.best_val_acc), epoch, float(test["diff"]), float(test["se"]),
                                bool(test["tied"])))
    return Ties(best_id, z, True, compared)


def budget_too_small(ties: Ties, ranked: pd.DataFrame, max_epochs: int | None) -> dict[str, Any] | None:
    """When the best is tied with others and it and at least one of them were still improving at the
    end (trained the whole budget, best epoch in its last tenth): this budget cannot rank them. The
    dict: the rising tied ids, and the epochs to ask for (twice the budget: trials still rising at
    their end have at least that far to go before their order settles)."""
    if not ties.known or not ties.tied or not max_epochs:
        return None
    rows = ranked.set_index(ranked["trial_id"].astype(str))
    late = max_epochs - max(1, max_epochs // 10)

    def rising(tid: str) -> bool:
        epochs, best_epoch = int_or_none(rows.loc[tid, "epochs"]), int_or_none(rows.loc[tid, "best_epoch"])
        return epochs == max_epochs and best_epoch is not None and best_epoch > late

    up = [tid for tid in ties.ids if rising(tid)]
    if not ties.best or not rising(ties.best) or len(up) < 2:
        return None
    return {"trials": up, "max_epochs": max_epochs, "suggest": 2 * max_epochs}
