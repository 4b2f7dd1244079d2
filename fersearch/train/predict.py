"""Use a trained model: `fersearch predict` on image files, and the TorchScript export.

Any image (png, jpg, ..., any size or colour) becomes what the training data looked
like: 8-bit grayscale, centre square crop, 48x48. The model normalises pixels itself
(see fersearch.model), so the raw 0..255 array is all it needs.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import IMAGE_SIZE
from ..errors import DataError, ModelFileError

MODEL_FILE = "model.pt"
SCRIPTED_FILE = "model_scripted.pt"


# ---------------------------------------------------------------- images
def load_image(path: str | os.PathLike) -> np.ndarray:
    """uint8 (48, 48) grayscale from any image file Pillow reads: EXIF orientation applied,
    converted to 8-bit luminance, centre square crop, area-averaged resize."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image {path} not found; pass existing image files (png, jpg, ...)")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            gray = _to_gray(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        # SyntaxError: Pillow raises it for some truncated/malformed headers.
        reason = "not an image Pillow can read" if isinstance(e, UnidentifiedImageError) else str(e).splitlines()[0]
        raise DataError(f"{path} is not a readable image ({reason}); pass a png or jpg file") from None
    return square_48(gray)


def _to_gray(img: Any) -> Any:
    """8-bit grayscale; transparent areas become white (as on a page) rather than black."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # 16-bit / float images: stretch their actual range to 0..255 instead of clipping.
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.round().astype(np.uint8), mode="L")
    return img.convert("L")


def square_48(gray: Any) -> np.ndarray:
    """Centre square crop of a grayscale PIL image, resized to 48x48 (BOX filter when
    shrinking = area average, like a camera; bilinear when enlarging)."""
    from PIL import Image

    w, h = gray.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    crop = gray.crop((left, top, left + side, top + side))
    if side != IMAGE_SIZE:
        resample = Image.Resampling.BOX if side > IMAGE_SIZE else Image.Resampling.BILINEAR
        crop = crop.resize((IMAGE_SIZE, IMAGE_SIZE), resample=resample)
    return np.asarray(crop, dtype=np.uint8).copy()


def load_images(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    if not paths:
        raise DataError("no images given; pass one or more image files")
    return np.stack([load_image(p) for p in paths])


# ---------------------------------------------------------------- models
def default_model_path(results: str | os.PathLike | None = None) -> Path:
    """best/model.pt of the newest experiment that has one."""
    from ..search.experiment import list_experiments, results_root

    root = results_root(results)
    for exp in reversed(list_experiments(root)):
        if (exp / "best" / MODEL_FILE).is_file():
            return exp / "best" / MODEL_FILE
    raise ModelFileError(f"no evaluated experiment under {root}/ (no */best/{MODEL_FILE}); "
                         "run `fersearch best --evaluate` first or pass --model PATH")


@dataclass
class Prediction:
    image: str
    emotion: str
    confidence: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "emotion": self.emotion, "confidence": self.confidence,
                "probabilities": self.probabilities}


def predict(images: Sequence[str | os.PathLike] | np.ndarray, model: str | os.PathLike | Any = None, *,
            results: str | os.PathLike | None = None, tta: bool = False) -> list[Prediction]:
    """Emotion probabilities for image files (or a uint8 (N, 48, 48) array).

    `model`: a model.pt path, a module already loaded, or None for the newest experiment's
    best/model.pt. Returns one Prediction per image, in order."""
    from ..data.loader import LABELS
    from ..model import load_model
    from .loop import predict_proba

    if isinstance(images, np.ndarray):
        arrays, names = _check_array(images), [f"image[{i}]" for i in range(len(images))]
    else:
        arrays, names = load_images(list(images)), [str(p) for p in images]
    if model is None or isinstance(model, (str, os.PathLike)):
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a foreign file before refusing it; the
            # refusal is the one line the user needs.
            warnings.simplefilter("ignore", UserWarning)
            model, _, _ = load_model(model if model is not None else default_model_path(results))
    probs = predict_proba(model, arrays, tta=tta)
    return [Prediction(image=name, emotion=LABELS[int(p.argmax())], confidence=float(p.max()),
                       probabilities={lab: float(v) for lab, v in zip(LABELS, p)})
            for name, p in zip(names, probs)]


def _check_array(images: np.ndarray) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"image array must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
    return images.astype(np.uint8, copy=False)


# ---------------------------------------------------------------- export
def export_torchscript(model: Any, path: str | os.PathLike) -> Path:
    """Save a TorchScript version of `model` (eval mode) for deployment without Python
    fersearch (C++ libtorch, `torch.jit.load`). It takes raw pixels (N, 1, 48, 48) float
    0..255 and returns logits, exactly like the eager model."""
    import torch

    path = Path(path)
    model = model.eval()
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is still what libtorch
        # and most serving stacks load; the warning would only confuse users.
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(model)
        tmp = path.with_name(f".{path.name}.tmp")
        scripted.save(str(tmp))
    os.replace(tmp, path)
    return path


def load_torchscript(path: str | os.PathLike) -> Any:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")
