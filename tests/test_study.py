"""The tools that open a search folder without fersearch, each with its real client: the Optuna study
(optuna.load_study: states, values, per-epoch intermediate values), TensorBoard's event reader, and Ray's
ExperimentAnalysis."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import FAST_SPACE, TUNED
from fersearch.results import experiment as ex
from fersearch.results.study import STUDY_FILE


def _study(exp):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=exp.name, storage=JournalStorage(JournalFileBackend(str(exp / STUDY_FILE))))


# Two points that learn, then two that cannot (lr 1e-6): ASHA stops those at its first rung, beyond the noise.
# A fifth point the 4 trials never reach: Ray enqueues every point, which left it WAITING in the study.
POINTS_SPACE = FAST_SPACE.replace('trial.suggest_float("lr", 1e-3, 5e-3, log=True)',
                                  'trial.suggest_float("lr", 1e-6, 5e-3, log=True)') + """

points = [{"filters_1": 16, "filters_2": 32, "lr": 0.005}, {"filters_1": 16, "filters_2": 32, "lr": 0.004},
          {"filters_1": 8, "filters_2": 16, "lr": 1e-6}, {"filters_1": 8, "filters_2": 16, "lr": 1.1e-6},
          {"filters_1": 8, "filters_2": 16, "lr": 0.003}]
"""


@pytest.fixture(scope="module")
def stopping_search(tmp_path_factory, tiny_csv):
    from fersearch.search.driver import tune

    tmp = tmp_path_factory.mktemp("study")
    space = tmp / "points.py"
    space.write_text(POINTS_SPACE)
    return tune(space=space, data=tiny_csv, name="points", results=tmp / "results", verbose=False,
                **dict(TUNED, trials=4, max_epochs=3)).path


@pytest.mark.slow
def test_the_study_says_pruned_for_asha_stops_and_keeps_best_values_and_curves(stopping_search):
    from optuna.trial import TrialState

    exp = stopping_search
    trials = pd.read_csv(exp / "trials.csv")
    history = pd.read_csv(exp / "history.csv")
    assert set(trials.status) == {"completed", "stopped"}, trials.status  # ASHA stopped some: else this tests nothing
    study = _study(exp)
    expected = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED}
    assert len(study.trials) == len(trials) == 4  # 5 points, 4 trials: no WAITING fifth
    by_lr = {round(t.params["lr"], 12): t for t in study.trials}
    for _, row in trials.iterrows():
        t = by_lr[round(float(row["config/lr"]), 12)]
        assert t.state == expected[row.status], (row.trial_id, row.status, t.state)
        assert t.user_attrs["status"] == row.status  # trials.csv's word, shown by optuna-dashboard
        assert t.value == pytest.approx(row.best_val_acc)  # PRUNED too: Optuna keeps the last intermediate value
        curve = history[history.trial_id == row.trial_id].sort_values("epoch")
        assert sorted(t.intermediate_values) == list(curve.epoch)  # optuna-dashboard draws every epoch
        assert [t.intermediate_values[e] for e in curve.epoch] == pytest.approx(list(curve.val_acc.cummax()))


def test_a_failed_trial_is_fail_an_asha_stop_pruned_and_a_diverged_one_complete_at_zero():
    from optuna.trial import TrialState

    from fersearch.search.workarounds import trial_end_state

    assert trial_end_state({"done": True, "training_iteration": 2}, False, 3) is TrialState.PRUNED
    assert trial_end_state({"done": True, "training_iteration": 3}, False, 3) is None  # ran out: Ray's COMPLETE
    # diverged: COMPLETE at 0.0 (told FAIL, TPE would ignore it and propose its region again: bench_pruned.py)
    assert trial_end_state({"training_iteration": 2, "diverged": "loss nan"}, False, 3) is None
    assert trial_end_state({"training_iteration": 1}, True, 3) is TrialState.FAIL


def test_tensorboard_reads_val_acc_per_epoch_for_every_trial(tuned_experiment):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    history = pd.read_csv(tuned_experiment / "history.csv")
    files = list(tuned_experiment.rglob("events.out.tfevents.*"))
    seen = {}
    for f in files:
        acc = EventAccumulator(str(f.parent))
        acc.Reload()
        tag = next((t for t in acc.Tags()["scalars"] if t.endswith("/val_acc")), None)
        if tag:
            tid = next(t for t in history.trial_id.unique() if t in f.parent.name or t in str(f))
            seen[tid] = {e.step: e.value for e in acc.Scalars(tag)}
            assert acc.PluginTagToContent("hparams"), f  # Ray writes the HParams view at the trial end
    assert set(seen) == set(history.trial_id)  # `tensorboard --logdir results/<name>` shows every trial
    for tid, curve in history.groupby("trial_id"):
        assert [seen[tid][e] for e in curve.epoch] == pytest.approx(list(curve.val_acc), abs=1e-6)


def test_ray_experiment_analysis_finds_the_same_best_trial(tuned_experiment):
    from ray.tune import ExperimentAnalysis

    trials = pd.read_csv(tuned_experiment / "trials.csv")
    analysis = ExperimentAnalysis(str(tuned_experiment))
    best = analysis.get_best_trial("best_val_acc", "max", scope="all")
    tied = set(trials.loc[trials.best_val_acc == trials.best_val_acc.max(), "trial_id"])  # 60 images: ties happen
    assert best.trial_id in tied and ex.best_trial(trials)["trial_id"] in tied
    assert best.metric_analysis["best_val_acc"]["max"] == pytest.approx(trials.best_val_acc.max())


@pytest.mark.slow
def test_importance_still_counts_the_trials_asha_stopped(stopping_search):
    from fersearch.report.analysis import param_importance
    from fersearch.results.study import load_study

    _, note = param_importance(load_study(stopping_search))
    assert "(4)" in note or "over 4 finished trials" in note, note  # PRUNED trials are not dropped
