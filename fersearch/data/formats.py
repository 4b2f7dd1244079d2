"""Which FER2013 format a path holds, decided by content: CSV columns and folder layout.

`detect(path)` gives a `Source`: the format name and every file its content
depends on (hashed and stat'ed for the cache). Readers (readers.py) turn a
Source into a `Parsed`. User mistakes are one `DataError` line naming the file.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import file_sha256

FER_COLUMNS = ("emotion", "pixels", "usage")  # compared lower-cased and stripped
FOLDER_SPLITS = {"train": 0, "training": 0, "val": 1, "validation": 1, "test": 2}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
FORMATS_HELP = ("expected fer2013.csv, icml_face_data.csv, train.csv (+ test.csv), fer2013new.csv beside "
                "fer2013.csv, or train/<emotion>/ image folders; see data/README.md")


@dataclass
class Source:
    """What a path holds: its format and every file its content depends on."""

    format: str  # fer2013 | icml_face_data | kaggle-challenge | ferplus | image-folders
    path: Path  # what the user gave (file or folder)
    main: Path  # the labelled CSV, or the folder root
    extra: Path | None = None  # Kaggle test.csv, or FER+ fer2013new.csv
    files: list[Path] = field(default_factory=list)  # hashed and stat'ed for the cache

    @property
    def cache_path(self) -> Path:
        if self.format == "image-folders":
            return self.main / ".fercache.npz"
        return self.main.with_name(self.main.name + (".ferplus" if self.format == "ferplus" else "") + ".fercache.npz")


@dataclass
class Parsed:
    """What a reader gives: arrays of equal length, plus notes on what it did."""

    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 (N,), -1 = no label
    usage: np.ndarray  # int8 (N,): 0 Training, 1 PublicTest, 2 PrivateTest (as the source says)
    notes: list[str] = field(default_factory=list)


# ---- detection ------------------------------------------------------------------------------------------------


def csv_header(path: Path) -> list[str]:
    """Raw column names of a CSV file (BOM-tolerant). Empty or non-text files are DataErrors."""
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 16)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    if not first.strip():
        raise DataError(f"{path}: file is empty; re-download it ({FORMATS_HELP})")
    try:
        text = first.decode("utf-8-sig")
        if "\0" in text:
            raise UnicodeDecodeError("utf-8", first, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (binary content); {FORMATS_HELP}") from None
    return next(csv.reader([text]))


def _kind(columns: Sequence[str]) -> str | None:
    cols = {c.strip().lower() for c in columns}
    if set(FER_COLUMNS) <= cols:
        return "full"
    if {"usage", "image name"} <= cols:
        return "votes"
    if {"emotion", "pixels"} <= cols:
        return "kaggle-train"
    if cols == {"pixels"}:
        return "kaggle-test"
    return None


def missing_columns_error(path: Path, columns: Sequence[str]) -> DataError:
    """The error for a CSV without the FER2013 columns: which are missing and what the header says."""
    cols = {c.strip().lower() for c in columns}
    names = {"emotion": "emotion", "pixels": "pixels", "usage": "Usage"}
    missing = [names[c] for c in FER_COLUMNS if c not in cols]
    found = ",".join(columns).encode("ascii", "backslashreplace").decode()
    found = found if len(found) <= 60 else found[:57] + "..."
    return DataError(f"{path}: missing column(s) {', '.join(missing)} (header row is '{found}'); "
                     f"a FER2013 CSV starts with the header emotion,pixels,Usage")


def detect(path: Path) -> Source:
    """Which FER2013 format `path` (a file or a folder) holds, decided by columns and folder layout."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass a FER2013 file or folder with --data ({FORMATS_HELP})")
    if path.is_dir():
        return _detect_dir(path)
    columns = csv_header(path)
    kind = _kind(columns)
    if kind == "full":
        return _full_source(path, columns, path)
    if kind == "votes":
        full = [p for p in _sibling_csvs(path) if _kind(csv_header(p)) == "full"]
        if not full:
            raise DataError(f"{path}: FER+ votes need the fer2013.csv they belong to in the same folder; "
                            f"put fer2013.csv beside it")
        return _ferplus_source(path, _pick_one(full, path.parent), path)
    if kind == "kaggle-train":
        test = [p for p in _sibling_csvs(path) if _kind(csv_header(p)) == "kaggle-test"]
        return _kaggle_source(path, test[0] if len(test) == 1 else None, path)
    if kind == "kaggle-test":
        raise DataError(f"{path}: only a 'pixels' column (the Kaggle test.csv: no labels, so no training rows); "
                        f"pass train.csv or the folder holding train.csv and test.csv")
    raise missing_columns_error(path, columns)


