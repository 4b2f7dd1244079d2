"""FER2013-style CSV files: fer2013.csv / icml_face_data.csv (emotion, pixels, Usage) and
the Kaggle challenge's train.csv (emotion, pixels) + test.csv (pixels only).

Pixels are parsed with pyarrow compute kernels in chunks (split on whitespace,
cast to int32): no per-row Python loop over pixel strings. Every mistake is one
`DataError` line naming the file, the row (spreadsheet numbering: the header is
row 1, the first image row 2), the column, what is wrong and what to do.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..errors import DataError
from .formats import Parsed, csv_header, missing_columns_error
from .progress import Tick, no_progress
from .schema import LABELS, N_PIXELS, SIZE, USAGES

PARSE_CHUNK = 4096  # rows per pyarrow batch: bounded memory, still vectorised, and one progress tick
_LABEL_HELP = ", ".join(f"{i} {name}" for i, name in enumerate(LABELS))


def row_locator(path: Path, column: str | None = None) -> Callable[[int], str]:
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
        raise csv_structure_error(path, e) from None


def csv_structure_error(path: Path, err: Exception) -> DataError:
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


def parse_pixels(col, where: Callable[[int], str], tick: Tick = no_progress, what: str = "rows parsed") -> np.ndarray:
    """Space-separated 0-255 strings -> uint8 (N, 48, 48), in vectorised chunks (one `tick` each)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    out = np.empty((n, N_PIXELS), np.uint8)
    for start in range(0, n, PARSE_CHUNK):
        part = col.slice(start, PARSE_CHUNK)
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
        tick(what, start + len(part), n)
    return out.reshape(n, SIZE, SIZE)


def _bad_pixel_token(rows: list[str], start: int, where: Callable[[int], str]) -> DataError:
    for i, row in enumerate(rows):
        for j, tok in enumerate(row.split()):
            if not (tok.isascii() and tok.isdigit()):
                if re.fullmatch(r"[-+]?\d+", tok):
                    return DataError(f"{where(start + i)}: pixel {j + 1} is {tok}, outside 0-255; "
                                     f"fix or delete that row")
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


def read_fer_csv(path: Path, *, need_usage: bool = True, need_labels: bool = True,
                 tick: Tick = no_progress) -> Parsed:
    """fer2013.csv / icml_face_data.csv (emotion, pixels, Usage) or Kaggle train.csv / test.csv."""
    columns = csv_header(path)
    wanted = ["pixels"] + (["emotion"] if need_labels else []) + (["usage"] if need_usage else [])
    raw = {c.strip().lower(): c for c in columns}
    if any(w not in raw for w in wanted):
        raise missing_columns_error(path, columns)
    table = _read_table(path, [raw[w] for w in wanted])
    if table.num_rows == 0:
        raise DataError(f"{path}: header only, no image rows; re-download the file")
    col_name, pixels_col = _column(table, columns, "pixels")
    images = parse_pixels(pixels_col, row_locator(path, col_name), tick, f"{path.name}: rows parsed")
    labels = np.full(len(images), -1, np.int64)
    if need_labels:
        col_name, col = _column(table, columns, "emotion")
        labels = parse_labels(col, row_locator(path, col_name))
    usage = np.zeros(len(images), np.int8)
    if need_usage:
        col_name, col = _column(table, columns, "usage")
        usage = parse_usage(col, row_locator(path, col_name))
    return Parsed(images, labels, usage)


def read_kaggle(train: Path, test: Path | None, tick: Tick = no_progress) -> Parsed:
    """Kaggle challenge train.csv (emotion, pixels) + test.csv (pixels only: labels -1, split test)."""
    parsed = read_fer_csv(train, need_usage=False, tick=tick)
    if test is None:
        parsed.notes.append(f"no test.csv beside {train.name}: no test split")
        return parsed
    t = read_fer_csv(test, need_usage=False, need_labels=False, tick=tick)
    parsed.notes.append(f"test split: {len(t.images)} images from {test.name}, which has no labels (label -1)")
    return Parsed(np.concatenate([parsed.images, t.images]), np.concatenate([parsed.labels, t.labels]),
                  np.concatenate([parsed.usage, np.full(len(t.images), 2, np.int8)]), parsed.notes)
