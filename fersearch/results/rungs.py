"""ASHA's rung rule: the epochs at which a search's scheduler decides about a trial.

Ray's ASHA bracket puts its milestones at grace * rf**k for k below
int(log(max_t / grace) / log(rf) + 1), and decides about a trial at the first
reported epoch at or past a milestone: with a float reduction factor a milestone
of 13.5 is decided at epoch 14. At max_t itself nothing is decided (the trial
ends there anyway). The checkpoint schedule, the report, `status` and the
diagnoses all read the rungs from here, so they agree with Ray for integer and
float factors alike (tests/test_rungs.py compares with Ray's ASHAScheduler).
"""

from __future__ import annotations

import math

import numpy as np

from .record import ExperimentRecord


def rung_epochs(max_epochs: int, grace: int, reduction_factor: float) -> list[int]:
    """The epochs (ascending) at which ASHA decides, for max_t `max_epochs`, grace period `grace` and
    reduction factor `reduction_factor` (Ray's milestone expression, decided at the next whole epoch)."""
    if grace < 1 or not reduction_factor > 1 or max_epochs <= grace:
        return []
    count = int(np.log(max_epochs / grace) / np.log(reduction_factor) + 1)
    return sorted({e for e in (math.ceil(grace * reduction_factor ** k) for k in range(count)) if e < max_epochs})


def search_rungs(record: ExperimentRecord) -> list[int]:
    """The rung epochs of a recorded search; [] for FIFO or a record without settings."""
    s = record.settings
    if s is None or s.scheduler != "asha":
        return []
    return rung_epochs(s.max_epochs, s.grace_period, s.reduction_factor)
