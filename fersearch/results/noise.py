"""The noise of a validation accuracy and loss, and the scheduler's decision log: no Ray here.

NoiseRule is the test behind every stop of scheduler.NoiseAwareASHA (whose docstring
explains the reasons); report/diagnose.py uses the same rule to judge stops after the
fact, and read_decisions to read what the scheduler logged (scheduler.jsonl).

Accuracy first: `judge` stops a trial only when its val_acc is clearly below the rung's
cutoff. Where val_acc cannot tell the trials apart (flat, majority, close), `decide` asks
the val_loss, which moves epochs before the accuracy leaves the majority-class rate on
hard data: the trial is stopped ("loss") only when its loss is above the rung's cutoff
loss by more than z standard errors of the difference of two mean cross-entropies on
n_val images, SE = sd * sqrt(2 / n_val) (the two trials as if independent). `loss_sd`
is the standard deviation of one image's cross-entropy. Measured on the hard preset's
400 validation images over the first four epochs of the seed CNN, with standardisation
and with batch norm: 0.15-0.29 nats for a model stuck at the majority rate, 0.2-0.9
for learners, and 0.10-0.83 for the paired difference of two models on the same images.
The default 0.6 gives sd * sqrt(2) = 0.85, above every paired difference measured.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

REASONS = {
    "few": "the rung holds too few values to compare with",
    "above": "at or above the rung's cutoff",
    "flat": "the rung's values are within noise of one another",
    "majority": "neither the trial nor the cutoff is clearly above the majority-class rate",
    "close": "below the cutoff, but within noise of it",
    "stop": "clearly below the rung's cutoff",
    "loss": "val_acc within noise of the rung's cutoff, but val_loss clearly above the rung's cutoff loss",
    "no value": "no value reported",
}


DECISIONS_FILE = "scheduler.jsonl"


class DecisionLog(list):
    """The decisions, a list of dicts; each one appended is also written to `path` (one JSON line)."""

    def __init__(self, path: str | os.PathLike | None = None):
        super().__init__()
        self.path = None if path is None else str(path)

    def append(self, entry: dict) -> None:
        super().append(entry)
        if self.path:
            with open(self.path, "a") as f:
                f.write(json.dumps(entry) + "\n")


def read_decisions(path: str | os.PathLike) -> list[dict]:
    """The decisions in a scheduler.jsonl (a folder: its scheduler.jsonl); [] without one.
    A torn last line (a crash mid-append) is skipped."""
    path = Path(path)
    path = path / DECISIONS_FILE if path.is_dir() else path
    out = []
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def accuracy_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images (binomial)."""
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


Z = 2.0  # standard errors a gap must exceed before the scheduler may stop on it
LOSS_SD = 0.6  # nats: the SD of one image's cross-entropy assumed by the loss margin (module docstring)
ACC_HOLDS = ("flat", "majority", "close")  # val_acc could not tell the trial apart: the loss may decide


def acc_cutoff(values: list[float], reduction_factor: float) -> float:
    """The rung's cutoff accuracy: the 1 - 1/rf percentile of its values (ASHA's own cutoff)."""
    return float(np.nanpercentile(values, (1 - 1 / reduction_factor) * 100))


def loss_cutoff(losses: list[float], reduction_factor: float) -> float:
    """The rung's cutoff loss: the 1/rf percentile of its losses (ASHA's cutoff, lower is better)."""
    return float(np.nanpercentile(losses, 100 / reduction_factor))


