"""The settings of one search, each declared once: SearchOptions.

Every field carries its default, its check (a one-line error naming the flag) and
its help text. The CLI's `fersearch tune` takes its options from here
(`cli_signature`, which typer reads), the Python API builds a SearchOptions from
`fersearch.tune(**settings)`, and fersearch.json records `to_dict()`. An invalid
SearchOptions cannot exist: the checks run when it is made, before any data or Ray.

Light on purpose (no Ray, torch or pandas): the CLI imports it to build `--help`.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from ..errors import ExperimentError, FersearchError
from ..results.record import CHECKPOINT_EVERY, Settings, default_grace_period

SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("mix", "tpe", "random")
OBJECTIVES = ("val_acc", "latency")  # latency: batch-1, one-thread ONNX Runtime ms of the trial's model (minimised)
DATA_HELP = ("FER2013 file or folder (fer2013.csv, icml_face_data.csv, train.csv+test.csv, "
             "train/ test/ image folders, fer2013new.csv beside fer2013.csv). "
             "Default: data/fer2013.csv if present, else the synthetic set in data/synthetic/.")

Check = Callable[[Any, "SearchOptions"], Optional[str]]  # (value, all options) -> the problem, or None


def setting(default: Any, help: str, *, cli: Any, flags: tuple[str, ...] = (), check: Check | None = None,
            error: type[FersearchError] = FersearchError, show_default: bool | None = None,
            negated_as: str | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A SearchOptions field. `cli`: the type the command line parses it as; `flags`: its
    spellings (default --field-name); `show_default`: whether --help shows the default
    (default: only when it is not None); `negated_as`: a bool the command line sets the
    other way round, under this name (verbose=True is --quiet off); `choices`: the values
    --help lists (the CLI refuses others); `check` still guards the Python API."""
    return field(default=default, metadata={
        "help": help, "cli": cli, "flags": flags, "check": check, "error": error, "negated_as": negated_as,
        "choices": choices,
        "show_default": default is not None if show_default is None else show_default})


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

    space: Any = setting(
        None, "Search space: a .py file or a name from `fersearch spaces` (default: wide, which "
        "found better models than seed per trial and per minute on the default data).", cli=Optional[str])
    # Python API: also a loaded Space or a function space(trial) -> dict | None.
    data: Any = setting(None, DATA_HELP, cli=Optional[Path])  # Python API: also a loaded FerData
    trials: int = setting(50, "Configurations to try (Optuna proposals).", cli=int,
                          check=lambda v, o: f"--trials {v}: run at least 1 trial" if v < 1 else None)
    gpus: Optional[float] = setting(
        None, "GPUs the search may use (default: all the Ray cluster has; none = CPUs).", cli=Optional[int],
        check=lambda v, o: f"--gpus {v}: must be >= 0" if v is not None and v < 0 else None)
    gpus_per_trial: Optional[float] = setting(
        None, "GPU share per trial, at most 1; fractions pack several small CNNs on one GPU (default: 0.25 with "
        "GPUs; raised so that the trials at once spread over every GPU).",
        cli=Optional[float], check=_gpus_per_trial_check)
    cpus_per_trial: Optional[float] = setting(
        None, "CPU share per trial (fractions allowed); its torch thread count is the whole part, at least 1 "
        "(default: 1).", cli=Optional[float],
        check=lambda v, o: (f"--cpus-per-trial {v}: must be > 0 (fractions allowed)"
                            if v is not None and not v > 0 else None))
    max_epochs: int = setting(
        30, "Epochs a trial may train at most (ASHA's max_t).", cli=int,
        check=lambda v, o: f"--max-epochs {v}: train at least 1 epoch per trial" if v < 1 else None)
    checkpoint_every: int = setting(
        CHECKPOINT_EVERY, "Epochs between a trial's checkpoints (also at ASHA's rungs and its last epoch); a "
        "crashed trial is retried from its last one, so a crash costs it up to N-1 epochs.", cli=int,
        check=lambda v, o: f"--checkpoint-every {v}: must be >= 1 (1: every epoch)" if v < 1 else None)
    grace_period: Optional[int] = setting(
        None, "Epochs every trial gets before ASHA may stop it (default: max-epochs/6, >= 1).",
        cli=Optional[int], check=_grace_check)
    reduction_factor: float = setting(
        3, "ASHA keeps the best 1/R of trials at each rung.", cli=float,
        check=lambda v, o: (f"--reduction-factor {v}: must be > 1 (ASHA keeps 1/R of trials per rung; 3 is usual)"
                            if not v > 1 else None))
    scheduler: str = setting(
        "asha", "asha (stop trials clearly below the others at a rung, beyond the noise of the validation "
        "split, on val_acc or, where val_acc ties, on val_loss; decisions in scheduler.jsonl) or fifo (run all to "
        "the end).", cli=str, choices=SCHEDULERS,
        check=lambda v, o: (f"--scheduler {v!r}: choose one of {', '.join(SCHEDULERS)}"
                            if v not in SCHEDULERS else None))
    sampler: str = setting(
        "mix", "mix (mutations of the best trial so far, the warm-start recipes' neighbourhood early on, TPE "
        "for the rest; each trial's source in trials.csv), tpe (Optuna TPE alone) or random; all seeded.", cli=str,
        choices=SAMPLERS,
        check=lambda v, o: f"--sampler {v!r}: choose one of {', '.join(SAMPLERS)}" if v not in SAMPLERS else None)
    objectives: str = setting(
        "val_acc", "What the sampler optimises: val_acc, or val_acc,latency (accuracy up and batch-1 CPU latency "
        "down together: Optuna keeps a Pareto front; ASHA still stops trials on val_acc).", cli=str,
        check=_objectives_check)
    seed: int = setting(0, "Seed of the sampler and of every trial's training.", cli=int,
                        check=lambda v, o: f"--seed {v}: must be >= 0" if v < 0 else None)
    name: Optional[str] = setting(None, "Experiment name under --results (default: <space>-<timestamp>).",
                                  cli=Optional[str], check=_name_check, error=ExperimentError)
    results: Any = setting(  # Python API: also a Path
        None, "Where experiments go (default: results/). With --address: a path every node shares, "
        "or a URI Ray accepts (s3://, gs://, file://).", cli=Optional[str])
    address: Optional[str] = setting(
        None, "Join an existing Ray cluster (auto or host:port) instead of starting a local one.",
        cli=Optional[str])
    resume: bool = setting(
        False, "Continue the interrupted search --name: finished trials stay, the rest run; "
        "space, trials, epochs and ASHA settings come from the original search.", cli=bool,
        check=lambda v, o: ("--resume needs --name NAME: the search to continue (see `ls results/`)"
                            if v and not o.name else None))
    dashboard_host: str = setting("127.0.0.1", "Interface the local Ray dashboard binds to (warns unless loopback).",
                                  cli=str)
    dashboard_port: Optional[int] = setting(None, "Port of the local Ray dashboard (default: Ray's, 8265).",
                                            cli=Optional[int])
    mlflow: bool = setting(
        False, "Track the search in MLflow (a parent run, a child run per trial) in a local store, "
        "sqlite:///results/<name>/mlflow.db. Needs fersearch[mlflow].", cli=bool, show_default=False)
    mlflow_uri: Optional[str] = setting(
        None, "Track the search in this MLflow tracking store instead (http://host:5000, sqlite:///file.db; "
        "implies --mlflow).", cli=Optional[str])
    # The CLI says it the other way round: -q/--quiet turns the live view off.
    verbose: bool = setting(True, "No live view; print only the summary.", cli=bool, flags=("--quiet", "-q"),
                            show_default=False, negated_as="quiet")

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


