"""Read a detected source (formats.py) into one `Parsed`, whichever format it is.

    src = detect(path); parsed = read(src)

One reader per format: csv_reader.py (fer2013.csv, icml_face_data.csv, Kaggle
train.csv + test.csv), ferplus.py (fer2013new.csv votes), folders.py (image
folders). `fersearch.data.load` adds the cache and the train/val/test split on top.
"""

from __future__ import annotations

from ..errors import DataError
from .csv_reader import read_fer_csv, read_kaggle
from .ferplus import read_ferplus
from .folders import read_folders
from .formats import Parsed, Source
from .progress import Tick, no_progress


def read(src: Source, resize: bool = False, tick: Tick = no_progress) -> Parsed:
    """Read and validate the source; a source without training rows is an error (and never cached)."""
    if src.format in ("fer2013", "icml_face_data"):
        parsed = read_fer_csv(src.main, tick=tick)
    elif src.format == "kaggle-challenge":
        parsed = read_kaggle(src.main, src.extra, tick)
    elif src.format == "ferplus":
        assert src.extra is not None  # detect() finds fer2013new.csv beside it, or it is no ferplus source
        parsed = read_ferplus(src.main, src.extra, tick)
    else:
        parsed = read_folders(src, resize, tick)
    if not (parsed.usage == 0).any():
        where = "under train/" if src.format == "image-folders" else "(Usage 'Training')"
        raise DataError(f"{src.path}: no training rows {where}; fersearch needs labelled training images")
    return parsed
