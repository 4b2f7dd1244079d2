"""FER2013 on-disk formats: detect which one a path holds (by content) and read it.

Each reader returns a `Parsed` (images, labels, source usage codes, notes);
`fersearch.data.load` adds the cache and the train/val/test split on top.
Every user mistake becomes one `DataError` line naming the file, the row
(spreadsheet numbering: the header is row 1, the first image row 2), the
column, what is wrong and what to do.

CSV pixels are parsed with pyarrow compute kernels in chunks (split on
whitespace, cast to int32) - no per-row Python loop over pixel strings.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .loader import LABELS, N_PIXELS, SIZE, USAGES
from ..errors import DataError
from ..io import file_sha256

FER_COLUMNS = ("emotion", "pixels", "usage")  # compared lower-cased and stripped
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "nf")
FERPLUS_TO_LABEL = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5, "neutral": 6}
# Folder names -> label. Mapped by name, never by sorted index (sorted order puts neutral before sad).
FOLDER_LABELS = {"angry": 0, "anger": 0, "disgust": 1, "disgusted": 1, "fear": 2, "fearful": 2, "happy": 3,
                 "happiness": 3, "sad": 4, "sadness": 4, "surprise": 5, "surprised": 5, "neutral": 6}
FOLDER_SPLITS = {"train": 0, "training": 0, "val": 1, "validation": 1, "test": 2}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
_LABEL_HELP = ", ".join(f"{i} {name}" for i, name in enumerate(LABELS))
_FORMATS_HELP = ("expected fer2013.csv, icml_face_data.csv, train.csv (+ test.csv), fer2013new.csv beside "
                 "fer2013.csv, or train/<emotion>/ image folders; see data/README.md")
_PARSE_CHUNK = 4096  # rows per pyarrow batch: bounded memory, still vectorised


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
        raise DataError(f"{path}: file is empty; re-download it ({_FORMATS_HELP})")
    try:
        text = first.decode("utf-8-sig")
        if "\0" in text:
            raise UnicodeDecodeError("utf-8", first, 0, 1, "NUL byte")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not a text CSV file (binary content); {_FORMATS_HELP}") from None
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


def _missing_columns_error(path: Path, columns: Sequence[str]) -> DataError:
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
        raise DataError(f"{path}: no such file or folder; pass a FER2013 file or folder with --data ({_FORMATS_HELP})")
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
    raise _missing_columns_error(path, columns)


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
    raise DataError(f"{folder}: no FER2013 data found; {_FORMATS_HELP}")


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


# ---- CSV readers ---------------------------------------------------------------------------------------------


def _where(path: Path, column: str | None = None) -> Callable[[int], str]:
    col = f", column '{column}'" if column else ""
    return lambda i: f"{path} row {i + 2} (header = row 1){col}"


def _read_table(path: Path, columns: Sequence[str]):
    """The named columns as pyarrow string columns (C++ CSV reader, multi-threaded)."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                                 include_columns=list(columns), strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError) as e:
        raise _csv_structure_error(path, e) from None


