"""The noise of a validation accuracy and loss: no Ray here.

NoiseRule is the test behind every stop of search/scheduler.NoiseAwareASHA (whose docstring
explains the reasons); report/diagnose.py uses the same rule to judge stops after the
fact, and decisions.read_decisions to read what the scheduler logged (scheduler.jsonl).

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

import math
from dataclasses import dataclass

import numpy as np

from .record import Noise, Z

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


def accuracy_se(p: float, n: int) -> float:
    """Standard error of an accuracy p measured on n images (binomial)."""
    p = min(max(float(p), 0.0), 1.0)
    return math.sqrt(p * (1 - p) / n)


LOSS_SD = 0.6  # nats: the SD of one image's cross-entropy assumed by the loss margin (module docstring)
ACC_HOLDS = ("flat", "majority", "close")  # val_acc could not tell the trial apart: the loss may decide


def acc_cutoff(values: list[float], reduction_factor: float) -> float:
    """The rung's cutoff accuracy: the 1 - 1/rf percentile of its values (ASHA's own cutoff)."""
    return float(np.nanpercentile(values, (1 - 1 / reduction_factor) * 100))


def loss_cutoff(losses: list[float], reduction_factor: float) -> float:
    """The rung's cutoff loss: the 1/rf percentile of its losses (ASHA's cutoff, lower is better)."""
    return float(np.nanpercentile(losses, 100 / reduction_factor))


@dataclass(frozen=True)
class Verdict:
    """What NoiseRule.decide says: the reason (REASONS), the accuracy's margin, the metric that
    decided, and the loss margin when the loss was asked."""

    reason: str
    margin: float
    metric: str = "val_acc"
    loss_margin: float | None = None


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
               acc_se: float | None = None, loss_se: float | None = None) -> Verdict:
        """judge, then, where val_acc cannot tell the trial from the cutoff (flat, majority, close, or
        above it by no more than the margin: a tie at the majority rate), the loss: stop ("loss") only
        when `loss` exceeds the rung's cutoff loss `cut_loss` by more than the loss margin: z * `loss_se`
        (the paired SE against the cutoff-loss trial) when given, else loss_margin()."""
        reason, margin = self.judge(value, others, cutoff, acc_se)
        out = Verdict(reason, margin)
        finite = [v for v in other_losses or () if v is not None and not math.isnan(v)]
        tied = reason in ACC_HOLDS or (reason == "above" and value - cutoff <= margin)
        if (not tied or self.loss_sd is None or loss is None or math.isnan(loss)
                or cut_loss is None or math.isnan(cut_loss) or len(finite) < self.min_compared):
            return out
        margin_loss = self.z * loss_se if loss_se is not None and math.isfinite(loss_se) else self.loss_margin()
        if loss - cut_loss > margin_loss:
            return Verdict("loss", margin, "val_loss", margin_loss)
        return Verdict(reason, margin, "val_acc", margin_loss)


def majority_rate(labels: np.ndarray) -> float:
    """Share of the most common label: the accuracy of always answering it."""
    labels = np.asarray(labels)
    labels = labels[labels >= 0]
    return float(np.bincount(labels).max() / len(labels)) if len(labels) else 0.0


def noise_inputs(val_labels: np.ndarray, z: float = Z) -> Noise:
    """The noise rule's inputs for a validation split (its labels; -1: unlabelled): what the search
    records in fersearch.json ("noise") when it starts, and the scheduler and the diagnoses read."""
    labels = np.asarray(val_labels)
    return Noise(n_val=int((labels >= 0).sum()), majority=majority_rate(labels), z=float(z))
