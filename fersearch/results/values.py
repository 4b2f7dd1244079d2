"""JSON values read from an experiment's files, checked: each helper returns the value in the wanted type,
or None when it is not one (the caller names the file, the key and what it wanted in one line).

Numbers must be finite: Python's json reads `1e999` as inf and `NaN` as nan, and neither is a count,
an epoch or a setting. Every loader of results/ (record_reader, decisions, per_image, metrics) uses these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def kind(v: object) -> str:
    """How an error names a value's JSON type ("text", "a list", "the number inf")."""
    names = {dict: "a JSON object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(v), f"the number {v!r}" if isinstance(v, (int, float)) else type(v).__name__)


def as_int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return int(v) if isinstance(v, float) and v.is_integer() else None  # is_integer: False for inf and nan


def as_count(v: object) -> int | None:
    """A whole number >= 0 (a count, an epoch, a size)."""
    n = as_int(v)
    return n if n is not None and n >= 0 else None


def as_positive(v: object) -> int | None:
    """A whole number >= 1 (trials, epochs planned)."""
    n = as_int(v)
    return n if n is not None and n >= 1 else None


def as_float(v: object) -> float | None:
    """A finite number."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def as_text(v: object) -> str | None:
    return v if isinstance(v, str) else None


def as_bool(v: object) -> bool | None:
    return v if isinstance(v, bool) else None


def as_object(v: object) -> dict[str, object] | None:
    return v if isinstance(v, dict) else None


def as_list(v: object) -> list[object] | None:
    return v if isinstance(v, list) else None


def as_names(v: object) -> tuple[str, ...] | None:
    return tuple(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def first_bad(obj: Mapping[str, object], checks: Mapping[str, tuple[object, str]]) -> tuple[str, str, object] | None:
    """The first key of `obj` present (not null) whose value fails its check: (key, what was wanted, value).
    `checks`: key -> (a helper above, what it wants in words)."""
    for key, (check, want) in checks.items():
        v = obj.get(key)
        if v is not None and callable(check) and check(v) is None:
            return key, want, v
    return None
