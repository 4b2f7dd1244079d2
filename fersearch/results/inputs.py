"""Every file of an experiment that fersearch reads, read once and checked: a damaged one is one line
(naming the file and what is wrong) before a command acts on the folder (`tune --resume` starts Ray,
changes fersearch.json and appends to the logs only after this)."""

from __future__ import annotations

import os

from .decisions import read_decisions
from .experiment import read_history, read_per_image, read_trials
from .metrics_file import read_metrics
from .record import load_record
from .study import load_study


def check_inputs(exp: str | os.PathLike) -> None:
    """Raise the one-line ExperimentError of the first damaged file of `exp`; nothing is written."""
    load_record(exp)
    read_trials(exp)
    read_history(exp)
    read_per_image(exp)
    read_decisions(exp)
    read_metrics(exp)
    load_study(exp)
