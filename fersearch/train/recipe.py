"""What a TrainConfig asks of the loop besides the model: the splits as tensors on the device,
class weights, the optimiser and the learning-rate schedule."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import TrainConfig
from ..data.schema import NUM_CLASSES

if TYPE_CHECKING:
    from ..data import FerData

PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2  # halve the lr after 2 epochs without a val_acc gain


# ---------------------------------------------------------------- data on the device
# The last data set's splits on each GPU, kept by this process: Ray reuses a trial's worker for the
# next trial, which then finds its data already on the GPU (read-only: training indexes it).
_RESIDENT: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def split_tensors(data: FerData, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled images of one split as (uint8 (N,1,48,48), int64 (N,)) on the device."""
    key = (str(device), name, fingerprint(data)) if device.type == "cuda" else None
    if key is not None and key in _RESIDENT:
        return _RESIDENT[key]
    images, labels = data.subset(name)
    keep = labels >= 0
    x = torch.from_numpy(np.ascontiguousarray(images[keep])).unsqueeze(1).to(device)
    y = torch.from_numpy(np.ascontiguousarray(labels[keep]).astype(np.int64)).to(device)
    if key is not None:
        for old in [k for k in _RESIDENT if k[:2] == key[:2]]:  # one data set per GPU and split
            del _RESIDENT[old]
        _RESIDENT[key] = (x, y)
    return x, y


def fingerprint(data: FerData) -> str:
    """A cheap content key: every label and split code, and a sample of ~20k pixels."""
    h = hashlib.blake2b(digest_size=16)
    flat = data.images.reshape(-1)
    for part in (np.asarray(data.images.shape), data.labels, data.split, flat[::max(1, flat.size // 20_000)]):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def class_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """'balanced' as in scikit-learn: n / (classes * count), so rare Disgust counts as much as Happy."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=NUM_CLASSES).float()
    present = counts > 0
    weights = torch.zeros(NUM_CLASSES, device=labels.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def training_loss(logits: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None,
                  smoothing: float) -> torch.Tensor:
    """F.cross_entropy(logits, y, weight=weights, label_smoothing=smoothing), in ops a CUDA graph can
    capture: torch's own weighted, smoothed mean calls masked_select, whose data-dependent size
    syncs with the host (and so fails inside a capture). Same value; every label here is >= 0."""
    if weights is None or smoothing == 0:
        return F.cross_entropy(logits, y, weight=weights, label_smoothing=smoothing)
    logp = F.log_softmax(logits, dim=1)
    nll = F.nll_loss(logp, y, weight=weights)
    smooth = -(logp * weights).sum() / weights[y].sum()
    return (1 - smoothing) * nll + smooth * (smoothing / logits.shape[1])


# ---------------------------------------------------------------- optimiser / schedule
def make_optimizer(cfg: TrainConfig, params: Iterator[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """Stepped once per epoch ('plateau' with that epoch's val_acc); None for 'none'."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=PLATEAU_FACTOR,
                                                          patience=PLATEAU_PATIENCE)
    return None
