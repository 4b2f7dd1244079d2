"""Where and in what precision training runs: device choice, bf16 detection, autocast, seeding,
determinism, and a clock of the device's own time."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time

import numpy as np
import torch

log = logging.getLogger(__name__)

_announced: set[str] = set()


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


BF16_MIN_CAPABILITY = (8, 0)  # Ampere: the first NVIDIA GPUs with bf16 tensor cores


def bf16_capability(capability: tuple[int, int]) -> bool:
    """Whether a CUDA compute capability runs bf16 natively. V100 (7.0) and T4 (7.5) only emulate it,
    slower than fp32; `torch.cuda.is_bf16_supported()` answers True for them unless told
    `including_emulation=False`, so the capability decides here."""
    return tuple(capability) >= BF16_MIN_CAPABILITY


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 matmul/conv run natively (AVX512-BF16/AMX CPUs, Ampere+ GPUs)."""
    if device.type == "cuda":
        if torch.version.hip:  # every ROCm GPU torch supports runs bf16 (torch's own rule)
            return True
        return bf16_capability(torch.cuda.get_device_capability(device))
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device, graphs: bool = False) -> str:
    """'auto' picks the precision that trains faster here, by measurement:

    - CPU (benchmarks/bench_train.py, seed CNN, batch 64, channels-last): on an AMD EPYC with
      AVX512-BF16, bf16 autocast trains ~1.8x faster than fp32; without native bf16 it is
      emulated and slower, so fp32 there.
    - CUDA, eager steps (bench_gpu.py on an H200, 2026-12-04): bf16 was *slower* than fp32
      (21,952 vs 26,563 img/s at batch 64; 90,803 vs 97,798 at 256): a launch-bound step only
      gains autocast's extra cast kernels. So fp32.
    - CUDA, a captured step (train/graphs.py): the launches are gone and bf16's tensor cores
      count: fit ran 90,974 vs 81,490 img/s at batch 64 and 187,003 vs 150,564 at 256 on the
      H200 (bench_gpu.py --quick, 2026-12-04). So bf16 where the GPU has it natively (Ampere on)."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and not graphs:
        return "fp32"
    return "bf16" if native_bf16(device) else "fp32"


def autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast for 'bf16'; a no-op for 'fp32'. cache=False inside a CUDA graph's capture (the
    cast weights must be recomputed on every replay, not cached from the capture)."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()


def set_deterministic(enabled: bool) -> None:
    """`deterministic=true`: bit-identical runs on a GPU for a seed, at a speed cost. cuDNN's
    autotuner (`benchmark`) may pick different kernels per run, and atomic-add kernels
    (some convolution backward passes, index_add) sum in a different order each time."""
    if enabled:  # cuBLAS reorders its sums unless given a fixed workspace (read when its handle is made)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = not enabled  # fixed 48x48 shapes: otherwise let cuDNN pick its fastest kernels
    torch.backends.cudnn.deterministic = enabled
    # warn_only: an op with no deterministic CUDA kernel warns instead of ending the trial.
    torch.use_deterministic_algorithms(enabled, warn_only=True)


def seed_everything(seed: int) -> None:
    """Python, numpy and torch (every CUDA device too) from one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class DeviceClock:
    """Seconds of device work without a host sync: CUDA events on a GPU, read after the epoch's one
    sync (summary); perf_counter on the CPU. Starts when made."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.t0, self.elapsed = time.perf_counter(), 0.0
        if self.cuda:
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()

    def stop(self) -> None:
        if self.cuda:
            self.end.record()
        else:
            self.elapsed = time.perf_counter() - self.t0

    def seconds(self) -> float:
        return self.start.elapsed_time(self.end) / 1000 if self.cuda else self.elapsed
