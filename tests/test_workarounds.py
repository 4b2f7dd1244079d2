"""One test per entry of fersearch/search/workarounds.py (Ray 2.60.0, Optuna 5.0.0).

Each fails once the private symbol moves or changes shape, or once the behaviour worked
around is gone: then the entry (and its test) can go. Cheap: no Ray cluster, no training.
"""

from __future__ import annotations

import fnmatch
import inspect
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fersearch.search import workarounds as wa


# ============================================================================================ Ray
def test_ray_state_file_names_are_rays_own_templates():
    from ray.tune.callback import CallbackList
    from ray.tune.execution.tune_controller import TuneController
    from ray.tune.search.search_generator import SearchGenerator
    from ray.tune.search.searcher import Searcher

    names = [cls.CKPT_FILE_TMPL.format("2026-12-01_23-00-00")
             for cls in (TuneController, SearchGenerator, Searcher, CallbackList)]
    assert [any(fnmatch.fnmatch(n, g) for n in names) for g in wa.RAY_STATE_GLOBS] == [True] * 4
    assert TuneController.CKPT_FILE_TMPL.endswith(".json") and wa.JSON_STATE_GLOBS == (wa.EXPERIMENT_STATE_GLOB,)


def test_tune_still_reads_the_environment_fersearch_sets():
    from ray.tune.execution import experiment_state, tune_controller
    from ray.tune.experimental import output

    assert 'os.getenv("TUNE_GLOBAL_CHECKPOINT_S"' in inspect.getsource(tune_controller)
    assert "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S" in inspect.getsource(experiment_state)
    assert 'os.environ.get("RAY_AIR_NEW_OUTPUT", "1") == "0"' in inspect.getsource(output)  # new output is default
    assert set(wa.RAY_ENV) == {"TUNE_GLOBAL_CHECKPOINT_S", "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S",
                               "RAY_AIR_NEW_OUTPUT"}


def test_the_filtered_ray_log_lines_still_exist_and_are_filtered():
    import ray.tune.tune
    from ray._private.authentication import authentication_token_setup as setup

    assert setup.logger.name == wa.TOKEN_SETUP_LOGGER and f'"{wa.TOKEN_NOTICE} for this Ray cluster' in \
        inspect.getsource(setup)
    assert wa.RESTORE_HINT in inspect.getsource(ray.tune.tune) and ray.tune.tune.logger.name == wa.TUNE_LOGGER
    wa.quiet_ray_logs()
    wa.quiet_ray_logs()  # twice: one filter each, not two

    def passes(logger: str, msg: str) -> bool:
        return logging.getLogger(logger).filter(logging.LogRecord(logger, logging.WARNING, "", 0, msg, None, None))

    assert not passes(wa.TOKEN_SETUP_LOGGER, "Token authentication is enabled for this Ray cluster. Set ...")
    assert passes(wa.TOKEN_SETUP_LOGGER, "Token authentication is disabled: anyone can connect")
    assert not passes(wa.TUNE_LOGGER, 'Resume experiment with: Tuner.restore(path="/x", trainable=...)')
    assert len(logging.getLogger(wa.TUNE_LOGGER).filters) == len(set(logging.getLogger(wa.TUNE_LOGGER).filters))
    import ray.tune.analysis.experiment_analysis as ea

    assert ea.logger.name == wa.ANALYSIS_LOGGER
    import ray.train._internal.storage as storage  # where Ray Train logs each persisted checkpoint

    assert storage.logger.name.startswith(wa.TRAIN_LOGGER + ".") and "logger.info" in inspect.getsource(storage)


