"""best/metrics.json (written by report/bestdir.py after `best --evaluate`), read back checked.

Its contract (DESIGN.md): accuracy, loss, macro_f1, weighted_f1 (finite numbers), n (a count),
labels (names), split (text), per_class {label: {precision, recall, f1, support}} and
confusion_matrix (a list of lists of counts). A file that is not a JSON object, or holds a key of
the wrong type, is one ExperimentError naming the file and the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import ExperimentError
from .values import as_count, as_float, as_names, as_object, as_text, first_bad, kind

METRICS_FILE = "metrics.json"
_CHECKS = {**{k: (as_float, "a finite number") for k in ("accuracy", "loss", "macro_f1", "weighted_f1")},
           "n": (as_count, "a count"), "labels": (as_names, "a list of names"), "split": (as_text, "text"),
           "per_class": (as_object, "a JSON object")}


def read_metrics(exp: str | os.PathLike) -> dict[str, object] | None:
    """An experiment's best/metrics.json, checked; None when `best --evaluate` has not written one."""
    path = Path(exp) / "best" / METRICS_FILE
    try:
        raw = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
        raise ExperimentError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); the file is damaged: "
                              "run `fersearch best --evaluate` again") from None
    except OSError as e:
        raise ExperimentError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    if not isinstance(raw, dict):
        raise ExperimentError(f"{path} must hold a JSON object, not {kind(raw)}; the file is damaged")
    bad = first_bad(raw, _CHECKS)
    if bad is None:
        bad = _bad_tables(raw)
    if bad is not None:
        key, want, got = bad
        raise ExperimentError(f"{path}: {key} must be {want}, not {kind(got)}; the file is damaged")
    return raw


def _bad_tables(raw: dict[str, object]) -> tuple[str, str, object] | None:
    per_class = raw.get("per_class") or {}
    assert isinstance(per_class, dict)  # first_bad checked it
    for label, figures in per_class.items():
        want = "a JSON object of finite numbers"
        if not isinstance(figures, dict) or any(as_float(v) is None for v in figures.values() if v is not None):
            return f"per_class.{label}", want, figures
    matrix = raw.get("confusion_matrix")
    if matrix is not None and not (isinstance(matrix, list) and all(
            isinstance(row, list) and all(as_count(v) is not None for v in row) for row in matrix)):
        return "confusion_matrix", "a list of lists of counts", matrix
    return None
