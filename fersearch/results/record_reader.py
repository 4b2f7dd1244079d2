"""fersearch.json's JSON read into an ExperimentRecord: every old folder's defaults, and every type check.

A key of the wrong type (text where a number belongs, a list where an object does, an infinite or
negative count) is one RecordError line naming the file and the key; a `fersearch train` run's
fersearch.json is named as such. record.load_record is the way in; this module is its inside.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from ..errors import RecordError
from .record_types import (
    CHECKPOINT_EVERY,
    META_FILE,
    DataRecord,
    ExperimentRecord,
    Mlflow,
    Noise,
    Resume,
    Settings,
    SpaceRecord,
    Z,
    default_grace_period,
)
from .values import as_bool, as_count, as_float, as_int, as_list, as_names, as_object, as_positive, as_text, kind

T = TypeVar("T")


class NotAnExperiment(RecordError):
    """A fersearch.json that another command wrote (a `fersearch train` run): not damaged, not a search.
    Listing experiments passes over these without a note."""


def record_from_json(raw: object, path: str | os.PathLike = META_FILE) -> ExperimentRecord:
    """fersearch.json's parsed JSON as an ExperimentRecord (`path`: where it came from, for the errors; its
    folder's name is the experiment's when the JSON has none)."""
    if not isinstance(raw, dict):
        raise RecordError(f"{path} must hold a JSON object, not {kind(raw)}; the experiment record is damaged")
    if "result" in raw and "config" in raw and "trials" not in raw:
        raise NotAnExperiment(f"{Path(path).parent} is a `fersearch train` run, not a search experiment; "
                              "pass a folder made by `fersearch tune`")
    return _Reader(Path(path), raw).record(Path(path).parent.name)


_SETTINGS_KEYS = ("seed", "trials", "max_epochs", "grace_period", "reduction_factor", "scheduler", "sampler")
_KNOWN = {"name", "command", "created", "host", "data", "noise", "space", "space_params", "space_constants",
          *_SETTINGS_KEYS, "objectives", "metric", "mode", "study", "options", "resources", "storage",
          "base_config", "versions", "resumed", "mlflow", "ended", "search_s"}


class _Reader:
    """Reads one fersearch.json's keys with their types checked (one line naming the key when wrong)."""

    def __init__(self, path: Path, raw: Mapping[str, object]):
        self.path, self.raw = path, raw

    def bad(self, key: str, want: str, got: object) -> RecordError:
        return RecordError(f"{self.path}: {key} must be {want}, not {kind(got)}; the experiment record is damaged")

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
        return self.get(obj, key, as_text, "text", None, where)

    def block(self, obj: Mapping[str, object], key: str, where: str = "") -> dict[str, object]:
        return self.get(obj, key, as_object, "a JSON object", {}, where)

    def names(self, obj: Mapping[str, object], key: str, where: str = "") -> tuple[str, ...]:
        return self.get(obj, key, as_names, "a list of names", (), where)

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
            search_s=self.get(raw, "search_s", as_float, "a finite number", None),
            extra={k: v for k, v in raw.items() if k not in _KNOWN},
            lacks=tuple(k for k in _SETTINGS_KEYS if raw.get(k) is None))

    def settings(self) -> Settings | None:
        """The search's settings; None without its trials and max_epochs (not written by `fersearch tune`).
        A key an older or hand-made folder lacks reads as the default (`lacks` names it: no --resume)."""
        raw, get = self.raw, self.get
        trials = get(raw, "trials", as_positive, "a whole number >= 1", None)
        max_epochs = get(raw, "max_epochs", as_positive, "a whole number >= 1", None)
        seed = get(raw, "seed", as_int, "a whole number", 0)
        grace = get(raw, "grace_period", as_positive, "a whole number >= 1", None)
        rf = get(raw, "reduction_factor", as_float, "a finite number", 3.0)
        texts = {k: get(raw, k, as_text, "text", None) for k in ("scheduler", "sampler", "metric", "mode")}
        objectives = self.names(raw, "objectives")
        every = self.get(self.block(raw, "options"), "checkpoint_every", as_positive, "a whole number >= 1",
                         CHECKPOINT_EVERY, "options.")
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
            if not isinstance(per_label, dict) or not all(as_count(v) is not None for v in per_label.values()):
                raise self.bad(f"data.counts.{split}", "a JSON object of counts", per_label)
        return DataRecord(path=self.text(d, "path", w), format=self.text(d, "format", w),
                          sha256=self.text(d, "sha256", w), n=self.get(d, "n", as_count, "a count", None, w),
                          counts={s: {k: int(v) for k, v in c.items()} for s, c in counts.items()
                                  if isinstance(c, dict)},
                          synthetic=self.get(d, "synthetic", as_bool, "true or false", False, w),
                          notes=self.names(d, "notes", w))

    def noise(self) -> Noise:
        """The "noise" block; a folder made before the search recorded one: from the data block's
        validation counts (n_val 0 and majority None when those are missing too)."""
        n, w = self.block(self.raw, "noise"), "noise."
        if n:
            majority = self.get(n, "majority", as_float, "a finite number", None, w)
            return Noise(self.get(n, "n_val", as_count, "a count", 0, w), majority,
                         self.get(n, "z", as_float, "a finite number", Z, w))
        val = list(self.data().labelled("val").values())
        total = sum(val)
        return Noise(total, max(val) / total if total else None, Z)

    def space(self) -> SpaceRecord:
        s, w, text = self.block(self.raw, "space"), "space.", self.text
        return SpaceRecord(path=text(s, "path", w), name=text(s, "name", w), source=text(s, "source", w),
                           sha256=text(s, "sha256", w), params=self.names(self.raw, "space_params"),
                           constants=self.names(self.raw, "space_constants"))

    def resumes(self) -> tuple[Resume, ...]:
        entries: list[object] = self.get(self.raw, "resumed", as_list, "a list", [])
        out = []
        for i, r in enumerate(entries):
            w = f"resumed[{i}]."
            if not isinstance(r, dict):
                raise self.bad(w[:-1], "a JSON object", r)
            out.append(Resume(at=self.text(r, "at", w), command=self.text(r, "command", w),
                              options=self.block(r, "options", w), resources=self.block(r, "resources", w),
                              ended=self.text(r, "ended", w),
                              search_s=self.get(r, "search_s", as_float, "a finite number", None, w)))
        return tuple(out)

    def mlflow(self) -> Mlflow | None:
        m = self.block(self.raw, "mlflow")
        if not m:
            return None
        ids = [self.text(m, k, "mlflow.") for k in ("uri", "experiment_id", "parent_run_id")]
        if any(v is None for v in ids):
            raise self.bad("mlflow", "a JSON object with uri, experiment_id and parent_run_id", m)
        return Mlflow(*(str(v) for v in ids))
