"""Every place fersearch leans on Ray's or Optuna's internals, or works around their behaviour.

One entry per workaround: what it does, why, the version it was seen on, the upstream
issue where one exists. tests/test_workarounds.py holds one test per entry that fails
once the private symbol moves or changes shape, or once the behaviour it works around
is gone (then delete the entry and its test). Nothing here imports Ray or Optuna at
module level: `fersearch status` imports this without paying for Ray.

Seen on Ray 2.60.0 and Optuna 5.0.0.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..results.record import EXPERIMENT_STATE_GLOB

if TYPE_CHECKING:
    import optuna

# =============================================================================================== Ray

# ---- Ray's saved-state files (names), Ray 2.60.0
# Ray writes these in place, not atomically (guard.check_ray_state checks the newest of each before
# --resume); the experiment state is also rewritten every few seconds while a search runs, which
# `fersearch status` reads as the search's heartbeat. Ray's templates: TuneController.CKPT_FILE_TMPL,
# SearchGenerator.CKPT_FILE_TMPL, Searcher.CKPT_FILE_TMPL, CallbackList.CKPT_FILE_TMPL.
RAY_STATE_GLOBS = (EXPERIMENT_STATE_GLOB, "search_gen_state-*.json", "searcher-state-*.pkl", "callback-states-*.pkl")
JSON_STATE_GLOBS = (EXPERIMENT_STATE_GLOB,)  # the others are pickles (search_gen_state-*.json too)

# ---- Environment Tune reads, Ray 2.60.0
# The experiment state (what --resume restores) is saved after every checkpoint (num_to_keep=1
# forces that) and otherwise at most every STATE_SAVE_S; Ray's default of 10 s would let a crash
# forget trials that had just finished. Ray warns about the frequent saves; they cost milliseconds
# here, so the warning is off. RAY_AIR_NEW_OUTPUT=0: Ray's newer console output prints its own
# experiment box even at verbose=0; the classic reporter at verbose=0 prints nothing.
STATE_SAVE_S = "2"
RAY_ENV = {"TUNE_GLOBAL_CHECKPOINT_S": STATE_SAVE_S, "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
           "RAY_AIR_NEW_OUTPUT": "0"}

# ---- Ray's log lines that would tell a fersearch user something else, Ray 2.60.0
TOKEN_SETUP_LOGGER = "ray._private.authentication.authentication_token_setup"
TOKEN_NOTICE = "Token authentication is enabled"  # fersearch prints how to sign in itself
TUNE_LOGGER = "ray.tune.tune"
RESTORE_HINT = "Tuner.restore("  # after Ctrl+C fersearch says `--resume`
# ExperimentAnalysis warns about every trial without a result (a resumed search's unstarted ones).
ANALYSIS_LOGGER = "ray.tune.analysis.experiment_analysis"


def _not_token_notice(record: logging.LogRecord) -> bool:
    """Ray's notice that token auth is enabled (its warning for a cluster *without* it still shows)."""
    return not record.getMessage().startswith(TOKEN_NOTICE)


def _not_restore_hint(record: logging.LogRecord) -> bool:
    return RESTORE_HINT not in record.getMessage()


def quiet_ray_logs() -> None:
    """Filter the Ray log lines above. Same filter objects each time: addFilter ignores a repeat."""
    logging.getLogger(TOKEN_SETUP_LOGGER).addFilter(_not_token_notice)
    logging.getLogger(TUNE_LOGGER).addFilter(_not_restore_hint)


def quiet_experiment_analysis() -> None:
    logging.getLogger(ANALYSIS_LOGGER).setLevel(logging.ERROR)


# Ray Train logs every persisted checkpoint at INFO from the trial's worker: one line per checkpoint.
TRAIN_LOGGER = "ray.train"
# A worker told to stop (Ray's SIGTERM handler raises SystemExit; a terminal's Ctrl+C reaches the
# workers of a local Ray as KeyboardInterrupt) can take the signal inside a weakref callback or a
# __del__. Python then prints "Exception ignored in ... Traceback" for it, and Ray forwards that to
# the user's terminal after Ctrl+C (seen now and then in the Ctrl+C test, Ray 2.60.0).
STOP_EXCEPTIONS = (SystemExit, KeyboardInterrupt)


def quiet_trial_worker() -> None:
    """In the trial's worker process (trainable.run_trial): no checkpoint lines, no stop tracebacks."""
    from ..interrupts import quiet_unraisable

    logging.getLogger(TRAIN_LOGGER).setLevel(logging.WARNING)
    quiet_unraisable(*STOP_EXCEPTIONS)


# ---- Private Ray APIs, Ray 2.60.0 (no public route to these facts)
def dashboard_webui_url() -> str | None:
    """The connected node's dashboard address (host:port); public only as ray.init()'s return
    value, which a search that joined an already-initialised Ray never saw."""
    from ray._private import worker

    return getattr(worker._global_node, "webui_url", None)