def _sibling_csvs(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.glob("*.csv") if p != path and p.is_file())


def _pick_one(candidates: list[Path], folder: Path) -> Path:
    if len(candidates) == 1:
        return candidates[0]
    named = [p for p in candidates if p.name == "fer2013.csv"]
    if named:
        return named[0]
    names = ", ".join(p.name for p in candidates)
    raise DataError(f"{folder}: several FER2013 CSVs ({names}); pass the one to use with --data")


def _full_source(csv_path: Path, columns: Sequence[str], given: Path) -> Source:
    # icml_face_data.csv is fer2013.csv with ' Usage' / ' pixels' headers: same rows, told apart by the spaces.
    fmt = "icml_face_data" if any(c != c.strip() for c in columns) else "fer2013"
    return Source(fmt, given, csv_path, files=[csv_path])


def _ferplus_source(votes: Path, full: Path, given: Path) -> Source:
    return Source("ferplus", given, full, votes, files=[full, votes])


def _kaggle_source(train: Path, test: Path | None, given: Path) -> Source:
    return Source("kaggle-challenge", given, train, test, files=[train] + ([test] if test else []))


def _detect_dir(folder: Path) -> Source:
    kinds: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.csv")):
        try:
            kinds.setdefault(_kind(csv_header(p)) or "other", []).append(p)
        except DataError:
            kinds.setdefault("unreadable", []).append(p)
    if "full" in kinds:
        full = _pick_one(kinds["full"], folder)
        if "votes" in kinds:
            return _ferplus_source(_pick_one(kinds["votes"], folder), full, folder)
        return _full_source(full, csv_header(full), folder)
    if "kaggle-train" in kinds:
        test = kinds.get("kaggle-test", [])
        return _kaggle_source(_pick_one(kinds["kaggle-train"], folder), test[0] if len(test) == 1 else None, folder)
    split_dirs = [d for d in folder.iterdir() if d.is_dir() and d.name.lower() in FOLDER_SPLITS]
    if any(FOLDER_SPLITS[d.name.lower()] == 0 for d in split_dirs):
        files = sorted(f for d in split_dirs for f in d.rglob("*") if f.is_file() and not _hidden(f, folder))
        return Source("image-folders", folder, folder, files=files)
    if "kaggle-test" in kinds:
        raise DataError(f"{folder}: only test.csv (no labels, so no training rows); add train.csv beside it")
    if "votes" in kinds:
        raise DataError(f"{folder}: FER+ votes without the fer2013.csv they belong to; put fer2013.csv beside them")
    raise DataError(f"{folder}: no FER2013 data found; {FORMATS_HELP}")


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


# ---- hashing ----------------------------------------------------------------------------------------------------


def source_sha256(src: Source) -> str:
    """The file's own sha256 for one CSV (comparable with `sha256sum`); a combined hash otherwise."""
    if len(src.files) == 1:
        return file_sha256(src.files[0])
    h = hashlib.sha256()
    for f in src.files:
        h.update(f.relative_to(src.main.parent if src.format != "image-folders" else src.main).as_posix().encode())
        h.update(b"\0" + bytes.fromhex(file_sha256(f)))
    return h.hexdigest()


def stat_key(src: Source) -> list:
    """Cheap change detector for the cache: size, mtime and ctime (ns) of every file."""
    out = []
    for f in src.files:
        st = f.stat()
        out.append([f.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return out
