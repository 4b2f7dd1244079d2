"""The scheduler's decisions (scheduler.jsonl): one typed Decision per rung decision, written and read here.

search/scheduler.py's NoiseAwareASHA makes a Decision at each rung and appends it to
results/<name>/scheduler.jsonl as one JSON line; the report's diagnoses and a resumed
scheduler read them back with read_decisions. Older logs lack the paired keys: they
read as unpaired decisions. A torn last line (a crash mid-append) is skipped; any other line that
is not a decision is one line naming the file and the line (lines.py).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..paired import CORRECT_KEY, LOSSES_KEY, PerImage, decode
from .lines import damaged, json_objects
from .values import as_count, as_float, kind

DECISIONS_FILE = "scheduler.jsonl"
STOP, CONTINUE = "STOP", "CONTINUE"  # Ray's TrialScheduler actions, as the log spells them


@dataclass(frozen=True)
class Decision:
    """One decision about one trial at one rung: what was compared, what the rule said, and why."""

    trial_id: str
    rung: float  # Ray's milestone: grace * rf**k (a float for a float reduction factor)
    iteration: int  # the epoch the trial reported (at or past the rung)
    compared: int  # values recorded at the rung before this one
    value: float | None  # the trial's val_acc (None: no value)
    cutoff: float | None
    margin: float | None
    action: str  # STOP or CONTINUE
    reason: str  # noise.REASONS
    metric: str = "val_acc"  # the metric that decided
    loss: float | None = None
    loss_cutoff: float | None = None
    loss_margin: float | None = None
    asha_would_stop: bool = False
    paired: bool = False  # compared on the same images (fersearch.paired) with the trials below
    ref_trial: str | None = None
    loss_ref_trial: str | None = None
    unpaired_reason: str | None = None  # what the unpaired rule said
    unpaired_margin: float | None = None
    unpaired_loss_margin: float | None = None
    per_image: Mapping[str, str] = field(default_factory=dict)  # paired.as_record of the trial's images

    @property
    def rung_epoch(self) -> int:
        """The epoch the rung decides at (rungs.rung_epochs): the first whole epoch at or past the milestone."""
        return math.ceil(self.rung)

    @property
    def stopped(self) -> bool:
        return self.action == STOP

    @property
    def images(self) -> PerImage | None:
        return decode(self.per_image)

    def to_json(self) -> dict[str, object]:
        """The log line's keys (per-image strings at the top level, as every version wrote them)."""
        out = {k: v for k, v in asdict(self).items() if k != "per_image"}
        for k in ("value", "cutoff", "margin", "loss", "loss_cutoff", "unpaired_margin"):
            out[k] = _number(out[k])  # NaN as null: the log is JSON, and a decision read back equals the one made
        return {**out, **self.per_image}

    @classmethod
    def from_json(cls, d: Mapping[str, object]) -> Decision:
        """A log line back; KeyError/TypeError/ValueError (saying which key) when it is not a decision."""
        reason = str(d["reason"])
        rung = as_float(d["rung"])
        if rung is None or rung <= 0:
            raise TypeError(f"rung must be a finite number > 0, not {kind(d['rung'])}")
        if d["action"] not in (STOP, CONTINUE):
            raise ValueError(f"action must be {STOP} or {CONTINUE}, not {kind(d['action'])}")
        for key in ("value", "cutoff", "margin", "loss", "loss_cutoff", "loss_margin", "unpaired_margin",
                    "unpaired_loss_margin"):
            if d.get(key) is not None and _float(d[key]) is None:
                raise TypeError(f"{key} must be a number or null, not {kind(d[key])}")
        return cls(trial_id=str(d["trial_id"]), rung=int(rung) if rung.is_integer() else rung,
                   iteration=_int(d.get("iteration", math.ceil(rung))),
                   compared=_int(d.get("compared", 0)), value=_float(d.get("value")), cutoff=_float(d.get("cutoff")),
                   margin=_float(d.get("margin")), action=str(d["action"]), reason=reason,
                   metric=str(d.get("metric") or "val_acc"), loss=_float(d.get("loss")),
                   loss_cutoff=_float(d.get("loss_cutoff")), loss_margin=_float(d.get("loss_margin")),
                   asha_would_stop=bool(d.get("asha_would_stop")), paired=bool(d.get("paired")),
                   ref_trial=_text(d.get("ref_trial")), loss_ref_trial=_text(d.get("loss_ref_trial")),
                   unpaired_reason=_text(d.get("unpaired_reason")) or reason,
                   unpaired_margin=_float(d.get("unpaired_margin", d.get("margin"))),
                   unpaired_loss_margin=_float(d.get("unpaired_loss_margin")),
                   per_image={k: v for k in (CORRECT_KEY, LOSSES_KEY) if isinstance(v := d.get(k), str)})


class DecisionLog(list[Decision]):
    """The decisions; each one appended is also written to `path` (one JSON line)."""

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        self.path = None if path is None else str(path)

    def append(self, entry: Decision) -> None:
        super().append(entry)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry.to_json()) + "\n")


def read_decisions(path: str | os.PathLike) -> list[Decision]:
    """The decisions in a scheduler.jsonl (a folder: its scheduler.jsonl); [] without one. A torn last
    line is left out; any other line that is not a decision is one ExperimentError naming the file and line."""
    path = Path(path)
    path = path / DECISIONS_FILE if path.is_dir() else path
    out = []
    for n, raw in json_objects(path):
        try:
            out.append(Decision.from_json(raw))
        except KeyError as e:
            raise damaged(path, n, f"a decision must have {e}") from None
        except (TypeError, ValueError) as e:
            raise damaged(path, n, str(e)) from None
    return out


def _number(v: object) -> float | None:
    return None if v is None or not isinstance(v, (int, float)) or math.isnan(v) else float(v)


def _float(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _int(v: object) -> int:
    n = as_count(v)
    if n is None:
        raise TypeError(f"iteration and compared must be whole numbers >= 0, not {kind(v)}")
    return n


def _text(v: object) -> str | None:
    return None if v is None else str(v)
