"""Batched data augmentation on tensors: flip, shift + rotation, random erasing.

The whole batch is augmented at once on its device (one affine_grid/grid_sample for
shift + rotation, a mask for flips and erasing), from a seeded generator, so a run is
reproducible and no per-image Python loop slows training down.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..config import TrainConfig

ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing defaults


def augment_batch(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random flip, shift + rotation, erasing of a float pixel batch (N,1,H,W), all on tensors."""
    if cfg.hflip:
        flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if cfg.shift or cfg.rotation:
        x = shift_rotate(x, cfg.shift, cfg.rotation, gen)
    if cfg.erasing > 0:
        x = erase(x, cfg.erasing, gen)
    return x


def shift_rotate(x: torch.Tensor, shift: int, rotation: float, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by whole pixels (up to `shift`) and rotated (up to `rotation` degrees)."""
    n, _, h, w = x.shape
    dev = x.device
    angle = (torch.rand(n, generator=gen, device=dev) * 2 - 1) * math.radians(rotation)
    # Whole-pixel shifts, like random crops of a padded image; 2/size = one pixel in grid units.
    shifts = torch.randint(-shift, shift + 1, (n, 2), generator=gen, device=dev).float()
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([
        torch.stack([cos, -sin, shifts[:, 0] * 2 / w], 1),
        torch.stack([sin, cos, shifts[:, 1] * 2 / h], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # 'border' repeats the edge pixels (Keras' fill_mode='nearest') instead of black bars.
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Random erasing: with probability p, one rectangle per image becomes uniform noise."""
    n, _, h, w = x.shape
    dev = x.device
    u = torch.rand(n, 5, generator=gen, device=dev)
    area = (ERASE_SCALE[0] + u[:, 0] * (ERASE_SCALE[1] - ERASE_SCALE[0])) * h * w
    log_lo, log_hi = math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1])
    ratio = torch.exp(log_lo + u[:, 1] * (log_hi - log_lo))
    eh = (area * ratio).sqrt().round().clamp(1, h)
    ew = (area / ratio).sqrt().round().clamp(1, w)
    top = (u[:, 2] * (h - eh + 1)).floor()
    left = (u[:, 3] * (w - ew + 1)).floor()
    apply = u[:, 4] < p
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    box = ((rows >= top.view(-1, 1, 1)) & (rows < (top + eh).view(-1, 1, 1))
           & (cols >= left.view(-1, 1, 1)) & (cols < (left + ew).view(-1, 1, 1)) & apply.view(-1, 1, 1))
    noise = torch.rand(x.shape, generator=gen, device=dev) * 255.0
    return torch.where(box.unsqueeze(1), noise, x)
