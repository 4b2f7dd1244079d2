"""The Ray session of a search: start a fresh local Ray or join a cluster, and Ray's settings.

`ray_session` starts a local Ray (never a stale one recorded in /tmp/ray) or
joins `--address`, and shuts down only what it started. `ray_env` sets the
environment variables Tune reads for the length of a search.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ResourceError
from ..fmt import first_line
from .workarounds import RAY_ENV, STATE_SAVE_S, quiet_ray_logs

__all__ = ["RAY_ENV", "STATE_SAVE_S", "cluster_info", "ray_env", "ray_running", "ray_session"]


@contextmanager
def ray_session(address: str | None, dashboard_host: str, dashboard_port: int | None) -> Iterator[bool]:
    """Start a fresh local Ray (or join `address`) and shut it down after; reuse one already
    initialised in this process (a notebook or test) and leave it running. Yields `started`."""
    import ray

    from .dashboard import ray_init_kwargs

    if ray.is_initialized():
        yield False
        return
    kwargs: dict[str, Any] = {"logging_level": "WARNING"}
    if address is None:
        kwargs.update(ray_init_kwargs(dashboard_host, dashboard_port))
    quiet_ray_logs()
    try:
        ray.init(address=address or "local", **kwargs)
    except ConnectionError as e:
        raise ResourceError(f"--address {address}: cannot connect to a Ray cluster ({first_line(e)}); "
                            f"start one with `ray start --head` or check the address") from None
    try:
        yield True
    finally:
        ray.shutdown()


def ray_running() -> bool:
    import ray

    return ray.is_initialized()


def cluster_info() -> tuple[dict[str, float], float]:
    """(the cluster's logical resources, the most CPUs any one alive node has)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_node_cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    return dict(ray.cluster_resources()), max_node_cpus


@contextmanager
def ray_env() -> Iterator[None]:
    """Set RAY_ENV's variables the user has not set, for the duration of the block."""
    added = {k: v for k, v in RAY_ENV.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)