def _csv_structure_error(path: Path, err: Exception) -> DataError:
    """Find the first malformed row with the (slow, exact) csv module: only on this error path."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f)
        width = len(next(reader, []))
        for i, row in enumerate(reader):
            if len(row) != width:
                return DataError(f"{path} row {i + 2} (header = row 1): {len(row)} fields, the header has {width}; "
                                 f"fix or delete that row")
    first = str(err).strip().splitlines()[0][:160]
    return DataError(f"{path}: not a readable CSV ({first}); check it is a FER2013 CSV")


def _column(table, columns: Sequence[str], name: str) -> tuple[str, object]:
    """(raw name, pyarrow column) of a column named `name` after stripping/lower-casing."""
    raw = next(c for c in columns if c.strip().lower() == name)
    return raw, table.column(raw)


def parse_pixels(col, where: Callable[[int], str]) -> np.ndarray:
    """Space-separated 0-255 strings -> uint8 (N, 48, 48), in vectorised chunks."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    out = np.empty((n, N_PIXELS), np.uint8)
    for start in range(0, n, _PARSE_CHUNK):
        part = col.slice(start, _PARSE_CHUNK)
        tokens = pc.ascii_split_whitespace(part)
        counts = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(counts != N_PIXELS)
        if wrong.size:
            k = int(wrong[0])
            raise DataError(f"{where(start + k)}: {counts[k]} pixel values, expected {N_PIXELS} (48x48); "
                            f"fix or delete that row")
        try:
            values = pc.cast(pc.list_flatten(tokens), pa.int32()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _bad_pixel_token(part.to_pylist(), start, where) from None
        bad = np.flatnonzero((values < 0) | (values > 255))
        if bad.size:
            k = int(bad[0])
            raise DataError(f"{where(start + k // N_PIXELS)}: pixel {k % N_PIXELS + 1} is {values[k]}, outside 0-255; "
                            f"fix or delete that row")
        out[start:start + len(part)] = values.reshape(-1, N_PIXELS)
    return out.reshape(n, SIZE, SIZE)


def _bad_pixel_token(rows: list[str], start: int, where: Callable[[int], str]) -> DataError:
    for i, row in enumerate(rows):
        for j, tok in enumerate(row.split()):
            if not (tok.isascii() and tok.isdigit()):
                if re.fullmatch(r"[-+]?\d+", tok):
                    return DataError(f"{where(start + i)}: pixel {j + 1} is {tok}, outside 0-255; fix or delete that row")
                return DataError(f"{where(start + i)}: pixel {j + 1} is {tok[:20]!r}, not a whole number 0-255; "
                                 f"fix or delete that row")
    return DataError(f"{where(start)}: unreadable pixel values; fix or delete that row")


def _parse_codes(col, allowed: Sequence[str], where: Callable[[int], str], what: str, expected: str) -> np.ndarray:
    """Index of each (whitespace-trimmed) value in `allowed`; the first value not in it is a DataError."""
    import pyarrow as pa
    import pyarrow.compute as pc

    idx = pc.index_in(pc.utf8_trim_whitespace(col), value_set=pa.array(list(allowed)))
    codes = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(codes < 0)
    if bad.size:
        k = int(bad[0])
        value = col[k].as_py()
        raise DataError(f"{where(k)}: {what} is {value[:20]!r}, expected {expected}; fix or delete that row")
    return codes


def parse_labels(col, where) -> np.ndarray:
    return _parse_codes(col, [str(i) for i in range(len(LABELS))], where, "emotion",
                        f"0-6 ({_LABEL_HELP})").astype(np.int64)


def parse_usage(col, where) -> np.ndarray:
    return _parse_codes(col, USAGES, where, "Usage", "Training, PublicTest or PrivateTest").astype(np.int8)


def read_fer_csv(path: Path, *, need_usage: bool = True, need_labels: bool = True) -> Parsed:
    """fer2013.csv / icml_face_data.csv (emotion, pixels, Usage) or Kaggle train.csv / test.csv."""
    columns = csv_header(path)
    wanted = ["pixels"] + (["emotion"] if need_labels else []) + (["usage"] if need_usage else [])
    raw = {c.strip().lower(): c for c in columns}
    if any(w not in raw for w in wanted):
        raise _missing_columns_error(path, columns)
    table = _read_table(path, [raw[w] for w in wanted])
    if table.num_rows == 0:
        raise DataError(f"{path}: header only, no image rows; re-download the file")
    col_name, pixels_col = _column(table, columns, "pixels")
    images = parse_pixels(pixels_col, _where(path, col_name))
    labels = np.full(len(images), -1, np.int64)
    if need_labels:
        col_name, col = _column(table, columns, "emotion")
        labels = parse_labels(col, _where(path, col_name))
    usage = np.zeros(len(images), np.int8)
    if need_usage:
        col_name, col = _column(table, columns, "usage")
        usage = parse_usage(col, _where(path, col_name))
    return Parsed(images, labels, usage)


def read_kaggle(train: Path, test: Path | None) -> Parsed:
    """Kaggle challenge train.csv (emotion, pixels) + test.csv (pixels only: labels -1, split test)."""
    parsed = read_fer_csv(train, need_usage=False)
    if test is None:
        parsed.notes.append(f"no test.csv beside {train.name}: no test split")
        return parsed
    t = read_fer_csv(test, need_usage=False, need_labels=False)
    parsed.notes.append(f"test split: {len(t.images)} images from {test.name}, which has no labels (label -1)")
    return Parsed(np.concatenate([parsed.images, t.images]), np.concatenate([parsed.labels, t.labels]),
                  np.concatenate([parsed.usage, np.full(len(t.images), 2, np.int8)]), parsed.notes)


# ---- FER+ ------------------------------------------------------------------------------------------------------


def ferplus_labels(votes: np.ndarray, names: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Majority-vote FER label per row (-1 = skipped) and how many rows were skipped, by reason.

    A label needs a strict majority (more than half of that row's votes, as FER+'s own
    'majority' mode). Rows with no image name (FER+: not a face), no majority, or a
    majority for contempt / unknown / NF (no FER2013 class) are skipped."""
    total = votes.sum(axis=1)
    top = votes.argmax(axis=1)
    majority = votes.max(axis=1) * 2 > total
    to_fer = np.array([FERPLUS_TO_LABEL.get(c, -1) for c in FERPLUS_VOTES])
    labels = np.where(majority, to_fer[top], -1)
    has_name = names != ""
    labels[~has_name] = -1
    skipped = {"no image name": int((~has_name).sum()),
               "no majority": int((has_name & ~majority).sum())}
    for c in ("contempt", "unknown", "nf"):
        skipped[f"majority {c if c != 'nf' else 'NF'}"] = int((has_name & majority & (top == FERPLUS_VOTES.index(c))).sum())
    return labels.astype(np.int64), skipped


def read_ferplus(full: Path, votes_path: Path) -> Parsed:
    """fer2013.csv images and Usage with FER+ majority-vote labels from the row-aligned fer2013new.csv."""
    import pandas as pd

    base = read_fer_csv(full)
    try:
        df = pd.read_csv(votes_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise _csv_structure_error(votes_path, e) from None
    df.columns = [c.strip().lower() for c in df.columns]
    missing = [c for c in FERPLUS_VOTES if c not in df.columns]
    if missing:
        raise DataError(f"{votes_path}: missing FER+ vote column(s) {', '.join(missing)}; "
                        f"expected Usage,Image name,{','.join(FERPLUS_VOTES[:-1])},NF")
    if len(df) != len(base.images):
        raise DataError(f"{votes_path}: {len(df)} rows but {full.name} has {len(base.images)}; fer2013new.csv must be "
                        f"row-aligned with the fer2013.csv it came with")
    where = _where(votes_path)
    usage = df["usage"].str.strip().map({u: i for i, u in enumerate(USAGES)}).fillna(-1).to_numpy()
    mismatch = np.flatnonzero(usage != base.usage)
    if mismatch.size:
        k = int(mismatch[0])
        raise DataError(f"{where(k)}, column 'Usage': {df['usage'].iloc[k]!r} but {full.name} says "
                        f"{USAGES[base.usage[k]]}; the two files are not row-aligned")
    votes = np.empty((len(df), len(FERPLUS_VOTES)), np.int64)
    for j, c in enumerate(FERPLUS_VOTES):
        v = pd.to_numeric(df[c].str.strip(), errors="coerce").to_numpy()
        bad = np.flatnonzero(np.isnan(v) | (v < 0) | (v != np.round(v)))
        if bad.size:
            k = int(bad[0])
            raise DataError(f"{where(k)}, column '{c if c != 'nf' else 'NF'}': vote count is {df[c].iloc[k]!r}, "
                            f"expected a whole number >= 0; fix that row")
        votes[:, j] = v
    labels, skipped = ferplus_labels(votes, df["image name"].str.strip().to_numpy())
    keep = labels >= 0
    detail = ", ".join(f"{n} {reason}" for reason, n in skipped.items() if n)
    note = (f"FER+ labels (strict majority of the annotators' votes in {votes_path.name}): kept {int(keep.sum())} "
            f"of {len(keep)} rows, skipped {int((~keep).sum())}" + (f" ({detail})" if detail else ""))
    return Parsed(base.images[keep], labels[keep], base.usage[keep], [note])


# ---- image folders ---------------------------------------------------------------------------------------------


def read_folders(src: Source, resize: bool) -> Parsed:
    """train/<emotion>/*.png|jpg (and test/, val/): grayscale 48x48, emotion from the folder name."""
    from PIL import Image, UnidentifiedImageError

    images, labels, usage, ignored, resized, converted = [], [], [], 0, 0, 0
    for f in src.files:
        rel = f.relative_to(src.main)
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            ignored += 1
            continue
        if len(rel.parts) != 3:
            raise DataError(f"{f}: images must sit in <split>/<emotion>/ (e.g. train/happy/x.png); move it")
        split_dir, emotion_dir = rel.parts[0], rel.parts[1]
        label = FOLDER_LABELS.get(emotion_dir.lower())
        if label is None:
            raise DataError(f"{f.parent}: folder name '{emotion_dir}' is not an emotion; expected one of "
                            f"angry, disgust, fear, happy, sad, surprise, neutral (rename or remove it)")
        try:
            with Image.open(f) as im:
                im.load()
                converted += im.mode != "L"
                gray = im.convert("L")
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"{f}: cannot read image ({str(e).splitlines()[0][:80]}); delete or replace it") from None
        if gray.size != (SIZE, SIZE):
            if not resize:
                raise DataError(f"{f}: image is {gray.size[0]}x{gray.size[1]}, fersearch needs 48x48; "
                                f"pass --resize to scale every image to 48x48")
            gray = gray.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
            resized += 1
        images.append(np.asarray(gray, np.uint8))
        labels.append(label)
        usage.append(FOLDER_SPLITS[split_dir.lower()])
    if not images:
        raise DataError(f"{src.main}: no .png/.jpg images under train/<emotion>/; {_FORMATS_HELP}")
    notes = []
    if ignored:
        notes.append(f"ignored {ignored} non-image file(s) under {src.main}")
    if resized:
        notes.append(f"resized {resized} image(s) to 48x48 (--resize)")
    if converted:
        notes.append(f"converted {converted} non-grayscale image(s) to 8-bit grayscale")
    return Parsed(np.stack(images), np.array(labels, np.int64), np.array(usage, np.int8), notes)


def read(src: Source, resize: bool = False) -> Parsed:
    """Read and validate the source; a source without training rows is an error (and never cached)."""
    if src.format in ("fer2013", "icml_face_data"):
        parsed = read_fer_csv(src.main)
    elif src.format == "kaggle-challenge":
        parsed = read_kaggle(src.main, src.extra)
    elif src.format == "ferplus":
        parsed = read_ferplus(src.main, src.extra)
    else:
        parsed = read_folders(src, resize)
    if not (parsed.usage == 0).any():
        where = "under train/" if src.format == "image-folders" else "(Usage 'Training')"
        raise DataError(f"{src.path}: no training rows {where}; fersearch needs labelled training images")
    return parsed


# ---- writing ---------------------------------------------------------------------------------------------------


def _token_table() -> np.ndarray:
    """ASCII of 'v ' for v in 0..255, zero-padded to 4 bytes: formatting by table lookup."""
    table = np.zeros((256, 4), np.uint8)
    for v in range(256):
        b = f"{v} ".encode()
        table[v, : len(b)] = np.frombuffer(b, np.uint8)
    return table


def format_pixels(images: np.ndarray) -> list[str]:
    """uint8 (N, 48, 48) -> FER2013 pixel strings ('70 80 82 ...'), vectorised per chunk of rows."""
    table = _token_table()
    flat = np.asarray(images, np.uint8).reshape(len(images), -1)
    rows: list[str] = []
    for s in range(0, len(flat), _PARSE_CHUNK):
        tok = table[flat[s:s + _PARSE_CHUNK]]  # (B, 2304, 4) bytes
        last = tok[:, -1]
        last[last == ord(" ")] = 0  # no trailing space after the last pixel
        keep = tok != 0
        ends = np.cumsum(keep.reshape(len(tok), -1).sum(axis=1))
        blob = tok[keep].tobytes().decode("ascii")
        rows += [blob[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]
    return rows


def write_fer2013_csv(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, usage: Sequence[str]) -> Path:
    """Write images in fer2013.csv format (atomically: a crash never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a data file should be readable like any other
        with io.open(fd, "w", newline="\n") as f:
            f.write("emotion,pixels,Usage\n")
            f.writelines(f"{int(e)},{p},{u}\n" for e, p, u in zip(labels, format_pixels(images), usage))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
