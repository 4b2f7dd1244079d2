"""The FER2013 constants, defined once for everything (a leaf: imports nothing from fersearch).

Labels 0-6 and their names, the split codes, FER2013's Usage values (same codes
as the splits), the image size, and the log sink every loader message goes to.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

LABELS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
NUM_CLASSES = len(LABELS)
SPLITS = ("train", "val", "test")  # split codes 0, 1, 2
USAGES = ("Training", "PublicTest", "PrivateTest")  # FER2013's Usage values, same codes as SPLITS
SIZE = 48  # images are SIZE x SIZE, 8-bit grayscale
N_PIXELS = SIZE * SIZE

Log = Callable[[str], None]


def log_stderr(message: str) -> None:
    """Default progress sink: stderr, so `--json` output on stdout stays clean."""
    print(message, file=sys.stderr, flush=True)
