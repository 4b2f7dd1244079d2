"""FER+ (fer2013new.csv): annotators' votes per fer2013.csv row, turned into majority-vote labels.

fer2013new.csv (`Usage,Image name,neutral,happiness,...,NF`) is row-aligned with
the fer2013.csv it came with: the images and Usage come from fer2013.csv, the
label from a strict majority of the votes; rows without one are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from .csv_reader import csv_structure_error, read_fer_csv, row_locator
from .formats import Parsed
from .progress import Tick, no_progress
from .schema import USAGES

FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "nf")
FERPLUS_TO_LABEL = {"anger": 0, "disgust": 1, "fear": 2, "happiness": 3, "sadness": 4, "surprise": 5, "neutral": 6}


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
        chosen = has_name & majority & (top == FERPLUS_VOTES.index(c))
        skipped[f"majority {c if c != 'nf' else 'NF'}"] = int(chosen.sum())
    return labels.astype(np.int64), skipped


def read_ferplus(full: Path, votes_path: Path, tick: Tick = no_progress) -> Parsed:
    """fer2013.csv images and Usage with FER+ majority-vote labels from the row-aligned fer2013new.csv."""
    import pandas as pd

    base = read_fer_csv(full, tick=tick)
    try:
        df = pd.read_csv(votes_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        raise csv_structure_error(votes_path, e) from None
    df.columns = [c.strip().lower() for c in df.columns]
    missing = [c for c in FERPLUS_VOTES if c not in df.columns]
    if missing:
        raise DataError(f"{votes_path}: missing FER+ vote column(s) {', '.join(missing)}; "
                        f"expected Usage,Image name,{','.join(FERPLUS_VOTES[:-1])},NF")
    if len(df) != len(base.images):
        raise DataError(f"{votes_path}: {len(df)} rows but {full.name} has {len(base.images)}; fer2013new.csv must be "
                        f"row-aligned with the fer2013.csv it came with")
    where = row_locator(votes_path)
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
