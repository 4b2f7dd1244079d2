"""CUDA graphs: the whole training step, and evaluation, replayed as one captured graph each.

Why: the seed CNN at batch 64 is launch-bound on a modern GPU. An eager step is ~100 small
kernels, each waiting on the host to launch it (26.6k img/s on an H200, no faster than the
tutorial loop); the same step captured once and replayed ran 3x faster (see bench_gpu.py).

How (torch.cuda.graph's recipe, as airbench and PyTorch's docs do it):
- The epoch's permutation lives in a static device buffer and the graph itself picks batch
  `pos` from it and advances `pos`, so a full-size batch costs one `replay()` and no copy.
- The first WARMUP_STEPS batches of a run train eagerly on a side stream (cuDNN autotuning and
  the optimiser's lazily made state happen there, never inside the capture); the next batch is
  captured and replayed; every later full-size batch replays. A short last batch runs eagerly,
  so an epoch still sees every image.
- Randomness: dropout draws from the default CUDA generator and augmentation from the run's own
  generator, registered with the graph, so each replay draws fresh numbers.
- The optimiser runs its fused kernels, capturable (Adam, AdamW, SGD: `fused=True`), and the
  learning rate the graph reads is a device tensor filled from the param group at each epoch's
  start, so cosine and plateau change it without a re-capture (a re-capture costs the capture
  time bench_gpu.py reports, every epoch; filling a tensor costs one tiny kernel).
- Saved states stay portable: `portable_optimizer_state` drops the capture flags, and
  `make_capturable` restores them after a load, so a graphed run resumes from an eager state
  and the other way round, on the GPU or the CPU.

A capture that fails logs one line with the reason and the run continues eagerly
(cuda_graphs=auto); cuda_graphs=on makes that an error instead.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("auto", "on", "off")
WARMUP_STEPS = 3  # eager steps before the capture: cuDNN's autotuner and the optimiser's state settle


def use_graphs(mode: str, device: torch.device) -> bool:
    """Whether a run on `device` captures its steps: 'auto' and 'on' on CUDA, never on the CPU."""
    if mode == "on" and device.type != "cuda":
        raise ConfigError(f"cuda_graphs=on needs a CUDA device, but this run trains on {device}; "
                          f"use cuda_graphs=auto (graphs where CUDA is) or off")
    return mode != "off" and device.type == "cuda"


# ---------------------------------------------------------------- the optimiser, capturable and portable
def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Flags that let `step()` be captured, on a new optimiser or one that just loaded a saved state.

    Fused kernels: Adam's fused step is 2 kernels where the capturable multi-tensor one launches one
    per operation over the parameter list (each costs its launch latency even inside a graph, and the
    seed CNN's step at batch 64 is made of small kernels), and the multi-tensor SGD reads a tensor lr
    on the host (.item()), which the fused one does not."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, False
        if "capturable" in group:  # Adam, AdamW: step() refuses to be captured without it
            group["capturable"] = True
    for param, state in optimizer.state.items():
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.device != param.device:  # capturable Adam keeps it on the GPU
            state["step"] = step.to(param.device, torch.float32)
    # Eager steps of a capturable optimiser (warm-up, short last batch) are expected here: no warning.
    optimizer._warned_capturable_if_run_uncaptured = True


def portable_optimizer_state(state: dict) -> dict:
    """An optimiser state_dict without capture flags, so it loads into an eager optimiser on any device."""
    groups = []
    for group in state["param_groups"]:
        group = dict(group)
        if group.get("capturable"):
            group["capturable"] = False
        if group.get("fused"):
            group["fused"], group["foreach"] = None, None
        if isinstance(group.get("lr"), torch.Tensor):
            group["lr"] = float(group["lr"])
        groups.append(group)
    return {**state, "param_groups": groups}


# ---------------------------------------------------------------- the training step
class GraphedSteps:
    """Replays `step` (augment, forward, loss, backward, optimiser step, running sums) for full batches.

    `step(idx)` is the run's eager training step on a batch of indices; it must only touch tensors
    that outlive the graph (the run's data, model, optimiser and running sums)."""

    def __init__(self, step: Callable[[torch.Tensor], None], optimizer: torch.optim.Optimizer, n: int,
                 batch_size: int, device: torch.device, generators: tuple[torch.Generator, ...], strict: bool):
        self.step, self.optimizer, self.batch_size, self.strict = step, optimizer, batch_size, strict
        self.generators = generators
        self.perm = torch.zeros(n, dtype=torch.long, device=device)
        self.pos = torch.zeros((), dtype=torch.long, device=device)
        self.offsets = torch.arange(batch_size, device=device)
        self.lr = torch.zeros((), dtype=torch.float32, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.failed: str | None = None
        self.warmed = 0
        self.capture_s = float("nan")
        self.side = torch.cuda.Stream(device)
        make_capturable(optimizer)

    @property
    def active(self) -> bool:
        return self.failed is None

    def start_epoch(self, perm: torch.Tensor) -> int:
        """Loads the epoch's permutation and learning rate; returns how many full batches replay."""
        n = perm.numel()
        self.perm[:n].copy_(perm)
        self.pos.zero_()
        self.lr.fill_(float(self.optimizer.param_groups[0]["lr"]))
        return n // self.batch_size if self.active else 0

    def run(self, i: int, idx: torch.Tensor) -> None:
        """Batch i (full-size) of the epoch: replayed, or eager while warming up, or captured then replayed."""
        if self.graph is not None:
            self.graph.replay()
            return
        if self.warmed < WARMUP_STEPS:
            self._warm(idx)
            return
        self._capture(i)
        if self.graph is not None:
            self.graph.replay()
        else:  # the capture failed: this batch (not trained by a capture) runs eagerly, as do all after it
            self.step(idx)

    def _warm(self, idx: torch.Tensor) -> None:
        self.side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.side):
            self.step(idx)
        torch.cuda.current_stream().wait_stream(self.side)
        self.warmed += 1

    def _captured_step(self) -> None:
        idx = self.perm[self.pos * self.batch_size + self.offsets]
        self.step(idx)
        self.pos += 1

    def _capture(self, i: int) -> None:
        self.pos.fill_(i)
        groups = self.optimizer.param_groups
        lrs = [g["lr"] for g in groups]
        graph = torch.cuda.CUDAGraph()
        t0 = time.perf_counter()
        try:
            for gen in self.generators:
                graph.register_generator_state(gen)
            self.optimizer.zero_grad(set_to_none=True)  # grads are made (and then overwritten) by the graph
            for g in groups:
                g["lr"] = self.lr  # the captured update reads the tensor; eager steps keep the float
            # thread_local: a thread of the trial's own (Ray's, a latency measurement) may use CUDA meanwhile
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._captured_step()
        except Exception as e:  # noqa: BLE001 - any capture failure: say why and train eagerly
            self.fail(e)
            return
        finally:
            for g, lr in zip(groups, lrs):
                g["lr"] = lr
        torch.cuda.synchronize()
        self.capture_s = time.perf_counter() - t0
        self.graph = graph

    def fail(self, error: BaseException) -> None:
        cause = error.__context__ if error.__context__ is not None else error
        reason = " ".join(str(cause).split())[:200] or type(cause).__name__
        if self.strict:
            raise ConfigError(f"CUDA graph capture failed ({reason}); use cuda_graphs=auto to fall back to "
                              f"eager steps, or off") from None
        self.failed = reason
        self.graph = None
        _release_generators(self.generators)
        torch.cuda.synchronize()
        self.optimizer.zero_grad(set_to_none=True)
        log.warning("CUDA graph capture failed (%s); training continues with eager steps", reason)


def _release_generators(generators: tuple[torch.Generator, ...]) -> None:
    """After a capture that broke off, its generators (ours and the device's default one, which every
    capture registers) still count as capturing, and eager random ops on them fail: give each a fresh
    state, seeded from its own seed (the run goes on, not bit-identically: the log line says so)."""
    device = generators[0].device if generators else torch.device("cuda", torch.cuda.current_device())
    default = torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    for gen in (*generators, default):
        fresh = torch.Generator(device=gen.device)
        fresh.manual_seed(gen.initial_seed() + 7919)
        try:
            gen.graphsafe_set_state(fresh.graphsafe_get_state())
        except (AttributeError, RuntimeError) as e:  # an older torch: the fallback may then fail on random ops
            log.debug("could not reset generator state after a failed capture: %s", e)


# ---------------------------------------------------------------- evaluation
class GraphedEval:
    """log_softmax(model(x)) (and the mirrored face's, for TTA) for batches of a fixed size, replayed.

    The model is captured in eval mode; its weights may change in place between calls (training,
    load_state_dict) but must not be replaced by new tensors."""

    def __init__(self, model: nn.Module, batch_size: int, tta: bool, forward: Callable[[torch.Tensor], torch.Tensor]):
        self.model, self.batch_size, self.tta, self.forward = model, batch_size, tta, forward
        device = next(model.parameters()).device
        self.x = torch.zeros((batch_size, 1, 48, 48), dtype=torch.uint8, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            forward(self.x)  # warm-up: cuDNN picks its kernels for this shape outside the capture
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.out = forward(self.x)

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        n, bs = x_uint8.shape[0], self.batch_size
        full = n - n % bs
        out = []
        for i in range(0, full, bs):
            self.x.copy_(x_uint8[i:i + bs])
            self.graph.replay()
            out.append(self.out.clone())
        if full < n:
            with torch.no_grad():
                out.append(self.forward(x_uint8[full:]))
        return torch.cat(out)


def eval_forward(model: nn.Module, tta: bool, as_input: Callable[[torch.Tensor], torch.Tensor]
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fp32 log-probabilities of a uint8 batch; with tta, averaged with the mirrored face's."""
    def forward(x_uint8: torch.Tensor) -> torch.Tensor:
        xb = as_input(x_uint8)
        lp = F.log_softmax(model(xb).float(), dim=1)
        if tta:
            lp_flip = F.log_softmax(model(xb.flip(3)).float(), dim=1)
            lp = torch.logsumexp(torch.stack([lp, lp_flip]), 0) - math.log(2)
        return lp
    return forward


def graphed_eval(model: nn.Module, batch_size: int, tta: bool, as_input: Callable[[torch.Tensor], torch.Tensor],
                 mode: str = "auto") -> GraphedEval | None:
    """A GraphedEval for a CUDA model, or None (CPU, cuda_graphs=off, or a capture that failed: logged)."""
    device = next(model.parameters()).device
    if not use_graphs(mode, device):
        return None
    try:
        return GraphedEval(model, batch_size, tta, eval_forward(model, tta, as_input))
    except Exception as e:  # noqa: BLE001 - evaluation then runs eagerly
        if mode == "on":
            raise ConfigError(f"CUDA graph capture of evaluation failed ({e}); use cuda_graphs=auto or off") from None
        torch.cuda.synchronize()
        log.warning("CUDA graph capture of evaluation failed (%s); evaluating with eager steps", e)
        return None
