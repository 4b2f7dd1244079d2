"""A training run's saved state, kept portable: plain tensors on the CPU (it loads with
weights_only=True anywhere), and the rule for which config keys a resume may change."""

from __future__ import annotations

from typing import Any

import torch

from ..config import TrainConfig
from ..errors import ConfigError

STATE_FORMAT = "fersearch-train-state"
# Keys a resumed run may change: training longer or with more patience continues the same run, and
# graphs or not is how a step runs, not what it computes.
RESUMABLE_CHANGES = ("epochs", "patience", "cuda_graphs")


def to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def as_tuples(obj: Any) -> Any:
    """random.setstate needs tuples; a state that went through JSON or a checkpoint may hold lists."""
    return tuple(as_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj


def check_resumable(saved: dict, cfg: TrainConfig) -> None:
    now, defaults = cfg.to_dict(), TrainConfig().to_dict()
    for key, value in now.items():
        # A key newer than the state (e.g. `deterministic`) held its default then.
        if key not in RESUMABLE_CHANGES and saved.get(key, defaults[key]) != value:
            raise ConfigError(
                f"cannot resume: config key {key!r} was {saved.get(key)!r} in the saved state but is {value!r} now; "
                f"resume with the same config (only {', '.join(RESUMABLE_CHANGES)} may change)"
            )
