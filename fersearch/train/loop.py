"""Plain-PyTorch training: `fit(cfg, data)` trains one configuration; nothing here knows Ray.

Why it is fast without a DataLoader: a FER split is tiny (28k x 48x48 bytes = 66 MB), so
each split lives as one uint8 tensor on the device, a batch is an index slice of a seeded
permutation, and augmentation runs on the whole batch at once (one affine_grid/grid_sample
for shift + rotation, a mask for flips and erasing). Convolutions run channels-last,
under bf16 autocast where the hardware has native bf16 (`resolve_precision`).

Reproducible: for a given seed, fp32 on the CPU gives bit-identical weights, and
`fit(resume=state)` continues a run exactly where `state()` was taken (model,
optimiser, scheduler, early stopping, history and every RNG).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import math
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import NUM_CLASSES, TrainConfig
from ..data.loader import FerData
from ..errors import ConfigError, DataError, ExperimentError
from ..model import build_model, save_model
from ..fmt import plural

log = logging.getLogger(__name__)

STATE_FORMAT = "fersearch-train-state"
METRIC_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_time_s",
               "best_val_acc")
# Keys a resumed run may change: training longer or with more patience continues the same run.
RESUMABLE_CHANGES = ("epochs", "patience")
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 2  # halve the lr after 2 epochs without a val_acc gain
ERASE_SCALE, ERASE_RATIO = (0.02, 0.33), (0.3, 3.3)  # torchvision RandomErasing defaults
EVAL_BATCH = 512

_announced: set[str] = set()


# ---------------------------------------------------------------- device / precision
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """CUDA when the process sees a GPU, else the CPU (logged once per device)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("CUDA requested but no GPU is visible; training on the CPU")
        dev = torch.device("cpu")
    if str(dev) not in _announced:
        _announced.add(str(dev))
        name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        log.info("fersearch trains on %s (%s)", dev, name)
    return dev


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmul/conv run natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """'auto' picks bf16 where the hardware runs it natively, else fp32.

    Measured (benchmarks/bench_train.py, seed CNN, batch 64, channels-last): on an AMD EPYC
    with AVX512-BF16, bf16 autocast trains ~1.8x faster than fp32; without native bf16
    it is emulated and slower than fp32, so 'auto' stays fp32 there."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


# ---------------------------------------------------------------- data on the device
def split_tensors(data: FerData, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled images of one split as (uint8 (N,1,48,48), int64 (N,)) on the device."""
    images, labels = data.subset(name)
    keep = labels >= 0
    x = torch.from_numpy(np.ascontiguousarray(images[keep])).unsqueeze(1).to(device)
    y = torch.from_numpy(np.ascontiguousarray(labels[keep]).astype(np.int64)).to(device)
    return x, y


