"""What a search may use and where it writes: per-trial CPU/GPU shares, concurrency, storage.

`plan_resources` turns the cluster's logical resources and the --gpus /
--gpus-per-trial / --cpus-per-trial flags into a Resources plan (or a one-line
ResourceError). `storage_location` splits --results into fersearch's local folder
and Ray's storage path; `check_shared_storage` proves every node of a cluster
sees that path before any trial runs.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ResourceError
from ..fmt import num
from ..results import experiment as ex

_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


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


# The packing default, from a model, not a measurement (no GPU has run fersearch yet; the README
# says so). The seed CNN (1.1M parameters) needs about 0.1 GB for weights, Adam and the data
# on the device plus ~0.5 GB of CUDA context per process, so memory allows dozens of trials per
# GPU. Its step at batch 64 is ~5.6 GFLOP (0.3 ms at an effective 20 TFLOP/s) in ~60 small
# kernels that take the host 0.3-0.6 ms to launch: one trial keeps a GPU busy a third to a half
# of the time, so 3-4 trials, each with its own CPU thread, fill one. bench_gpu.py measures it.
TRIALS_PER_GPU = 4
RAY_RESOURCE_STEP = 1e-4  # Ray stores fractional resources in units of 1/10000


def plan_resources(cluster: dict[str, float], *, gpus: float | None, gpus_per_trial: float | None,
                   cpus_per_trial: float | None, trials: int, max_node_cpus: float | None = None) -> Resources:
    """Resources per trial and concurrency from what the cluster has (`ray.cluster_resources()`)."""
    have_gpus = float(cluster.get("GPU", 0))
    have_cpus = float(cluster.get("CPU", 0))
    if gpus is not None and gpus > have_gpus + 1e-9:
        if have_gpus == 0:
            raise ResourceError(f"--gpus {num(gpus)}: no GPUs in this Ray cluster (0 found); "
                                f"drop --gpus to run on CPUs")
        raise ResourceError(f"--gpus {num(gpus)}: this Ray cluster has {num(have_gpus)} GPU(s); "
                            f"use --gpus {num(have_gpus)} or fewer (or drop --gpus to use them all)")
    use_gpus = have_gpus if gpus is None else float(gpus)
    if gpus_per_trial is not None:
        check_gpu_share(gpus_per_trial)
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 / TRIALS_PER_GPU if use_gpus >= 1 else use_gpus
    if use_gpus == 0 and gpus_per_trial > 0:
        raise ResourceError(f"--gpus-per-trial {num(gpus_per_trial)}: the search may use no GPUs "
                            f"({num(have_gpus)} in the cluster); drop --gpus-per-trial or pass --gpus N")
    if use_gpus > 0 and gpus_per_trial == 0:
        raise ResourceError("--gpus-per-trial 0 with --gpus: give each trial a share of a GPU, "
                            "e.g. --gpus-per-trial 0.5")
    if gpus_per_trial > use_gpus + 1e-9:
        raise ResourceError(f"--gpus-per-trial {num(gpus_per_trial)} is more than the {num(use_gpus)} GPU(s) "
                            f"the search may use; lower it or raise --gpus")
    cpus = 1.0 if cpus_per_trial is None else float(cpus_per_trial)
    node_cap = max_node_cpus if max_node_cpus is not None else have_cpus
    if cpus > node_cap + 1e-9:
        raise ResourceError(f"--cpus-per-trial {num(cpus)}: no node of this Ray cluster has that many CPUs "
                            f"(largest: {num(node_cap)}); lower --cpus-per-trial")
    by_cpu = math.floor(have_cpus / cpus + 1e-9)
    by_gpu = math.floor(use_gpus / gpus_per_trial + 1e-9) if gpus_per_trial > 0 else by_cpu
    concurrency = max(1, min(by_cpu, by_gpu, trials))
    return Resources(
        gpus=use_gpus, gpus_per_trial=spread_share(float(gpus_per_trial), use_gpus, concurrency), cpus_per_trial=cpus,
        concurrency=concurrency, threads=max(1, math.floor(cpus + 1e-9)),
        cluster_cpus=have_cpus, cluster_gpus=have_gpus,
    )


def gpu_share_problem(gpus_per_trial: float) -> str | None:
    """A trial trains on one device, so a share above 1 would hold GPUs it never uses."""
    if gpus_per_trial > 1 + 1e-9:
        return (f"--gpus-per-trial {num(gpus_per_trial)}: a trial trains on one GPU, so it would hold "
                f"GPUs it never uses; use 1 or less (0.25: four trials share a GPU)")
    return None


def check_gpu_share(gpus_per_trial: float) -> None:
    problem = gpu_share_problem(gpus_per_trial)
    if problem:
        raise ResourceError(problem)


def spread_share(share: float, gpus: float, concurrency: int) -> float:
    """Each trial's GPU share once the number of trials at once is known.

    Ray places fractional requests best-fit: it fills one GPU before it touches the next, so
    `--gpus 4 --gpus-per-trial 0.25` with 8 trials at once would put them on 2 GPUs and leave 2
    idle. When fewer trials run at once than there are slots, each trial gets the largest share
    that still fits them all, 1 / ceil(concurrency / gpus): 8 trials on 4 GPUs get 0.5 each,
    two per GPU. Shares below one GPU in all (--gpus 0.5) are kept as asked."""
    if gpus < 1 or share <= 0 or share >= 1:
        return share
    per_gpu = math.ceil(concurrency / math.floor(gpus + 1e-9) - 1e-9)
    spread = math.floor(1 / per_gpu / RAY_RESOURCE_STEP + 1e-9) * RAY_RESOURCE_STEP
    return round(max(share, min(1.0, spread)), 4)


def unseen_gpu_error(gpus_per_trial: float, hardware_gpus: int | None, torch_sees_cuda: bool,
                     torch_version: str, cuda_version: str | None) -> ResourceError | None:
    """The refusal when every trial of a local search would hold a GPU torch cannot use (a CPU
    build of torch, a broken driver): each would train ~40x slower on the CPU. Logical GPUs of
    a GPU-less machine (hardware_gpus 0, e.g. ray.init(num_gpus=4) in tests) are not refused:
    their trials train on the CPU and say so (device=cpu in trials.csv)."""
    if gpus_per_trial <= 0 or not hardware_gpus or torch_sees_cuda:
        return None
    build = f"torch {torch_version} " + (f"built for CUDA {cuda_version}" if cuda_version else "without CUDA")
    return ResourceError(f"this machine has {hardware_gpus} GPU(s) but {build} cannot use them, so every trial would "
                         f"train on the CPU; install a CUDA build of torch (make install TORCH=...) or pass --gpus 0")


def check_local_gpus_usable(plan: Resources) -> None:
    """unseen_gpu_error for a local search, from this machine's GPUs and this process's torch."""
    import torch

    error = unseen_gpu_error(plan.gpus_per_trial, local_gpu_count(), torch.cuda.is_available(), torch.__version__,
                             torch.version.cuda)
    if error is not None:
        raise error


def visible_gpus(detected: int, visible_ids: list[str] | None) -> int:
    """GPUs a process may use: NVML's count, limited by CUDA_VISIBLE_DEVICES (None: unset), as Ray's
    own node detection does."""
    return detected if visible_ids is None else min(detected, len(visible_ids))


def local_gpu_count() -> int | None:
    """GPUs a fresh local Ray would detect (Ray's own detector, CUDA_VISIBLE_DEVICES honoured),
    or None if it cannot tell."""
    try:
        from .workarounds import gpu_manager

        manager = gpu_manager()
        if manager is None:
            return None
        return visible_gpus(int(manager.get_current_node_num_accelerators()),
                            manager.get_current_process_visible_accelerator_ids())
    except Exception:  # private API: fall back to the check after ray.init
        return None


def storage_location(results: str | os.PathLike | None) -> tuple[Path, str]:
    """(local root for fersearch's files, Ray storage_path).

    A path (or file:// URI) holds both. A remote URI (s3://, gs://, ...) holds
    Ray's experiment state and checkpoints; fersearch.json, trials.csv, history.csv
    and study.journal are written by the driver into ./results/<name>/.
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
