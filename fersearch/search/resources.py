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

from . import experiment as ex
from ..errors import ResourceError
from ..fmt import num

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


def plan_resources(cluster: dict[str, float], *, gpus: float | None, gpus_per_trial: float | None,
                   cpus_per_trial: float | None, trials: int, max_node_cpus: float | None = None) -> Resources:
    """Resources per trial and concurrency from what the cluster has (`ray.cluster_resources()`)."""
    have_gpus = float(cluster.get("GPU", 0))
    have_cpus = float(cluster.get("CPU", 0))
    if gpus is not None and gpus > have_gpus + 1e-9:
        if have_gpus == 0:
            raise ResourceError(f"--gpus {num(gpus)}: no GPUs in this Ray cluster (0 found); drop --gpus to run on CPUs")
        raise ResourceError(f"--gpus {num(gpus)}: this Ray cluster has {num(have_gpus)} GPU(s); "
                            f"use --gpus {num(have_gpus)} or fewer (or drop --gpus to use them all)")
    use_gpus = have_gpus if gpus is None else float(gpus)
    if gpus_per_trial is None:
        gpus_per_trial = 1.0 if use_gpus >= 1 else use_gpus
    if use_gpus == 0 and gpus_per_trial > 0:
        raise ResourceError(f"--gpus-per-trial {num(gpus_per_trial)}: the search may use no GPUs "
                            f"({num(have_gpus)} in the cluster); drop --gpus-per-trial or pass --gpus N")
    if use_gpus > 0 and gpus_per_trial == 0:
        raise ResourceError("--gpus-per-trial 0 with --gpus: give each trial a share of a GPU, e.g. --gpus-per-trial 0.5")
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
    return Resources(
        gpus=use_gpus, gpus_per_trial=float(gpus_per_trial), cpus_per_trial=cpus,
        concurrency=max(1, min(by_cpu, by_gpu, trials)), threads=max(1, math.floor(cpus + 1e-9)),
        cluster_cpus=have_cpus, cluster_gpus=have_gpus,
    )


def local_gpu_count() -> int | None:
    """GPUs a fresh local Ray would detect (Ray's own detector), or None if it cannot tell."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        return int(get_accelerator_manager_for_resource("GPU").get_current_node_num_accelerators())
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