def as_input(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to the float channels-last batch the model takes (still 0..255)."""
    return x_uint8.float().contiguous(memory_format=torch.channels_last)


def class_weights(labels: torch.Tensor, mode: str) -> torch.Tensor | None:
    """'balanced' as in scikit-learn: n / (classes * count), so rare Disgust counts as much as Happy."""
    if mode == "none":
        return None
    counts = torch.bincount(labels, minlength=NUM_CLASSES).float()
    present = counts > 0
    weights = torch.zeros(NUM_CLASSES, device=labels.device)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


# ---------------------------------------------------------------- augmentation (batched)
def augment_batch(x: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Random flip, shift + rotation, erasing of a float pixel batch (N,1,H,W), all on tensors."""
    if cfg.hflip:
        flip = torch.rand(x.shape[0], generator=gen, device=x.device) < 0.5
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
    if cfg.shift or cfg.rotation:
        x = _shift_rotate(x, cfg.shift, cfg.rotation, gen)
    if cfg.erasing > 0:
        x = _erase(x, cfg.erasing, gen)
    return x


def _shift_rotate(x: torch.Tensor, shift: int, rotation: float, gen: torch.Generator) -> torch.Tensor:
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


def _erase(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
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


# ---------------------------------------------------------------- evaluation / prediction
@torch.no_grad()
def _log_probs(model: nn.Module, x_uint8: torch.Tensor, batch_size: int, tta: bool) -> torch.Tensor:
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


def _images_tensor(images: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.to(device)


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
    lp = _log_probs(model, _images_tensor(images_uint8, dev), batch_size, tta)
    return lp.exp().cpu().numpy()


def evaluate(model: nn.Module, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
             batch_size: int = EVAL_BATCH, tta: bool = False, device: str | torch.device | None = None) -> dict:
    """Plain cross-entropy (no smoothing or class weights, so losses compare across configs),
    accuracy over labelled images (label >= 0), and the probabilities of every image."""
    dev = _model_device(model, device)
    lp = _log_probs(model, _images_tensor(images, dev), batch_size, tta)
    y = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).to(lp.device).long()
    loss, acc = _loss_acc(lp, y)
    return {"loss": loss, "acc": acc, "probs": lp.exp().cpu().numpy()}


def _loss_acc(log_probs: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    labelled = y >= 0
    if not bool(labelled.any()):
        return float("nan"), float("nan")
    lp, y = log_probs[labelled], y[labelled]
    return float(F.nll_loss(lp, y)), float((lp.argmax(1) == y).float().mean())


# ---------------------------------------------------------------- fit
@dataclass
class FitResult:
    model: nn.Module  # best weights restored, eval mode
    history: list[dict]
    best_epoch: int
    best_val_acc: float
    stopped_early: bool
    device: str
    images_per_s: float  # training images per second over all epochs of this call
    precision: str = "fp32"

    @property
    def epochs(self) -> int:
        return len(self.history)


@dataclass
class _Early:
    """Early stopping on val_acc; keeps a copy of the best weights to restore at the end."""
    patience: int
    best_val_acc: float = -1.0
    best_epoch: int = 0
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    stopped: bool = False

    def update(self, epoch: int, val_acc: float, model: nn.Module) -> None:
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch = val_acc, epoch
            self.best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif self.patience and epoch - self.best_epoch >= self.patience:
            self.stopped = True


class _Run:
    """Everything that changes during fit: model, optimiser, schedule, RNGs, early stopping, history."""

    def __init__(self, cfg: TrainConfig, data: FerData, device: torch.device, precision: str):
        self.cfg, self.device, self.precision = cfg, device, precision
        seed_everything(cfg.seed)
        self.train_x, self.train_y = split_tensors(data, "train", device)
        self.val_x, self.val_y = split_tensors(data, "val", device)
        for name, y in (("train", self.train_y), ("val", self.val_y)):
            if y.numel() == 0:
                raise DataError(f"data {data.source or '(in memory)'} has no labelled {name} images; "
                                f"check its Usage/split column or pass another --data")
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.weights = class_weights(self.train_y, cfg.class_weighting)
        self.perm_gen = torch.Generator().manual_seed(cfg.seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.early = _Early(cfg.patience)
        self.history: list[dict] = []
        self.epoch = 0
        self.trained_images, self.trained_s = 0, 0.0  # throughput of this call (not part of the state)

    # -- one epoch of training
    def batches(self) -> Iterator[torch.Tensor]:
        n, bs = self.train_y.numel(), self.cfg.batch_size
        perm = torch.randperm(n, generator=self.perm_gen).to(self.device)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            # BatchNorm1d cannot normalise a batch of one; drop such a tail batch.
            if idx.numel() == 1 and self.cfg.batch_norm and n > 1:
                continue
            yield idx

    def train_epoch(self, progress: _Progress | None) -> tuple[float, float, int, float]:
        """(mean loss, accuracy, images, seconds) over the training split."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        start = time.perf_counter()
        for idx in self.batches():
            xb = augment_batch(as_input(self.train_x[idx]), self.cfg, self.aug_gen)
            yb = self.train_y[idx]
            with autocast(self.device, self.precision):
                logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb, weight=self.weights, label_smoothing=self.cfg.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # Running sums stay on the device: no host sync per batch.
            loss_sum += loss.detach() * yb.numel()
            correct += (logits.argmax(1) == yb).sum()
            seen += yb.numel()
            if progress:
                progress.batch(seen, self.train_y.numel(), lambda: (float(loss_sum) / seen, float(correct) / seen))
        elapsed = time.perf_counter() - start
        self.trained_images += seen
        self.trained_s += elapsed
        return float(loss_sum) / max(seen, 1), float(correct) / max(seen, 1), seen, elapsed

    def step_epoch(self, progress: _Progress | None) -> dict:
        epoch_start = time.perf_counter()
        self.epoch += 1
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_acc, train_n, train_s = self.train_epoch(progress)
        val_loss, val_acc = _loss_acc(_log_probs(self.model, self.val_x, EVAL_BATCH, False), self.val_y)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_acc)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.early.update(self.epoch, val_acc, self.model)
        metrics = {
            "epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "images_per_s": train_n / train_s if train_s > 0 else float("nan"),
            "epoch_time_s": time.perf_counter() - epoch_start, "best_val_acc": self.early.best_val_acc,
        }
        self.history.append(metrics)
        return metrics

    def done(self) -> bool:
        return self.early.stopped or self.epoch >= self.cfg.epochs

    # -- exact save/restore
    def state(self) -> dict:
        """A deep, CPU-side snapshot: later training never changes it, and it loads with weights_only=True."""
        np_state = np.random.get_state()
        snap = {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "early": {"best_val_acc": self.early.best_val_acc, "best_epoch": self.early.best_epoch,
                      "best_weights": self.early.best_weights, "stopped": self.early.stopped},
            "history": self.history,
            "rng": {
                "perm": self.perm_gen.get_state(), "aug": self.aug_gen.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else [],
                "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
                "python": random.getstate(),
            },
        }
        return _to_cpu(copy.deepcopy(snap))

    def load(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError("resume state is not a fersearch training state; pass the dict from on_epoch's state()")
        _check_resumable(state.get("config") or {}, self.cfg)
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        e = state["early"]
        self.early.best_val_acc, self.early.best_epoch = float(e["best_val_acc"]), int(e["best_epoch"])
        self.early.best_weights = {k: v.to(self.device) for k, v in e["best_weights"].items()}
        self.early.stopped = bool(e["stopped"])
        self.history = [dict(h) for h in state["history"]]
        rng = state["rng"]
        self.perm_gen.set_state(rng["perm"])
        self.aug_gen.set_state(rng["aug"])
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(rng["cuda"])
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(_tuples(rng["python"]))

    def finish(self) -> nn.Module:
        if self.early.best_weights:
            self.model.load_state_dict(self.early.best_weights)
        return self.model.eval()


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def _tuples(obj: Any) -> Any:
    """random.setstate needs tuples; a state that went through JSON or a checkpoint may hold lists."""
    return tuple(_tuples(v) for v in obj) if isinstance(obj, (list, tuple)) else obj


def _check_resumable(saved: dict, cfg: TrainConfig) -> None:
    now = cfg.to_dict()
    for key, value in now.items():
        if key not in RESUMABLE_CHANGES and saved.get(key) != value:
            raise ConfigError(
                f"cannot resume: config key {key!r} was {saved.get(key)!r} in the saved state but is {value!r} now; "
                f"resume with the same config (only {', '.join(RESUMABLE_CHANGES)} may change)"
            )


def fit(cfg: TrainConfig, data: FerData, on_epoch: Callable[[dict, Callable[[], dict]], Any] | None = None,
        resume: dict | None = None, device: str | torch.device | None = None, threads: int | None = None,
        progress: bool = False) -> FitResult:
    """Train `cfg` on the train split, validate every epoch, stop early on val_acc, return the best model."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed 48x48 shapes: let cuDNN pick its fastest kernels once
    precision = resolve_precision(cfg.precision, dev)
    run = _Run(cfg, data, dev, precision)
    if resume is not None:
        run.load(resume)
    bar = _Progress(cfg.epochs, dev, precision, run.train_y.numel(), run.val_y.numel()) if progress else None
    while not run.done():
        if bar:
            bar.start(run.epoch + 1)
        metrics = run.step_epoch(bar)
        if bar:
            bar.end(metrics)
        if on_epoch is not None:
            on_epoch(dict(metrics), run.state)
    return FitResult(
        model=run.finish(), history=list(run.history), best_epoch=run.early.best_epoch,
        best_val_acc=run.early.best_val_acc, stopped_early=run.early.stopped, device=str(dev),
        images_per_s=run.trained_images / run.trained_s if run.trained_s > 0 else float("nan"), precision=precision,
    )


# ---------------------------------------------------------------- progress (plain stderr)
class _Progress:
    """One line per epoch on stderr; on a terminal it updates in place with live loss/acc."""

    WIDTH, EVERY_S = 24, 0.5

    def __init__(self, epochs: int, device: torch.device, precision: str, n_train: int, n_val: int):
        self.epochs, self.tty = epochs, sys.stderr.isatty()
        self.last = 0.0
        self.epoch = 0
        print(f"training on {device} ({precision}, {plural(torch.get_num_threads(), 'thread')}): "
              f"{n_train} train / {n_val} val images, up to {plural(epochs, 'epoch')}", file=sys.stderr, flush=True)

    def start(self, epoch: int) -> None:
        self.epoch, self.t0, self.last = epoch, time.perf_counter(), 0.0

    def batch(self, seen: int, total: int, running: Callable[[], tuple[float, float]]) -> None:
        now = time.perf_counter()
        if not self.tty or now - self.last < self.EVERY_S:
            return
        self.last = now
        loss, acc = running()
        done = int(self.WIDTH * seen / total)
        rate = seen / max(now - self.t0, 1e-9)
        sys.stderr.write(f"\repoch {self.epoch}/{self.epochs} [{'#' * done}{'.' * (self.WIDTH - done)}] "
                         f"loss {loss:.3f} acc {acc:.3f} {rate:,.0f} img/s ")
        sys.stderr.flush()

    def end(self, m: dict) -> None:
        line = (f"epoch {m['epoch']}/{self.epochs}  loss {m['train_loss']:.3f}  acc {m['train_acc']:.3f}  "
                f"val_loss {m['val_loss']:.3f}  val_acc {m['val_acc']:.3f}  lr {m['lr']:.2g}  "
                f"{m['images_per_s']:,.0f} img/s  {m['epoch_time_s']:.1f}s")
        sys.stderr.write(("\r\033[K" if self.tty else "") + line + "\n")
        sys.stderr.flush()


# ---------------------------------------------------------------- one training run to a directory
def default_out_dir() -> Path:
    return Path("results") / f"train-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def resolve_config(config_file: str | Path | None = None, overrides: dict | None = None, *,
                   epochs: int | None = None, seed: int | None = None) -> TrainConfig:
    """The config of a `fersearch train` run: seed defaults <- JSON file <- --set <- --epochs/--seed.
    Every mistake is a ConfigError here, before any data is read."""
    base = TrainConfig.from_json_file(str(config_file)) if config_file is not None else TrainConfig()
    flags = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
    return TrainConfig.from_dict({**(overrides or {}), **flags}, base=base)


def format_summary(summary: dict) -> str:
    epochs = plural(summary["epochs"], "epoch")
    stop = f", stopped early after {epochs}" if summary["stopped_early"] else f" of {epochs}"
    return (f"best val_acc {summary['val_acc']:.4f} at epoch {summary['best_epoch']}{stop} "
            f"({summary['train_time_s']:.0f}s, {summary['images_per_s']:,.0f} img/s on {summary['device']}, "
            f"{summary['precision']})\nwrote {summary['out']}/: config.json history.csv model.pt fersearch.json")


def train_to_dir(cfg: TrainConfig, data: FerData, out: str | Path | None = None, *, command: str = "",
                 threads: int | None = None, progress: bool = False) -> dict:
    """Train and write config.json, history.csv (rewritten every epoch), model.pt and fersearch.json
    to `out`; returns the summary also stored in fersearch.json under 'result'."""
    from ..io import atomic_write_text, versions, write_json

    out = Path(out) if out is not None else default_out_dir()
    if (out / "model.pt").exists():
        raise ExperimentError(f"{out} already holds a training run (model.pt); pass another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    meta = {"command": command, "created": datetime.now().isoformat(timespec="seconds"),
            "data": {"path": data.source, **data.info()}, "config": cfg.to_dict(), "versions": versions()}
    write_json(out / "fersearch.json", meta)

    history: list[dict] = []

    def on_epoch(metrics: dict, _state: Callable[[], dict]) -> None:
        history.append(metrics)
        atomic_write_text(out / "history.csv", history_csv(history))

    result = fit(cfg, data, on_epoch=on_epoch, threads=threads, progress=progress)
    last = result.history[-1]
    summary = {
        "val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "epochs": result.epochs,
        "last_val_acc": last["val_acc"], "val_loss": result.history[result.best_epoch - 1]["val_loss"],
        "stopped_early": result.stopped_early, "images_per_s": result.images_per_s,
        "device": result.device, "precision": result.precision,
        "train_time_s": sum(h["epoch_time_s"] for h in result.history), "out": str(out),
    }
    save_model(out / "model.pt", result.model, cfg,
               {"val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "data_sha256": data.sha256,
                "data_path": str(data.source)})
    write_json(out / "fersearch.json", {**meta, "result": summary})
    return summary
