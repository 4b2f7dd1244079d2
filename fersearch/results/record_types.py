"""The experiment record's types: fersearch.json as one frozen ExperimentRecord and its parts.

record.py loads and saves it (record_reader.py reads the JSON, old formats included); import
these names from fersearch.results.record, where every caller finds them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import RecordError

META_FILE = "fersearch.json"
# Ray's experiment state beside it (TuneController.CKPT_FILE_TMPL): rewritten every few seconds while a
# search runs, so `fersearch status` reads it as the search's heartbeat.
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
# 5: at GPU speed (~0.5 s epochs) a checkpoint every 5 epochs costs a few percent of the
# training time (benchmarks/bench_overhead.py), and a crash loses at most seconds.
CHECKPOINT_EVERY = 5
Z = 2.0  # standard errors a gap must exceed before the scheduler may stop on it (noise.py explains)
JSONObject = Mapping[str, object]


def default_grace_period(max_epochs: int) -> int:
    """ASHA's first rung: a sixth of the budget, at least one epoch.

    For the default 30 epochs that is 5, so with reduction factor 3 the rungs sit at
    5 and 15. Measured on the default data: the seed recipe stays at the majority-class
    rate for its first ~4 epochs, so a rung at 3 judges trials before they learn, and
    the rung at 27 that grace 3 adds saves only 3 of 30 epochs.
    """
    return max(1, max_epochs // 6)


@dataclass(frozen=True)
class Settings:
    """The settings a search runs with, resolved once (the grace period from --max-epochs, the
    objectives parsed): what the driver, the scheduler, the checkpoints and every report read."""

    seed: int
    trials: int
    max_epochs: int
    grace_period: int
    reduction_factor: float
    scheduler: str
    sampler: str
    objectives: tuple[str, ...] = ("val_acc",)
    metric: str = "val_acc"  # what the scheduler ranks trials on at each rung
    mode: str = "max"
    checkpoint_every: int = CHECKPOINT_EVERY  # in fersearch.json's options block (--checkpoint-every)


@dataclass(frozen=True)
class Noise:
    """The noise rule's inputs (noise.NoiseRule): validation images, majority-class rate, z."""

    n_val: int
    majority: float | None
    z: float = Z


@dataclass(frozen=True)
class DataRecord:
    """The data set a search ran on: where, which format, its hash, and its class counts per split."""

    path: str | None = None
    format: str | None = None
    sha256: str | None = None
    n: int | None = None
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    synthetic: bool = False
    notes: tuple[str, ...] = ()

    def labelled(self, split: str) -> dict[str, int]:
        """A split's counts per emotion, without the unlabelled images."""
        return {k: int(v) for k, v in (self.counts.get(split) or {}).items() if k != "unlabeled"}


@dataclass(frozen=True)
class SpaceRecord:
    """The search space: its file, name, source (what `best --evaluate` never runs) and hash."""

    path: str | None = None
    name: str | None = None
    source: str | None = None
    sha256: str | None = None
    params: tuple[str, ...] = ()
    constants: tuple[str, ...] = ()

    @property
    def label(self) -> str | None:
        return self.name or self.path


@dataclass(frozen=True)
class Resume:
    """One `--resume` of the search: when, how, and (once it ended) how long Tuner.fit ran."""

    at: str | None
    command: str | None = None
    options: JSONObject = field(default_factory=dict)
    resources: JSONObject = field(default_factory=dict)
    ended: str | None = None
    search_s: float | None = None


@dataclass(frozen=True)
class Mlflow:
    """The search's MLflow parent run (--mlflow): found again by --resume and `best --evaluate`."""

    uri: str
    experiment_id: str
    parent_run_id: str