def token_auth_enabled() -> bool:
    """Whether the connected cluster requires Ray's token; assumed on if the private module moved
    (that costs only a line of sign-in advice)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return bool(is_token_auth_enabled())
    except Exception:
        return True


def gpu_manager() -> Any:
    """Ray's own GPU detector (what a fresh local Ray will count, CUDA_VISIBLE_DEVICES honoured),
    so the resource plan agrees with Ray before ray.init."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    return get_accelerator_manager_for_resource("GPU")


# ---- Checkpoint bridge, Ray 2.60.0 (related upstream: ray-project/ray#29099, "recover from latest
# available checkpoint", which covers missing checkpoints on a lost node, not this order of writes)
CHECKPOINT_DIR = "checkpoint_{:06d}"  # ray.train._internal.storage: f"checkpoint_{index:06d}"


def bridge_checkpoints(exp_dir: Path) -> list[Path]:
    """Before --resume: give each trial back the checkpoint Ray's saved state may point to.

    Ray keeps one checkpoint per trial (CheckpointConfig(num_to_keep=1)) and deletes the older
    one as soon as a new one is written, but saves its experiment state (which names the
    checkpoint to restore from) a moment later. A driver killed in between leaves a state that
    names a deleted checkpoint_<k>, while checkpoint_<k+1> is on disk; Ray's restore would then
    fail that trial. Here the newest checkpoint is linked in under the previous index where that
    one is missing (hard links: no copy). Restoring from it continues at the newer epoch (the
    trial's own state.pt carries its epoch); Ray deletes the bridge as the older checkpoint once
    the trial checkpoints again. Returns the bridges made (local storage only)."""
    made = []
    for trial in sorted(p for p in exp_dir.glob("trial_*") if p.is_dir()):
        indices = sorted(int(c.name.rpartition("_")[2]) for c in trial.glob("checkpoint_*")
                         if c.is_dir() and c.name.rpartition("_")[2].isdigit())
        if len(indices) != 1 or indices[0] == 0:  # Ray keeps one; two means bridged (or nothing to bridge)
            continue
        newest, bridge = trial / CHECKPOINT_DIR.format(indices[-1]), trial / CHECKPOINT_DIR.format(indices[0] - 1)
        bridge.mkdir()
        for f in newest.iterdir():
            if f.is_file():
                os.link(f, bridge / f.name)
        made.append(bridge)
    return made


# ---- ASHA's private bracket, Ray 2.60.0
# scheduler.NoiseAwareASHA subclasses ray.tune.schedulers.async_hyperband._Bracket (private: Ray
# offers no hook for the stop decision) and reads these private fields of it and of
# AsyncHyperBandScheduler; its on_result mirrors _Bracket.on_result's loop.
BRACKET_FIELDS = ("rf", "_rungs", "_stop_last_trials")
BRACKET_METHODS = ("cutoff", "on_result")
ASHA_FIELDS = ("_brackets", "_trial_info", "_metric", "_mode", "_metric_op", "_time_attr", "_max_t",
               "_reduction_factor", "_stop_last_trials", "_num_stopped")


def asha_bracket() -> type:
    from ray.tune.schedulers.async_hyperband import _Bracket

    return _Bracket


# ---- Lazily built classes that pickles must find, Ray 2.60.0
# A Tune Callback must subclass ray.tune.Callback, but `fersearch status` must not import Ray Tune,
# so recorder.Recorder is built on first use. Ray pickles the callbacks into its experiment state;
# a class built inside a function pickles by its qualname, so it is renamed to the module-level
# name (recorder's module __getattr__ answers it). Old folders' pickles name
# fersearch.search.recorder.Recorder: keep that path.
def pickle_as(cls: type, module: str, name: str) -> type:
    cls.__module__, cls.__qualname__, cls.__name__ = module, name, name
    return cls


# ============================================================================================ Optuna

# ---- The journal's lock, Optuna 5.0.0 (upstream: optuna/optuna#5921; the fix, optuna/optuna#5971,
# breaks a stale lock only after its grace period, 30 s)
# JournalFileStorage's default lock (JournalFileSymlinkLock) is a symlink <journal>.lock; a search
# killed while it held it leaves it behind. Removed before --resume; safe because the resuming
# search holds the experiment's own lock (guard.experiment_lock): no other search writes the journal.
JOURNAL_LOCK_SUFFIX = ".lock"


def remove_journal_lock(journal: Path) -> None:
    journal.with_name(journal.name + JOURNAL_LOCK_SUFFIX).unlink(missing_ok=True)  # the link, not its target


# ---- Sampler defaults, Optuna 5.0.0
# fersearch's TPE is multivariate with the constant liar (parallel trials do not all sample the same
# point); Optuna 5 defaults to both, Optuna 4 to neither. Passed explicitly, so the pin does not decide.
TPE_SETTINGS: dict[str, bool] = {"multivariate": True, "constant_liar": True}

