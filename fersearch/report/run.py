"""A `fersearch train` run folder: config.json, history.csv, model.pt, fersearch.json.

The trainer (fersearch.train) knows nothing of folders; this module turns one `fit`
into a run folder that records exactly what produced it (config, data hash, versions,
command), and says in one summary what came out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import TrainConfig
from ..errors import ConfigError, ExperimentError
from ..fmt import acc, plural

if TYPE_CHECKING:
    from ..data import FerData

RUN_FILES = ("config.json", "history.csv", "model.pt", "fersearch.json")


def default_out_dir() -> Path:
    """results/train-<YYYYmmdd-HHMMSS>/ under the working directory."""
    return Path("results") / f"train-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def history_csv(history: list[dict]) -> str:
    """history.csv of a run: one row per epoch, the trainer's metric columns."""
    from ..results.trial_files import csv_text
    from ..train.loop import METRIC_KEYS

    return csv_text(list(METRIC_KEYS), history)


def resolve_config(config_file: str | Path | None = None, overrides: dict | None = None, *,
                   epochs: int | None = None, seed: int | None = None) -> TrainConfig:
    """The config of a `fersearch train` run: seed defaults <- JSON file <- --set <- --epochs/--seed.
    Every mistake is a ConfigError here, before any data is read."""
    base = TrainConfig.from_json_file(str(config_file)) if config_file is not None else TrainConfig()
    flags = {k: v for k, v in (("epochs", epochs), ("seed", seed)) if v is not None}
    return TrainConfig.from_dict({**(overrides or {}), **flags}, base=base)


def format_summary(summary: dict) -> str:
    """The two lines `fersearch train` prints when it is done."""
    epochs = plural(summary["epochs"], "epoch")
    stop = f", stopped early after {epochs}" if summary["stopped_early"] else f" of {epochs}"
    return (f"best val_acc {acc(summary['val_acc'])} at epoch {summary['best_epoch']}{stop} "
            f"({summary['train_time_s']:.0f}s, {summary['images_per_s']:,.0f} img/s on {summary['device']}, "
            f"{summary['precision']})\n" + (f"diverged: {summary['diverged']}\n" if summary.get("diverged") else "")
            + f"wrote {summary['out']}/: {' '.join(RUN_FILES)}")


def train_to_dir(cfg: TrainConfig, data: FerData, out: str | Path | None = None, *, command: str = "",
                 threads: int | None = None, progress: bool = False) -> dict:
    """Train and write config.json, history.csv (rewritten every epoch), model.pt and fersearch.json
    to `out`; returns the summary also stored in fersearch.json under 'result'."""
    from ..io import atomic_write, timestamp, versions, write_json
    from ..model import save_model
    from ..train import fit

    out = Path(out) if out is not None else default_out_dir()
    if (out / "model.pt").exists():
        raise ExperimentError(f"{out} already holds a training run (model.pt); pass another --out or remove it")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", cfg.to_dict())
    meta = {"command": command, "created": timestamp(),
            "data": {"path": data.source, **data.info()}, "config": cfg.to_dict(), "versions": versions()}
    write_json(out / "fersearch.json", meta)

    history: list[dict] = []

    def on_epoch(metrics: dict, _state: Callable[[], dict]) -> None:
        history.append(metrics)
        atomic_write(out / "history.csv", history_csv(history))

    result = fit(cfg, data, on_epoch=on_epoch, threads=threads, progress=progress)
    if result.diverged and not result.best_epoch:  # no epoch with finite weights: no model to save
        raise ConfigError(f"training diverged: {result.diverged} (e.g. --set lr={cfg.lr / 10:g}); "
                          f"its history is in {out}/history.csv")
    last = result.history[-1]
    summary = {
        "val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "epochs": result.epochs,
        "last_val_acc": last["val_acc"], "val_loss": result.history[result.best_epoch - 1]["val_loss"],
        "stopped_early": result.stopped_early, "images_per_s": result.images_per_s,
        "device": result.device, "precision": result.precision, "diverged": result.diverged,
        "train_time_s": sum(h["epoch_time_s"] for h in result.history), "out": str(out),
    }
    save_model(out / "model.pt", result.model, cfg,
               {"val_acc": result.best_val_acc, "best_epoch": result.best_epoch, "data_sha256": data.sha256,
                "data_path": str(data.source)})
    write_json(out / "fersearch.json", {**meta, "result": summary})
    return summary
