"""The Ray trainable: a thin adapter that runs `fersearch.train.fit` on one trial's config.

fit knows nothing of Ray; this module gives it the trial's config (TrialSettings
+ the sampled values), a device, the checkpoint to continue from, and an
`on_epoch` that reports each epoch's metrics to Tune, with a checkpoint on the epochs
checkpoints.py schedules.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig
from .resources import Resources
from .workarounds import quiet_trial_worker

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

    from ..data import FerData

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

    entered = time.perf_counter()
    quiet_trial_worker()  # workarounds.py: Ray Train's INFO line per checkpoint, stop tracebacks
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
    # Latency depends on the architecture, not the weights: measured on an untrained copy (fit seeds
    # itself, so this build does not change the trial's result). On a GPU it runs in a thread beside
    # the first epoch (ONNX Runtime on one CPU thread, ~1 s a trial) and joins the first report.
    latency = _Background(lambda: measure(build_model(cfg).eval()), in_thread=device == "cuda")
    # Where a trial's time goes, beside fit's train_s / eval_s: setup_s (first report only: from this
    # function's start to the first epoch's, i.e. checkpoint, data to the device, model build) and
    # report_s (the previous epoch's report: per-image records, checkpoint, Ray's report).
    timing = {"setup_s": float("nan"), "report_s": 0.0}

    def on_epoch(metrics: dict[str, Any], state: Callable[[], dict]) -> None:
        # metrics carry best_val_acc (the running best): the Optuna study's value for the trial
        t0 = time.perf_counter()
        first = timing["setup_s"] != timing["setup_s"]  # still NaN: this run's first report
        timing["setup_s"] = t0 - entered - float(metrics.get("epoch_time_s") or 0.0) if first else 0.0
        if "latency_ms" not in where:
            where.update(latency.result())
        metrics = {**metrics, **timing, "time": time.time()}
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
        timing["report_s"] = time.perf_counter() - t0  # reported with the next epoch

    fit(cfg, data, on_epoch=on_epoch, resume=resume, device=device, threads=settings.threads)


class _Background:
    """fn() in a daemon thread (or at once, in_thread=False); result() waits for it and re-raises its error."""

    def __init__(self, fn: Callable[[], dict[str, Any]], in_thread: bool):
        self._fn = fn
        self._out: dict[str, Any] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True) if in_thread else None
        if self._thread is None:
            self._run()
        else:
            self._thread.start()

    def _run(self) -> None:
        try:
            self._out = self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the trial's thread by result()
            self._error = e

    def result(self) -> dict[str, Any]:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._out


def trial_device(gpu_ids: list, cuda_available: bool) -> str:
    """CUDA only when Ray gave this trial a GPU and torch sees it (logical GPUs from
    ray.init(num_gpus=N) on a GPU-less machine still train on the CPU)."""
    return "cuda" if gpu_ids and cuda_available else "cpu"


def gpu_unseen_warning(gpu_ids: list, torch_version: str, cuda_version: str | None) -> str:
    """A trial holding a GPU that torch cannot use trains ~40x slower on the CPU: say so."""
    build = f"torch {torch_version} " + (f"built for CUDA {cuda_version}" if cuda_version else "without CUDA")
    return (f"trial holds GPU {','.join(map(str, gpu_ids))} but torch cannot see it ({build}); training on the CPU "
            f"(device=cpu in trials.csv); install a CUDA build of torch on this node or check its driver")


def trainable(data: FerData, plan: Resources, settings: TrialSettings) -> Any:
    """run_trial with the data (once, through Ray's object store) and the plan's resources."""
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, data=data, settings=settings), plan.ray_request())


def trial_dirname(trial: Trial) -> str:
    return f"trial_{trial.trial_id}"