@dataclass(frozen=True)
class ExperimentRecord:
    """What made an experiment, and what became of the search (ended, resumes, trackers)."""

    name: str
    created: str | None = None
    command: str | None = None
    host: str | None = None
    settings: Settings | None = None
    data: DataRecord = DataRecord()
    noise: Noise = Noise(0, None)
    space: SpaceRecord = SpaceRecord()
    study: JSONObject = field(default_factory=dict)
    options: JSONObject = field(default_factory=dict)  # SearchOptions.to_dict(): the settings as given
    resources: JSONObject = field(default_factory=dict)  # resources.Resources.as_dict()
    storage: str | None = None  # Ray's storage path (local folder or URI)
    base_config: JSONObject = field(default_factory=dict)  # TrainConfig.to_dict() of the trials' base
    versions: Mapping[str, str] = field(default_factory=dict)
    resumes: tuple[Resume, ...] = ()
    mlflow: Mlflow | None = None
    ended: str | None = None
    search_s: float | None = None
    extra: JSONObject = field(default_factory=dict)  # keys this version does not know, kept as they are
    lacks: tuple[str, ...] = ()  # the settings keys the file lacks (read as defaults); never written

    @property
    def planned_trials(self) -> int | None:
        return self.settings.trials if self.settings else None

    @property
    def max_epochs(self) -> int | None:
        return self.settings.max_epochs if self.settings else None

    @property
    def last_start(self) -> str | None:
        """When the search last started: its last resume, else its creation."""
        return (self.resumes[-1].at if self.resumes else None) or self.created

    @property
    def running(self) -> bool:
        """The search (or its last resume) has not recorded its end."""
        return (self.resumes[-1].ended if self.resumes else self.ended) is None

    @property
    def search_seconds(self) -> list[float]:
        """How long each part (the first run, then each resume) ran, for the parts that ended."""
        return [s for s in (self.search_s, *(r.search_s for r in self.resumes)) if s is not None]

    def require_settings(self, path: str | os.PathLike) -> Settings:
        """The settings, for a search that must have them all (--resume); one line when one is missing."""
        if self.settings is None or self.lacks:
            raise RecordError(f"{Path(path) / META_FILE} lacks a valid {', '.join(self.lacks)} setting; it was not "
                              f"written by `fersearch tune`: start a new search")
        return self.settings

    def ended_now(self, at: str, seconds: float) -> ExperimentRecord:
        """The record once the search (or its last resume) ended at `at` after `seconds` of Tuner.fit."""
        if self.resumes:
            last = replace(self.resumes[-1], ended=at, search_s=round(seconds, 1))
            return replace(self, resumes=(*self.resumes[:-1], last))
        return replace(self, ended=at, search_s=round(seconds, 1))

    def to_json(self) -> dict[str, object]:
        """fersearch.json's layout (the one every version has written)."""
        s = self.settings
        out: dict[str, object] = {"name": self.name, "command": self.command, "created": self.created,
                                  "data": _data_json(self.data), "noise": vars(self.noise),
                                  "space": _drop_none({"path": self.space.path, "name": self.space.name,
                                                       "source": self.space.source, "sha256": self.space.sha256}),
                                  "space_params": list(self.space.params),
                                  "space_constants": list(self.space.constants)}
        if s is not None:
            out.update(seed=s.seed, trials=s.trials, max_epochs=s.max_epochs, grace_period=s.grace_period,
                       reduction_factor=s.reduction_factor, scheduler=s.scheduler, sampler=s.sampler,
                       objectives=list(s.objectives), metric=s.metric, mode=s.mode)
        out.update(study=dict(self.study), options=dict(self.options), resources=dict(self.resources),
                   storage=self.storage, host=self.host, base_config=dict(self.base_config),
                   versions=dict(self.versions))
        if self.resumes:
            out["resumed"] = [_drop_none(vars(r)) for r in self.resumes]
        if self.mlflow is not None:
            out["mlflow"] = vars(self.mlflow)
        if self.ended is not None:
            out.update(ended=self.ended, search_s=self.search_s)
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


def _drop_none(d: Mapping[str, object]) -> dict[str, object]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items() if v is not None}


def _data_json(d: DataRecord) -> dict[str, object]:
    return {"path": d.path, "format": d.format, "sha256": d.sha256, "n": d.n,
            "counts": {s: dict(c) for s, c in d.counts.items()}, "synthetic": d.synthetic, "notes": list(d.notes)}
