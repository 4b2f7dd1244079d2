"""Which epochs a trial checkpoints, how big a checkpoint is, and what a finished search keeps.

At GPU speed an epoch of the seed CNN takes about half a second; a full checkpoint
(model, Adam state, best weights) every epoch then costs more than the epoch and, for
16 trials at once, writes over 1 GB/s to a cluster's shared storage. A trial therefore
checkpoints only where something reads it back:

- every `--checkpoint-every` epochs (CHECKPOINT_EVERY): a crashed trial is retried from
  there, so a crash costs that trial at most N - 1 epochs (1: every epoch);
- at ASHA's rung epochs, where the search decides about the trial (results/rungs.py);
- at --max-epochs, its last epoch.

Once trials have ended (completed, stopped by ASHA, diverged) nothing reads their
checkpoints: `best` and `status` read trials.csv / history.csv, `best --evaluate` retrains
from the configuration, and `--resume` never reruns an ended trial. `prune_ended` removes
them; failed trials keep theirs, since `--resume` retries them from it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from ..results.record import CHECKPOINT_EVERY, Settings
from ..results.rungs import rung_epochs

__all__ = ["CHECKPOINT_EVERY", "checkpoint_epochs", "folder_bytes", "prune_ended", "rung_epochs",
           "schedule_for"]
PRUNED_STATUSES = ("completed", "stopped", "diverged")


def checkpoint_epochs(max_epochs: int, every: int, rungs: Iterable[int] = ()) -> frozenset[int]:
    """The epochs (1-based) at which a trial saves a checkpoint."""
    due = set(range(every, max_epochs + 1, every)) | {r for r in rungs if 1 <= r <= max_epochs}
    return frozenset(due | {max_epochs})


def schedule_for(settings: Settings) -> frozenset[int]:
    """The schedule of a search: every --checkpoint-every epochs, its rungs and its last epoch."""
    rungs = rung_epochs(settings.max_epochs, settings.grace_period, settings.reduction_factor)
    return checkpoint_epochs(settings.max_epochs, settings.checkpoint_every,
                             rungs if settings.scheduler == "asha" else [])


def prune_ended(ray_dir: str | os.PathLike, trial_status: dict[str, str]) -> tuple[int, int]:
    """Delete the checkpoints of ended trials (`trial_status`: trial id -> trials.csv status) in a
    local Ray experiment folder. Returns (checkpoints removed, bytes freed). Cloud storage
    (s3://, gs://) is left as it is."""
    ray_dir = Path(ray_dir)
    if "://" in str(ray_dir) or not ray_dir.is_dir():
        return 0, 0
    removed = freed = 0
    for trial_id, status in trial_status.items():
        if status not in PRUNED_STATUSES:
            continue
        for ckpt in (ray_dir / f"trial_{trial_id}").glob("checkpoint_*"):
            if ckpt.is_dir() and not ckpt.is_symlink():
                freed += sum(f.stat().st_size for f in ckpt.rglob("*") if f.is_file())
                shutil.rmtree(ckpt, ignore_errors=True)
                removed += 1
    return removed, freed


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of every file under `path` (hard links counted once)."""
    seen, total = set(), 0
    for f in Path(path).rglob("*"):
        if f.is_file() and not f.is_symlink():
            st = f.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total
