"""The one trial state (search/state.py), its files, and `fersearch status` (search/status.py).

Tune's events are crafted here: TrialState takes plain calls, the recorder callback
takes real (stub) ray.tune Trial objects; no Ray cluster is started except by the
slow test, which reads the shared real search.
"""

from __future__ import annotations

import json
import pickle
import time

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, read_meta, write_meta
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.results import experiment as ex
from fersearch.results.state import TrialState, end_status, mark_unfinished
from fersearch.results.status import experiment_status, format_status
from fersearch.results.trial_files import HistoryFile, write_history, write_trials
from fersearch.search import recorder as rec_module
from fersearch.search.recorder import make_recorder

runner = CliRunner()
CFG = TrainConfig().to_json()


def metrics(epoch: int, acc: float | None, **more) -> dict:
    return dict(epoch=epoch, val_acc=acc, train_loss=1.0, node="n1", gpu_ids="0", **more)


def stub_trial(config: dict):
    """A real ray.tune Trial (stub: no trainable registered, no Ray needed)."""
    from ray.tune.experiment import Trial

    return Trial("run_trial", config=config, stub=True)


class Clock:
    """time.monotonic for the recorder, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_experiment(exp, *, statuses, planned=None, max_epochs=3):
    """A hand-written experiment dir that follows the file contract (experiment.py)."""
    write_meta(exp, {"name": exp.name, "command": "fersearch tune", "created": "2026-01-01T10:00:00+00:00",
                        "space": {"name": "fast", "path": "fast.py"}, "seed": 0, "trials": planned or len(statuses),
                        "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 2, "scheduler": "asha",
                        "sampler": "tpe", "metric": "val_acc", "mode": "max"})
    rows, history = [], []
    for i, status in enumerate(statuses):
        epochs = {"stopped": 1, "pending": 0, "failed": 2}.get(status, max_epochs if status == "completed" else 2)
        accs = [0.2 + 0.1 * i + 0.01 * e for e in range(1, epochs + 1)]
        if accs:
            accs[0] += 0.05  # the best epoch is not always the last
        rows.append({"trial_id": f"t{i}", "status": status, "epochs": epochs,
                     "best_val_acc": max(accs) if accs else None,
                     "best_epoch": accs.index(max(accs)) + 1 if accs else None,
                     "last_val_acc": accs[-1] if accs else None, "node": "n1", "gpu_ids": "",
                     "error": "RuntimeError: boom" if status == "failed" else "", "config_json": "{}",
                     "config/filters_1": 8 * (i + 1), "config/filters_2": 16, "config/lr": 0.001 * (i + 1)})
        history += [{"trial_id": f"t{i}", "epoch": e + 1, "val_acc": a, "epoch_time_s": 0.5}
                    for e, a in enumerate(accs)]
    write_trials(exp, rows)
    write_history(exp, history)
    return exp


# ------------------------------------------------------------------ TrialState on crafted events
def test_end_status_rule():
    assert end_status(True, 1, 3) == "stopped"  # ASHA said stop before the budget
    assert end_status(True, 3, 3) == "completed"  # ASHA also says stop at max_t
    assert end_status(False, 2, 3) == "completed"  # the trainer's own early stopping
    assert end_status(True, 2, None) == "stopped"


def test_statuses_retries_files_and_reload(tmp_path):
    state, log = TrialState(total=4, max_epochs=3), HistoryFile(tmp_path / ex.HISTORY_FILE)
    for tid in ("a", "b", "c"):
        state.add(tid, CFG, {"lr": 0.01})
    state.add("a", "other", {"lr": 9})  # Tune shows a known trial again: left as it is
    assert state.rows["a"]["config_json"] == CFG and state.counts() == {
        "pending": 3, "running": 0, "completed": 0, "stopped": 0, "failed": 0, "diverged": 0, "not_started": 1}
    for tid, m, done in (("a", metrics(1, 0.3), False), ("a", metrics(2, 0.5), False),
                         ("a", metrics(3, 0.4), True),  # ASHA says stop at max_t: ran to the end
                         ("b", metrics(1, 0.2), True),  # stopped at the first rung
                         ("c", metrics(1, 0.3), False)):
        log.append(state.result(tid, m, stop_decided=done))
    assert state.end("a") == "completed" and state.end("b") == "stopped"
    state.retry("c", "RuntimeError: worker died")
    log.append(state.result("c", metrics(1, 0.35)))  # the retry reports epoch 1 again: replaced
    write_trials(tmp_path, state.rows.values())

    trials = ex.read_trials(tmp_path).set_index("trial_id")
    assert trials.loc["a", ["status", "epochs", "best_val_acc", "best_epoch", "last_val_acc"]].tolist() == [
        "completed", 3, 0.5, 2, 0.4]
    assert trials.loc["b", "status"] == "stopped" and trials.loc["c", "status"] == "running"
    assert trials.loc["c", "error"] == "retried after: RuntimeError: worker died"
    assert list(trials.columns) == [*ex.TRIAL_COLUMNS[1:], *ex.DEPLOY_COLUMNS, "config/lr"]
    assert (tmp_path / ex.HISTORY_FILE).read_text().count("\nc,1,") == 2  # appended, never rewritten
    history = ex.read_history(tmp_path)
    assert list(history.columns) == list(ex.HISTORY_COLUMNS)
    assert history[["trial_id", "epoch"]].values.tolist() == [["a", 1], ["a", 2], ["a", 3], ["b", 1], ["c", 1]]
    assert history.query("trial_id == 'c'")["val_acc"].tolist() == [0.35]

    again = TrialState.load(tmp_path, total=4, max_epochs=3)  # what a resumed search starts from
    assert again.rows["a"]["best_epoch"] == 2 and again.accs["c"] == {1: 0.35} and again.best_id == "a"
    again.add("ghost", CFG, {"lr": 0.02})  # recorded, but Ray's last snapshot before a crash never saw it
    again.reconcile(["a", "b"])  # Ray restored a and b; c had trained, the ghost had not
    assert list(again.rows) == ["a", "b", "c"] and again.rows["c"]["status"] == "failed"
    assert again.rows["c"]["error"].startswith("lost in a crash")
    assert ex.best_trial(ex.read_trials(tmp_path))["trial_id"] == "a"


def test_best_of_the_search_ties_retries_and_missing_values():
    state = TrialState(total=3, max_epochs=5)
    for tid in ("x", "y", "z"):
        state.add(tid, CFG, {})
    assert state.best() is None
    state.result("y", metrics(1, 0.4))
    state.result("x", metrics(1, float("nan")))  # a diverged epoch is no best
    assert state.best_id == "y" and state.rows["x"]["best_val_acc"] is None
    state.result("x", metrics(2, 0.4))  # a tie goes to the earlier row (as experiment.best_trial)
    assert state.best_id == "x"
    state.result("z", metrics(1, 0.6))
    state.result("z", metrics(2, 0.6))
    assert state.best_id == "z" and state.rows["z"]["best_epoch"] == 1  # the earlier epoch of a tie
    state.result("z", metrics(1, 0.3))  # a retry from scratch replaces epoch 1 ...
    state.result("z", metrics(2, 0.35))  # ... and 2 with worse values
    assert state.rows["z"]["best_val_acc"] == 0.35 and state.best_id == "x"
    assert state.best_acc() == 0.4


def test_a_history_from_before_the_timing_columns_keeps_its_header_and_reads(tmp_path):
    old = [c for c in ex.HISTORY_COLUMNS if c not in ex.HISTORY_TIMING_COLUMNS]
    path = tmp_path / ex.HISTORY_FILE
    path.write_text(",".join(old) + "\na,1,1.2,0.3,1.1,0.4,0.001,900.0,2.5\n")
    HistoryFile(path).append({"trial_id": "a", "epoch": 2, "val_acc": 0.5, "lr": 1e-3, "train_s": 2.0})
    assert path.read_text().splitlines()[-1] == "a,2,,,,0.5,0.001,,"  # the file's own columns
    df = ex.read_history(tmp_path)
    assert df["val_acc"].tolist() == [0.4, 0.5] and df["train_s"].isna().all()


def test_history_is_appended_and_a_torn_last_line_is_dropped_then_repaired(tmp_path):
    log = HistoryFile(tmp_path / ex.HISTORY_FILE)
    log.repair()  # no file yet: nothing to do
    log.append({"trial_id": "a", "epoch": 1, "val_acc": 0.5, "lr": 1e-3})
    path = tmp_path / ex.HISTORY_FILE
    assert path.read_text() == ",".join(ex.HISTORY_COLUMNS) + "\na,1,,,,0.5,0.001,,,,,,,\n"
    with open(path, "a") as f:
        f.write("a,2,1.1,0.4,1.0,0.3")  # a crash in the middle of an append
    assert ex.read_history(tmp_path)[["epoch", "val_acc"]].values.tolist() == [[1, 0.5]]
    log.repair()
    log.append({"trial_id": "a", "epoch": 2, "val_acc": 0.6})
    assert ex.read_history(tmp_path)["val_acc"].tolist() == [0.5, 0.6]
    path.write_text("trial_id,ep")  # even the header torn: an empty history, not an error
    assert ex.read_history(tmp_path).empty
    log.repair()
    assert path.read_text() == ""
    log.append({"trial_id": "b", "epoch": 1, "val_acc": 0.1})
    assert ex.read_history(tmp_path)["trial_id"].tolist() == ["b"]


# ------------------------------------------------------------------ the recorder callback
def recorder(tmp_path, **kw):
    kw = {"total_trials": 3, "max_epochs": 3, "to_config": TrainConfig.from_dict, "hide": ("blocks",),
          "live": False, **kw}
    return make_recorder(tmp_path, **kw)


def test_recorder_appends_every_epoch_and_saves_trials_csv_on_ends_and_every_few_seconds(tmp_path, monkeypatch):
    clock = Clock()
    monkeypatch.setattr(rec_module.time, "monotonic", clock)
    trials = [stub_trial({"filters_1": 32, "lr": 0.001, "blocks": 2}), stub_trial({"filters_1": 8, "lr": 0.01,
                                                                                    "blocks": 2})]
    a, b = trials
    rec = recorder(tmp_path)
    rec.setup()
    rec.on_trial_start(iteration=0, trials=trials[:1], trial=a)  # the first save is at once
    assert ex.read_trials(tmp_path)[["trial_id", "status"]].values.tolist() == [[a.trial_id, "running"]]
    row = ex.read_trials(tmp_path).iloc[0]
    assert TrainConfig.from_dict(json.loads(row["config_json"])) == TrainConfig.from_dict(a.config)
    assert "config/blocks" not in row and row["config/filters_1"] == 32  # a constant is no parameter
    clock.now += 1
    rec.on_trial_start(iteration=0, trials=trials, trial=b)
    rec.on_trial_result(iteration=1, trials=trials, trial=a, result=metrics(1, 0.3, done=False))
    assert len(ex.read_history(tmp_path)) == 1  # every epoch at once ...
    assert len(ex.read_trials(tmp_path)) == 1  # ... trials.csv not within SAVE_EVERY_S of the last save
    rec.on_step_end(iteration=1, trials=trials)
    assert len(ex.read_trials(tmp_path)) == 1
    clock.now += rec_module.SAVE_EVERY_S
    rec.on_step_end(iteration=2, trials=trials)  # a few seconds later, even without an event
    assert ex.read_trials(tmp_path)["epochs"].tolist() == [1, 0]
    clock.now += 0.1
    rec.on_trial_result(iteration=2, trials=trials, trial=b, result=metrics(1, 0.2, done=True))
    rec.on_trial_complete(iteration=2, trials=trials, trial=b)  # a trial's end is saved at once
    assert ex.read_trials(tmp_path).set_index("trial_id").loc[b.trial_id, "status"] == "stopped"
    clock.now += 0.1
    rec.on_trial_result(iteration=3, trials=trials, trial=a, result=metrics(2, 0.5, done=False))
    rec.on_trial_error(iteration=3, trials=trials, trial=a)
    failed = ex.read_trials(tmp_path).set_index("trial_id").loc[a.trial_id]
    assert failed["status"] == "failed" and failed["error"] == "trial failed" and failed["best_val_acc"] == 0.5
    rec.on_experiment_end(trials=trials)
    assert len(ex.read_history(tmp_path)) == 3


def test_recorder_resumes_from_the_files_and_catches_up_from_history(tmp_path):
    trials = [stub_trial({"filters_1": 16, "lr": 0.002}), stub_trial({"filters_1": 8, "lr": 0.004})]
    a, b = trials
    first = recorder(tmp_path, total_trials=2)
    first.setup()
    first.on_trial_start(iteration=0, trials=trials, trial=a)  # trials.csv saved: a running at epoch 0
    first.on_trial_result(iteration=1, trials=trials, trial=a, result=metrics(1, 0.3))
    first.on_trial_result(iteration=2, trials=trials, trial=a, result=metrics(2, 0.45))
    with open(tmp_path / ex.HISTORY_FILE, "a") as f:
        f.write(f"{a.trial_id},3,0.9")  # then the driver died mid-append
    assert ex.read_trials(tmp_path)["epochs"].tolist() == [0, 0]  # trials.csv a few seconds behind

    resumed = recorder(tmp_path, total_trials=2)  # Tune restores the callback; setup reads the files
    resumed.set_state(first.get_state())
    assert resumed.elapsed() >= first.get_state()["elapsed"]
    resumed.setup()
    row = resumed.state.rows[a.trial_id]
    assert (row["epochs"], row["best_val_acc"], row["best_epoch"], row["last_val_acc"]) == (2, 0.45, 2, 0.45)
    resumed.on_trial_start(iteration=0, trials=trials, trial=a)
    resumed.on_trial_result(iteration=1, trials=trials, trial=a, result=metrics(3, 0.5, done=True))
    resumed.on_trial_complete(iteration=1, trials=trials, trial=a)
    resumed.on_experiment_end(trials=trials)
    mark_unfinished(tmp_path)
    trials_csv = ex.read_trials(tmp_path).set_index("trial_id")
    assert trials_csv.loc[a.trial_id, ["status", "epochs", "best_val_acc"]].tolist() == ["completed", 3, 0.5]
    assert trials_csv.loc[b.trial_id, "status"] == "pending"
    assert ex.read_history(tmp_path)["epoch"].tolist() == [1, 2, 3]  # the torn line gone, the new row whole


def test_mark_unfinished_turns_running_trials_pending(tmp_path):
    write_experiment(tmp_path, statuses=["completed", "running", "running"])
    mark_unfinished(tmp_path)
    assert ex.read_trials(tmp_path)["status"].tolist() == ["completed", "pending", "pending"]
    empty = tmp_path / "empty"
    empty.mkdir()
    mark_unfinished(empty)  # nothing recorded yet: no file appears
    assert not (empty / ex.TRIALS_FILE).exists()


def test_the_recorder_pickles_without_its_view_objects(tmp_path):
    import io

    import ray.cloudpickle

    out = io.StringIO()
    rec = recorder(tmp_path, live=True, stream=out, tty=True)
    trials = [stub_trial({"filters_1": 8})]
    rec.setup()
    rec.on_trial_start(iteration=0, trials=trials, trial=trials[0])  # a rich Live is on screen now
    assert rec.view._live is not None
    for dumps in (pickle.dumps, ray.cloudpickle.dumps):  # tuner.pkl uses cloudpickle
        clone = pickle.loads(dumps(rec))
        assert type(clone).__qualname__ == "Recorder" and clone.view._live is None
        assert clone.view._stream is None and clone.state.rows.keys() == rec.state.rows.keys()
    rec.on_experiment_end(trials=trials)


# ------------------------------------------------------------------ status from the files
def test_status_summarises_a_handwritten_running_experiment(in_tmp):
    exp = write_experiment(in_tmp / "results" / "exp1", statuses=["completed", "stopped", "running", "failed"],
                           planned=6)
    s = experiment_status(exp)
    assert s["state"] == "running"  # unfinished trials, files just written
    assert s["counts"] == {"pending": 0, "running": 1, "completed": 1, "stopped": 1, "failed": 1, "diverged": 0,
                           "not_started": 2}
    assert s["best"]["trial_id"] == "t3" and s["best"]["params"] == {"filters_1": 32, "filters_2": 16, "lr": 0.004}
    assert [t["trial_id"] for t in s["trials"]] == ["t3", "t2", "t1", "t0"]  # best first
    assert s["epochs_run"] == 3 + 1 + 2 + 2
    assert experiment_status(exp, now=time.time() + 120)["state"] == "running"  # an epoch may be slow
    assert experiment_status(exp, now=time.time() + 3600)["state"] == "interrupted"
    # Tune's experiment state, rewritten every few seconds while the driver lives, is a sharper heartbeat
    (exp / "experiment_state-2026-01-01_10-00-00.json").write_text("{}")
    assert experiment_status(exp, now=time.time() + 10)["state"] == "running"
    stale = experiment_status(exp, now=time.time() + 120)
    assert stale["state"] == "interrupted"
    assert "fersearch tune --resume --name exp1" in format_status(stale)

    res = runner.invoke(app, ["status"])  # newest experiment under ./results
    assert res.exit_code == 0, res.output
    assert "1 completed, 1 stopped by ASHA, 1 FAILED, 1 running, 2 pending" in res.output  # live's labels
    assert "val_acc 0.5600 at epoch 1 of trial t3" in res.output and "t3: RuntimeError: boom" in res.output
    assert "filters=32/16 lr=4e-3" in res.output
    table = res.output.splitlines()[res.output.splitlines().index("") + 1:]
    assert table[0].split() == ["trial", "status", "epochs", "best_acc", "@epoch", "last_acc", "hyperparameters"]
    assert set(table[1]) == {"─"}  # rich's rule under the header: the live view's table renderer
    assert table[2].split() == ["t3", "failed", "2", "0.5600", "1", "0.5200", "filters=32/16", "lr=4e-3"]
    assert table[2].index("0.5600") == table[3].index(table[3].split()[3])  # numbers line up on the right


def test_status_reads_history_ahead_of_trials_csv(in_tmp):
    """trials.csv is saved every few seconds, history.csv at once: status shows the newer."""
    exp = write_experiment(in_tmp / "exp", statuses=["running"])
    with open(exp / ex.HISTORY_FILE, "a") as f:
        f.write("t0,3,,,,0.9,,,0.5\n")
    s = experiment_status(exp)
    assert (s["trials"][0]["epochs"], s["best"]["best_val_acc"], s["best"]["best_epoch"]) == (3, 0.9, 3)


def test_status_json_and_missing_experiment(in_tmp):
    write_experiment(in_tmp / "results" / "done", statuses=["completed", "stopped"])
    res = runner.invoke(app, ["status", "done", "--json"])
    assert res.exit_code == 0
    s = json.loads(res.stdout)
    assert list(s) == ["name", "path", "state", "created", "updated_s_ago", "elapsed_s", "resumed", "space",
                       "scheduler", "sampler", "seed", "max_epochs", "grace_period", "reduction_factor", "rungs",
                       "metric", "mode", "trials_planned", "counts", "epochs_run", "best", "best_by", "trials"]
    assert s["state"] == "finished" and s["counts"]["completed"] == 1 and s["best"]["trial_id"] == "t1"
    assert s["trials"][0] == {"trial_id": "t1", "status": "stopped", "epochs": 1, "best_val_acc": pytest.approx(0.36),
                              "best_epoch": 1, "last_val_acc": pytest.approx(0.36), "node": "n1", "gpu_ids": "",
                              "error": "", "params": {"filters_1": 16, "filters_2": 16, "lr": 0.002}}
    assert_one_line_error(runner.invoke(app, ["status", "nope"]), "experiment 'nope' not found")


@pytest.mark.slow
def test_status_on_a_real_search(tuned_experiment):
    res = runner.invoke(app, ["status", str(tuned_experiment), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    trials = ex.read_trials(tuned_experiment)
    assert s["state"] == "finished" and sum(s["counts"][k] for k in ex.TrialStatus) == len(trials)
    assert s["best"]["trial_id"] == ex.best_trial(trials)["trial_id"]
    res = runner.invoke(app, ["status", str(tuned_experiment)])
    assert res.exit_code == 0
    assert f"of trial {s['best']['trial_id']}" in res.output and "judged by its best epoch" in res.output
    assert all(t in res.output for t in trials["trial_id"])


def test_created_timestamps_of_every_format_order_the_experiments(tmp_path):
    """fersearch.json's "created" is written one way now (io.timestamp); folders of older versions hold
    "+0000" offsets or no offset at all, and are still read and ordered by time, not as text."""
    from fersearch.io import parse_timestamp, timestamp

    now = timestamp()
    assert parse_timestamp(now) == pytest.approx(time.time(), abs=5)
    created = {"late": "2026-01-02T00:30:00+0000", "early": "2026-01-01T23:00:00-0300", "naive": "2025-06-01T12:00:00",
               "new": now, "odd": "not a time"}
    for name, when in created.items():
        write_experiment(tmp_path / name, statuses=["completed"])
        meta = read_meta(tmp_path / name)
        write_meta(tmp_path / name, {**meta, "created": when})
    # as text "2026-01-01T23:00-0300" sorts first; as a time it is 02:00 UTC on the 2nd, after "late"
    assert [p.name for p in ex.list_experiments(tmp_path)] == ["odd", "naive", "late", "early", "new"]
    assert experiment_status(tmp_path / "late")["created"] == created["late"]
