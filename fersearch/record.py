"""Provenance and safe file writing: every result directory records what made it."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)  # the process umask (reading it means setting it, so restore at once)
os.umask(_UMASK)
_PACKAGES = ("fersearch", "torch", "ray", "optuna", "numpy", "pandas", "scikit-learn", "typer")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def command_line() -> str:
    """The command as the user would retype it."""
    argv = list(sys.argv)
    argv[0] = Path(argv[0]).name if argv else "fersearch"
    if argv[0] in ("__main__.py", "-m"):
        argv[0] = "fersearch"
    return shlex.join(argv)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temp file + rename so readers never see half a file and an
    interrupted write never destroys the previous version."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give results the usual permissions
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def plural(n: int, word: str) -> str:
    """'1 trial', '8 trials': counts in user-facing lines."""
    return f"{n} {word}{'' if n == 1 else 's'}"
