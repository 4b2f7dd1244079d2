"""fersearch.json: the experiment record, one frozen, typed object with one loader and one writer.

    record = load_record(exp_dir)        # every old folder's defaults applied here, and only here
    record.settings.grace_period         # None settings: a folder not written by `fersearch tune`
    save_record(exp_dir, record)         # atomic; the JSON keeps the layout it always had

The JSON layout is flat at the top for the search's settings (name, seed, trials, max_epochs,
grace_period, reduction_factor, scheduler, sampler, objectives, metric, mode), with blocks for
the data, the noise inputs, the space, the study, the options as given, the resources planned,
the versions, each resume and the MLflow parent run. Older folders lack some keys (objectives,
noise, metric, resumed, mlflow): `load_record` fills them in; a key of the wrong type is a
one-line RecordError naming the file and the key. Keys this version does not know are kept as
they are (`extra`) and written back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from ..errors import RecordError
from ..io import read_json, write_json

META_FILE = "fersearch.json"
# Ray's experiment state beside it (TuneController.CKPT_FILE_TMPL): rewritten every few seconds while a
# search runs, so `fersearch status` reads it as the search's heartbeat.
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"
# 5: at GPU speed (~0.5 s epochs) a checkpoint every 5 epochs costs a few percent of the
# training time (benchmarks/bench_overhead.py), and a crash loses at most seconds.
CHECKPOINT_EVERY = 5
Z = 2.0  # standard errors a gap must exceed before the scheduler may stop on it (noise.py explains)
JSONObject = Mapping[str, object]

T = TypeVar("T")


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


# ---------------------------------------------------------------- reading and writing
def load_record(exp: str | os.PathLike) -> ExperimentRecord:
    """An experiment's fersearch.json as an ExperimentRecord. Every default an older folder needs is
    applied here; a file that is missing, not a JSON object, or holds a key of the wrong type is one
    RecordError line naming the file and what is wrong."""
    path = Path(exp) / META_FILE
    try:
        raw = read_json(path)
    except FileNotFoundError:
        raise RecordError(f"{path} not found; is {exp} a fersearch experiment?") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RecordError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); the experiment record is "
                          "damaged") from None
    except OSError as e:
        raise RecordError(f"{path} cannot be read ({e.strerror or e}); check its permissions") from None
    return record_from_json(raw, path)


def record_from_json(raw: object, path: str | os.PathLike = META_FILE) -> ExperimentRecord:
    """fersearch.json's parsed JSON as an ExperimentRecord (`path`: where it came from, for the errors; its
    folder's name is the experiment's when the JSON has none)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{path} must hold a JSON object, not {_kind(raw)}; the experiment record is damaged")
    return _Reader(Path(path), raw).record(Path(path).parent.name)


def save_record(exp: str | os.PathLike, record: ExperimentRecord) -> None:
    """Write fersearch.json atomically (a reader never sees half a record)."""
    write_json(Path(exp) / META_FILE, record.to_json())


_SETTINGS_KEYS = ("seed", "trials", "max_epochs", "grace_period", "reduction_factor", "scheduler", "sampler")
_KNOWN = {"name", "command", "created", "host", "data", "noise", "space", "space_params", "space_constants",
          *_SETTINGS_KEYS, "objectives", "metric", "mode", "study", "options", "resources", "storage",
          "base_config", "versions", "resumed", "mlflow", "ended", "search_s"}


