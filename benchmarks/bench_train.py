"""Training throughput of `fit` beside the two usual ways of writing the same loop; prints JSON.

Same model (the seed CNN unless --set says otherwise), same synthetic images, same batch size,
measured side by side in one process, in alternating rounds so machine load hits all alike:

  fit_auto     fersearch.train.fit: uint8 split as one tensor, index-slice batches, channels-last,
               precision 'auto' (bf16 autocast where the CPU/GPU has native bf16)
  fit_fp32     the same with precision=fp32 (what 'auto' is measured against)
  fit_torch_dropout  fit_auto with PyTorch's own dropout instead of fersearch's cheaper CPU mask
  (plain_fp32 and dataloader use PyTorch's dropout too: they are what a user would write)
  plain_fp32   a textbook loop: a list of ready-made float32 batch tensors (NCHW), fp32 forward/backward
  dataloader   a per-sample torch Dataset (uint8 image -> float tensor in __getitem__) + DataLoader
               (shuffle, batch collation, num_workers=0), fp32

Each round trains one warm-up epoch and one timed epoch per method (training phase only,
images/s); the report has the median and best of the rounds and the ratios of medians.

    .venv/bin/python benchmarks/bench_train.py [--n 3000] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fersearch.config import TrainConfig, parse_set  # noqa: E402
from fersearch.data.synth import synthetic_data  # noqa: E402
from fersearch.model import Dropout, build_model  # noqa: E402
from fersearch.train import fit  # noqa: E402
from fersearch.train.device import native_bf16, resolve_device, resolve_precision  # noqa: E402


@contextlib.contextmanager
def torch_dropout():
    """fersearch's Dropout layers behave exactly as torch.nn.Dropout while inside."""
    own = Dropout.forward
    Dropout.forward = torch.nn.Dropout.forward
    try:
        yield
    finally:
        Dropout.forward = own


def bench_fit(cfg, data, precision: str) -> float:
    result = fit(cfg.replace(epochs=2, patience=0, precision=precision), data)
    return result.history[-1]["images_per_s"]  # epoch 2: after oneDNN's first-call set-up


def _train_epoch(model, optimizer, batches) -> float:
    model.train()
    start = time.perf_counter()
    seen = 0
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(yb)
    return seen / (time.perf_counter() - start)


@torch_dropout()
def bench_plain(cfg, images: np.ndarray, labels: np.ndarray) -> float:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x = torch.from_numpy(images).float().unsqueeze(1)
    y = torch.from_numpy(labels)
    bs = cfg.batch_size
    batches = [(x[i:i + bs].clone(), y[i:i + bs].clone()) for i in range(0, len(y), bs)]
    _train_epoch(model, optimizer, batches)
    return _train_epoch(model, optimizer, batches)


class PerSample(torch.utils.data.Dataset):
    """The per-sample pipeline most tutorials write: one image converted per __getitem__ call."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return torch.tensor(self.images[i], dtype=torch.float32).unsqueeze(0), int(self.labels[i])


@torch_dropout()
def bench_dataloader(cfg, images: np.ndarray, labels: np.ndarray) -> float:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loader = torch.utils.data.DataLoader(PerSample(images, labels), batch_size=cfg.batch_size, shuffle=True,
                                         num_workers=0)
    _train_epoch(model, optimizer, loader)
    return _train_epoch(model, optimizer, loader)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="synthetic faces (80%% train)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--set", action="append", default=[], help="config key=value, as in `fersearch train`")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig.from_dict(parse_set(args.set))
    data = synthetic_data(n=args.n, seed=0)
    images, labels = data.subset("train")
    device = resolve_device()
    methods = {
        "fit_auto": lambda: bench_fit(cfg, data, "auto"),
        "fit_fp32": lambda: bench_fit(cfg, data, "fp32"),
        "fit_torch_dropout": torch_dropout()(lambda: bench_fit(cfg, data, "auto")),
        "plain_fp32": lambda: bench_plain(cfg, images, labels),
        "dataloader": lambda: bench_dataloader(cfg, images, labels),
    }
    runs: dict[str, list[float]] = {k: [] for k in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            runs[name].append(run())
    med = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "benchmark": "train_throughput",
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "best_images_per_s": {k: round(max(v), 1) for k, v in runs.items()},
        "rounds": {k: [round(x, 1) for x in v] for k, v in runs.items()},
        "ratios": {
            "fit_auto_vs_plain_fp32": round(med["fit_auto"] / med["plain_fp32"], 2),
            "fit_auto_vs_dataloader": round(med["fit_auto"] / med["dataloader"], 2),
            "fit_fp32_vs_plain_fp32": round(med["fit_fp32"] / med["plain_fp32"], 2),
            "fit_auto_vs_fit_fp32": round(med["fit_auto"] / med["fit_fp32"], 2),
            "fit_auto_vs_fit_torch_dropout": round(med["fit_auto"] / med["fit_torch_dropout"], 2),
        },
        "auto_precision": resolve_precision("auto", device),
        "native_bf16": native_bf16(device),
        "device": str(device), "cpu": platform.processor() or platform.machine(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads(),
        "train_images": int(len(labels)), "batch_size": cfg.batch_size, "config": parse_set(args.set),
        "torch": torch.__version__,
        "load_average": list(__import__("os").getloadavg()),
    }, indent=2))


if __name__ == "__main__":
    main()