def test_a_trial_worker_stopped_inside_a_finaliser_prints_no_traceback_and_other_errors_still_print():
    from ray._private import worker

    # Ray's workers still stop on SIGTERM by raising SystemExit, wherever the signal lands
    assert "raise_sys_exit_with_custom_error_message" in inspect.getsource(worker)
    code = """
import gc, weakref
from fersearch.search import workarounds as wa
wa.quiet_trial_worker()
class Stopped:
    def __del__(self): raise SystemExit(1)
class Interrupted:
    def __del__(self): raise KeyboardInterrupt
class Broken:
    def __del__(self): raise ValueError("a real fault")
for cls in (Stopped, Interrupted, Broken):
    cls()
gc.collect()
print("went on")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "went on\n", done
    assert done.stderr.count("Exception ignored") == 1 and "ValueError: a real fault" in done.stderr, done.stderr
    assert "SystemExit" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


def test_the_private_ray_apis_still_exist_with_the_shape_used():
    from ray._private import node, worker
    from ray._private.authentication import authentication_utils

    assert hasattr(worker, "_global_node") and isinstance(inspect.getattr_static(node.Node, "webui_url"), property)
    assert callable(authentication_utils.is_token_auth_enabled) and isinstance(wa.token_auth_enabled(), bool)
    manager = wa.gpu_manager()
    assert isinstance(manager.get_current_node_num_accelerators(), int)
    visible = manager.get_current_process_visible_accelerator_ids()
    assert visible is None or isinstance(visible, list)


def test_checkpoint_folders_are_named_as_ray_names_them():
    from ray.train._internal import storage

    assert 'f"checkpoint_{index:06d}"' in inspect.getsource(storage) and wa.CHECKPOINT_DIR.format(7) == \
        "checkpoint_000007"


def test_ray_still_keeps_one_checkpoint_by_deleting_before_the_state_names_the_new_one():
    """The bridge's premise: with num_to_keep=1 Ray deletes the older checkpoint as the new one
    is registered (the checkpoint manager), while the experiment state that names the checkpoint
    is saved later by the controller. Once Ray saves state before deleting, the bridge can go."""
    from ray.train._internal import checkpoint_manager

    src = inspect.getsource(checkpoint_manager._CheckpointManager.register_checkpoint)
    assert "num_to_keep" in src and "_delete_fs_path" in src  # deleted right here, as the new one registers


def test_asha_bracket_private_fields_and_methods_are_still_there():
    from ray.tune.schedulers import AsyncHyperBandScheduler

    bracket_cls = wa.asha_bracket()
    bracket = bracket_cls(1, 10, 3, 0, stop_last_trials=True)
    assert all(hasattr(bracket, f) for f in wa.BRACKET_FIELDS) and all(callable(getattr(bracket, m))
                                                                       for m in wa.BRACKET_METHODS)
    assert isinstance(bracket._rungs, list) and all(isinstance(r, tuple) and isinstance(r[1], dict)
                                                    for r in bracket._rungs)
    assert bracket._rungs[0][0] > bracket._rungs[-1][0]  # highest milestone first: NoiseAwareASHA's loop relies on it
    assert list(inspect.signature(bracket_cls.on_result).parameters) == ["self", "trial", "cur_iter", "cur_rew"]
    asha = AsyncHyperBandScheduler(metric="val_acc", mode="max", max_t=10, grace_period=1, reduction_factor=3)
    assert all(hasattr(asha, f) for f in wa.ASHA_FIELDS)
    assert isinstance(asha._brackets[0], bracket_cls) and asha._metric_op == 1.0


def test_the_lazy_recorder_pickles_under_its_module_path():
    """Old experiment folders' callback pickles name fersearch.search.recorder.Recorder."""
    import fersearch.search.recorder as recorder

    cls = recorder.Recorder
    assert (cls.__module__, cls.__qualname__) == ("fersearch.search.recorder", "Recorder")
    assert pickle.loads(pickle.dumps(cls)) is cls and b"fersearch.search.recorder" in pickle.dumps(cls)


# ========================================================================================= Optuna
def test_a_killed_writers_journal_lock_still_blocks_optuna_and_removing_it_frees_the_journal(tmp_path: Path):
    import optuna
    from optuna.storages.journal import _file

    journal = tmp_path / "study.journal"
    assert _file.LOCK_FILE_SUFFIX == wa.JOURNAL_LOCK_SUFFIX
    # Optuna 5 still waits out a stale lock for its grace period (30 s) before breaking it
    assert inspect.signature(_file.JournalFileSymlinkLock.__init__).parameters["grace_period"].default == 30
    lock = _file.JournalFileSymlinkLock(str(journal))
    journal.touch()
    assert lock.acquire()  # ... and its holder is killed: the link stays behind
    assert os.path.islink(str(journal) + wa.JOURNAL_LOCK_SUFFIX)
    wa.remove_journal_lock(journal)
    wa.remove_journal_lock(journal)  # none: nothing
    assert not os.path.lexists(str(journal) + wa.JOURNAL_LOCK_SUFFIX) and journal.exists()
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)


