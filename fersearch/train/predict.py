"""Use a model: class probabilities and scores for pixel arrays, and `predict` on image files.

Any image (png, jpg, ..., any size or colour) becomes what the training data looked
like: 8-bit grayscale, centre square crop, 48x48. The model normalises pixels itself
(see fersearch.model), so the raw 0..255 array is all it needs.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import NUM_CLASSES, SIZE as IMAGE_SIZE
from ..errors import DataError
from .device import resolve_device

MODEL_FILE = "model.pt"
SCRIPTED_FILE = "model_scripted.pt"
EVAL_BATCH = 512


# ---------------------------------------------------------------- probabilities and scores
def as_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to the float channels-last batch the model takes (still 0..255)."""
    return x_uint8.float().contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def log_probs(model: nn.Module, x_uint8: torch.Tensor, batch_size: int = EVAL_BATCH, tta: bool = False) -> torch.Tensor:
    """fp32 log-probabilities (N,7) on the model's device; tta averages with the mirrored face."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, x_uint8.shape[0], batch_size):
            xb = as_input(x_uint8[i:i + batch_size])
            lp = F.log_softmax(model(xb).float(), dim=1)
            if tta:
                lp_flip = F.log_softmax(model(xb.flip(3)).float(), dim=1)
                lp = torch.logsumexp(torch.stack([lp, lp_flip]), 0) - math.log(2)
            out.append(lp)
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0, NUM_CLASSES)


def loss_acc(log_probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean NLL and accuracy over labelled rows (label >= 0); NaN, NaN when none is labelled."""
    labelled = y >= 0
    if not bool(labelled.any()):
        return float("nan"), float("nan")
    lp, y = log_probs[labelled], y[labelled]
    return float(F.nll_loss(lp, y)), float((lp.argmax(1) == y).float().mean())


def _tensor(a: np.ndarray | torch.Tensor) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))


def _images_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    x = _tensor(images)
    return (x.unsqueeze(1) if x.dim() == 3 else x).to(device)


def _model_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        dev = resolve_device(device)
        model.to(dev)
        return dev
    return next(model.parameters()).device


def predict_proba(model: nn.Module, images_uint8: np.ndarray, batch_size: int = EVAL_BATCH, tta: bool = False,
                  device: str | torch.device | None = None) -> np.ndarray:
    """Softmax probabilities (N,7) for raw uint8 images (N,48,48); device None = where the model is."""
    dev = _model_device(model, device)
    return log_probs(model, _images_tensor(images_uint8, dev), batch_size, tta).exp().cpu().numpy()


def score(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
          batch_size: int = EVAL_BATCH, tta: bool = False, device: str | torch.device | None = None) -> dict:
    """Plain cross-entropy (no smoothing or class weights, so losses compare across configs),
    accuracy over labelled images (label >= 0), and the probabilities of every image."""
    dev = _model_device(model, device)
    lp = log_probs(model, _images_tensor(images, dev), batch_size, tta)
    loss, acc = loss_acc(lp, _tensor(labels).to(lp.device).long())
    return {"loss": loss, "acc": acc, "probs": lp.exp().cpu().numpy()}


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
    """uint8 (N, 48, 48) from image files, in order (see load_image)."""
    if not paths:
        raise DataError("no images given; pass one or more image files")
    return np.stack([load_image(p) for p in paths])


# ---------------------------------------------------------------- predict
@dataclass
class Prediction:
    image: str
    emotion: str
    confidence: float
    probabilities: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "emotion": self.emotion, "confidence": self.confidence,
                "probabilities": self.probabilities}


def predict(images: Sequence[str | os.PathLike] | np.ndarray, model: str | os.PathLike | nn.Module, *,
            tta: bool = False) -> list[Prediction]:
    """Emotion probabilities for image files (or a uint8 (N, 48, 48) array).

    `model`: a model.pt path or a module already loaded (the CLI finds the newest
    experiment's best/model.pt). Returns one Prediction per image, in order."""
    from ..data.schema import LABELS
    from ..model import load_model

    if isinstance(images, np.ndarray):
        arrays, names = _check_array(images), [f"image[{i}]" for i in range(len(images))]
    else:
        arrays, names = load_images(list(images)), [str(p) for p in images]
    if isinstance(model, (str, os.PathLike)):
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of a foreign file before refusing it; the
            # refusal is the one line the user needs.
            warnings.simplefilter("ignore", UserWarning)
            model, _, _ = load_model(model)
    probs = predict_proba(model, arrays, tta=tta)
    return [Prediction(image=name, emotion=LABELS[int(p.argmax())], confidence=float(p.max()),
                       probabilities={lab: float(v) for lab, v in zip(LABELS, p)})
            for name, p in zip(names, probs)]


def _check_array(images: np.ndarray) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"image array must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
    return images.astype(np.uint8, copy=False)
