"""Faces in a photo: OpenCV's Haar cascade finds them, each is cropped the way FER2013's were.

FER2013's faces were found by a face detector and cropped to roughly the face box with a
little context (the whole chin, the brows, a strip of forehead), then made grey and 48x48.
The Haar cascade's box runs from the brows to just under the mouth, so the crop is that box
widened by MARGIN on every side, kept square and centred. The cascade file ships inside the
opencv-python-headless wheel (4.x): nothing is downloaded.

`annotate` draws the boxes and labels onto the photo for `fersearch predict --annotate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError

CASCADE = "haarcascade_frontalface_default.xml"
MARGIN = 0.1  # of the box side, on each side: 1.2x the detector's box
DETECT_SIDE = 1024  # photos are scanned at most this large: a 12 MP photo takes ~0.1 s instead of seconds
MIN_FACE = 24  # px: the smallest face the detector looks for

Box = tuple[int, int, int, int]  # x, y, width, height in the photo's pixels

_cascade: Any = None


def _detector() -> Any:
    global _cascade
    if _cascade is None:
        import cv2

        if not hasattr(cv2, "CascadeClassifier"):
            raise DataError("this OpenCV has no Haar cascades (OpenCV 5 dropped them); "
                            "pip install 'opencv-python-headless<5', or pass --no-detect for cropped faces")
        _cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, CASCADE))  # type: ignore[attr-defined]
    return _cascade


def detect_faces(gray: Any) -> list[Box]:
    """Face boxes (x, y, w, h) in a grayscale PIL image, largest first."""
    import cv2

    arr: Any = np.asarray(gray, dtype=np.uint8)
    scale = min(1.0, DETECT_SIDE / max(arr.shape))
    if min(arr.shape) * scale < MIN_FACE:  # a strip of a few pixels holds no face (and breaks OpenCV's resize)
        return []
    if scale < 1.0:
        arr = cv2.resize(arr, (round(arr.shape[1] * scale), round(arr.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    # Equalised for the detector only (it copes badly with dim photos); the crop keeps the real pixels.
    found = _detector().detectMultiScale(cv2.equalizeHist(arr), scaleFactor=1.1, minNeighbors=5,
                                         minSize=(MIN_FACE, MIN_FACE))
    boxes = [tuple(round(v / scale) for v in b) for b in (found if len(found) else [])]
    return sorted(boxes, key=lambda b: -b[2] * b[3])


def fer_crop(box: Box) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the FER2013-style square crop around a detector box."""
    x, y, w, h = box
    side = round(max(w, h) * (1 + 2 * MARGIN))
    cx, cy = x + w / 2, y + h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + side, top + side


def annotate(photo: str | os.PathLike, boxes: Sequence[Box], labels: Sequence[str], out: str | os.PathLike) -> Path:
    """The photo (upright, in colour) with each box and its label drawn on it, written to `out`."""
    from PIL import Image, ImageDraw, ImageOps

    from ..io import atomic_path

    with Image.open(photo) as img:
        canvas = ImageOps.exif_transpose(img).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    for (x, y, w, h), label in zip(boxes, labels):
        draw.rectangle((x, y, x + w, y + h), outline=(255, 210, 0), width=width)
        font_size = max(12, round(w / 7))
        text_box = draw.textbbox((x, y), label, font_size=font_size)
        ty = y - (text_box[3] - text_box[1]) - 2 * width if y > font_size + 2 * width else y + h + width
        draw.rectangle((x, ty, x + text_box[2] - text_box[0] + 2 * width, ty + text_box[3] - text_box[1] + 2 * width),
                       fill=(255, 210, 0))
        draw.text((x + width, ty), label, fill=(0, 0, 0), font_size=font_size)
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise DataError(f"--annotate {out}: write a .png or .jpg file")
    with atomic_path(out) as tmp:
        canvas.save(tmp, format="PNG" if out.suffix.lower() == ".png" else "JPEG")
    return out


def annotate_predictions(photo: str | os.PathLike, predictions: Sequence[Any], out: str | os.PathLike) -> Path:
    """`predict --annotate`: each found face's box labelled with its emotion and confidence."""
    found = [p for p in predictions if p.box is not None]
    return annotate(photo, [p.box for p in found], [f"{p.emotion} {p.confidence:.2f}" for p in found], out)


def check_annotate(images: Sequence[str | os.PathLike], out: Path) -> None:
    if len(images) != 1 or out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise DataError(f"--annotate {out}: pass exactly one image and a .png or .jpg file to write")
    from ..outputs import check_output

    check_output(out, "--annotate", (".png", ".jpg", ".jpeg"), inputs=images)  # not the photo, a folder, /proc
