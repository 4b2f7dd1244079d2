"""A labelled grid of sample faces per emotion, so a person can see what the data looks like."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io import atomic_path
from .fer import FerData
from .schema import SPLITS


def preview_grid(data: FerData, out: str | os.PathLike, *, per_class: int = 8, split: str = "train",
                 seed: int = 0) -> Path:
    """Write a PNG: one row per emotion, `per_class` random samples of `split` (seeded)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {', '.join(SPLITS)}")
    if not data.labeled(split):
        raise DataError(f"the {split} split of {data.source} has no labelled images to preview; try --split train")
    images, labels = data.subset(split)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(len(data.names), per_class, figsize=(per_class * 1.05 + 1.2, len(data.names) * 1.1),
                             squeeze=False)
    for k, name in enumerate(data.names):
        idx = np.flatnonzero(labels == k)
        picked: Any = rng.choice(idx, min(per_class, len(idx)), replace=False) if len(idx) else []
        for j, ax in enumerate(axes[k]):
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(picked):
                ax.imshow(images[picked[j]], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        axes[k, 0].set_ylabel(f"{name}\n({len(idx)})", rotation=0, ha="right", va="center", fontsize=9)
    kind = "SYNTHETIC faces" if data.synthetic else data.format
    fig.suptitle(f"{Path(data.source).name or data.source} ({kind}), {split} split: {per_class} random per emotion",
                 fontsize=9)
    fig.tight_layout()
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=100, format="png")
    finally:
        plt.close(fig)
    return Path(out)
