"""The results folder of a search, made safe before Ray starts.

    check_writable(root)                       # --results exists or can be made, takes a file, has space
    with experiment_lock(root, name): ...      # one search per name at a time (results/<name>.lock)
    check_inside(root, exp_dir)                # results/<name> never leads outside --results
    check_ray_state(exp_dir, name)             # --resume: Ray's own saved state is whole

Each check raises ResultsError with one line naming the folder and what to do, so a
mistake costs no Ray start-up. `full_disk_error` turns an ENOSPC met later (a result
file written mid-search) into the same kind of line, with how to resume.

The lock is an OS file lock (filelock) on results/<name>.lock, holding "<pid> <host>" for
the error line; the kernel lets go when its process dies, so a killed search's lock is
taken over by the next one, and a finished search removes the file.
"""

from __future__ import annotations

import errno
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ResultsError
from .workarounds import JSON_STATE_GLOBS, RAY_STATE_GLOBS

PROBE_BYTES = 4096  # one block: enough for a full disk to say so
FULL = (errno.ENOSPC, errno.EDQUOT)


def full_disk_error(e: BaseException, hint: str = "") -> ResultsError | None:
    """A ResultsError for an ENOSPC/EDQUOT anywhere in e's chain (Ray may wrap it), else None."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno in FULL:
            where = f" writing {cur.filename}" if cur.filename else ""
            return ResultsError(f"no space left on the device{where} ({cur.strerror}); free some space"
                                + (f", then {hint}" if hint else ""))
        cur = cur.__cause__ or cur.__context__
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
    """Hold results/<name>.lock for the block; ResultsError naming the holder's pid when another
    live search holds it. An OS lock (filelock): a holder that dies, even by SIGKILL, lets go."""
    from filelock import FileLock, Timeout

    path = lock_path(root, name)
    # thread_local off: a second search in this process (a test, a notebook) is refused as any other
    lock = FileLock(path, timeout=0, thread_local=False, on_acquired=_name_holder)
    try:
        lock.acquire()
    except Timeout:
        pid, _, host = (_read(path) or "").strip().partition(" ")
        raise ResultsError(f"another search named {name!r} is running (pid {pid or '?'} on {host or '?'}, lock "
                           f"{path}); wait for it to end or choose another --name") from None
    except OSError as e:
        raise ResultsError(f"cannot create the lock {path} ({_why(e)}); pass a --results you can write to") from None
    try:
        yield path
    finally:
        # Removed while still held: a search that opened this file meanwhile sees it unlinked and
        # starts over on a new one (filelock checks), so a finished search leaves no lock behind.
        _unlink(path)
        lock.release()


def _name_holder(fd: int) -> None:
    """Write "<pid> <host>" into the lock just taken: what a refused search prints."""
    os.ftruncate(fd, 0)
    _write_all(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


