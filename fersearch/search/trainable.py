"""The Ray trainable: a thin adapter that runs `fersearch.train.fit` on one trial's config.

fit knows nothing of Ray; this module gives it the trial's config (TrialSettings
+ the sampled values), a device, the checkpoint to continue from, and an
`on_epoch` that reports each epoch's metrics to Tune, with a checkpoint on the epochs
checkpoints.py schedules.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import TrainConfig
from .resources import Resources
from .workarounds import quiet_checkpoint_logs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its sampled config (shipped once via with_parameters)."""

    base: TrainConfig
    max_epochs: int
    threads: int
    experiment: str
    # Epochs that save a checkpoint (checkpoints.schedule_for); empty: every epoch.
    checkpoint_at: frozenset[int] = field(default_factory=frozenset)

    def checkpoints(self, epoch: int) -> bool:
        return not self.checkpoint_at or epoch in self.checkpoint_at

    def train_config(self, config: dict[str, Any]) -> TrainConfig:
        """A trial's full TrainConfig: the space's values on the base, epochs = --max-epochs."""
        return TrainConfig.from_dict({**config, "epochs": self.max_epochs}, base=self.base)


def run_trial(config: dict[str, Any], data: Any = None, settings: TrialSettings | None = None) -> None:
    """One trial: fit(config) on the shared data, reporting metrics every epoch, a checkpoint on schedule."""
    import ray
    import torch
    from ray import tune

    from ..deploy import measure
    from ..model import build_model
    from ..train.loop import fit
    from .gauges import TrialGauges

    quiet_checkpoint_logs()  # workarounds.py: Ray Train's INFO line per checkpoint
    assert settings is not None  # given by trainable() through with_parameters
    cfg = settings.train_config(config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:  # a retry after a failure, or a resumed search: continue where the trial was
        with checkpoint.as_directory() as d:
            # Tensors and plain data only: a tampered checkpoint cannot run code here.
            resume = torch.load(Path(d) / "state.pt", weights_only=True)
    gpu_ids = ray.get_gpu_ids()
    device = trial_device(gpu_ids, torch.cuda.is_available())
    if gpu_ids and device == "cpu":
        log.warning(gpu_unseen_warning(gpu_ids, torch.__version__, torch.version.cuda))
    where: dict[str, Any] = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": ",".join(map(str, gpu_ids)),
                             "device": device}
    gauges = TrialGauges(settings.experiment, tune.get_context().get_trial_id())
    # Latency depends on the architecture, not the weights: measured once, on an untrained copy,
    # before training (fit seeds itself, so this build does not change the trial's result).
    where.update(measure(build_model(cfg).eval()))

    def on_epoch(metrics: dict[str, Any], state: Callable[[], dict]) -> None:
        # metrics carry best_val_acc (the running best): the Optuna study's value for the trial
        if metrics.get("diverged"):  # the last report: no checkpoint of broken weights (the last one stays)
            # A diverged trial is worth nothing to the study: it scores worst, so TPE avoids its region.
            tune.report({**metrics, **where, "best_val_acc": 0.0})
            return
        if not settings.checkpoints(int(metrics["epoch"])):
            tune.report({**metrics, **where})
        else:
            with tempfile.TemporaryDirectory() as d:
                torch.save(state(), Path(d) / "state.pt")
                tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(d))
        gauges.update(metrics)

    fit(cfg, data, on_epoch=on_epoch, resume=resume, device=device, threads=settings.threads)


def trial_device(gpu_ids: list, cuda_available: bool) -> str:
    """CUDA only when Ray gave this trial a GPU and torch sees it (logical GPUs from
    ray.init(num_gpus=N) on a GPU-less machine still train on the CPU)."""
    return "cuda" if gpu_ids and cuda_available else "cpu"


def gpu_unseen_warning(gpu_ids: list, torch_version: str, cuda_version: str | None) -> str:
    """A trial holding a GPU that torch cannot use trains ~40x slower on the CPU: say so."""
    build = f"torch {torch_version} " + (f"built for CUDA {cuda_version}" if cuda_version else "without CUDA")
    return (f"trial holds GPU {','.join(map(str, gpu_ids))} but torch cannot see it ({build}); training on the CPU "
            f"(device=cpu in trials.csv); install a CUDA build of torch on this node or check its driver")


def trainable(data: Any, plan: Resources, settings: TrialSettings) -> Any:
    """run_trial with the data (once, through Ray's object store) and the plan's resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, data=data, settings=settings), plan.ray_request())


def trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"
