"""Image folders: train/<emotion>/*.png|jpg (and val/, test/) read as 48x48 grayscale.

The emotion comes from the folder NAME, never from its sorted index (sorted order
puts neutral before sad and surprise). Colour images become grayscale; other
sizes are an error unless `resize` is asked for. Each file is decoded by data/image.py, the
same path `fersearch predict` takes, so a face reaches the model in one form only.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .formats import FOLDER_SPLITS, FORMATS_HELP, IMAGE_EXTENSIONS, Parsed, Source
from .image import crop_48, open_gray
from .progress import Tick, no_progress
from .schema import SIZE

# Folder names -> label. Mapped by name, never by sorted index (sorted order puts neutral before sad).
FOLDER_LABELS = {"angry": 0, "anger": 0, "disgust": 1, "disgusted": 1, "fear": 2, "fearful": 2, "happy": 3,
                 "happiness": 3, "sad": 4, "sadness": 4, "surprise": 5, "surprised": 5, "neutral": 6}


def read_folders(src: Source, resize: bool, tick: Tick = no_progress) -> Parsed:
    """train/<emotion>/*.png|jpg (and test/, val/): grayscale 48x48, emotion from the folder name."""
    images, labels, usage, ignored, resized, converted = [], [], [], 0, 0, 0
    for i, f in enumerate(src.files):
        if i % 256 == 0:
            tick("image files read", i, len(src.files))
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
        gray, mode = open_gray(f, fix="delete or replace it")
        converted += mode != "L"
        if gray.size != (SIZE, SIZE):
            if not resize:
                raise DataError(f"{f}: image is {gray.size[0]}x{gray.size[1]}, fersearch needs 48x48; "
                                f"pass --resize to scale every image to 48x48")
            resized += 1
        images.append(crop_48(gray))
        labels.append(label)
        usage.append(FOLDER_SPLITS[split_dir.lower()])
    tick("image files read", len(src.files), len(src.files))
    if not images:
        raise DataError(f"{src.main}: no .png/.jpg images under train/<emotion>/; {FORMATS_HELP}")
    notes = []
    if ignored:
        notes.append(f"ignored {ignored} non-image file(s) under {src.main}")
    if resized:
        notes.append(f"resized {resized} image(s) to 48x48 (--resize: centre square, area average)")
    if converted:
        notes.append(f"converted {converted} non-grayscale image(s) to 8-bit grayscale")
    return Parsed(np.stack(images), np.array(labels, np.int64), np.array(usage, np.int8), notes)