class _Reader:
    """Reads one fersearch.json's keys with their types checked (one line naming the key when wrong)."""

    def __init__(self, path: Path, raw: Mapping[str, object]):
        self.path, self.raw = path, raw

    def bad(self, key: str, want: str, got: object) -> RecordError:
        return RecordError(f"{self.path}: {key} must be {want}, not {_kind(got)}; the experiment record is damaged")

    def get(self, obj: Mapping[str, object], key: str, convert: Callable[[object], T | None], want: str,
            default: T, where: str = "") -> T:
        v = obj.get(key)
        if v is None:
            return default
        out = convert(v)
        if out is None:
            raise self.bad(where + key, want, v)
        return out

    def text(self, obj: Mapping[str, object], key: str, where: str = "") -> str | None:
        return self.get(obj, key, _as_text, "text", None, where)

    def block(self, obj: Mapping[str, object], key: str, where: str = "") -> dict[str, object]:
        return self.get(obj, key, _as_object, "a JSON object", {}, where)

    def names(self, obj: Mapping[str, object], key: str, where: str = "") -> tuple[str, ...]:
        return self.get(obj, key, _as_names, "a list of names", (), where)

    def record(self, folder: str) -> ExperimentRecord:
        raw, text = self.raw, self.text
        versions = self.block(raw, "versions")
        return ExperimentRecord(
            name=text(raw, "name") or folder, created=text(raw, "created"), command=text(raw, "command"),
            host=text(raw, "host"), settings=self.settings(), data=self.data(), noise=self.noise(),
            space=self.space(), study=self.block(raw, "study"), options=self.block(raw, "options"),
            resources=self.block(raw, "resources"), storage=text(raw, "storage"),
            base_config=self.block(raw, "base_config"), versions={k: str(v) for k, v in versions.items()},
            resumes=self.resumes(), mlflow=self.mlflow(), ended=text(raw, "ended"),
            search_s=self.get(raw, "search_s", _as_float, "a number", None),
            extra={k: v for k, v in raw.items() if k not in _KNOWN},
            lacks=tuple(k for k in _SETTINGS_KEYS if raw.get(k) is None))

    def settings(self) -> Settings | None:
        """The search's settings; None without its trials and max_epochs (not written by `fersearch tune`).
        A key an older or hand-made folder lacks reads as the default (`lacks` names it: no --resume)."""
        raw, get = self.raw, self.get
        trials = get(raw, "trials", _as_int, "a whole number", None)
        max_epochs = get(raw, "max_epochs", _as_int, "a whole number", None)
        seed = get(raw, "seed", _as_int, "a whole number", 0)
        grace = get(raw, "grace_period", _as_int, "a whole number", None)
        rf = get(raw, "reduction_factor", _as_float, "a number", 3.0)
        texts = {k: get(raw, k, _as_text, "text", None) for k in ("scheduler", "sampler", "metric", "mode")}
        objectives = self.names(raw, "objectives")
        every = self.get(self.block(raw, "options"), "checkpoint_every", _as_int, "a whole number", CHECKPOINT_EVERY,
                         "options.")
        if trials is None or max_epochs is None:
            return None
        return Settings(seed=seed, trials=trials, max_epochs=max_epochs,
                        grace_period=default_grace_period(max_epochs) if grace is None else grace,
                        reduction_factor=rf, scheduler=texts["scheduler"] or "asha", sampler=texts["sampler"] or "tpe",
                        objectives=objectives or ("val_acc",), metric=texts["metric"] or "val_acc",
                        mode=texts["mode"] or "max", checkpoint_every=every)

    def data(self) -> DataRecord:
        d, w = self.block(self.raw, "data"), "data."
        counts = self.block(d, "counts", w)
        for split, per_label in counts.items():
            if not isinstance(per_label, dict) or not all(_as_int(v) is not None for v in per_label.values()):
                raise self.bad(f"data.counts.{split}", "a JSON object of whole numbers", per_label)
        return DataRecord(path=self.text(d, "path", w), format=self.text(d, "format", w),
                          sha256=self.text(d, "sha256", w), n=self.get(d, "n", _as_int, "a whole number", None, w),
                          counts={s: {k: int(v) for k, v in c.items()} for s, c in counts.items()
                                  if isinstance(c, dict)},
                          synthetic=self.get(d, "synthetic", _as_bool, "true or false", False, w),
                          notes=self.names(d, "notes", w))

    def noise(self) -> Noise:
        """The "noise" block; a folder made before the search recorded one: from the data block's
        validation counts (n_val 0 and majority None when those are missing too)."""
        n, w = self.block(self.raw, "noise"), "noise."
        if n:
            majority = self.get(n, "majority", _as_float, "a number", None, w)
            return Noise(self.get(n, "n_val", _as_int, "a whole number", 0, w), majority,
                         self.get(n, "z", _as_float, "a number", Z, w))
        val = list(self.data().labelled("val").values())
        total = sum(val)
        return Noise(total, max(val) / total if total else None, Z)

    def space(self) -> SpaceRecord:
        s, w, text = self.block(self.raw, "space"), "space.", self.text
        return SpaceRecord(path=text(s, "path", w), name=text(s, "name", w), source=text(s, "source", w),
                           sha256=text(s, "sha256", w), params=self.names(self.raw, "space_params"),
                           constants=self.names(self.raw, "space_constants"))

    def resumes(self) -> tuple[Resume, ...]:
        entries: list[object] = self.get(self.raw, "resumed", _as_list, "a list", [])
        out = []
        for i, r in enumerate(entries):
            w = f"resumed[{i}]."
            if not isinstance(r, dict):
                raise self.bad(w[:-1], "a JSON object", r)
            out.append(Resume(at=self.text(r, "at", w), command=self.text(r, "command", w),
                              options=self.block(r, "options", w), resources=self.block(r, "resources", w),
                              ended=self.text(r, "ended", w),
                              search_s=self.get(r, "search_s", _as_float, "a number", None, w)))
        return tuple(out)

    def mlflow(self) -> Mlflow | None:
        m = self.block(self.raw, "mlflow")
        if not m:
            return None
        ids = [self.text(m, k, "mlflow.") for k in ("uri", "experiment_id", "parent_run_id")]
        if any(v is None for v in ids):
            raise self.bad("mlflow", "a JSON object with uri, experiment_id and parent_run_id", m)
        return Mlflow(*(str(v) for v in ids))


# ---------------------------------------------------------------- JSON values, checked
def _kind(v: object) -> str:
    names = {dict: "a JSON object", list: "a list", str: "text", bool: "true/false", type(None): "null"}
    return names.get(type(v), f"the number {v!r}" if isinstance(v, (int, float)) else type(v).__name__)


def _as_int(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    return int(v) if isinstance(v, float) and v.is_integer() else None


def _as_float(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _as_text(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _as_bool(v: object) -> bool | None:
    return v if isinstance(v, bool) else None


def _as_object(v: object) -> dict[str, object] | None:
    return v if isinstance(v, dict) else None


def _as_list(v: object) -> list[object] | None:
    return v if isinstance(v, list) else None


def _as_names(v: object) -> tuple[str, ...] | None:
    return tuple(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else None


def _drop_none(d: Mapping[str, object]) -> dict[str, object]:
    return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in d.items() if v is not None}


def _data_json(d: DataRecord) -> dict[str, object]:
    return {"path": d.path, "format": d.format, "sha256": d.sha256, "n": d.n,
            "counts": {s: dict(c) for s, c in d.counts.items()}, "synthetic": d.synthetic, "notes": list(d.notes)}
