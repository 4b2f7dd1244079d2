"""The training loop: `fit(cfg, data)` trains one configuration and returns the best model.

It knows nothing of Ray, run folders or the CLI (the Ray trainable and `fersearch train`
are thin callers). Why it is fast without a DataLoader: a FER split is tiny (28k x 48x48
bytes = 66 MB), so each split lives as one uint8 tensor on the device, a batch is an
index slice of a seeded permutation, and augmentation runs on the whole batch at once
(train/augment.py). Convolutions run channels-last, under bf16 autocast where the
hardware has native bf16 (train/device.py).

Divergence: a run whose training loss turns NaN or infinite stops there (checked every
DIVERGENCE_CHECK_EVERY batches, which costs one host sync each, and at the end of every epoch)
instead of training on broken weights; that epoch is reported with `diverged` (the reason)
and no validation figures, and `FitResult.diverged` says why.

Reproducible: for a given seed, fp32 on the CPU gives bit-identical weights (on a GPU with
`deterministic=true`, device.set_deterministic), and `fit(resume=state)` continues a run
exactly where `state()` was taken (model, optimiser, scheduler, early stopping, history and
every RNG). A state holds the RNG of its own device only (one GPU, not every visible one);
resumed on another device type, whose generator cannot take that state (Philox on CUDA,
mt19937 on the CPU), the augmentation generator is reseeded from the seed and the epoch,
with a logged note: the run continues, but not bit-identically.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import paired
from ..config import TrainConfig
from ..errors import ConfigError, DataError
from ..model import build_model
from .augment import augment_batch
from .device import DeviceClock, autocast, resolve_device, resolve_precision, seed_everything, set_deterministic
from .graphs import GraphedEval, GraphedSteps, graphed_eval, portable_optimizer_state, use_graphs
from .predict import EVAL_BATCH, as_input, log_probs
from .progress import EpochProgress
from .recipe import class_weights, make_optimizer, make_scheduler, split_tensors, training_loss
from .snapshot import STATE_FORMAT, as_tuples, check_resumable, to_cpu

if TYPE_CHECKING:
    from rich.console import Console

    from ..data import FerData

log = logging.getLogger(__name__)

METRIC_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_time_s",
               "best_val_acc")
DIVERGENCE_CHECK_EVERY = 16  # batches between checks for a non-finite loss (each check syncs with the device)


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
    diverged: str | None = None  # why training stopped at a non-finite loss; None when it did not
    cuda_graphs: bool = False  # whether full batches replayed a captured CUDA graph (train/graphs.py)
    capture_s: float = float("nan")  # seconds the training step's capture took (NaN without graphs)

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
        self.model = build_model(cfg).to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.weights = class_weights(self.train_y, cfg.class_weighting)
        self.perm_gen = torch.Generator().manual_seed(cfg.seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
        self.early = _Early(cfg.patience)
        self.history: list[dict] = []
        self.epoch = 0
        self.diverged: str | None = None
        self.trained_images, self.trained_s = 0, 0.0  # throughput of this call (not part of the state)
        # Running sums of an epoch stay on the device (no host sync per batch); a graph adds into them.
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.graphed = use_graphs(cfg.cuda_graphs, device)
        self.graphs: GraphedSteps | None = None  # made at the first epoch, after any resume's load
        self.eval_graph: GraphedEval | None = None
        self.eval_tried = False
        self.perm_host: torch.Tensor | None = None  # pinned, on a GPU: the permutation's copy needs no sync

    # -- one epoch of training
    def batches(self, perm: torch.Tensor) -> Iterator[torch.Tensor]:
        n, bs = perm.numel(), self.cfg.batch_size
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            # BatchNorm1d cannot normalise a batch of one; drop such a tail batch.
            if idx.numel() == 1 and self.cfg.batch_norm and n > 1:
                continue
            yield idx

    def step(self, idx: torch.Tensor) -> None:
        """One optimiser step on the training images `idx`, added to the epoch's running sums.
        The same code runs eagerly and inside a CUDA graph's capture (train/graphs.py)."""
        xb = augment_batch(as_input(self.train_x[idx]), self.cfg, self.aug_gen)
        yb = self.train_y[idx]
        with autocast(self.device, self.precision, cache=not self.graphed):
            logits = self.model(xb)
        loss = training_loss(logits.float(), yb, self.weights, self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach() * yb.shape[0]
        self.correct += (logits.argmax(1) == yb).sum()

    def _graphs(self) -> GraphedSteps | None:
        if self.graphed and self.graphs is None:
            self.graphs = GraphedSteps(self.step, self.optimizer, self.train_y.numel(), self.cfg.batch_size,
                                       self.device, (self.aug_gen,), strict=self.cfg.cuda_graphs == "on")
        return self.graphs

    def permutation(self) -> torch.Tensor:
        """The epoch's seeded order of the training images, on the device. On a GPU it is drawn into
        pinned memory and copied without a host sync (the epoch's summary syncs before the next draw)."""
        n = self.train_y.numel()
        if self.device.type != "cuda":
            return torch.randperm(n, generator=self.perm_gen)
        if self.perm_host is None:
            self.perm_host = torch.empty(n, dtype=torch.long).pin_memory()
        torch.randperm(n, generator=self.perm_gen, out=self.perm_host)
        return self.perm_host.to(self.device, non_blocking=True)

    def train_epoch(self, progress: EpochProgress | None) -> tuple[int, DeviceClock]:
        """Trains one epoch; returns (images, its clock). The loss and accuracy sums stay on the device."""
        self.model.train()
        self.loss_sum.zero_()
        self.correct.zero_()
        seen, n = 0, self.train_y.numel()
        clock = DeviceClock(self.device)
        perm = self.permutation()
        graphs = self._graphs()
        replayed = graphs.start_epoch(perm) if graphs is not None else 0
        for i, idx in enumerate(self.batches(perm)):
            if graphs is not None and i < replayed and graphs.active:
                graphs.run(i, idx)
            else:
                self.step(idx)
            seen += idx.shape[0]
            if progress:
                progress.batch(seen, n, functools.partial(_running, self.loss_sum, self.correct, seen))
            if (i + 1) % DIVERGENCE_CHECK_EVERY == 0 and not torch.isfinite(self.loss_sum):
                break  # diverged: more steps on NaN/inf weights only waste time
        clock.stop()
        return seen, clock

    def validate(self) -> torch.Tensor:
        """The validation split's log-probabilities; replayed from a graph where the run uses graphs."""
        if self.graphed and not self.eval_tried and self.val_y.numel() >= EVAL_BATCH:
            self.eval_tried = True  # one capture a run; a failed one is logged once, then eager
            self.model.eval()
            self.eval_graph = graphed_eval(self.model, EVAL_BATCH, False, as_input, self.cfg.cuda_graphs)
        if self.eval_graph is None:
            return log_probs(self.model, self.val_x, EVAL_BATCH)
        self.model.eval()
        try:
            return self.eval_graph(self.val_x)
        finally:
            self.model.train()

    def summary(self, val_lp: torch.Tensor, seen: int) -> tuple[float, float, float, float, dict[str, str]]:
        """(train loss, train accuracy, val loss, val accuracy, per-image record) of the epoch, copied to
        the host at once: the epoch's one host sync (besides the divergence checks)."""
        y = self.val_y  # every one labelled (split_tensors)
        losses = -val_lp.gather(1, y[:, None])[:, 0]
        right = val_lp.argmax(1) == y
        head = torch.stack([self.loss_sum.float(), self.correct.float(), F.nll_loss(val_lp, y), right.float().mean()])
        host = torch.cat([head, right.float(), losses.float()]).cpu().numpy()
        n = y.numel()
        record = paired.encode(host[4:4 + n] > 0.5, host[4 + n:])
        seen = max(seen, 1)
        return float(host[0]) / seen, float(host[1]) / seen, float(host[2]), float(host[3]), record

    def step_epoch(self, progress: EpochProgress | None) -> dict:
        epoch_start = time.perf_counter()
        self.epoch += 1
        lr = self.optimizer.param_groups[0]["lr"]
        train_n, train_clock = self.train_epoch(progress)
        eval_clock = DeviceClock(self.device)
        val_lp = self.validate()
        eval_clock.stop()
        train_loss, train_acc, val_loss, val_acc, record = self.summary(val_lp, train_n)
        train_s, eval_s = train_clock.seconds(), eval_clock.seconds()
        self.trained_images += train_n
        self.trained_s += train_s
        images_per_s = train_n / train_s if train_s > 0 else float("nan")
        if not math.isfinite(train_loss):
            return self._diverge(lr, train_loss, train_acc, images_per_s, epoch_start)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_acc)
        elif self.scheduler is not None:
            self.scheduler.step()
        self.early.update(self.epoch, val_acc, self.model)
        metrics = {
            "epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "images_per_s": images_per_s,
            "epoch_time_s": time.perf_counter() - epoch_start, "best_val_acc": self.early.best_val_acc,
        }
        self.history.append(metrics)
        # Per validation image (fersearch.paired): not history (text, ~1.5 bytes an image), only the report.
        # train_s / eval_s: where the epoch's time went (bench_gpu.py's headline reads them).
        return {**metrics, "train_s": train_s, "eval_s": eval_s, **record}

    def _diverge(self, lr: float, train_loss: float, train_acc: float, images_per_s: float,
                 epoch_start: float) -> dict:
        """The epoch whose training loss went non-finite: no validation figures (the weights are broken),
        no schedule or early-stopping step; the run ends here."""
        self.diverged = (f"training loss became {train_loss} in epoch {self.epoch} at lr {lr:g}; "
                         f"lower the learning rate")
        nan = float("nan")
        metrics = {
            "epoch": self.epoch, "train_loss": train_loss, "train_acc": train_acc, "val_loss": nan, "val_acc": nan,
            "lr": lr, "images_per_s": images_per_s, "epoch_time_s": time.perf_counter() - epoch_start,
            "best_val_acc": self.early.best_val_acc if self.early.best_epoch else nan, "diverged": self.diverged,
        }
        self.history.append(metrics)
        return metrics

    def done(self) -> bool:
        return self.diverged is not None or self.early.stopped or self.epoch >= self.cfg.epochs

    # -- exact save/restore
    def state(self) -> dict:
        """A deep, CPU-side snapshot: later training never changes it, and it loads with weights_only=True."""
        np_state = np.random.get_state()
        # The best weights are the model's own when this epoch is the best: not stored twice.
        best_is_current = self.early.best_epoch == self.epoch and bool(self.early.best_weights)
        snap = {
            "format": STATE_FORMAT,
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": portable_optimizer_state(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "early": {"best_val_acc": self.early.best_val_acc, "best_epoch": self.early.best_epoch,
                      "best_weights": {} if best_is_current else self.early.best_weights,
                      "best_is_current": best_is_current, "stopped": self.early.stopped},
            "history": self.history,
            "rng": {
                "perm": self.perm_gen.get_state(), "aug": self.aug_gen.get_state(), "aug_device": self.device.type,
                "torch": torch.get_rng_state(),
                # This trial's GPU only: a state of every visible GPU cannot load where fewer are visible.
                "cuda": [torch.cuda.get_rng_state(self.device)] if self.device.type == "cuda" else [],
                "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],  # type: ignore[index]
                "python": random.getstate(),
            },
        }
        return to_cpu(copy.deepcopy(snap))

    def load(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ConfigError("resume state is not a fersearch training state; pass the dict from on_epoch's state()")
        check_resumable(state.get("config") or {}, self.cfg)
        self.epoch = int(state["epoch"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.graphs = None  # a graph captured the old optimiser state's tensors: capture again
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        e = state["early"]
        self.early.best_val_acc, self.early.best_epoch = float(e["best_val_acc"]), int(e["best_epoch"])
        if e.get("best_is_current"):
            self.early.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.early.best_weights = {k: v.to(self.device) for k, v in e["best_weights"].items()}
        self.early.stopped = bool(e["stopped"])
        self.history = [dict(h) for h in state["history"]]
        rng = state["rng"]
        self.perm_gen.set_state(rng["perm"])
        self._load_aug(rng)
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and self.device.type == "cuda":
            # Older states hold every visible GPU's; the first is the trial's own ("cuda" = its GPU under Ray).
            torch.cuda.set_rng_state(rng["cuda"][0], self.device)
        name, keys, *rest = rng["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))
        random.setstate(as_tuples(rng["python"]))

    def _load_aug(self, rng: dict) -> None:
        """The augmentation generator's state, when it comes from this device type; else a fresh seed."""
        saved = rng.get("aug_device") or ("cpu" if rng["aug"].numel() > 16 else "cuda")  # mt19937: 5056 bytes
        if saved == self.device.type:
            self.aug_gen.set_state(rng["aug"])
            return
        self.aug_gen.manual_seed(self.cfg.seed + 1 + 1000 * self.epoch)
        log.warning("resumed on %s from a %s state: augmentation continues from a fresh seed (epoch %d), "
                    "so this run is not bit-identical to an uninterrupted one", self.device.type, saved, self.epoch)

    def finish(self) -> nn.Module:
        if self.early.best_weights:
            self.model.load_state_dict(self.early.best_weights)
        return self.model.eval()


def _running(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, float]:
    """(mean loss, accuracy) so far: a device sync, so only when the progress bar asks."""
    return float(loss_sum) / seen, float(correct) / seen


def fit(cfg: TrainConfig, data: FerData, on_epoch: Callable[[dict, Callable[[], dict]], Any] | None = None,
        resume: dict | None = None, device: str | torch.device | None = None, threads: int | None = None,
        progress: bool | Console = False) -> FitResult:
    """Train `cfg` on the train split, validate every epoch, stop early on val_acc, return the best model.

    `on_epoch(metrics, state)` after every epoch (`state()` snapshots the run for `resume`).
    `progress`: True shows progress on stderr, a rich Console shows it there, False prints nothing."""
    if threads:
        torch.set_num_threads(int(threads))
    dev = resolve_device(device)
    if dev.type == "cuda" or cfg.deterministic or torch.are_deterministic_algorithms_enabled():
        set_deterministic(cfg.deterministic)  # also turns off what an earlier deterministic fit turned on
    precision = resolve_precision(cfg.precision, dev, graphs=use_graphs(cfg.cuda_graphs, dev))
    run = _Run(cfg, data, dev, precision)
    if resume is not None:
        run.load(resume)
    bar = None
    if progress is not False:
        console = None if progress is True else progress
        bar = EpochProgress(cfg.epochs, dev, precision, run.train_y.numel(), run.val_y.numel(), console=console)
    with bar or contextlib.nullcontext():
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
        diverged=run.diverged, cuda_graphs=run.graphs is not None and run.graphs.graph is not None,
        capture_s=run.graphs.capture_s if run.graphs is not None else float("nan"),
    )