def cli_signature() -> inspect.Signature:
    """The signature typer reads for `fersearch tune`: one typer.Option per SearchOptions field."""
    import typer

    params = []
    for f in fields(SearchOptions):
        m = f.metadata
        option = typer.Option(*(m["flags"] or ("--" + f.name.replace("_", "-"),)), help=m["help"],
                              show_default=m["show_default"])
        name, default = (m["negated_as"], not f.default) if m["negated_as"] else (f.name, f.default)
        # a Literal of the choices: typer lists them in --help and refuses others (the CLI's one line: cli.py)
        cli_type = Literal.__getitem__(m["choices"]) if m["choices"] else m["cli"]
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[cli_type, option]))
    return inspect.Signature(params)


def from_cli(params: dict[str, Any]) -> SearchOptions:
    """SearchOptions from what typer parsed with cli_signature (negated flags turned back)."""
    negated = {f.metadata["negated_as"]: f.name for f in fields(SearchOptions) if f.metadata["negated_as"]}
    given: dict[str, Any] = {negated.get(k, k): (not v if k in negated else v) for k, v in params.items()}
    return SearchOptions(**given)


def api_signature(fn: Callable) -> inspect.Signature:
    """`fn`'s signature with its **settings spelled out as SearchOptions' fields (for help() and IDEs)."""
    own = [p for p in inspect.signature(fn).parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    settings = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, annotation=f.type,
                                  default=f.default if f.default is not MISSING else inspect.Parameter.empty)
                for f in fields(SearchOptions)]
    return inspect.Signature([*own, *settings], return_annotation=inspect.signature(fn).return_annotation)
