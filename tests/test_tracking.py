"""MLflow tracking: a real search's store read back with mlflow.search_runs; the flag's mistakes;
a store that breaks mid-run costs the search nothing."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TUNED, assert_one_line_error
from fersearch.cli import app

mlflow = pytest.importorskip("mlflow")
SMALL = dict(TUNED, trials=4, max_epochs=2)


@pytest.fixture(scope="module")
def ray_here():
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    if started:
        ray.shutdown()


def _tune_args(fast_space, tiny_csv, results, name, **settings):
    args = ["tune", "--space", str(fast_space), "--data", str(tiny_csv), "--name", name, "--results", str(results),
            "-q"]
    for k, v in {**SMALL, **settings}.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


@pytest.mark.slow
def test_a_search_with_mlflow_has_a_parent_run_and_a_child_per_trial_with_curves_and_status(
        ray_here, in_tmp, fast_space, tiny_csv):
    res = CliRunner().invoke(app, [*_tune_args(fast_space, tiny_csv, in_tmp / "results", "tracked"), "--mlflow"])
    assert res.exit_code == 0, res.output
    exp = in_tmp / "results" / "tracked"
    record = json.loads((exp / "fersearch.json").read_text())["mlflow"]
    assert record["uri"] == f"sqlite:///{exp.resolve()}/mlflow.db" and (exp / "mlflow.db").is_file()

    mlflow.set_tracking_uri(record["uri"])
    runs = mlflow.search_runs(experiment_ids=[record["experiment_id"]])
    parent = runs[runs.run_id == record["parent_run_id"]]
    children = runs[runs["tags.mlflow.parentRunId"] == record["parent_run_id"]]
    assert len(parent) == 1 and parent["status"].iloc[0] == "FINISHED" and parent["params.sampler"].iloc[0] == "mix"
    trials = pd.read_csv(exp / "trials.csv")
    assert sorted(children["tags.fersearch.trial_id"]) == sorted(trials.trial_id)  # one child per trial, no more
    status = dict(zip(trials.trial_id, trials.status))
    history = pd.read_csv(exp / "history.csv")
    client = mlflow.MlflowClient(record["uri"])
    for _, child in children.iterrows():
        tid = child["tags.fersearch.trial_id"]
        assert child["tags.fersearch.status"] == status[tid]  # trials.csv's words: completed / stopped / ...
        row = trials[trials.trial_id == tid].iloc[0]
        assert float(child["params.lr"]) == pytest.approx(float(row["config/lr"]))
        curve = client.get_metric_history(child.run_id, "val_acc")
        expected = history[history.trial_id == tid].sort_values("epoch")
        assert [m.step for m in sorted(curve, key=lambda m: m.step)] == list(expected.epoch)
        assert [m.value for m in sorted(curve, key=lambda m: m.step)] == pytest.approx(list(expected.val_acc))

    res = CliRunner().invoke(app, ["best", "tracked", "--evaluate", "--epochs", "1", "--results",
                                   str(in_tmp / "results")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((exp / "best" / "metrics.json").read_text())
    parent = client.get_run(record["parent_run_id"])
    assert parent.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    logged = {a.path for a in client.list_artifacts(record["parent_run_id"], "best")}
    assert {"best/metrics.json", "best/confusion_matrix.png"} <= logged
    assert any(p.endswith((".onnx", ".pt")) for p in logged)


def _dead_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_an_unreachable_tracking_uri_is_one_line_before_the_search(ray_never_started, in_tmp, fast_space, tiny_csv):
    uri = f"http://127.0.0.1:{_dead_port()}"
    res = CliRunner().invoke(app, [*_tune_args(fast_space, tiny_csv, in_tmp / "results", "x"), "--mlflow-uri", uri])
    assert_one_line_error(res, f"--mlflow-uri {uri}", "does not answer")
    assert not (in_tmp / "results" / "x").exists()


def test_mlflow_not_installed_refuses_the_flag_saying_what_to_install(ray_never_started, in_tmp, fast_space,
                                                                      tiny_csv, monkeypatch):
    for name in [m for m in sys.modules if m == "mlflow" or m.startswith("mlflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` meets without the extra
    res = CliRunner().invoke(app, [*_tune_args(fast_space, tiny_csv, in_tmp / "results", "x"), "--mlflow"])
    assert_one_line_error(res, "pip install 'fersearch[mlflow]'")


@pytest.mark.slow
def test_a_store_broken_mid_run_warns_once_and_the_search_keeps_every_trial(ray_here, in_tmp, fast_space, tiny_csv,
                                                                            capfd):
    from fersearch.search.driver import tune

    exp = in_tmp / "results" / "broken"

    def break_store():  # once a trial has ended, the SQLite file stops being a database
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            csv = exp / "trials.csv"
            if csv.is_file() and (pd.read_csv(csv).status.isin(["completed", "stopped"])).any():
                (exp / "mlflow.db").write_bytes(b"not a database" * 1000)
                return
            time.sleep(0.2)

    breaker = threading.Thread(target=break_store, daemon=True)
    breaker.start()
    result = tune(space=fast_space, data=tiny_csv, name="broken", results=in_tmp / "results", verbose=False,
                  mlflow=True, **SMALL)
    breaker.join(5)
    err = capfd.readouterr().err
    assert err.count("warning: MLflow stopped answering") == 1, err
    trials = pd.read_csv(exp / "trials.csv")
    assert len(trials) == SMALL["trials"] and trials.status.isin(["completed", "stopped"]).all()
    assert not result.interrupted


def test_the_tracker_pickles_without_its_client_and_keeps_its_runs_for_resume(tmp_path, capfd):
    import pickle

    from fersearch.results.record import Mlflow
    from fersearch.search.tracking import make_tracker

    (tmp_path / "mlflow.db").write_bytes(b"not a database" * 100)
    tracker = make_tracker(Mlflow(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment_id="1", parent_run_id="p"),
                           (), 3)
    tracker.runs["t1"] = "run-1"
    assert tracker._call("get_run", "run-1") is None and tracker._call("get_run", "run-1") is None
    assert capfd.readouterr().err.count("warning: MLflow stopped answering") == 1  # once, then off
    again = pickle.loads(pickle.dumps(tracker))  # what Ray keeps in tuner.pkl
    assert again._client is None and again.broken
    again.setup()  # a resumed search tries the store again
    again.set_state(tracker.get_state())
    assert not again.broken and again.runs == {"t1": "run-1"}
