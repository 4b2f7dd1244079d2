"""The settings of one search, each declared once: SearchOptions.

Every field carries its default and its check (a one-line error naming the flag).
`fersearch tune` (cli.py) declares each flag with its help and these defaults, the
Python API builds a SearchOptions from `fersearch.tune(**settings)`, and fersearch.json
records `to_dict()`; `settings()` resolves them once for the record, the scheduler and
the trials. An invalid SearchOptions cannot exist: the checks run when it is made,
before any data or Ray.

Light on purpose (no Ray, torch or pandas): the CLI imports it to build `--help`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal, Optional, get_args

from ..errors import ExperimentError, FersearchError
from ..results.record import CHECKPOINT_EVERY, Settings, default_grace_period

Scheduler = Literal["asha", "fifo"]  # the command line's choices (--help lists them)
Sampler = Literal["mix", "tpe", "random"]
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
SAMPLERS: tuple[str, ...] = get_args(Sampler)
OBJECTIVES = ("val_acc", "latency")  # latency: batch-1, one-thread ONNX Runtime ms of the trial's model (minimised)

Check = Callable[[Any, "SearchOptions"], Optional[str]]  # (value, all options) -> the problem, or None


def setting(default: object, *, check: Check | None = None, error: type[FersearchError] = FersearchError) -> Any:
    """A SearchOptions field with its check: the one-line problem with a value (None: fine), raised as
    `error` when a SearchOptions is made. The command line's flags and help live in cli.py's `tune`."""
    return field(default=default, metadata={"check": check, "error": error})


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> str | None:
    return None if value in choices else f"{flag} {value!r}: choose one of {', '.join(choices)}"


def objective_list(v: str) -> list[str]:
    return [s.strip() for s in str(v).split(",") if s.strip()]


def _objectives_check(v: str, o: SearchOptions) -> str | None:
    got = objective_list(v)
    unknown = [s for s in got if s not in OBJECTIVES]
    if unknown or not got or got[0] != "val_acc" or len(set(got)) != len(got):
        what = f"unknown objective {unknown[0]!r}" if unknown else "val_acc must come first, each once"
        return f"--objectives {v!r}: {what}; use val_acc, or val_acc,latency for accuracy and latency together"
    return None


def _grace_check(v: int | None, o: SearchOptions) -> str | None:
    if v is None:
        return None
    if v < 1:
        return f"--grace-period {v}: must be at least 1 epoch"
    if v > o.max_epochs:
        return (f"--grace-period {v} is larger than --max-epochs {o.max_epochs}; ASHA could never stop a trial: "
                f"use --grace-period {default_grace_period(o.max_epochs)} or raise --max-epochs")
    return None


def _gpus_per_trial_check(v: float | None, o: SearchOptions) -> str | None:
    if v is not None and v < 0:
        return f"--gpus-per-trial {v}: must be >= 0"
    if v is not None:  # fit trains on one device: a second GPU would sit reserved and idle
        from .resources import gpu_share_problem

        return gpu_share_problem(v)
    return None


# Experiment names: a plain folder name in any shell and on any filesystem (no separators, no
# "..", not hidden, not read as a flag), short enough to leave room for the files inside it.
NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def safe_name(text: str) -> str:
    """`text` made a valid experiment name (a space's file name in a default name)."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80].lstrip(".-")
    return name or "search"


def _name_check(v: str | None, o: SearchOptions) -> str | None:
    if v is None or NAME_RE.fullmatch(v):
        return None
    return (f"--name {v!r}: must be a plain directory name: up to 100 letters, digits, '.', '_' and '-', "
            f"not starting with '.' or '-' (no path separators; put any parent directory in --results)")


@dataclass(frozen=True)
class SearchOptions:
    """How to run one search. Fields are in `fersearch tune --help` order."""

    space: Any = setting(None)  # a file or name; Python API: also a loaded Space or a function space(trial)
    data: Any = setting(None)  # a file or folder; Python API: also a loaded FerData
    trials: int = setting(50, check=lambda v, o: f"--trials {v}: run at least 1 trial" if v < 1 else None)
    gpus: Optional[float] = setting(
        None, check=lambda v, o: f"--gpus {v}: must be >= 0" if v is not None and v < 0 else None)
    gpus_per_trial: Optional[float] = setting(None, check=_gpus_per_trial_check)
    cpus_per_trial: Optional[float] = setting(
        None, check=lambda v, o: (f"--cpus-per-trial {v}: must be > 0 (fractions allowed)"
                                  if v is not None and not v > 0 else None))
    max_epochs: int = setting(
        30, check=lambda v, o: f"--max-epochs {v}: train at least 1 epoch per trial" if v < 1 else None)
    checkpoint_every: int = setting(
        CHECKPOINT_EVERY,
        check=lambda v, o: f"--checkpoint-every {v}: must be >= 1 (1: every epoch)" if v < 1 else None)
    grace_period: Optional[int] = setting(None, check=_grace_check)
    reduction_factor: float = setting(
        3, check=lambda v, o: (f"--reduction-factor {v}: must be > 1 (ASHA keeps 1/R of trials per rung; 3 is usual)"
                               if not v > 1 else None))
    scheduler: Scheduler = setting("asha", check=lambda v, o: _choice("--scheduler", v, SCHEDULERS))
    sampler: Sampler = setting("mix", check=lambda v, o: _choice("--sampler", v, SAMPLERS))
    objectives: str = setting("val_acc", check=_objectives_check)
    seed: int = setting(0, check=lambda v, o: f"--seed {v}: must be >= 0" if v < 0 else None)
    name: Optional[str] = setting(None, check=_name_check, error=ExperimentError)
    results: Any = setting(None)  # a folder or a URI; Python API: also a Path
    address: Optional[str] = setting(None)
    resume: bool = setting(
        False, check=lambda v, o: ("--resume needs --name NAME: the search to continue (see `ls results/`)"
                                   if v and not o.name else None))
    dashboard_host: str = setting("127.0.0.1")
    dashboard_port: Optional[int] = setting(None)
    mlflow: bool = setting(False)
    mlflow_uri: Optional[str] = setting(None)
    verbose: bool = setting(True)  # the command line says it the other way round: -q/--quiet

    def __post_init__(self) -> None:
        for f in fields(self):
            check = f.metadata["check"]
            problem = check(getattr(self, f.name), self) if check else None
            if problem:
                raise f.metadata["error"](problem)

    @property
    def grace(self) -> int:
        """ASHA's grace period in epochs: --grace-period, or a sixth of --max-epochs."""
        return default_grace_period(self.max_epochs) if self.grace_period is None else self.grace_period

    def settings(self) -> Settings:
        """The settings resolved once (grace period, objectives) for the record, the scheduler and the trials."""
        return Settings(seed=self.seed, trials=self.trials, max_epochs=self.max_epochs, grace_period=self.grace,
                        reduction_factor=self.reduction_factor, scheduler=self.scheduler, sampler=self.sampler,
                        objectives=tuple(objective_list(self.objectives)), checkpoint_every=self.checkpoint_every)

    def to_dict(self) -> dict[str, Any]:
        """The settings as given, in plain JSON values (for fersearch.json): a space or data set
        passed as an object is recorded by its name or source."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["space"] = _plain(self.space)
        out["data"] = _plain(self.data)
        out["results"] = _plain(self.results)
        return out


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, os.PathLike):
        return os.fspath(v)
    for attr in ("name", "source", "__name__"):  # a Space, a FerData, a space function
        if getattr(v, attr, None) is not None:
            return str(getattr(v, attr))
    return repr(v)


def api_signature(fn: Callable) -> inspect.Signature:
    """`fn`'s signature with its **settings spelled out as SearchOptions' fields (for help() and IDEs)."""
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                                  default=f.default if f.default is not MISSING else inspect.Parameter.empty)
                for f in fields(SearchOptions)]
    return inspect.Signature([*own, *settings], return_annotation=inspect.signature(fn).return_annotation)
