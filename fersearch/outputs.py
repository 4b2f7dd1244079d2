"""Output paths a user names (`predict --annotate`, `compare --out`), checked before any work.

    check_output(path, "--annotate", (".png", ".jpg"), inputs=images)

Refused in one line: a suffix the writer cannot write, a folder, a path under a file, a folder
that cannot take a file (read-only, /proc, no permission: a probe file is written and removed),
one of the command's own inputs, or a file inside an experiment folder (results/<name>/ holds
what searches and `best` wrote; no other command writes there).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from .errors import FersearchError

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")  # what matplotlib's savefig writes here
EXPERIMENT_MARKER = "fersearch.json"  # what makes a folder an experiment (or a run) folder


def check_output(path: Path, flag: str, suffixes: Iterable[str], inputs: Iterable[str | os.PathLike] = ()) -> None:
    """FersearchError naming `flag` and `path` when the file cannot or must not be written."""
    suffixes = tuple(suffixes)
    where = f"{flag} {path}"
    if path.suffix.lower() not in suffixes:
        raise FersearchError(f"{where}: write a {' or '.join(suffixes)} file (the suffix picks the format)")
    if path.is_dir():
        raise FersearchError(f"{where} is a folder; name a file inside it, e.g. {path / ('out' + suffixes[0])}")
    real = path.resolve()
    for given in inputs:
        if _same(real, Path(given)):
            raise FersearchError(f"{where} is one of the inputs ({given}): it would be overwritten; name another file")
    ancestor = next((p for p in real.parents if p.exists()), None)
    if ancestor is None or not ancestor.is_dir():
        raise FersearchError(f"{where}: {ancestor} is a file, not a folder; name a file in a folder")
    for folder in (real.parent, *real.parent.parents):
        if (folder / EXPERIMENT_MARKER).is_file():
            raise FersearchError(f"{where} is inside the results folder {folder}, which holds what fersearch wrote "
                                 f"there; name a file outside it")
    _probe(ancestor, where)


def _same(real: Path, given: Path) -> bool:
    try:
        return real == given.resolve() or (real.exists() and given.exists() and os.path.samefile(real, given))
    except OSError:
        return False


def _probe(folder: Path, where: str) -> None:
    """Create and remove a file in the nearest existing folder (os.access says yes to root, even on /proc)."""
    probe = folder / f".fersearch-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
    except OSError as e:
        raise FersearchError(f"{where}: cannot write in {folder} ({e.strerror or type(e).__name__}); "
                             f"name a file in a folder you can write to") from None
    try:
        probe.unlink()
    except OSError:
        pass


def json_text(obj: object) -> str:
    """What `--json` prints: always valid JSON (NaN and infinities as null, which json.dumps would
    write as the bare words NaN / Infinity no JSON parser accepts); other objects as their str."""
    import json
    import math

    def clean(x: object) -> object:
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if getattr(x, "shape", None) == () and callable(getattr(x, "item", None)):
            return clean(x.item())  # type: ignore[attr-defined]  # numpy / torch scalars
        return x

    return json.dumps(clean(obj), indent=2, default=str, allow_nan=False)
