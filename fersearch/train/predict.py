"""Use a model: class probabilities and scores for pixel arrays, and `predict` on image files.

`predict` finds the faces in each photo (train/faces.py), crops each one as FER2013's were
and classifies it; with detect=False, or for a 48x48 image, the image is taken as one face
already cropped. Every file is decoded by data/image.py, the one image path training folders
use too. The model normalises pixels itself (see fersearch.model), so the raw 0..255 array is
all it needs; a model.onnx runs in ONNX Runtime (fersearch.deploy) with no torch maths.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.schema import NUM_CLASSES
from ..data.schema import SIZE as IMAGE_SIZE
from ..errors import DataError
from .device import resolve_device

MODEL_FILE = "model.pt"
EVAL_BATCH = 512
Box = tuple[int, int, int, int]  # x, y, width, height in the upright photo


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
    """uint8 (48, 48) grayscale from an image file taken as one cropped face (data/image.py)."""
    from ..data.image import load_face

    return load_face(path)


def load_images(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """uint8 (N, 48, 48) from image files, in order (see load_image)."""
    if not paths:
        raise DataError("no images given; pass one or more image files")
    return np.stack([load_image(p) for p in paths])


def face_crops(path: str | os.PathLike, detect: bool = True) -> tuple[list[np.ndarray], list[Box]]:
    """(48x48 crops, boxes) of the faces in an image file: every face the detector finds, or, with
    detect=False or a 48x48 image, the whole image (centre square) as one face."""
    from ..data.image import centre_square, crop_48, open_gray
    from .faces import detect_faces, fer_crop

    gray = open_gray(path).image
    if not detect or gray.size == (IMAGE_SIZE, IMAGE_SIZE):
        left, top, right, bottom = centre_square(gray.size)
        return [crop_48(gray)], [(left, top, right - left, bottom - top)]
    boxes = detect_faces(gray)
    return [crop_48(gray, fer_crop(b)) for b in boxes], boxes


# ---------------------------------------------------------------- predict
@dataclass
class Prediction:
    """One face (or one image taken as a face). A photo with no face found gets one Prediction
    with face None and emotion None: nothing is classified silently."""

    image: str
    emotion: str | None
    confidence: float | None
    probabilities: dict[str, float]
    face: int | None = 0
    box: Box | None = None  # x, y, width, height in the upright photo

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "face": self.face, "box": list(self.box) if self.box else None,
                "emotion": self.emotion, "confidence": self.confidence, "probabilities": self.probabilities}


def load_predictor(model: str | os.PathLike | nn.Module) -> Any:
    """A model.pt (torch), a model.onnx (ONNX Runtime) or a module: something with predict_proba."""
    from ..deploy import OnnxModel
    from ..model import load_model

    if isinstance(model, nn.Module):
        return _TorchPredictor(model)
    if Path(model).suffix.lower() == ".onnx":
        return OnnxModel(model)
    with warnings.catch_warnings():
        # torch warns about the pickle protocol of a foreign file before refusing it; the
        # refusal is the one line the user needs.
        warnings.simplefilter("ignore", UserWarning)
        return _TorchPredictor(load_model(model)[0])


@dataclass
class _TorchPredictor:
    model: nn.Module

    def predict_proba(self, images: np.ndarray, tta: bool = False) -> np.ndarray:
        return predict_proba(self.model, images, tta=tta)


def predict(images: Sequence[str | os.PathLike] | np.ndarray, model: str | os.PathLike | nn.Module, *,
            tta: bool = False, detect: bool = True) -> list[Prediction]:
    """Emotion probabilities of every face in image files (or of a uint8 (N, 48, 48) array of faces).

    `model`: a model.pt or model.onnx path, or a module already loaded. Returns one Prediction per
    face, image by image (largest face first); a photo with no face gives one with emotion None."""
    from ..data.schema import LABELS

    predictor = load_predictor(model)
    rows: list[tuple[str, int | None, Box | None]] = []
    crops: list[np.ndarray] = []
    if isinstance(images, np.ndarray):
        crops = list(_check_array(images))
        rows = [(f"image[{i}]", 0, None) for i in range(len(crops))]
    else:
        if not images:
            raise DataError("no images given; pass one or more image files")
        for path in images:
            faces, boxes = face_crops(path, detect)
            crops += faces
            rows += [(str(path), i, b) for i, b in enumerate(boxes)] or [(str(path), None, None)]
    probs = iter(_finite(predictor.predict_proba(np.stack(crops), tta=tta), model) if crops else [])
    out = []
    for name, face, box in rows:
        if face is None:
            out.append(Prediction(image=name, emotion=None, confidence=None, probabilities={}, face=None))
            continue
        p = next(probs)
        out.append(Prediction(image=name, emotion=LABELS[int(p.argmax())], confidence=float(p.max()),
                              probabilities={lab: float(v) for lab, v in zip(LABELS, p)}, face=face, box=box))
    return out


def _finite(probs: np.ndarray, model: Any) -> np.ndarray:
    """Probabilities that are numbers: a model whose outputs are NaN or infinite has no answer to give."""
    if not np.isfinite(probs).all():
        from ..errors import ModelFileError

        name = "the model" if isinstance(model, nn.Module) else str(model)
        raise ModelFileError(f"{name} gives NaN or infinite probabilities (broken or diverged weights); "
                             "pass a model whose training did not diverge")
    return probs


def _check_array(images: np.ndarray) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"image array must have shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {images.shape}")
    return images.astype(np.uint8, copy=False)