class NoiseRule:
    """The test behind each stop: is a gap bigger than z standard errors on n_val images?"""

    def __init__(self, n_val: int, majority: float | None = None, z: float = Z, min_compared: int = 2,
                 loss_sd: float | None = LOSS_SD):
        if n_val < 1:
            raise ValueError(f"n_val must be >= 1 (the validation set's size), got {n_val}")
        if majority is not None and not 0 <= majority <= 1:
            raise ValueError(f"majority must be a rate in [0, 1], got {majority}")
        if loss_sd is not None and not loss_sd > 0:
            raise ValueError(f"loss_sd must be > 0 nats (or None: accuracy only), got {loss_sd}")
        self.n_val, self.majority, self.z, self.min_compared = int(n_val), majority, float(z), int(min_compared)
        self.loss_sd = loss_sd

    def margin(self, a: float, b: float) -> float:
        """z * SE of the difference of two accuracies a and b on n_val images."""
        return self.z * math.hypot(accuracy_se(a, self.n_val), accuracy_se(b, self.n_val))

    def judge(self, value: float, others: list[float], cutoff: float, acc_se: float | None = None) -> tuple[str, float]:
        """(reason, margin) for an accuracy `value` at a rung whose other accuracies are `others`.
        `acc_se`: the paired SE of the trial's difference with the rung's cutoff trial on the same
        images (fersearch.paired); the margin is then z * acc_se. None or NaN: the unpaired margin."""
        margin = self.z * acc_se if acc_se is not None and math.isfinite(acc_se) else self.margin(value, cutoff)
        if len(others) < self.min_compared:
            return "few", margin
        if value >= cutoff:
            return "above", margin
        low, high = min(others), max(others)
        if high - low <= self.margin(low, high):
            return "flat", margin
        if self.majority is not None:
            clearly_above = self.majority + self.z * accuracy_se(self.majority, self.n_val)
            if value <= clearly_above and cutoff <= clearly_above:
                return "majority", margin
        if cutoff - value <= margin:
            return "close", margin
        return "stop", margin

    def loss_margin(self) -> float:
        """z * SE of the difference of two mean cross-entropies on n_val images (loss_sd nats per image)."""
        return self.z * (self.loss_sd or 0.0) * math.sqrt(2 / self.n_val)

    def decide(self, value: float, others: list[float], cutoff: float, loss: float | None = None,
               other_losses: list[float] | None = None, cut_loss: float | None = None,
               acc_se: float | None = None, loss_se: float | None = None) -> dict:
        """judge, then, where val_acc cannot tell the trial from the cutoff (flat, majority, close, or
        above it by no more than the margin: a tie at the majority rate), the loss: stop ("loss") only
        when `loss` exceeds the rung's cutoff loss `cut_loss` by more than the loss margin: z * `loss_se`
        (the paired SE against the cutoff-loss trial) when given, else loss_margin(). The dict: reason,
        margin (of the accuracy), metric (the one that decided) and loss_margin (when the loss was asked)."""
        reason, margin = self.judge(value, others, cutoff, acc_se)
        out = {"reason": reason, "margin": margin, "metric": "val_acc"}
        finite = [v for v in other_losses or () if v is not None and not math.isnan(v)]
        tied = reason in ACC_HOLDS or (reason == "above" and value - cutoff <= margin)
        if (not tied or self.loss_sd is None or loss is None or math.isnan(loss)
                or cut_loss is None or math.isnan(cut_loss) or len(finite) < self.min_compared):
            return out
        out["loss_margin"] = margin_loss = (self.z * loss_se if loss_se is not None and math.isfinite(loss_se)
                                            else self.loss_margin())
        if loss - cut_loss > margin_loss:
            out.update(reason="loss", metric="val_loss")
        return out


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most common label: the accuracy of always answering it."""
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def noise_inputs(val_labels: np.ndarray, z: float = Z) -> dict[str, Any]:
    """The noise rule's inputs for a validation split (its labels; -1: unlabelled): what the search
    records in fersearch.json ("noise") when it starts, and the scheduler and the diagnoses read."""
    labels = np.asarray(val_labels)
    return {"n_val": int((labels >= 0).sum()), "majority": majority_rate(labels), "z": float(z)}


def read_noise(meta: Mapping[str, Any], val_labels: np.ndarray | None = None) -> dict[str, Any]:
    """fersearch.json's "noise" block; a folder made before the search recorded one falls back to
    `val_labels` when given, else to the validation split's class counts in its "data" block
    (n_val 0, majority None when those are missing too)."""
    if isinstance(meta.get("noise"), Mapping):
        return dict(meta["noise"])
    if val_labels is not None:
        return noise_inputs(val_labels)
    counts = (meta.get("data") or {}).get("counts", {}).get("val") or {}
    labelled = [int(v) for k, v in counts.items() if k != "unlabeled"]
    n = sum(labelled)
    return {"n_val": n, "majority": max(labelled) / n if n else None, "z": Z}
