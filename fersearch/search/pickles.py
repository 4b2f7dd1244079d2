"""Ray's pickles in a results folder, signed when written and checked before `--resume` reads them.

`Tuner.restore` unpickles tuner.pkl, and Ray's searcher, callback, search-generator and
trial states are pickles too (experiment_state-*.json carries cloudpickled trial fields).
Results folders live on shared storage, so anyone who can write there could run code
on the next `--resume`. fersearch therefore records an HMAC-SHA256 of each such file,
keyed by a per-user secret outside the results folder, in `pickles.hmac` beside them:

    sign(exp_dir, staging)   # at each Ray save (signer.PickleSigner) and when the driver returns
    verify(exp_dir, name)    # --resume: every pickle Ray may read is one this user's fersearch wrote

A file changed, added or not recorded is refused in one line naming it; nothing is read
as a pickle before that. The secret is `$XDG_CONFIG_HOME/fersearch/secret` (default
~/.config/fersearch/secret), 32 random bytes made on first use with mode 0600.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from ..errors import ResultsError
from ..io import atomic_write_text

MANIFEST = "pickles.hmac"
KEY_BYTES = 32
KEEP = 3  # digests kept per file: Ray copies its saves into the folder in a thread, so a crash may leave one older
# Files Ray unpickles (or whose JSON holds cloudpickled fields) on restore, by name; plus every *.pkl anywhere.
TOP_LEVEL_STATE = ("tuner.pkl", "experiment_state-*.json", "search_gen_state-*.json")


def secret_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fersearch" / "secret"


def secret() -> bytes:
    """This user's signing key: read, or made (0600, in a 0700 folder) on first use."""
    path = secret_path()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(KEY_BYTES))
                f.flush()
                os.fsync(f.fileno())
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            key = f.read(KEY_BYTES + 1)
    except OSError as e:
        raise ResultsError(f"cannot read or create fersearch's signing key {path} ({e.strerror or e}); "
                           f"set XDG_CONFIG_HOME to a folder of yours") from None
    if st.st_uid != os.getuid() or st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ResultsError(f"fersearch's signing key {path} is readable or owned by someone else; "
                           f"`chmod 600 {path}` (or delete it: searches signed with it then cannot resume)")
    if len(key) != KEY_BYTES:
        raise ResultsError(f"fersearch's signing key {path} is damaged ({len(key)} bytes, not {KEY_BYTES}); "
                           f"delete it (searches signed with it then cannot resume)")
    return key


def digest(key: bytes, relpath: str, data: bytes) -> str:
    """HMAC over the file's place in the folder and its bytes: a file signed under one name fails under another."""
    return hmac.new(key, relpath.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def pickle_files(folder: Path) -> list[str]:
    """Relative paths (posix) of every file in `folder` that Ray may unpickle on restore."""
    found: set[str] = set()
    for pattern in TOP_LEVEL_STATE:
        found.update(p.name for p in folder.glob(pattern) if not p.is_dir())
    found.update(p.relative_to(folder).as_posix() for p in folder.rglob("*.pkl") if not p.is_dir())
    return sorted(found)


def read_manifest(exp_dir: Path) -> dict[str, list[str]]:
    """The recorded digests (a missing or damaged manifest records nothing: every pickle is then refused)."""
    try:
        data = json.loads((exp_dir / MANIFEST).read_text())
        files = data["files"]
        return {str(k): [str(d) for d in v] for k, v in files.items() if isinstance(v, list)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _write_manifest(exp_dir: Path, files: dict[str, list[str]]) -> None:
    text = json.dumps({"algorithm": "hmac-sha256", "key": "per-user secret (see fersearch.search.pickles)",
                       "files": dict(sorted(files.items()))}, indent=1)
    atomic_write_text(exp_dir / MANIFEST, text + "\n")


def sign(exp_dir: Path, sources: Iterable[Path] = (), names: Iterable[str] | None = None) -> None:
    """Record the digests of the pickles in `sources` (folders this process wrote: Ray's driver staging
    folder), or, with none, of those now in `exp_dir` itself (`names` only, when given: the files this
    process has just written there). A file's earlier digests are kept (KEEP), entries of files gone
    from `exp_dir` and the sources dropped."""
    key = secret()
    files = read_manifest(exp_dir)
    sources = [Path(s) for s in sources]
    for folder in sources or [exp_dir]:
        if not folder.is_dir():
            continue
        wanted = pickle_files(folder)
        if names is not None and not sources:
            wanted = [rel for rel in wanted if rel in set(names)]
        for rel in wanted:
            try:
                data = (folder / rel).read_bytes()
            except OSError:
                continue  # removed meanwhile (Ray prunes): nothing to sign
            d = digest(key, rel, data)
            kept = [x for x in files.get(rel, []) if x != d]
            files[rel] = [d, *kept][:KEEP]
    present = set(pickle_files(exp_dir)) if exp_dir.is_dir() else set()
    files = {k: v for k, v in files.items() if k in present or any((s / k).exists() for s in sources)}
    if exp_dir.is_dir():
        _write_manifest(exp_dir, files)


def verify(exp_dir: Path, name: str) -> None:
    """Every pickle Ray may read in `exp_dir` is one this user's fersearch signed; ResultsError naming
    the first that is not. Reads bytes only: nothing is unpickled here."""
    files = read_manifest(exp_dir)
    key = secret() if files else b""
    how = (f"start a new search with another --name (its trials.csv, history.csv and study.journal are plain "
           f"data), or delete {exp_dir} if you trust nothing in it")
    for rel in pickle_files(exp_dir):
        path = exp_dir / rel
        recorded = files.get(rel)
        if not recorded:
            raise ResultsError(f"--resume {name}: {path} was not written by your fersearch (no signature in "
                               f"{MANIFEST}); Ray would run code from it, so it is not read: {how}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ResultsError(f"--resume {name}: cannot read {path} ({e.strerror}); {how}") from None
        if not any(hmac.compare_digest(digest(key, rel, data), d) for d in recorded):
            raise ResultsError(f"--resume {name}: {path} changed since your fersearch wrote it (its signature in "
                               f"{MANIFEST} does not match, or your key {secret_path()} is another); Ray would run "
                               f"code from it, so it is not read: {how}")
