"""FER2013 data: one in-memory `FerData` from any supported on-disk format.

(Skeleton: the dataclass is the contract other modules use; readers come with the data-layer issue.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LABELS = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
SPLITS = ("train", "val", "test")  # split codes 0, 1, 2


@dataclass
class FerData:
    images: np.ndarray  # uint8 (N, 48, 48)
    labels: np.ndarray  # int64 (N,); -1 where the format has no label (Kaggle test.csv)
    split: np.ndarray  # int8 (N,): 0 train, 1 val, 2 test
    source: str = ""  # path given by the user (file or folder)
    format: str = ""  # detected format name
    sha256: str = ""  # content hash of the source file(s)
    notes: list[str] = field(default_factory=list)  # e.g. how the validation split was made
    names: tuple[str, ...] = LABELS

    def subset(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one split: 'train', 'val' or 'test'."""
        mask = self.split == SPLITS.index(name)
        return self.images[mask], self.labels[mask]
