"""`fersearch tune`: Ray Tune + Optuna (TPE) + ASHA over a search space, on CPUs, GPUs or a cluster.

    result = fersearch.tune(space="wide", trials=8)       # or: fersearch tune --trials 8
    result.path, result.trials, result.best

Flow: check the flags and the space (no Ray yet) -> load + validate the data once
-> start (or join) Ray -> plan resources against the cluster -> write
fersearch.json -> Tuner(OptunaSearch + ASHA) whose trainable is a thin adapter
around `fersearch.train.fit` (the data reaches every trial through Ray's object
store) -> a driver-side callback writes trials.csv/history.csv as results arrive.
`--resume` restores Ray's own experiment state (Tuner.restore), so finished
trials stay finished and the Optuna study and ASHA rungs carry over.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd

from . import experiment as ex
from ..config import TrainConfig
from ..errors import ExperimentError, FersearchError, ResourceError
from ..fmt import plural
from ..io import command_line, versions
from .spaces import DEFAULT_SPACE, Space, first_line, load_space, quiet_optuna, space_from_function

METRIC, MODE = "val_acc", "max"
SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("tpe", "random")
MAX_FAILURES = 2  # a trial that crashes is retried from its last checkpoint this often
# Ray's experiment state (what --resume restores) is saved after every checkpoint
# (num_to_keep=1 forces that) and otherwise at most every STATE_SAVE_S; its default
# of 10 s would let a crash forget trials that had just finished. Ray warns about
# the frequent saves; they cost milliseconds here, so the warning is off.
STATE_SAVE_S = "2"
# RAY_AIR_NEW_OUTPUT=0: Ray's newer console output prints its own experiment box even
# at verbose=0; the classic reporter at verbose=0 prints nothing.
_RAY_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": STATE_SAVE_S, "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
            "RAY_AIR_NEW_OUTPUT": "0"}
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass
class SearchResult:
    """What a search left behind: its directory, trials.csv as a DataFrame, the best row, fersearch.json."""

    path: Path
    trials: pd.DataFrame
    best: dict[str, Any] | None
    meta: dict[str, Any]

    def best_config(self) -> TrainConfig | None:
        return ex.trial_config(self.best) if self.best else None

    def counts(self) -> dict[str, int]:
        return {s: int((self.trials["status"] == s).sum()) for s in ex.STATUSES}

    def summary(self) -> list[str]:
        """What the CLI prints at the end: where, how trials ended, the best, what to run next."""
        name = self.path.name
        root = self.path.parent
        results_flag = "" if root == ex.results_root().resolve() else f" --results {root}"
        c = self.counts()
        unfinished = c["pending"] + c["running"]
        lines = [f"results: {self.path}",
                 f"trials: {len(self.trials)} of {self.meta.get('trials', '?')}: {c['completed']} completed, "
                 f"{c['stopped']} stopped early by ASHA, {c['failed']} failed"
                 + (f", {unfinished} unfinished" if unfinished else "")]
        if self.best:
            params = ", ".join(f"{k[len(ex.PARAM_PREFIX):]}={_short(v)}" for k, v in self.best.items()
                               if k.startswith(ex.PARAM_PREFIX) and v is not None)
            lines.append(f"best: trial {self.best['trial_id']} val_acc {float(self.best['best_val_acc']):.4f} "
                         f"(epoch {self.best['best_epoch']}) {params}")
        if unfinished:
            lines.append(f"interrupted: continue with `fersearch tune --name {name} --resume{results_flag}`")
        lines.append(f"next: fersearch best {name} --evaluate{results_flag}   "
                     f"(retrain the best configuration, evaluate it on the test split)")
        return lines


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Resources:
    """How the search uses the cluster (all numbers logical Ray resources)."""

    gpus: float  # GPUs the search may use in total
    gpus_per_trial: float
    cpus_per_trial: float
    concurrency: int  # trials at once
    threads: int  # torch threads per trial
    cluster_cpus: float
    cluster_gpus: float

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def ray_request(self) -> dict[str, float]:
        return {"cpu": self.cpus_per_trial, "gpu": self.gpus_per_trial}


@dataclass(frozen=True)
class TrialSettings:
    """Everything a trial needs besides its sampled config (shipped once via with_parameters)."""

    base: TrainConfig
    max_epochs: int
    threads: int
    experiment: str

    def train_config(self, config: dict[str, Any]) -> TrainConfig:
        """A trial's full TrainConfig: the space's values on the base, epochs = --max-epochs."""
        return TrainConfig.from_dict({**config, "epochs": self.max_epochs}, base=self.base)


# ------------------------------------------------------------------ checks (no Ray)
def check_options(*, trials: int, max_epochs: int, grace_period: int, reduction_factor: float,
                  scheduler: str, sampler: str, seed: int, name: str | None, resume: bool,
                  gpus: float | None, gpus_per_trial: float | None, cpus_per_trial: float | None) -> None:
    """Flag values that can never work, as one-line errors naming the flag."""
    problems = [
        (trials < 1, f"--trials {trials}: run at least 1 trial"),
        (max_epochs < 1, f"--max-epochs {max_epochs}: train at least 1 epoch per trial"),
        (grace_period < 1, f"--grace-period {grace_period}: must be at least 1 epoch"),
        (grace_period > max_epochs,
         f"--grace-period {grace_period} is larger than --max-epochs {max_epochs}; ASHA could never stop a trial: "
         f"use --grace-period {default_grace_period(max_epochs)} or raise --max-epochs"),
        (not reduction_factor > 1, f"--reduction-factor {reduction_factor}: must be > 1 (ASHA keeps 1/R of trials per rung; 3 is usual)"),
        (scheduler not in SCHEDULERS, f"--scheduler {scheduler!r}: choose one of {', '.join(SCHEDULERS)}"),
        (sampler not in SAMPLERS, f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}"),
        (seed < 0, f"--seed {seed}: must be >= 0"),
        (gpus is not None and gpus < 0, f"--gpus {gpus}: must be >= 0"),
        (gpus_per_trial is not None and gpus_per_trial < 0, f"--gpus-per-trial {gpus_per_trial}: must be >= 0"),
        (gpus_per_trial is not None and gpus_per_trial > 1 and gpus_per_trial != int(gpus_per_trial),
         f"--gpus-per-trial {gpus_per_trial}: above 1 it must be a whole number of GPUs (Ray's rule)"),
        (cpus_per_trial is not None and not cpus_per_trial > 0, f"--cpus-per-trial {cpus_per_trial}: must be > 0 (fractions allowed)"),
        (resume and not name, "--resume needs --name NAME: the search to continue (see `ls results/`)"),
    ]
    for bad, message in problems:
        if bad:
            raise FersearchError(message)
    if name is not None:
        check_name(name)


def check_name(name: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or name.startswith("."):
        raise ExperimentError(f"--name {name!r}: must be a plain directory name (no path separators, not hidden); "
                              f"put the parent directory in --results instead")


def plan_resources(cluster: dict[str, float], *, gpus: float | None, gpus_per_trial: float | None,
                   cpus_per_trial: float | None, trials: int, max_node_cpus: float | None = None) -> Resources:
    """Resources per trial and concurrency from what the cluster has (`ray.cluster_resources()`)."""
    have_gpus = float(cluster.get("GPU", 0))
    have_cpus = float(cluster.get("CPU", 0))
    if gpus is not None and gpus > have_gpus + 1e-9:
        if have_gpus == 0:
            raise ResourceError(f"--gpus {_num(gpus)}: no GPUs in this Ray cluster (0 found); drop --gpus to run on CPUs")
        raise ResourceError(f"--gpus {_num(gpus)}: this Ray cluster has {_num(have_gpus)} GPU(s); "
                            f"use --gpus {_num(have_gpus)} or fewer (or drop --gpus to use them all)")
    use_gpus = have_gpus if gpus is None else float(gpus)
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if use_gpus >= 1 else use_gpus
    if use_gpus == 0 and gpus_per_trial > 0:
        raise ResourceError(f"--gpus-per-trial {_num(gpus_per_trial)}: the search may use no GPUs "
                            f"({_num(have_gpus)} in the cluster); drop --gpus-per-trial or pass --gpus N")
    if use_gpus > 0 and gpus_per_trial == 0:
        raise ResourceError("--gpus-per-trial 0 with --gpus: give each trial a share of a GPU, e.g. --gpus-per-trial 0.5")
    if gpus_per_trial > use_gpus + 1e-9:
        raise ResourceError(f"--gpus-per-trial {_num(gpus_per_trial)} is more than the {_num(use_gpus)} GPU(s) "
                            f"the search may use; lower it or raise --gpus")
    cpus = 1.0 if cpus_per_trial is None else float(cpus_per_trial)
    node_cap = max_node_cpus if max_node_cpus is not None else have_cpus
    if cpus > node_cap + 1e-9:
        raise ResourceError(f"--cpus-per-trial {_num(cpus)}: no node of this Ray cluster has that many CPUs "
                            f"(largest: {_num(node_cap)}); lower --cpus-per-trial")
    by_cpu = math.floor(have_cpus / cpus + 1e-9)
    by_gpu = math.floor(use_gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else by_cpu
    return Resources(
        gpus=use_gpus, gpus_per_trial=float(gpus_per_trial), cpus_per_trial=cpus,
        concurrency=max(1, min(by_cpu, by_gpu, trials)), threads=max(1, math.floor(cpus + 1e-9)),
        cluster_cpus=have_cpus, cluster_gpus=have_gpus,
    )


def _num(x: float) -> str:
    return str(int(x)) if float(x) == int(x) else f"{x:g}"


def local_gpu_count() -> int | None:
    """GPUs a fresh local Ray would detect (Ray's own detector), or None if it cannot tell."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
    except Exception:  # private API: fall back to the check after ray.init
        return None


# ------------------------------------------------------------------ storage
def storage_location(results: str | os.PathLike | None) -> tuple[Path, str]:
    """(local root for fersearch's files, Ray storage_path).

    A path (or file:// URI) holds both. A remote URI (s3://, gs://, ...) holds
    Ray's experiment state and checkpoints; fersearch.json, trials.csv and
    history.csv are written by the driver into ./results/<name>/.
    """
    text = os.fspath(results) if results is not None else None
    if text and _URI.match(text):
        if text.startswith("file://"):
            local = Path(text[len("file://"):]).expanduser().resolve()
            return local, str(local)
        return ex.results_root(None).resolve(), text.rstrip("/")
    local = ex.results_root(text).resolve()
    return local, str(local)


def check_shared_storage(root: Path, storage: str) -> None:
    """On a cluster, every node must see the results path: probe it from a task on each node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if _URI.match(storage):  # cloud storage: Ray reaches it from every node itself
        return
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".fersearch-probe-{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    probe.write_text(token)

    @ray.remote(num_cpus=0)
    def read_probe(path: str) -> str:
        try:
            return Path(path).read_text()
        except OSError:
            return ""

    try:
        refs = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: read_probe.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe))
            for n in nodes}
        missing = [where for where, ref in refs.items() if ray.get(ref, timeout=60) != token]
    finally:
        probe.unlink(missing_ok=True)
    if missing:
        raise ResourceError(
            f"--results {root} is not visible from node(s) {', '.join(missing)}; on a multi-machine cluster pass "
            f"a path all nodes share (e.g. an NFS mount) or a URI such as s3://bucket/fersearch"
        )


# ------------------------------------------------------------------ Ray session
def _not_auth_enabled_notice(record: logging.LogRecord) -> bool:
    """fersearch prints how to sign in to the dashboard itself; Ray's notice that token auth is
    enabled says it again (its warning for a cluster *without* token auth still shows)."""
    return not record.getMessage().startswith("Token authentication is enabled")


@contextmanager
def ray_session(address: str | None, dashboard_host: str, dashboard_port: int | None,
                log: Callable[[str], None]) -> Iterator[bool]:
    """Start a fresh local Ray (or join `address`) and shut it down after; reuse one already
    initialised in this process (a notebook or test) and leave it running. Yields `started`."""
    import ray

    from . import monitor

    if ray.is_initialized():
        yield False
        return
    kwargs: dict[str, Any] = {"logging_level": "WARNING"}
    if address is None:
        kwargs.update(monitor.ray_init_kwargs(dashboard_host, dashboard_port))
    # One filter object: addFilter ignores it when a later search in this process adds it again.
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_auth_enabled_notice)
    try:
        ray.init(address=address or "local", **kwargs)
    except ConnectionError as e:
        raise ResourceError(f"--address {address}: cannot connect to a Ray cluster ({first_line(e)}); "
                            f"start one with `ray start --head` or check the address") from None
    try:
        yield True
    finally:
        ray.shutdown()


def cluster_info() -> tuple[dict[str, float], float]:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_node_cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    return dict(ray.cluster_resources()), max_node_cpus


# ------------------------------------------------------------------ the trainable
def run_trial(config: dict[str, Any], data: Any = None, settings: TrialSettings | None = None) -> None:
    """The Ray trainable: a thin adapter around fersearch.train.fit (which knows nothing of Ray)."""
    import ray
    import torch
    from ray import tune

    from .monitor import TrialGauges
    from ..train.loop import fit

    # Ray logs every persisted checkpoint at INFO from the worker; one per epoch is noise.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = settings.train_config(config)
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:  # a retry after a failure, or a resumed search: continue where the trial was
        with checkpoint.as_directory() as d:
            # Tensors and plain data only: a tampered checkpoint cannot run code here.
            resume = torch.load(Path(d) / "state.pt", weights_only=True)
    gpu_ids = ray.get_gpu_ids()
    # CUDA only when Ray gave this trial a GPU and it is real (logical GPUs from
    # ray.init(num_gpus=N) on a GPU-less machine still train on the CPU).
    device = "cuda" if gpu_ids and torch.cuda.is_available() else "cpu"
    where = {"node": ray.get_runtime_context().get_node_id(), "gpu_ids": ",".join(map(str, gpu_ids)), "device": device}
    gauges = TrialGauges(settings.experiment, tune.get_context().get_trial_id())

    def on_epoch(metrics: dict[str, Any], state: Callable[[], dict]) -> None:
        with tempfile.TemporaryDirectory() as d:
            torch.save(state(), Path(d) / "state.pt")
            tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(d))
        gauges.update(metrics)

    fit(cfg, data, on_epoch=on_epoch, resume=resume, device=device, threads=settings.threads)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


# ------------------------------------------------------------------ the recorder
def _make_recorder(exp_dir: Path, settings: TrialSettings, constants: tuple[str, ...]):
    from ray import tune

    class Recorder(tune.Callback):
        """Writes trials.csv and history.csv from the driver as trials start, report and end."""

        def __init__(self) -> None:
            self.table = ex.TrialTable(exp_dir, max_epochs=settings.max_epochs)
            self._reconciled = False

        def setup(self, **info: Any) -> None:
            self.table.load()  # a resumed search keeps the rows written before the interruption
            self._reconciled = False

        def _sync(self, trials: list) -> None:
            if not self._reconciled:  # the first call sees every trial Ray restored
                self.table.reconcile(t.trial_id for t in trials)
                self._reconciled = True
            for t in trials:
                if t.trial_id not in self.table.rows:
                    self.table.add(t.trial_id, self._config_json(t.config), self._params(t.config))

        def _config_json(self, config: dict) -> str:
            return json.dumps(settings.train_config(config).to_dict())

        def _params(self, config: dict) -> dict[str, Any]:
            return {k: v for k, v in config.items() if k not in constants}

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._sync(trials)
            self.table.start(trial.trial_id)
            self.table.save()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self._sync(trials)
            self.table.result(trial.trial_id, result, stop_decided=bool(result.get("done")))
            self.table.save()

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._sync(trials)
            self.table.end(trial.trial_id)
            self.table.save()

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._sync(trials)
            self.table.retry(trial.trial_id, _trial_error(trial))
            self.table.save()

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._sync(trials)
            self.table.fail(trial.trial_id, _trial_error(trial))
            self.table.save()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self._sync(trials)
            self.table.save()

    return Recorder()


def _trial_error(trial: Any) -> str:
    """The exception line of a failed trial (Ray keeps the traceback in the trial dir)."""
    try:
        err = trial.get_error()
    except Exception:
        err = None
    lines = [ln.strip() for ln in str(err or "").splitlines() if ln.strip()]
    excs = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
    return (excs[-1] if excs else lines[-1] if lines else "trial failed")[:300]


# ------------------------------------------------------------------ tune()
def tune(
    space: str | os.PathLike | Space | Callable | None = None,
    data: Any = None,
    trials: int = 50,
    gpus: float | None = None,
    gpus_per_trial: float | None = None,
    cpus_per_trial: float | None = None,
    max_epochs: int = 30,
    grace_period: int | None = None,
    reduction_factor: float = 3,
    scheduler: str = "asha",
    sampler: str = "tpe",
    seed: int = 0,
    name: str | None = None,
    results: str | os.PathLike | None = None,
    address: str | None = None,
    resume: bool = False,
    dashboard_host: str = "127.0.0.1",
    dashboard_port: int | None = None,
    verbose: bool = True,
    base_config: TrainConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> SearchResult:
    """Run (or resume) a hyperparameter search; returns where it went, its trials and the best one.

    space: a search-space name (`seed`, `wide`), a .py path, a loaded Space, or your own
    function `space(trial) -> dict | None` (Optuna define-by-run; `fn.points` optional).
    data: a path (None: the default data set) or an already loaded FerData.
    trials: Optuna proposals to run. gpus: GPUs the search may use (None: all the
    cluster has); gpus_per_trial may be a fraction; cpus_per_trial sets each trial's
    CPU share and torch threads. grace_period/reduction_factor: ASHA's rungs on epochs.
    address: join an existing Ray cluster ("auto" or host:port) instead of a local one.
    resume: continue the search `name` (Tuner.restore) instead of starting one.
    """
    log = log or (print if verbose else (lambda _msg: None))
    # Ray warns about every trial without results when it collects them (after an
    # interruption, or restoring one); the trials table says the same, quietly.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    grace_period = default_grace_period(max_epochs) if grace_period is None else grace_period
    check_options(trials=trials, max_epochs=max_epochs, grace_period=grace_period,
                  reduction_factor=reduction_factor, scheduler=scheduler, sampler=sampler, seed=seed,
                  name=name, resume=resume, gpus=gpus, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial)
    local_root, storage = storage_location(results)
    base = (base_config or TrainConfig()).replace(seed=seed)
    exp_dir, meta, space_obj = _open_experiment(space, name, resume, local_root, storage, base)
    name = exp_dir.name
    if gpus and address is None and not _ray_running():
        found = local_gpu_count()
        if found is not None and gpus > found:  # answer before spending seconds on starting Ray
            plan_resources({"GPU": found, "CPU": os.cpu_count() or 1}, gpus=gpus, gpus_per_trial=gpus_per_trial,
                           cpus_per_trial=cpus_per_trial, trials=trials)
    fer = _load_data(data, meta, log)

    with ray_session(address, dashboard_host, dashboard_port, log):
        from . import monitor

        cluster, max_node_cpus = cluster_info()
        plan = plan_resources(cluster, gpus=gpus, gpus_per_trial=gpus_per_trial, cpus_per_trial=cpus_per_trial,
                              trials=trials, max_node_cpus=max_node_cpus)
        if address is not None:
            check_shared_storage(local_root, storage)
        for line in monitor.dashboard_lines(address):
            log(line)
        if resume:
            meta.setdefault("resumed", []).append({"at": _now(), "command": command_line(), "resources": plan.as_dict()})
            ex.write_meta(exp_dir, meta)
            settings = None
        else:
            settings = TrialSettings(base=base, max_epochs=max_epochs, threads=plan.threads, experiment=name)
            meta = _meta(name, fer, space_obj, seed=seed, trials=trials, max_epochs=max_epochs,
                         grace_period=grace_period, reduction_factor=reduction_factor, scheduler=scheduler,
                         sampler=sampler, resources=plan, storage=storage, base=base)
            exp_dir.mkdir(parents=True)
            ex.write_meta(exp_dir, meta)
        log(f"{'resuming' if resume else 'search'} {name}: {plural(meta['trials'], 'trial')} x <= "
            f"{plural(meta['max_epochs'], 'epoch')}, "
            f"{plan.concurrency} at a time ({_num(plan.cpus_per_trial)} CPU"
            f"{f', {_num(plan.gpus_per_trial)} GPU' if plan.gpus_per_trial else ''} each); results in {exp_dir}")
        t0 = time.time()
        with _env(**_RAY_ENV), quiet_optuna():
            tuner = _restore_tuner(exp_dir, storage, name, fer, plan, meta) if resume else _new_tuner(
                space_obj, fer, plan, settings, meta, exp_dir, storage, verbose)
            tuner.fit()
        ex.mark_unfinished(exp_dir)
        _record_end(exp_dir, time.time() - t0, resume)
        log(f"search {name} ended after {time.time() - t0:.0f} s")
    return load_result(exp_dir)


def _open_experiment(space: Any, name: str | None, resume: bool, local_root: Path, storage: str,
                     base: TrainConfig) -> tuple[Path, dict[str, Any] | None, Space | None]:
    """(experiment dir, its fersearch.json when resuming, the checked space when starting)."""
    if resume:
        exp_dir = local_root / name
        meta = _resumable_meta(exp_dir, storage, name)
        given = load_space(space) if isinstance(space, (str, os.PathLike)) else space
        if given is not None and given.sha256 != meta["space"]["sha256"]:
            raise ExperimentError(f"--space {given.path} differs from the space {name} was started with "
                                  f"({meta['space']['path']}); drop --space to resume with the original")
        return exp_dir, meta, None  # the searcher, with its space, comes back from Ray's saved state
    if isinstance(space, Space):
        space_obj = space
    elif callable(space):  # the Python API: the user's own space(trial) function
        space_obj = space_from_function(space, base=base)
    else:
        space_obj = load_space(space, base=base)
    exp_dir = local_root / (name or _default_name(space_obj.name, local_root))
    if exp_dir.exists():
        raise ExperimentError(f"{exp_dir} already exists; pass --resume to continue that search, "
                              f"or choose another --name (never overwritten)")
    return exp_dir, None, space_obj


def _record_end(exp_dir: Path, seconds: float, resumed: bool) -> None:
    """When the search (or this resumed part of it) ended and how long Tuner.fit ran."""
    meta = ex.read_meta(exp_dir)
    run = meta["resumed"][-1] if resumed else meta
    run.update(ended=_now(), search_s=round(seconds, 1))
    ex.write_meta(exp_dir, meta)


def default_grace_period(max_epochs: int) -> int:
    """ASHA's first rung: a sixth of the budget, at least one epoch.

    For the default 30 epochs that is 5, so with reduction factor 3 the rungs sit at
    5 and 15. Measured on the default data: the seed recipe stays at the majority-class
    rate for its first ~4 epochs, so a rung at 3 judges trials before they learn, and
    the rung at 27 that grace 3 adds saves only 3 of 30 epochs.
    """
    return max(1, max_epochs // 6)


def _ray_running() -> bool:
    import ray

    return ray.is_initialized()


@contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of the block."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def _now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def _default_name(space_name: str, root: Path) -> str:
    stem = f"{space_name}-{datetime.now():%Y%m%d-%H%M%S}"
    name, i = stem, 2
    while (root / name).exists():  # two searches started within the same second
        name, i = f"{stem}-{i}", i + 1
    return name


def _load_data(data: Any, meta: dict | None, log: Callable[[str], None]) -> Any:
    from ..data.loader import FerData

    if isinstance(data, FerData):
        fer = data
    else:
        from ..data.loader import load

        path = data if data is not None else (meta["data"]["path"] if meta else None)
        fer = load(path, log=log)
    if meta and fer.sha256 and meta["data"].get("sha256") and fer.sha256 != meta["data"]["sha256"]:
        raise ExperimentError(f"data {fer.source} differs from what {meta['name']} was started on "
                              f"(sha256 {meta['data']['sha256'][:12]}...); resume with the same --data")
    return fer


def _data_record(fer: Any) -> dict[str, Any]:
    return {"path": str(fer.source), "format": fer.format, "sha256": fer.sha256, "n": int(len(fer.labels)),
            "counts": fer.counts(), "synthetic": bool(getattr(fer, "synthetic", False)), "notes": list(fer.notes)}


def _meta(name: str, fer: Any, space: Space, *, seed: int, trials: int, max_epochs: int, grace_period: int,
          reduction_factor: float, scheduler: str, sampler: str, resources: Resources, storage: str,
          base: TrainConfig) -> dict[str, Any]:
    return {
        "name": name, "command": command_line(), "created": _now(),
        "data": _data_record(fer), "space": space.record(), "space_params": list(space.params),
        "space_constants": list(space.constants),
        "seed": seed, "trials": trials, "max_epochs": max_epochs, "grace_period": grace_period,
        "reduction_factor": reduction_factor, "scheduler": scheduler, "sampler": sampler,
        "metric": METRIC, "mode": MODE, "resources": resources.as_dict(), "storage": storage,
        "host": socket.gethostname(), "base_config": base.to_dict(), "versions": versions(),
    }


def _resumable_meta(exp_dir: Path, storage: str, name: str) -> dict[str, Any]:
    from ray.tune import Tuner

    if not ex.is_experiment(exp_dir):
        raise ExperimentError(f"--resume: no search named {name!r} in {exp_dir.parent}/ (no {ex.META_FILE}); "
                              f"check --name and --results")
    meta = ex.read_meta(exp_dir)
    ray_dir = f"{meta.get('storage', storage)}/{name}"
    if not Tuner.can_restore(ray_dir):
        raise ExperimentError(f"--resume: {ray_dir} has no Ray experiment state to restore "
                              f"(the search stopped before Ray saved any); start a new search with another --name")
    return meta


def _searcher(space: Space, sampler: str, seed: int, trials: int):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    if sampler == "random":
        ot_sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        # TPE's default of 10 random start-up trials would make a short search purely random.
        ot_sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, trials // 3)))
    return OptunaSearch(space=space.fn, metric=METRIC, mode=MODE, sampler=ot_sampler,
                        points_to_evaluate=[dict(p) for p in space.points] or None)


def _scheduler(meta: dict[str, Any]):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if meta["scheduler"] == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", metric=METRIC, mode=MODE, max_t=meta["max_epochs"],
                         grace_period=meta["grace_period"], reduction_factor=meta["reduction_factor"])


def _trainable(fer: Any, plan: Resources, settings: TrialSettings):
    from ray import tune

    return tune.with_resources(tune.with_parameters(run_trial, data=fer, settings=settings), plan.ray_request())


def _new_tuner(space: Space, fer: Any, plan: Resources, settings: TrialSettings, meta: dict[str, Any],
               exp_dir: Path, storage: str, verbose: bool):
    from ray import tune

    from . import monitor

    callbacks = [_make_recorder(exp_dir, settings, space.constants)]
    if verbose:
        callbacks.append(monitor.LiveView(meta["trials"], max_epochs=meta["max_epochs"], hide=space.constants))
    return tune.Tuner(
        _trainable(fer, plan, settings),
        tune_config=tune.TuneConfig(
            search_alg=_searcher(space, meta["sampler"], meta["seed"], meta["trials"]),
            scheduler=_scheduler(meta),
            num_samples=meta["trials"],
            max_concurrent_trials=plan.concurrency,
            trial_dirname_creator=_trial_dirname,
            # A new trial reuses a finished trial's worker process: no new process and
            # torch import per trial (seconds each, a large share of a short trial).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=meta["name"],
            storage_path=storage,
            verbose=0,  # the LiveView (or nothing) instead of Ray's tables
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def _restore_tuner(exp_dir: Path, storage: str, name: str, fer: Any, plan: Resources, meta: dict[str, Any]):
    from ray import tune

    # The callbacks, searcher and scheduler come back from Ray's saved state; the
    # recorder re-reads trials.csv/history.csv in setup(). Threads follow this run's plan.
    settings = TrialSettings(base=TrainConfig.from_dict(meta["base_config"]), max_epochs=meta["max_epochs"],
                             threads=plan.threads, experiment=name)
    return tune.Tuner.restore(f"{meta.get('storage', storage)}/{name}", _trainable(fer, plan, settings),
                              resume_errored=True)


def load_result(exp_dir: str | os.PathLike) -> SearchResult:
    """A SearchResult for an experiment directory (finished or not)."""
    exp_dir = Path(exp_dir)
    trials = ex.read_trials(exp_dir)
    return SearchResult(path=exp_dir, trials=trials, best=ex.best_trial(trials), meta=ex.read_meta(exp_dir))


__all__ = ["tune", "SearchResult", "Resources", "plan_resources", "check_options", "load_result", "DEFAULT_SPACE"]
