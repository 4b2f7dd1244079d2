"""Files and provenance: the one atomic writer, JSON, hashes, versions, the command line.

Every result file goes through `atomic_write` (temp file beside the target, synced,
then renamed over it), so a reader never sees half a file and a crash mid-write, a
full disk or a power cut never destroys the previous version. Files that only grow
(history.csv, the Optuna journal) are appended a line at a time; `cut_torn_tail`
removes a torn last line before more is appended. Every result directory records what made it (`versions`,
`command_line`, `file_sha256`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import IO, Any

_UMASK = os.umask(0)  # the process umask (reading it means setting it, so restore at once)
os.umask(_UMASK)
_PACKAGES = ("fersearch", "torch", "ray", "optuna", "numpy", "pandas", "scikit-learn", "typer")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp path beside `path` to write to; renamed over `path` when the block ends
    without error, removed otherwise. For writers that want a file name (torch.save,
    savefig, np.savez)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give results the usual permissions
        _fsync(tmp)  # the data on disk before the name: a power cut cannot leave an empty file behind it
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync(path: str | os.PathLike, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        if directory:  # some filesystems cannot open a directory for syncing; the rename still holds
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def cut_torn_tail(path: str | os.PathLike) -> None:
    """Cut a torn last line (a crash or full disk in the middle of an append) from a file that is
    appended a line at a time, so the next append starts a line of its own. No file: nothing."""
    try:
        with open(path, "rb+") as f:
            data = f.read()
            if data and not data.endswith(b"\n"):
                f.truncate(data.rfind(b"\n") + 1)  # no newline at all: even the first line is torn
    except FileNotFoundError:
        pass


def atomic_write(path: str | os.PathLike, content: str | bytes | Callable[[IO], Any]) -> Path:
    """Write text, bytes, or whatever `content(file)` writes, atomically. Returns the path."""
    with atomic_path(path) as tmp:
        if callable(content):
            with open(tmp, "wb") as f:
                content(f)
        elif isinstance(content, bytes):
            tmp.write_bytes(content)
        else:
            with open(tmp, "w", newline="") as f:
                f.write(content)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, text)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


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


def timestamp() -> str:
    """Now, as fersearch.json records times: local ISO 8601 with offset, to the second."""
    from datetime import datetime

    return datetime.now().astimezone().isoformat(timespec="seconds")


def parse_timestamp(text: object) -> float | None:
    """A recorded time as seconds since the epoch, None if it is none. Reads timestamp()'s format and
    the older ones folders may hold ("+0000" offsets, no offset: local time)."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(text)).timestamp()
    except (TypeError, ValueError):
        return None


def command_line() -> str:
    """The command as the user would retype it."""
    argv = list(sys.argv)
    argv[0] = Path(argv[0]).name if argv else "fersearch"
    if argv[0] in ("__main__.py", "-m"):
        argv[0] = "fersearch"
    return shlex.join(argv)
