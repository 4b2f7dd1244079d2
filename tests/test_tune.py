"""`fersearch tune`: real Ray Tune + Optuna + ASHA searches on tiny synthetic data, plus the checks before Ray.

One local Ray (2 CPUs, 4 logical GPUs) is shared by the in-process searches of
this module (`ray_local`); the two-node cluster and the interrupted search run
their own Ray. Searches pass gpus=0 unless they test GPU packing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import TUNED
from typer.testing import CliRunner

from fersearch.search import experiment as ex
from fersearch.cli import app
from fersearch.config import TrainConfig
from fersearch.errors import FersearchError, ResourceError
from fersearch.search.driver import check_options, local_gpu_count, plan_resources, tune

runner = CliRunner()
FINISHED = {"completed", "stopped"}


# ------------------------------------------------------------------ Ray fixtures
@pytest.fixture(scope="module")
def _ray_module():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture
def ray_local(_ray_module):
    """This process's Ray: 2 CPUs and 4 logical GPUs (none physical), started once per module."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=4, include_dashboard=False, logging_level="WARNING")
    yield


@pytest.fixture
def no_ray(_ray_module):
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield


def cli(*args: str):
    return runner.invoke(app, ["tune", *map(str, args)])


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# ------------------------------------------------------------------ checks before Ray (fast)
@pytest.mark.parametrize("args, expected", [
    (["--trials", "0"], "--trials 0"),
    (["--grace-period", "5", "--max-epochs", "3"], "--grace-period 5 is larger than --max-epochs 3"),
    (["--name", "a/b"], "no path separators"),
    (["--name", ".."], "plain directory name"),
    (["--reduction-factor", "1"], "--reduction-factor"),
    (["--scheduler", "hyperband"], "asha, fifo"),
    (["--sampler", "grid"], "tpe, random"),
    (["--resume"], "--resume needs --name"),
    (["--gpus-per-trial", "1.5"], "whole number"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--space", "no_such_space"], "not found"),
])
def test_bad_flags_are_one_line_errors(in_tmp, args, expected):
    assert expected in one_line_error(cli(*args))
    assert not (in_tmp / "results").exists() or not any((in_tmp / "results").iterdir())


def test_existing_name_is_never_overwritten_and_resume_needs_a_search(in_tmp):
    ex.write_meta(in_tmp / "results" / "taken", {"name": "taken", "created": "2024-01-01T00:00:00"})
    assert "already exists; pass --resume" in one_line_error(cli("--name", "taken"))
    assert ex.read_meta(in_tmp / "results" / "taken")["name"] == "taken"
    assert "no search named 'ghost'" in one_line_error(cli("--name", "ghost", "--resume"))


@pytest.mark.skipif(local_gpu_count() != 0, reason="this machine has GPUs")
def test_gpus_on_a_gpu_less_machine_answer_in_one_line_without_starting_ray(in_tmp, no_ray):
    import ray

    line = one_line_error(cli("--trials", "50", "--gpus", "4"))
    assert line == "error: --gpus 4: no GPUs in this Ray cluster (0 found); drop --gpus to run on CPUs"
    assert not ray.is_initialized()


def test_plan_resources_packs_fractional_gpus_and_cpus():
    plan = plan_resources({"CPU": 2, "GPU": 4}, gpus=4, gpus_per_trial=0.5, cpus_per_trial=0.25, trials=50)
    assert (plan.concurrency, plan.threads, plan.ray_request()) == (8, 1, {"cpu": 0.25, "gpu": 0.5})
    # the search may use 2 of 4 GPUs: concurrency follows the GPUs it may use
    assert plan_resources({"CPU": 16, "GPU": 4}, gpus=2, gpus_per_trial=1, cpus_per_trial=2, trials=50).concurrency == 2
    # CPUs only: 2.5 CPUs per trial -> 2 torch threads, 3 trials on 8 CPUs
    plan = plan_resources({"CPU": 8}, gpus=None, gpus_per_trial=None, cpus_per_trial=2.5, trials=50)
    assert (plan.concurrency, plan.threads, plan.gpus_per_trial) == (3, 2, 0.0)
    assert plan_resources({"CPU": 8}, gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=3).concurrency == 3
    # default with GPUs in the cluster: all of them, one per trial
    plan = plan_resources({"CPU": 8, "GPU": 2}, gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=50)
    assert (plan.gpus, plan.gpus_per_trial, plan.concurrency) == (2, 1, 2)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(gpus=4), "no GPUs in this Ray cluster (0 found); drop --gpus to run on CPUs"),
    (dict(gpus=3, cluster_gpus=2), "this Ray cluster has 2 GPU(s); use --gpus 2 or fewer"),
    (dict(gpus_per_trial=0.5), "the search may use no GPUs"),
    (dict(gpus=1, gpus_per_trial=2, cluster_gpus=4), "more than the 1 GPU(s)"),
    (dict(cpus_per_trial=3), "no node of this Ray cluster has that many CPUs (largest: 2)"),
])
def test_plan_resources_errors(kwargs, expected):
    cluster = {"CPU": 2, "GPU": kwargs.pop("cluster_gpus", 0)}
    args = dict(gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=4) | kwargs
    with pytest.raises(ResourceError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        plan_resources(cluster, **args)


def test_check_options_accepts_the_defaults():
    check_options(trials=50, max_epochs=30, grace_period=3, reduction_factor=3, scheduler="asha", sampler="tpe",
                  seed=0, name=None, resume=False, gpus=None, gpus_per_trial=None, cpus_per_trial=None)
    with pytest.raises(FersearchError):
        check_options(trials=5, max_epochs=3, grace_period=1, reduction_factor=3, scheduler="asha", sampler="tpe",
                      seed=-1, name=None, resume=False, gpus=None, gpus_per_trial=None, cpus_per_trial=None)


def test_storage_location_paths_and_uris(in_tmp):
    from fersearch.search.driver import storage_location

    assert storage_location(None) == (in_tmp.resolve() / "results", str(in_tmp.resolve() / "results"))
    shared = in_tmp / "nfs" / "exps"
    assert storage_location(f"file://{shared}") == (shared.resolve(), str(shared.resolve()))
    # cloud storage holds Ray's state; fersearch's own files stay in ./results/<name>/
    assert storage_location("s3://bucket/fersearch/") == (in_tmp.resolve() / "results", "s3://bucket/fersearch")


def test_trial_table_statuses_retries_and_reload(tmp_path):
    table = ex.TrialTable(tmp_path, max_epochs=3)
    cfg = TrainConfig().to_json()
    for tid in ("a", "b", "c"):
        table.add(tid, cfg, {"lr": 0.01})
    metrics = lambda e, acc: dict(epoch=e, val_acc=acc, train_loss=1.0, node="n1", gpu_ids="0")  # noqa: E731
    table.result("a", metrics(1, 0.3))
    table.result("a", metrics(2, 0.5))
    table.result("a", metrics(3, 0.4), stop_decided=True)  # ASHA says stop at max_t: ran to the end
    table.end("a")
    table.result("b", metrics(1, 0.2), stop_decided=True)  # stopped at the first rung
    table.end("b")
    table.result("c", metrics(1, 0.3))
    table.retry("c", "RuntimeError: worker died")
    table.result("c", metrics(1, 0.35))  # the retry reports epoch 1 again: replaced, not duplicated
    table.save()
    trials = ex.read_trials(tmp_path).set_index("trial_id")
    assert trials.loc["a", ["status", "epochs", "best_val_acc", "best_epoch", "last_val_acc"]].tolist() == [
        "completed", 3, 0.5, 2, 0.4]
    assert trials.loc["b", "status"] == "stopped" and trials.loc["c", "status"] == "running"
    assert trials.loc["c", "error"].startswith("retried after: RuntimeError")
    assert list(trials.columns[-1:]) == ["config/lr"]
    history = ex.read_history(tmp_path)
    assert len(history) == 5 and history.query("trial_id == 'c'")["val_acc"].tolist() == [0.35]
    again = ex.TrialTable(tmp_path, max_epochs=3)
    again.load()  # what a resumed search starts from
    assert again.rows["a"]["best_epoch"] == 2 and len(again.history) == 5
    again.add("ghost", cfg, {"lr": 0.02})  # recorded, but Ray's last snapshot before a crash never saw it
    again.reconcile(["a", "b"])  # Ray restored a and b; c had trained, the ghost had not
    assert set(again.rows) == {"a", "b", "c"} and again.rows["c"]["status"] == "failed"
    assert ex.best_trial(ex.read_trials(tmp_path))["trial_id"] == "a"


# ------------------------------------------------------------------ real searches
def majority_rate(data) -> float:
    _, labels = data.subset("val")
    return float(pd.Series(labels).value_counts().max() / len(labels))


@pytest.mark.slow
def test_search_end_to_end(ray_local, tuned_experiment, tiny_data, fast_space):
    trials = ex.read_trials(tuned_experiment)
    history = ex.read_history(tuned_experiment)
    meta = ex.read_meta(tuned_experiment)
    assert len(trials) == TUNED["trials"] and trials["trial_id"].is_unique
    assert set(trials["status"]) <= FINISHED, trials[["trial_id", "status", "error"]]
    stopped = trials[trials["status"] == "stopped"]
    assert len(stopped) >= 1 and (stopped["epochs"] < TUNED["max_epochs"]).all()  # ASHA stopped some early
    assert (trials.loc[trials["status"] == "completed", "epochs"] == TUNED["max_epochs"]).all()
    per_trial = history.groupby("trial_id")["epoch"].apply(sorted)
    for row in trials.itertuples():
        assert per_trial[row.trial_id] == list(range(1, row.epochs + 1))
        assert row.best_val_acc == history.query("trial_id == @row.trial_id")["val_acc"].max()
        assert row.node and row.gpu_ids == ""
    best = ex.best_trial(trials)
    assert best["best_val_acc"] > majority_rate(tiny_data)
    cfg = ex.trial_config(best)
    assert cfg.epochs == TUNED["max_epochs"] and cfg.blocks == 2 and cfg.filters[0] == best["config/filters_1"]
    assert ex.param_columns(trials) == ["config/filters_1", "config/filters_2", "config/lr"]
    assert meta["space"]["source"] == fast_space.read_text() and meta["space"]["sha256"]
    assert meta["data"]["sha256"] and meta["data"]["n"] == len(tiny_data.labels)
    assert meta["data"]["counts"]["val"] and meta["versions"]["ray"] and meta["seed"] == 0
    assert (meta["scheduler"], meta["sampler"], meta["metric"], meta["mode"]) == ("asha", "tpe", "val_acc", "max")
    assert (tuned_experiment / "tuner.pkl").is_file()  # Ray's own experiment state, for --resume
    assert ex.resolve_experiment(results=tuned_experiment.parent) == tuned_experiment


@pytest.mark.slow
def test_fifo_trains_every_trial_to_the_end_and_more_epochs_than_asha(ray_local, tuned_experiment, fast_space,
                                                                      tiny_csv, tmp_path):
    fifo = tune(space=fast_space, data=tiny_csv, scheduler="fifo", name="fifo", results=tmp_path,
                verbose=False, **TUNED)
    asha = ex.read_trials(tuned_experiment)
    assert (fifo.trials["status"] == "completed").all()
    assert fifo.trials["epochs"].sum() == TUNED["trials"] * TUNED["max_epochs"]
    assert asha["epochs"].sum() < fifo.trials["epochs"].sum()


def _ray_results(exp: Path) -> list[dict]:
    """Each trial's reports as Ray itself recorded them (result.json in the trial dir)."""
    return [json.loads(line) for f in sorted(exp.glob("trial_*/result.json")) for line in f.read_text().splitlines()]


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = best = 0
    for _, step in events:
        running += step
        best = max(best, running)
    return best


def notebook_space(trial):
    """A space written as a Python function, as in a notebook (the Python API takes it directly)."""
    trial.suggest_int("filters_1", 8, 16, step=8)
    trial.suggest_float("lr", 1e-3, 5e-3, log=True)
    return {"blocks": 2, "filters_2": 16, "dropout": [0.0, 0.0], "dense": 64, "batch_norm": True,
            "batch_size": 16, "normalize": "standardize"}


@pytest.mark.slow
def test_fractional_gpus_pack_eight_trials_and_train_on_cpu(ray_local, tiny_data, tmp_path):
    result = tune(space=notebook_space, data=tiny_data, trials=8, max_epochs=1, grace_period=1, gpus=4,
                  gpus_per_trial=0.5, cpus_per_trial=0.25, name="gpu", results=tmp_path, verbose=False)
    resources = result.meta["resources"]
    assert (resources["concurrency"], resources["threads"], resources["gpus_per_trial"]) == (8, 1, 0.5)
    assert len(result.trials) == 8 and set(result.trials["status"]) == {"completed"}
    assert set(result.trials["gpu_ids"]) <= {"0", "1", "2", "3"}  # every trial got one logical GPU
    assert result.meta["space"]["name"] == "notebook_space" and ex.param_columns(result.trials) == [
        "config/filters_1", "config/lr"]
    reports = _ray_results(result.path)
    assert {r["device"] for r in reports} == {"cpu"}  # logical GPUs only: the trainer stays on the CPU
    spans = [(r["timestamp"] - r["time_total_s"], r["timestamp"]) for r in reports]
    assert _max_overlap(spans) > 2  # more than 2 CPUs x 1 trial could run at once


def _finished(trials_csv: Path) -> pd.DataFrame:
    try:
        trials = ex.read_trials(trials_csv.parent)
    except Exception:  # caught mid-creation: try again
        return pd.DataFrame(columns=ex.TRIAL_COLUMNS)
    return trials[trials["status"].isin(FINISHED)]


@pytest.mark.slow
def test_resume_after_a_crash_keeps_finished_trials_and_completes(ray_local, fast_space, tiny_csv, tmp_path):
    results = tmp_path / "results"
    args = ["tune", "--space", fast_space, "--data", tiny_csv, "--trials", 8, "--max-epochs", 3,
            "--grace-period", 1, "--reduction-factor", 2, "--gpus", 0, "--name", "r", "--results", results]
    log = (tmp_path / "first.log").open("w")
    # Own session: killing the process group ends this search's driver and the Ray it started, nothing else.
    proc = subprocess.Popen([sys.executable, "-m", "fersearch", *map(str, args), "--quiet"], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    trials_csv = results / "r" / ex.TRIALS_FILE
    try:
        deadline = time.time() + 120
        while len(_finished(trials_csv)) < 2:
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "first.log").read_text()
            time.sleep(0.5)
        before = _finished(trials_csv).set_index("trial_id")
        time.sleep(3)  # > Ray's experiment-state save interval, so its state knows these trials ended
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # a crash, not a polite Ctrl+C
        proc.wait()
    history_before = ex.read_history(results / "r")

    result = runner.invoke(app, [*map(str, args), "--resume", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"next: fersearch best r --evaluate --results {results.resolve()}" in result.output
    after = ex.read_trials(results / "r").set_index("trial_id")
    assert len(after) == 8 and set(after["status"]) <= FINISHED, after[["status", "error"]]
    history_after = ex.read_history(results / "r")
    assert not history_after.duplicated(["trial_id", "epoch"]).any()
    for tid, row in before.iterrows():  # finished before the crash: not rerun, rows kept as they were
        assert after.loc[tid, ["status", "epochs", "best_val_acc"]].tolist() == row[["status", "epochs", "best_val_acc"]].tolist()
        pd.testing.assert_frame_equal(history_after.query("trial_id == @tid").reset_index(drop=True),
                                      history_before.query("trial_id == @tid").reset_index(drop=True))
    assert ex.read_meta(results / "r")["resumed"]


@pytest.mark.slow
def test_gpus_beyond_the_cluster_say_how_many_there_are(ray_local, in_tmp, tiny_csv, fast_space):
    line = one_line_error(cli("--space", fast_space, "--data", tiny_csv, "--gpus", 8, "--quiet"))
    assert "--gpus 8: this Ray cluster has 4 GPU(s); use --gpus 4 or fewer" in line
    assert not (in_tmp / "results").exists() or not any((in_tmp / "results").iterdir())


@pytest.fixture
def two_node_cluster(no_ray):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    import ray

    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_address_runs_trials_on_both_nodes_of_a_cluster(two_node_cluster, fast_space, tiny_data, tmp_path):
    import ray

    result = tune(space=fast_space, data=tiny_data, trials=4, max_epochs=1, grace_period=1, gpus=0,
                  cpus_per_trial=1, name="cluster", results=tmp_path, address=two_node_cluster.address,
                  verbose=False)
    assert not ray.is_initialized()  # joined for the search, disconnected after
    assert set(result.trials["status"]) == {"completed"}
    nodes = {n.node_id for n in two_node_cluster.list_all_nodes()}
    assert set(result.trials["node"]) == nodes and len(nodes) == 2
    assert result.meta["resources"]["cluster_cpus"] == 2
