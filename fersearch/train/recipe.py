"""What a TrainConfig asks of the loop besides the model: the splits as tensors on the device,
class weights, the optimiser and the learning-rate schedule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data.schema import NUM_CLASSES

if TYPE_CHECKING:
    from ..data import FerData

PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2  # halve the lr after 2 epochs without a val_acc gain


# ---------------------------------------------------------------- data on the device
def split_tensors(data: FerData, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled images of one split as (uint8 (N,1,48,48), int64 (N,)) on the device."""
    images, labels = data.subset(name)
    keep = labels >= 0
    x = torch.from_numpy(np.ascontiguousarray(images[keep])).unsqueeze(1).to(device)
    y = torch.from_numpy(np.ascontiguousarray(labels[keep]).astype(np.int64)).to(device)
    return x, y


def class_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """'balanced' as in scikit-learn: n / (classes * count), so rare Disgust counts as much as Happy."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=NUM_CLASSES).float()
    present = counts > 0
    weights = torch.zeros(NUM_CLASSES, device=labels.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


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
