"""The JSON-lines files of an experiment (per_image.jsonl, scheduler.jsonl), read line by line, checked.

Both only grow while a search runs (one line appended per report or decision), so a last line
without its newline is a torn append (a crash mid-write) and is left out. Any other line that is
not UTF-8, not JSON, or not a JSON object is one ExperimentError naming the file and the line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import ExperimentError
from .values import kind


def damaged(path: str | os.PathLike, line: int, what: str) -> ExperimentError:
    return ExperimentError(f"{path}: line {line}: {what}; the file is damaged")


def json_objects(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) of each whole line of a JSON-lines file; nothing when there is no file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as e:
        raise ExperimentError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    whole = data if data.endswith(b"\n") else data[: data.rfind(b"\n") + 1]  # a torn last line left out
    try:
        text = whole.decode("utf-8")
    except UnicodeDecodeError as e:
        at = whole[: e.start].count(b"\n") + 1
        raise damaged(path, at, f"byte {e.start} is not UTF-8 text") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise damaged(path, n, f"not valid JSON ({str(e).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise damaged(path, n, f"must be a JSON object, not {kind(raw)}")
        yield n, raw
