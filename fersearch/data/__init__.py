"""FER2013 data: read any supported format into one FerData, validated and cached.

    from fersearch.data import load
    fer = load("data/fer2013.csv")     # or None: data/fer2013.csv, else the synthetic default

The constants (LABELS, SIZE, ...) come from the leaf schema.py and cost nothing to
import; load, FerData and the rest are imported on first use (they pull in numpy).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from .schema import LABELS, N_PIXELS, NUM_CLASSES, SIZE, SPLITS, USAGES, Log, log_stderr

_LAZY = {"load": "loader", "resolve_data_path": "loader", "DEFAULT_DATA": "loader", "FerData": "fer"}

__all__ = ["load", "FerData", "resolve_data_path", "DEFAULT_DATA", "LABELS", "NUM_CLASSES", "SPLITS", "USAGES",
           "SIZE", "N_PIXELS", "Log", "log_stderr"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = globals()[name] = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