@pytest.mark.parametrize("name", sorted(wa.TPE_SETTINGS))
def test_tpe_settings_are_passed_because_the_default_depends_on_the_version(name: str):
    import optuna

    from fersearch.search.study import make_sampler

    sampler = make_sampler("tpe", 0, 12)
    assert getattr(sampler, f"_{name}") is wa.TPE_SETTINGS[name] is True
    default = inspect.signature(optuna.samplers.TPESampler.__init__).parameters[name].default
    assert default in (None, False, True)  # None (multivariate in Optuna 5): chosen at run time: pass it


def _told(search_cls, result):
    """How a standalone OptunaSearch tells a trial that reported epochs 1-2 and ended with `result`."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    search = search_cls(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="best_val_acc",
                        mode="max", sampler=optuna.samplers.RandomSampler(seed=0))
    search.max_epochs = 3 if search_cls is not OptunaSearch else None
    search.suggest("t")
    search.on_trial_result("t", {"best_val_acc": 0.4, "training_iteration": 1})
    search.on_trial_complete("t", result=result)
    t = search._ot_study.trials[0]
    return t.state.name, t.value, sorted(t.intermediate_values)


def test_ray_tells_an_asha_stop_complete_and_the_subclass_pruned_with_its_best_and_last_epoch():
    from ray.tune.search.optuna import OptunaSearch

    from fersearch.search.study import __getattr__ as study_attr

    stop = {"best_val_acc": 0.5, "training_iteration": 2, "done": True}  # ASHA's stop: done before max_epochs 3
    assert _told(OptunaSearch, stop) == ("COMPLETE", 0.5, [1])  # the behaviour worked around; last epoch missing
    assert _told(study_attr("OptunaSearchWithStates"), stop) == ("PRUNED", 0.5, [1, 2])
    diverged = {**stop, "best_val_acc": 0.0, "diverged": "loss nan", "done": False}
    assert _told(study_attr("OptunaSearchWithStates"), diverged)[:2] == ("COMPLETE", 0.0)  # TPE avoids it
    cls = study_attr("OptunaSearchWithStates")
    assert pickle.loads(pickle.dumps(cls)) is cls  # Ray's tuner.pkl finds it on --resume


def test_a_trial_the_journal_already_ended_is_not_updated_when_ray_replays_it_on_resume(tmp_path: Path):
    """Ray's saved searcher state can predate a trial's end that the study journal already holds (a crash
    between the two saves): Ray replays the trial's last results on --resume. Optuna refuses to update a
    finished trial; plain OptunaSearch would raise there and end the resumed search."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    from fersearch.search.study import __getattr__ as study_attr

    def searcher(cls: type) -> Any:
        search = cls(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="best_val_acc", mode="max",
                     sampler=optuna.samplers.RandomSampler(seed=0))
        search.max_epochs = 3 if cls is not OptunaSearch else None
        search.suggest("t")
        search.on_trial_result("t", {"best_val_acc": 0.4, "training_iteration": 1})
        search.on_trial_complete("t", result={"best_val_acc": 0.5, "training_iteration": 3, "done": True})
        search._completed_trials.discard("t")  # Ray's older saved state: the end not yet seen
        return search

    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):  # the behaviour worked around
        searcher(OptunaSearch).on_trial_result("t", {"best_val_acc": 0.5, "training_iteration": 3})
    search = searcher(study_attr("OptunaSearchWithStates"))
    search.on_trial_result("t", {"best_val_acc": 0.6, "training_iteration": 3})
    search.on_trial_complete("t", result={"best_val_acc": 0.6, "training_iteration": 3, "done": True})
    t = search._ot_study.trials[0]
    assert (t.state.name, t.value, sorted(t.intermediate_values)) == ("COMPLETE", 0.5, [1, 3])  # kept as told
