"""Paired comparisons on the shared validation images: per-image records and their statistics.

Every trial of a search is scored on the *same* validation images, so two trials can be
compared image by image. The trainer reports, each epoch, which validation images it got
right and each image's cross-entropy (`encode`: 1 bit and 1 byte per image, base64 text:
600 images are 100 + 800 characters); the scheduler, `best` and the report read them back
with `decode`.

Statistics (Dietterich 1998, "Approximate statistical tests for comparing supervised
classification learning algorithms", McNemar's test):

  acc_diff_se   SE of the difference of two accuracies on the same n images. With b images
                only A gets right and c only B, the difference is (b - c) / n and its
                variance ((b + c) - (b - c)^2 / n) / n^2. Two models that agree on 80%
                of 400 images: about 0.022, against 0.035 for two independent samples.
  loss_diff_se  SE of the difference of two mean cross-entropies on the same images: the SD
                of the per-image differences / sqrt(n).

Losses are stored in steps of 1/16 nat, clipped at 15.9 (255/16): a per-image loss is off by
at most 1/32 nat, which moves an SD by less than 1%.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

CORRECT_KEY = "val_correct"  # the reported metrics' keys (base64 text)
LOSSES_KEY = "val_losses"
LOSS_STEP = 16  # steps per nat


def encode(correct: np.ndarray, losses: np.ndarray | None) -> dict[str, str]:
    """Per-image correctness (bool) and cross-entropy (nats) as the two reported strings
    (losses None: the correctness alone)."""
    correct = np.asarray(correct, dtype=bool)
    bits = {CORRECT_KEY: f"{len(correct)}:" + base64.b64encode(np.packbits(correct).tobytes()).decode()}
    if losses is None:
        return bits
    steps = np.clip(np.rint(np.nan_to_num(np.asarray(losses, dtype=np.float64), nan=255 / LOSS_STEP,
                                          posinf=255 / LOSS_STEP) * LOSS_STEP), 0, 255).astype(np.uint8)
    return {**bits, LOSSES_KEY: base64.b64encode(steps.tobytes()).decode()}


@dataclass(frozen=True)
class PerImage:
    """One trial's epoch on the validation images: which it got right, and each one's loss."""

    correct: np.ndarray  # bool, n
    losses: np.ndarray | None  # float, n (nats); None when only correctness was recorded

    @property
    def n(self) -> int:
        return int(self.correct.size)

    @property
    def acc(self) -> float:
        return float(self.correct.mean()) if self.n else float("nan")


def as_record(images: PerImage) -> dict[str, str]:
    """A PerImage as the strings `decode` reads back (for a log line)."""
    return encode(images.correct, images.losses)


def decode(record: Mapping[str, Any] | None) -> PerImage | None:
    """The PerImage in a result or log record (its CORRECT_KEY / LOSSES_KEY strings); None when it
    has none or they are malformed (a search made before they were reported)."""
    if not record or not isinstance(record.get(CORRECT_KEY), str):
        return None
    try:
        size, bits = record[CORRECT_KEY].split(":", 1)
        n = int(size)
        correct = np.unpackbits(np.frombuffer(base64.b64decode(bits), dtype=np.uint8))[:n].astype(bool)
        losses = None
        if isinstance(record.get(LOSSES_KEY), str):
            losses = np.frombuffer(base64.b64decode(record[LOSSES_KEY]), dtype=np.uint8).astype(float) / LOSS_STEP
            if losses.size != n:
                losses = None
    except (ValueError, TypeError):
        return None
    return PerImage(correct, losses) if correct.size == n else None


def acc_diff_se(a: PerImage, b: PerImage) -> float:
    """SE of acc(a) - acc(b) on the same images (McNemar); NaN when they were not scored on the same n."""
    if a.n != b.n or a.n == 0:
        return float("nan")
    n = a.n
    only_a = int(np.count_nonzero(a.correct & ~b.correct))
    only_b = int(np.count_nonzero(b.correct & ~a.correct))
    return math.sqrt(max((only_a + only_b) - (only_a - only_b) ** 2 / n, 0.0)) / n


def loss_diff_se(a: PerImage, b: PerImage) -> float:
    """SE of mean loss(a) - mean loss(b) on the same images; NaN without both losses."""
    if a.losses is None or b.losses is None or a.n != b.n or a.n < 2:
        return float("nan")
    return float(np.std(a.losses - b.losses, ddof=1) / math.sqrt(a.n))


def paired_test(a: PerImage, b: PerImage, z: float) -> dict[str, float | bool]:
    """A against B: difference of accuracies, its paired SE, and whether it is within z SE (a tie)."""
    diff = a.acc - b.acc
    se = acc_diff_se(a, b)
    return {"diff": diff, "se": se, "tied": bool(abs(diff) <= z * se) if math.isfinite(se) else False}
