"""`fersearch tune`: Ray Tune + Optuna (search/sampler.py) + ASHA over a search space, on CPUs, GPUs or a cluster.

    result = fersearch.tune(space="wide", trials=8)       # or: fersearch tune --trials 8
    result.path, result.trials, result.best

Flow: check the settings (SearchOptions) and the space (no Ray yet) -> load +
validate the data once -> start (or join) Ray -> plan resources against the
cluster -> write fersearch.json -> Tuner(OptunaSearch + ASHA) whose trainable is a
thin adapter around `fersearch.train.fit` (trainable.py; the data reaches every
trial through Ray's object store) -> a driver-side callback (state.py) records
trials.csv/history.csv as results arrive; the Optuna study goes to study.journal.
`--resume` restores Ray's own experiment state (Tuner.restore), so finished
trials stay finished and the Optuna study and ASHA rungs carry over.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import TrainConfig
from ..errors import ExperimentError
from ..fmt import num, plural
from ..io import command_line, timestamp, versions
from ..results import experiment as ex
from ..results.inputs import check_inputs
from ..results.noise import noise_inputs
from ..results.record import DataRecord, ExperimentRecord, Resume, Settings, SpaceRecord, load_record, save_record
from ..results.study import quiet_optuna
from . import pickles, tracking
from .checkpoints import prune_ended, schedule_for
from .guard import check_inside, check_ray_state, check_writable, experiment_lock, full_disk_error
from .options import SearchOptions, api_signature, safe_name
from .resources import (
    Resources,
    check_local_gpus_usable,
    check_shared_storage,
    local_gpu_count,
    plan_resources,
    storage_location,
)
from .session import cluster_info, ray_env, ray_running, ray_session
from .spaces import Space, load_space, space_from_function
from .study import SEARCH_METRIC, STUDY_FILE, close_study, reopen_study_journal, searcher
from .trainable import TrialSettings, trainable, trial_dirname
from .workarounds import bridge_checkpoints, quiet_experiment_analysis

if TYPE_CHECKING:
    import pandas as pd

    from ..data.loader import FerData

MAX_FAILURES = 2  # a trial that crashes is retried from its last checkpoint this often


@dataclass
class SearchResult:
    """What a search left behind: its directory, trials.csv as a DataFrame, the best row, fersearch.json."""

    path: Path
    trials: pd.DataFrame
    best: dict[str, Any] | None
    record: ExperimentRecord

    def counts(self) -> dict[str, int]:
        return {s.value: int((self.trials["status"] == s).sum()) for s in ex.TrialStatus}

    @property
    def interrupted(self) -> bool:
        """Trials left to run (Ctrl+C, a crash): `--resume` continues the search."""
        c = self.counts()
        return bool(c["pending"] + c["running"]) or len(self.trials) < (self.record.planned_trials or 0)

    def summary(self) -> list[str]:
        """What the CLI prints at the end: where, how trials ended, the best, what to run next."""
        name = self.path.name
        root = self.path.parent
        results_flag = "" if root == ex.results_root().resolve() else f" --results {root}"
        c = self.counts()
        unfinished = c["pending"] + c["running"]
        lines = [f"results: {self.path}",
                 f"trials: {len(self.trials)} of {self.record.planned_trials or '?'}: {c['completed']} completed, "
                 f"{c['stopped']} stopped early by ASHA, {c['failed']} failed"
                 + (f", {c['diverged']} diverged (non-finite loss; never the best)" if c["diverged"] else "")
                 + (f", {unfinished} unfinished" if unfinished else "")]
        if self.best:
            params = ", ".join(f"{k[len(ex.PARAM_PREFIX):]}={num(v, 3)}" for k, v in self.best.items()
                               if k.startswith(ex.PARAM_PREFIX) and v is not None)
            lines.append(f"best: trial {self.best['trial_id']} val_acc {float(self.best['best_val_acc']):.4f} "
                         f"(epoch {int(self.best['best_epoch'])}) {params}")  # a float column when a row has none yet
        if unfinished:
            lines.append(f"interrupted: continue with `fersearch tune --name {name} --resume{results_flag}`")
        lines.append(f"next: fersearch best {name} --evaluate{results_flag}   "
                     f"(retrain the best configuration, evaluate it on the test split)")
        return lines


def tune(options: SearchOptions | None = None, /, *, log: Callable[[str], None] | None = None,
         **settings: Any) -> SearchResult:
    """Run (or resume) a hyperparameter search; returns where it went, its trials and the best one.

    Settings are SearchOptions' fields (`fersearch tune --help` says what each does), as
    keyword arguments or a SearchOptions. Python API extras: `space` may be a loaded Space
    or your own function `space(trial) -> dict | None` (Optuna define-by-run; `fn.points`
    optional), `data` an already loaded FerData; `log` receives each progress line
    (default: print, unless verbose=False).
    """
    opts = replace(options, **settings) if options is not None else SearchOptions(**settings)
    log = log or (print if opts.verbose else (lambda _msg: None))
    quiet_experiment_analysis()  # the trials table says quietly what Ray would warn about
    local_root, storage = storage_location(opts.results)
    base = TrainConfig().replace(seed=opts.seed)
    exp_dir, record, space = _open_experiment(opts, local_root, storage, base)
    check_writable(local_root)  # missing, read-only or full: one line now, not a traceback once Ray runs
    tracking.check(tracking.wanted(opts))  # MLflow missing, or its server silent: one line, before data or Ray
    with experiment_lock(local_root, exp_dir.name):  # a second search of this name stops here, before Ray
        return _search(opts, log, exp_dir, record, space, local_root, storage, base)


def _search(opts: SearchOptions, log: Callable[[str], None], exp_dir: Path, record: ExperimentRecord | None,
            space: Space | None, local_root: Path, storage: str, base: TrainConfig) -> SearchResult:
    """tune() once its experiment folder is checked and locked: data, Ray, the Tuner, the result."""
    if not opts.resume:
        _refuse_existing(exp_dir)  # made by a search that ended between the first check and the lock
    name = exp_dir.name
    if opts.gpus and opts.address is None and not ray_running():
        found = local_gpu_count()
        if found is not None and opts.gpus > found:  # answer before spending seconds on starting Ray
            plan_resources({"GPU": found, "CPU": os.cpu_count() or 1}, gpus=opts.gpus,
                           gpus_per_trial=opts.gpus_per_trial, cpus_per_trial=opts.cpus_per_trial, trials=opts.trials)
    fer = _load_data(opts.data, record, log)

    with ray_session(opts.address, opts.dashboard_host, opts.dashboard_port):
        from ..results.state import mark_unfinished
        from .dashboard import dashboard_lines

        cluster, max_node_cpus = cluster_info()
        plan = plan_resources(cluster, gpus=opts.gpus, gpus_per_trial=opts.gpus_per_trial,
                              cpus_per_trial=opts.cpus_per_trial, trials=opts.trials, max_node_cpus=max_node_cpus)
        if opts.address is not None:
            check_shared_storage(local_root, storage)
        else:
            check_local_gpus_usable(plan)
        for line in dashboard_lines(opts.address):
            log(line)
        if opts.resume:
            assert record is not None  # _open_experiment read it
            reopen_study_journal(exp_dir)
            record = replace(record, resumes=(*record.resumes, Resume(
                at=timestamp(), command=command_line(), options=opts.to_dict(), resources=plan.as_dict())))
        else:
            assert space is not None  # _open_experiment checked it
            record = _new_record(name, fer, space, opts, plan, storage, base)
            exp_dir.mkdir(parents=True)
        save_record(exp_dir, record)
        if tracking.wanted(opts) and record.mlflow is None:  # the parent run, found again by --resume
            record = replace(record, mlflow=tracking.start_parent(exp_dir, record, tracking.wanted(opts)))
            save_record(exp_dir, record)
        run = record.require_settings(exp_dir)  # a resumed search runs with the original's settings
        trial_settings = TrialSettings(base=TrainConfig.from_dict(dict(record.base_config)),
                                       max_epochs=run.max_epochs, threads=plan.threads, experiment=name,
                                       checkpoint_at=schedule_for(run))
        ray_dir = f"{record.storage or storage}/{name}"
        log(f"{'resuming' if opts.resume else 'search'} {name}: {plural(run.trials, 'trial')} x <= "
            f"{plural(run.max_epochs, 'epoch')}, "
            f"{plan.concurrency} at a time ({num(plan.cpus_per_trial)} CPU"
            f"{f', {num(plan.gpus_per_trial)} GPU' if plan.gpus_per_trial else ''} each); results in {exp_dir}")
        t0 = time.time()
        from . import signer

        with ray_env(), quiet_optuna(), _ended_if_failed(exp_dir, t0, opts.resume):
            if opts.resume:  # the callbacks, searcher (with its study) and scheduler come back from Ray's state
                tuner = _restore_tuner(fer, plan, trial_settings, ray_dir, name)
                from . import recorder

                recorder.LIVE = opts.verbose  # this run's -q, not the first run's
            else:
                assert space is not None
                tuner = _new_tuner(space, fer, plan, trial_settings, record, exp_dir, storage, opts.verbose)
            try:
                signer.sign_tuner(exp_dir)
                tuner.fit()
            except Exception as e:  # a result file that could not be written: the disk filled up mid-search
                full = full_disk_error(e, f"continue with `fersearch tune --name {name} --resume`")
                if full is None:
                    raise
                raise full from None
            finally:
                try:
                    signer.sign_at_end(exp_dir)  # what Ray saved last is signed, Ctrl+C or not
                except OSError as e:  # a full disk: the error being raised (with its resume hint) is the one to show
                    if full_disk_error(e) is None:
                        raise
                if opts.resume:
                    recorder.LIVE = None
        mark_unfinished(exp_dir)
        # Ended trials' checkpoints are read by nothing (checkpoints.py): a finished search stays small.
        trials = ex.read_trials(exp_dir)
        prune_ended(ray_dir, dict(zip(trials["trial_id"], trials["status"])))
        _record_end(exp_dir, time.time() - t0)
        log(f"search {name} ended after {time.time() - t0:.0f} s")
    result = load_result(exp_dir)
    if not result.interrupted:
        close_study(exp_dir)
    return result


tune.__signature__ = api_signature(tune)  # type: ignore[attr-defined]  # help(fersearch.tune) lists every setting


def load_result(exp_dir: str | os.PathLike) -> SearchResult:
    """A SearchResult for an experiment directory (finished or not)."""
    exp_dir = Path(exp_dir)
    trials = ex.read_trials(exp_dir)
    return SearchResult(path=exp_dir, trials=trials, best=ex.best_trial(trials), record=load_record(exp_dir))


# ------------------------------------------------------------------ the experiment folder
def _space(space: Any, base: TrainConfig) -> Space:
    if isinstance(space, Space):
        return space
    if callable(space):  # the Python API: the user's own space(trial) function
        return space_from_function(space, base=base)
    return load_space(space, base=base)


def _open_experiment(opts: SearchOptions, local_root: Path, storage: str,
                     base: TrainConfig) -> tuple[Path, ExperimentRecord | None, Space | None]:
    """(experiment dir, its fersearch.json when resuming, the checked space when starting)."""
    if opts.resume:
        assert opts.name is not None  # SearchOptions refuses --resume without --name
        exp_dir = local_root / opts.name
        check_inside(local_root, exp_dir)
        record = _resumable_record(exp_dir, storage, opts.name)
        given = _space(opts.space, base) if opts.space is not None else None
        if given is not None and given.sha256 != record.space.sha256:
            raise ExperimentError(f"--space {given.path} differs from the space {opts.name} was started with "
                                  f"({record.space.path}); drop --space to resume with the original")
        return exp_dir, record, None  # the searcher, with its space, comes back from Ray's saved state
    space = _space(opts.space, base)
    exp_dir = local_root / (opts.name or _default_name(space.name, local_root))
    check_inside(local_root, exp_dir)
    _refuse_existing(exp_dir)
    return exp_dir, None, space


def _refuse_existing(exp_dir: Path) -> None:
    if exp_dir.exists():
        raise ExperimentError(f"{exp_dir} already exists; pass --resume to continue that search, "
                              f"or choose another --name (never overwritten)")


def _default_name(space_name: str, root: Path) -> str:
    stem = f"{safe_name(space_name)}-{datetime.now():%Y%m%d-%H%M%S}"
    name, i = stem, 2
    while (root / name).exists():  # two searches started within the same second
        name, i = f"{stem}-{i}", i + 1
    return name


def _resumable_record(exp_dir: Path, storage: str, name: str) -> ExperimentRecord:
    from ray.tune import Tuner

    if not ex.is_experiment(exp_dir):
        raise ExperimentError(f"--resume: no search named {name!r} in {exp_dir.parent}/ (no {ex.META_FILE}); "
                              f"check --name and --results")
    record = load_record(exp_dir)
    check_inputs(exp_dir)  # a damaged trials.csv, log or study: one line before Ray or any file changes
    record.require_settings(exp_dir)  # before any file changes
    ray_dir = f"{record.storage or storage}/{name}"
    if "://" not in ray_dir:
        # Before Ray unpickles anything, and before any file changes. Cut short first (it parses opcodes, runs
        # none): a full disk leaves Ray's state shorter than the file signed in staging, and "cut short" is the
        # true reason for that mismatch
        check_ray_state(Path(ray_dir), name)
        pickles.verify(Path(ray_dir), name)
    if not Tuner.can_restore(ray_dir):
        raise ExperimentError(f"--resume: {ray_dir} has no Ray experiment state to restore "
                              f"(the search stopped before Ray saved any); start a new search with another --name")
    if "://" not in ray_dir:
        bridge_checkpoints(Path(ray_dir))
    return record


def _load_data(data: FerData | str | os.PathLike | None, record: ExperimentRecord | None,
               log: Callable[[str], None]) -> FerData:
    from ..data.loader import FerData, load

    fer = data if isinstance(data, FerData) else load(
        data if data is not None else (record.data.path if record else None), log=log)
    recorded = record.data.sha256 if record else None
    if record and fer.sha256 and recorded and fer.sha256 != recorded:
        raise ExperimentError(f"data {fer.source} differs from what {record.name} was started on "
                              f"(sha256 {recorded[:12]}...); resume with the same --data")
    return fer


def _new_record(name: str, fer: FerData, space: Space, opts: SearchOptions, plan: Resources, storage: str,
                base: TrainConfig) -> ExperimentRecord:
    """fersearch.json: what made the search (the settings as given in `options`, resolved in `settings`)."""
    data = DataRecord(path=str(fer.source), format=fer.format, sha256=fer.sha256, n=int(len(fer.labels)),
                      counts=fer.counts(), synthetic=bool(fer.synthetic), notes=tuple(fer.notes))
    return ExperimentRecord(
        name=name, command=command_line(), created=timestamp(), settings=opts.settings(), data=data,
        noise=noise_inputs(fer.labels[fer.split == 1]),
        space=SpaceRecord(path=str(space.path), name=space.name, source=space.source, sha256=space.sha256,
                          params=tuple(space.params), constants=tuple(space.constants)),
        study={"file": STUDY_FILE, "name": name, "metric": SEARCH_METRIC}, options=opts.to_dict(),
        resources=plan.as_dict(), storage=storage, host=socket.gethostname(), base_config=base.to_dict(),
        versions=versions())


@contextmanager
def _ended_if_failed(exp_dir: Path, t0: float, resumed: bool) -> Iterator[None]:
    """A resume that fails (Tuner.restore, a crash) still records its end: never a `resumed` entry
    that says the search is running."""
    try:
        yield
    except BaseException:
        if resumed:
            try:
                _record_end(exp_dir, time.time() - t0)
            except Exception:  # the first error is the one to tell
                pass
        raise


def _record_end(exp_dir: Path, seconds: float) -> None:
    """When the search (or this resumed part of it) ended and how long Tuner.fit ran."""
    save_record(exp_dir, load_record(exp_dir).ended_now(timestamp(), seconds))


# ------------------------------------------------------------------ the Tuner
def _new_tuner(space: Space, fer: FerData, plan: Resources, settings: TrialSettings, record: ExperimentRecord,
               exp_dir: Path, storage: str, verbose: bool) -> Any:
    from ray import tune

    from . import signer
    from .recorder import make_recorder
    from .scheduler import make_scheduler

    run: Settings = record.require_settings(exp_dir)
    recorder = make_recorder(exp_dir, total_trials=run.trials, max_epochs=run.max_epochs,
                             to_config=settings.train_config, hide=space.constants, live=verbose)
    return tune.Tuner(
        trainable(fer, plan, settings),
        tune_config=tune.TuneConfig(
            search_alg=searcher(space, sampler=run.sampler, seed=run.seed, trials=run.trials, exp_dir=exp_dir,
                                name=record.name, objectives=run.objectives, max_epochs=run.max_epochs),
            scheduler=make_scheduler(run, record.noise, exp_dir),
            num_samples=run.trials,
            max_concurrent_trials=plan.concurrency,
            trial_dirname_creator=trial_dirname,
            # A new trial reuses a finished trial's worker process: no new process and
            # torch import per trial (seconds each, a large share of a short trial).
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=record.name,
            storage_path=storage,
            verbose=0,  # the live view (or nothing) instead of Ray's tables
            callbacks=[recorder, signer.PickleSigner(),  # signs Ray's pickles as Ray saves them (pickles.py)
                       *([tracking.make_tracker(record.mlflow, space.constants, run.max_epochs)]
                         if record.mlflow else [])],
            failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        ),
    )


def _restore_tuner(fer: FerData, plan: Resources, settings: TrialSettings, ray_dir: str, name: str) -> Any:
    from ray import tune

    if "://" not in ray_dir:
        pickles.verify(Path(ray_dir), name)  # again: the data and Ray took seconds to load
    # The recorder re-reads trials.csv/history.csv in setup(). Threads follow this run's plan.
    return tune.Tuner.restore(ray_dir, trainable(fer, plan, settings), resume_errored=True)


__all__ = ["tune", "SearchResult", "load_result"]
