"""The results folder of a search, made safe before Ray starts.

    check_writable(root)                       # --results exists or can be made, takes a file, has space
    with experiment_lock(root, name): ...      # one search per name at a time (results/<name>.lock)
    check_inside(root, exp_dir)                # results/<name> never leads outside --results
    check_ray_state(exp_dir, name)             # --resume: Ray's own saved state is whole

Each check raises ResultsError with one line naming the folder and what to do, so a
mistake costs no Ray start-up. `full_disk_error` turns an ENOSPC met later (a result
file written mid-search) into the same kind of line, with how to resume.

The lock is a file created with O_CREAT | O_EXCL (atomic, also on NFS v3+) holding
"<pid> <host>"; the search removes it when it ends, however it ends short of SIGKILL.
A lock whose process is gone (same host, pid not alive) is stale and taken over.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ResultsError
from .workarounds import JSON_STATE_GLOBS, RAY_STATE_GLOBS
from .workarounds import bridge_checkpoints as bridge_checkpoints  # until driver.py imports it from workarounds

PROBE_BYTES = 4096  # one block: enough for a full disk to say so
FULL = (errno.ENOSPC, errno.EDQUOT)
EMPTY_LOCK_STALE_S = 30.0  # a lock file still empty after this long: its maker died between create and write


def full_disk_error(e: BaseException, hint: str = "") -> ResultsError | None:
    """A ResultsError for an ENOSPC/EDQUOT anywhere in e's chain (Ray may wrap it), else None."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL:
            where = f" writing {e.filename}" if e.filename else ""
            return ResultsError(f"no space left on the device{where} ({e.strerror}); free some space"
                                + (f", then {hint}" if hint else ""))
        e = e.__cause__ or e.__context__
    return None


def check_writable(root: Path) -> None:
    """--results exists (or is created) and takes a file: a probe file written, synced, removed.
    Folders it created for a probe that failed are removed again."""
    created = [p for p in (root, *root.parents) if not p.exists()]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ResultsError(f"--results {root} is a file, not a directory; pass a directory") from None
    except OSError as e:
        if e.errno in FULL:
            raise _full(root, e) from None
        blocker = next((p for p in root.parents if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file" if blocker else _why(e)
        raise ResultsError(f"--results {root} cannot be created ({why}); pass a directory you can write to") from None
    probe = root / f".fersearch-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            _write_all(fd, b"\0" * PROBE_BYTES)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        _unlink(probe)
        for folder in created:  # innermost first
            try:
                folder.rmdir()
            except OSError:
                break
        if e.errno in FULL:
            raise _full(root, e) from None
        raise ResultsError(f"--results {root} is not writable ({_why(e)}); pass a directory you can write to") from None
    finally:
        _unlink(probe)


def _full(root: Path, e: OSError) -> ResultsError:
    return ResultsError(f"--results {root}: no space left on the device ({e.strerror}); free some space "
                        f"or pass another --results")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def check_inside(root: Path, exp_dir: Path) -> None:
    """results/<name>, links resolved, is a folder directly under --results (never elsewhere)."""
    real_root, real = root.resolve(), exp_dir.resolve()
    if real.parent != real_root:
        raise ResultsError(f"{exp_dir} leads outside --results {root} (to {real}); pass --results {real.parent} "
                           f"--name {real.name} to use that folder")


def check_ray_state(exp_dir: Path, name: str) -> None:
    """The newest of each of Ray's saved-state files is whole (JSON that parses, pickles whose
    opcodes run to their STOP, read without running them). Ray writes these in place, not
    atomically: a full disk or a kill while it writes cuts them short, and Ray's restore then
    fails or starts over. fersearch cannot repair Ray's state, so it says so instead."""
    import json
    import pickletools

    for pattern in RAY_STATE_GLOBS:
        newest = max(exp_dir.glob(pattern), key=lambda p: p.name, default=None)
        if newest is None:
            continue
        try:
            data = newest.read_bytes()
            if pattern in JSON_STATE_GLOBS:
                json.loads(data)
            else:
                for _op in pickletools.genops(data):
                    pass
        except (OSError, ValueError):
            raise ResultsError(
                f"--resume: Ray's saved state {newest} is cut short (a full disk or a crash while Ray wrote it), so "
                f"Ray cannot restore {name!r}; its trials.csv, history.csv and study.journal are whole: start a new "
                f"search with another --name") from None


# ---------------------------------------------------------------- one search per name
def lock_path(root: Path, name: str) -> Path:
    return root / f"{name}.lock"


@contextmanager
def experiment_lock(root: Path, name: str) -> Iterator[Path]:
    """Hold results/<name>.lock for the block; ResultsError when another live search holds it."""
    path = lock_path(root, name)
    mine = f"{os.getpid()} {socket.gethostname()}\n"
    _take(path, mine, name)
    try:
        yield path
    finally:
        if _read(path) == mine:
            _unlink(path)


def _take(path: Path, mine: str, name: str) -> None:
    for attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            if attempt < 2 and holder is not None and _stale(path, holder):
                _break(path, holder)
                continue  # taken over (or someone else was quicker: O_EXCL decides again)
            if holder is None:
                continue  # removed in between: try again
            pid, _, host = holder.strip().partition(" ")
            raise ResultsError(f"another search named {name!r} is running (pid {pid or '?'} on {host or '?'}, lock "
                               f"{path}); wait for it to end or choose another --name (if no search runs, delete "
                               f"the lock file)") from None
        except OSError as e:
            raise ResultsError(f"cannot create the lock {path} ({_why(e)}); pass a --results you can write to") from None
        try:
            _write_all(fd, mine.encode())
        finally:
            os.close(fd)
        return
    raise ResultsError(f"could not take the lock {path}: other searches named {name!r} keep starting; try again")


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _stale(path: Path, holder: str) -> bool:
    """The lock's process is gone: same host and no such pid (or empty for long: died mid-create)."""
    if not holder:
        try:
            return time.time() - path.stat().st_mtime > EMPTY_LOCK_STALE_S
        except OSError:
            return False
    pid, _, host = holder.strip().partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's search (shared storage): cannot tell, so it holds
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def _break(path: Path, holder: str) -> None:
    """Remove a stale lock. Renamed aside first, so of two searches breaking it at once only one
    removes it; a live lock renamed by mistake (taken over in between) is put back."""
    aside = path.with_name(f".{path.name}.stale-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except OSError:
        return
    if _read(aside) != holder:
        try:
            os.link(aside, path)
        except OSError:
            pass
    _unlink(aside)
