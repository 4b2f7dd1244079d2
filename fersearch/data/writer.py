"""Write images as a fer2013.csv (`emotion,pixels,Usage`), the format every FER tool reads.

Pixel strings are formatted by table lookup over whole chunks of rows (no per-pixel
Python); the file is written atomically through fersearch.io.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_write

_CHUNK = 4096  # rows formatted per vectorised batch


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
    for s in range(0, len(flat), _CHUNK):
        tok = table[flat[s:s + _CHUNK]]  # (B, 2304, 4) bytes
        last = tok[:, -1]
        last[last == ord(" ")] = 0  # no trailing space after the last pixel
        keep = tok != 0
        ends = np.cumsum(keep.reshape(len(tok), -1).sum(axis=1))
        blob = tok[keep].tobytes().decode("ascii")
        rows += [blob[a:b] for a, b in zip(np.concatenate([[0], ends[:-1]]), ends)]
    return rows


def write_fer2013_csv(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, usage: Sequence[str]) -> Path:
    """Write images in fer2013.csv format (atomically: a crash never leaves half a file)."""
    rows = format_pixels(images)

    def write(f) -> None:
        f.write(b"emotion,pixels,Usage\n")
        f.writelines(f"{int(e)},{p},{u}\n".encode() for e, p, u in zip(labels, rows, usage))

    return atomic_write(path, write)