# ---- Trial states in the study, Ray 2.60.0 + Optuna 5.0.0 (no upstream report found:
# ray.tune.search.optuna.OptunaSearch.on_trial_complete tells COMPLETE whenever the last result has the metric)
# Ray tells a trial ASHA stopped COMPLETE, like one that ran to the end, and a trial that errored after
# reporting COMPLETE with its last value. Optuna's convention: PRUNED (its value, Optuna's own rule, the last
# intermediate value: the running best_val_acc, so the study value stays the best val_acc), and FAIL for a
# trial that errored. Stopped = done before max_epochs, state.end_status's rule for trials.csv. A diverged
# trial stays COMPLETE at 0.0 with user attr status=diverged (every trial gets trials.csv's word there): told
# FAIL, TPE ignores it and keeps proposing the diverging region (bench_pruned.py: 63% of proposals after the
# start-up diverged, against 11.5% at 0.0).
# Ray also leaves the last result out of the intermediate values (it goes to on_trial_complete only):
# reported here, so optuna-dashboard's curves end at the trial's last epoch.
# What TPE proposes does not change (benchmarks/bench_pruned.py: identical proposals in 40 seeds x 40
# trials; TPE only ranks pruned trials below the completed ones, where ASHA's stopped trials are anyway).
def trial_end_state(result: dict | None, error: bool, max_epochs: int | None) -> optuna.trial.TrialState | None:
    """The Optuna state a trial ending with `result` is told in (PRUNED: ASHA stopped it; FAIL: it errored),
    or None for Ray's own (COMPLETE, also for a diverged trial: see above)."""
    from optuna.trial import TrialState

    if error:
        return TrialState.FAIL
    if result and result.get("done") and max_epochs and int(result.get("training_iteration") or 0) < max_epochs:
        return TrialState.PRUNED
    return None


# ---- Proposal sources, Ray 2.60.0: which study trial a Ray trial is, only the searcher knows (OptunaSearch._ot_trials,
# private); the recorder (a Tune callback in the same driver process) reads each trial's source (search/sampler.py)
# here for trials.csv. The study trial also gets user attr ray_trial_id: the study joins trials.csv by it.
PROPOSAL_SOURCES: dict[str, str] = {}


def optuna_search_with_states(module: str) -> type:
    """Ray's OptunaSearch telling PRUNED and FAIL as above; registered as <module>.OptunaSearchWithStates
    (Ray pickles the searcher into tuner.pkl: --resume must find the class)."""
    from ray.tune.search.optuna import OptunaSearch

    class OptunaSearchWithStates(OptunaSearch):
        max_epochs: int | None = None

        def suggest(self, trial_id: str) -> dict | None:
            config = super().suggest(trial_id)
            ot = self._ot_trials.get(trial_id)
            if config is not None and ot is not None:
                ot.set_user_attr("ray_trial_id", trial_id)
                if ot.user_attrs.get("source"):
                    PROPOSAL_SOURCES[trial_id] = str(ot.user_attrs["source"])
            return config

        def _told_before(self, trial_id: str) -> bool:
            # On --resume the study journal may hold a trial's end that Ray's saved searcher state (older:
            # saved at checkpoints) does not: Ray then replays the trial's last results, and Optuna refuses to
            # update a finished trial (UpdateFinishedTrialError, which would end the resumed search).
            ot, study = self._ot_trials.get(trial_id), self._ot_study
            if trial_id in self._completed_trials or ot is None or study is None:
                return trial_id in self._completed_trials
            if study.get_trials(deepcopy=False)[ot.number].state.is_finished():
                self._completed_trials.add(trial_id)
                return True
            return False

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            from optuna.exceptions import UpdateFinishedTrialError

            try:  # per result: no look into the study unless Optuna refuses (_told_before's case)
                super().on_trial_result(trial_id, result)
            except UpdateFinishedTrialError:
                self._completed_trials.add(trial_id)

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            if self._told_before(trial_id):
                return
            # Ray reports every result but the last as an intermediate value: the curve would miss its last epoch.
            step = int((result or {}).get("training_iteration") or 0)
            ot, study = self._ot_trials.get(trial_id), self._ot_study
            assert study is not None  # set up by Ray before any trial
            if (ot is not None and result and not isinstance(self.metric, list)
                    and trial_id not in self._completed_trials and result.get(self.metric) is not None
                    and step not in study.get_trials(deepcopy=False)[ot.number].intermediate_values):
                ot.report(result[self.metric], step)
            state = trial_end_state(result, error, self.max_epochs)
            if ot is not None and trial_id not in self._completed_trials:  # trials.csv's word, in the dashboard too
                ot.set_user_attr("status", "failed" if error else "diverged" if (result or {}).get("diverged")
                                 else "stopped" if state is not None else "completed")
            if state is None or trial_id in self._completed_trials or (
                    isinstance(self.metric, list) and state.name == "PRUNED"):  # no intermediate values there
                return super().on_trial_complete(trial_id, result, error)
            try:
                study.tell(self._ot_trials[trial_id], state=state)
            except Exception as exc:  # as Ray does: a trial told twice must not end the search
                logging.getLogger(__name__).warning(exc)
            self._completed_trials.add(trial_id)

    return pickle_as(OptunaSearchWithStates, module, "OptunaSearchWithStates")
