"""Reading a source through its cache: `<file>.fercache.npz` beside the data, so a second load skips parsing.

The cache is keyed by the source's content hash. A (size, mtime, ctime) stamp of
every source file lets a second load skip even the hashing (hashing 300 MB takes
about a second); if the stamp differs, the files are hashed and the cache is used
only if the hash still matches. A damaged cache is ignored and one that cannot be
written is logged: neither is ever fatal.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..io import atomic_write
from . import readers
from .formats import Parsed, Source, source_sha256, stat_key
from .progress import load_progress
from .schema import SIZE, Log

CACHE_VERSION = 1


def read_cached(src: Source, resize: bool, use_cache: bool, log: Log, show_progress: bool = False
                ) -> tuple[Parsed, str]:
    """(Parsed, content sha256) of `src`: from its cache when valid, else parsed (and cached)."""
    stamp = stat_key(src)
    path = src.cache_path
    if use_cache:
        hit = _load_cache(path, src.format, resize, log, stamp=stamp)
        if hit:
            return hit
    # hashing releases the GIL, as does pyarrow's parser: hash in a thread while parsing
    with ThreadPoolExecutor(1) as pool:
        hashing = pool.submit(source_sha256, src)
        if use_cache and path.is_file():
            hit = _load_cache(path, src.format, resize, log, sha=hashing.result())
            if hit:
                _save_cache(path, hit[0], _meta(src, hit[1], stamp, resize), log)  # refresh the stamp
                return hit
        size = sum(f.stat().st_size for f in src.files)
        log(f"reading {src.path} ({src.format}, {size / 1e6:.0f} MB) ...")
        t0 = time.perf_counter()
        with load_progress(show_progress) as tick:
            parsed = readers.read(src, resize, tick)
        log(f"read {len(parsed.labels)} images in {time.perf_counter() - t0:.1f} s")
        sha = hashing.result()
    if use_cache:
        _save_cache(path, parsed, _meta(src, sha, stamp, resize), log)
    return parsed, sha


def _meta(src: Source, sha: str, stamp: list, resize: bool) -> dict:
    return {"version": CACHE_VERSION, "format": src.format, "sha256": sha, "stamp": stamp, "resize": resize}


def _load_cache(path: Path, fmt: str, resize: bool, log: Log, *, stamp=None, sha=None) -> tuple[Parsed, str] | None:
    """(Parsed, sha) from a valid cache, else None. A damaged cache is ignored, never fatal."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["meta"]))  # the cache's own header (version, source stamp, hash)
            if (header.get("version"), header.get("format"), header.get("resize")) != (CACHE_VERSION, fmt, resize):
                return None
            if ((stamp is not None and header.get("stamp") != stamp)
                    or (sha is not None and header.get("sha256") != sha)):
                return None
            parsed = Parsed(z["images"], z["labels"], z["usage"], list(header.get("notes", [])))
        n = len(parsed.labels)
        if parsed.images.shape != (n, SIZE, SIZE) or parsed.images.dtype != np.uint8 or len(parsed.usage) != n:
            raise ValueError("arrays have inconsistent shapes")
        return parsed, header["sha256"]
    except Exception as e:  # any damage (truncated zip, bad JSON, missing key) just means: parse again
        log(f"ignoring unreadable cache {path} ({type(e).__name__}); reading the source again")
        return None


def _save_cache(path: Path, parsed: Parsed, meta: dict, log: Log) -> None:
    meta = dict(meta, notes=parsed.notes)
    arrays: dict[str, Any] = {"images": parsed.images, "labels": parsed.labels, "usage": parsed.usage,
              "meta": np.array(json.dumps(meta))}
    try:
        atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:  # a read-only data folder is fine: the data still loads, just not faster next time
        log(f"cannot write the cache {path} ({e.strerror}); the next load will read the source again")
