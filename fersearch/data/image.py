"""THE image path: any image file -> what the model sees (uint8 48x48 grayscale).

Training folders (data/folders.py), `fersearch predict` (train/predict.py) and the face
crops of a photo (train/faces.py) all go through here, so one file can never reach the
model in two forms. Decided once:

- Size guard: more than MAX_PIXELS pixels is refused from the header alone, before any
  decoding (a 20,000 x 20,000 PNG of a few kB would otherwise take 400 MB and seconds).
- EXIF orientation is applied: a phone photo is stored sideways and tagged; a face the
  model sees rotated by 90 degrees is no face.
- Transparency is composited onto white: the colour stored under a transparent pixel is
  arbitrary (encoders often leave black), so some fixed background is needed; white is what
  a cut-out portrait is shown on in a page or a viewer.
- 16-bit images are scaled by their type's full range (65535 -> 255), like any converter,
  so a dark 16-bit photo stays dark as its 8-bit copy would; float images have no standard
  range and are stretched from their min to their max.
- Grey is ITU-R 601 luma (Pillow's "L", the same weights as OpenCV's BGR2GRAY).
- Shape: a square region (the centre square, or a face box) resized to 48x48, never
  stretched: squashing a face changes its expression geometry.
- Filter: area average (BOX) when shrinking, which is what a camera sensor does and has no
  aliasing or ringing; bilinear when enlarging, where BOX would give blocky pixels.
"""

from __future__ import annotations

import os
import warnings
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import DataError
from .schema import SIZE

# 50 megapixels: above any phone's default photo (12-48 MP), far below a decompression bomb;
# Pillow's own limit (89 MP, only a warning up to 179 MP) is not used, as it is process-wide.
MAX_PIXELS = 50_000_000


class Gray(NamedTuple):
    """A decoded image: 8-bit grayscale PIL image (full resolution, upright) and the mode it had."""

    image: Any  # PIL.Image.Image, mode "L"
    mode: str


def open_gray(path: str | os.PathLike, fix: str = "pass a png or jpg file") -> Gray:
    """Decode an image file to upright 8-bit grayscale at full resolution; a bad file is a
    DataError naming the file, the reason and `fix`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found; pass existing image files (png, jpg, ...)")
    try:
        with warnings.catch_warnings():
            # Pillow warns (then raises) on huge images by its own limit; ours is checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                check_size(path, img.size)
                img.load()
                if img.format == "PNG":
                    check_png_rows(path)  # Pillow fills the rows a short PNG lacks with black, silently
                mode = img.mode
                gray = to_gray(ImageOps.exif_transpose(img))
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image is over {MAX_PIXELS // 1_000_000} megapixels (a decompression-bomb guard); "
                        "shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, zlib.error) as e:
        # SyntaxError / EOFError: Pillow raises them for some malformed or truncated headers.
        reason = "not an image file" if isinstance(e, UnidentifiedImageError) else str(e).splitlines()[0][:80]
        raise DataError(f"{path}: cannot read image ({reason}); {fix}") from None
    return Gray(gray, mode)


PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel


def check_png_rows(path: Path) -> None:
    """The PNG's compressed pixel data holds every row its header declares (OSError otherwise).
    Reads the chunks as bytes and inflates at most the declared size plus one byte."""
    import struct

    data = path.read_bytes()
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise OSError("no PNG header")
    w, h, depth, colour, _, _, interlace = header
    bits = depth * PNG_CHANNELS.get(colour, 1)
    passes = ([(0, 8, 0, 8), (4, 8, 0, 8), (0, 4, 4, 8), (2, 4, 0, 4), (0, 2, 2, 4), (1, 2, 0, 2), (0, 1, 1, 2)]
              if interlace else [(0, 1, 0, 1)])  # (x0, dx, y0, dy) of each Adam7 pass
    expected = 0
    for x0, dx, y0, dy in passes:
        pw, ph = (w - x0 + dx - 1) // dx, (h - y0 + dy - 1) // dy
        if pw and ph:
            expected += ph * (1 + (pw * bits + 7) // 8)
    got = len(zlib.decompressobj().decompress(b"".join(idat), expected + 1))
    if got < expected:
        raise OSError(f"pixel data ends early ({got} of {expected} bytes): truncated")


def check_size(path: Path, size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_PIXELS:
        raise DataError(f"{path}: image is {w}x{h} ({w * h / 1e6:.0f} megapixels), over fersearch's limit of "
                        f"{MAX_PIXELS // 1_000_000} (a decompression-bomb guard); shrink it first")


def to_gray(img: Any) -> Any:
    """8-bit grayscale PIL image (see the module docstring for transparency and 16-bit)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode in ("P", "L", "RGB") and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    if img.mode.startswith("I"):
        arr = np.asarray(img, dtype=np.float64) * (255.0 / 65535.0)
        return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("L")


def centre_square(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square in an image of `size`."""
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def crop_48(gray: Any, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """uint8 (48, 48) of `box` (default: the centre square) of a grayscale PIL image. A box
    reaching past the edge is padded with the edge's pixels (a face at the border of a photo)."""
    from PIL import Image

    left, top, right, bottom = box or centre_square(gray.size)
    w, h = gray.size
    if left < 0 or top < 0 or right > w or bottom > h:
        arr = np.asarray(gray)
        pad = max(-left, -top, right - w, bottom - h, 0)
        padded = np.pad(arr, pad, mode="edge")
        gray = Image.fromarray(padded, mode="L")
        left, top, right, bottom = left + pad, top + pad, right + pad, bottom + pad
    crop = gray.crop((left, top, right, bottom))
    if crop.size != (SIZE, SIZE):
        shrinking = crop.size[0] > SIZE or crop.size[1] > SIZE
        resample = Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR
        crop = crop.resize((SIZE, SIZE), resample=resample)
    return np.asarray(crop, dtype=np.uint8).copy()


def load_face(path: str | os.PathLike, fix: str = "pass a png or jpg file") -> np.ndarray:
    """uint8 (48, 48): an image file taken as one face already cropped (centre square, resized)."""
    return crop_48(open_gray(path, fix).image)
