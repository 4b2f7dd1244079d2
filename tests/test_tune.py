"""`fersearch tune`: real Ray Tune + Optuna + ASHA searches on tiny synthetic data, plus the checks before Ray.

One local Ray (2 CPUs, 4 logical GPUs) is shared by the in-process searches of
this module (`ray_local`); the two-node cluster and the interrupted search run
their own Ray. Searches pass gpus=0 unless they test GPU packing.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import TUNED, assert_one_line_error, read_meta, write_meta
from fersearch.cli import app
from fersearch.errors import ExperimentError, FersearchError, ResourceError
from fersearch.results import experiment as ex
from fersearch.search.driver import tune
from fersearch.search.options import SearchOptions
from fersearch.search.resources import local_gpu_count, plan_resources, storage_location

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
    """The CLI's one error line, and nothing before it (these fail before any data or Ray)."""
    line = assert_one_line_error(result)
    assert result.output.strip() == line, result.output
    return line


# ------------------------------------------------------------------ checks before Ray (fast)
@pytest.mark.parametrize("args, expected", [
    (["--trials", "0"], "--trials 0"),
    (["--grace-period", "5", "--max-epochs", "3"], "--grace-period 5 is larger than --max-epochs 3"),
    (["--name", "a/b"], "no path separators"),
    (["--name", ".."], "plain directory name"),
    (["--reduction-factor", "1"], "--reduction-factor"),
    (["--scheduler", "hyperband"], "'hyperband' is not one of 'asha', 'fifo'"),
    (["--sampler", "grid"], "'grid' is not one of 'mix', 'tpe', 'random'"),
    (["--resume"], "--resume needs --name"),
    (["--gpus-per-trial", "1.5"], "a trial trains on one GPU"),
    (["--cpus-per-trial", "0"], "--cpus-per-trial"),
    (["--space", "no_such_space"], "not found"),
])
def test_bad_flags_are_one_line_errors(in_tmp, args, expected):
    assert expected in one_line_error(cli(*args))
    assert not (in_tmp / "results").exists() or not any((in_tmp / "results").iterdir())


def test_existing_name_is_never_overwritten_and_resume_needs_a_search(in_tmp):
    write_meta(in_tmp / "results" / "taken", {"name": "taken", "created": "2024-01-01T00:00:00"})
    assert "already exists; pass --resume" in one_line_error(cli("--name", "taken"))
    assert read_meta(in_tmp / "results" / "taken")["name"] == "taken"
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
    # default with GPUs in the cluster: all of them, four trials per GPU (resources.TRIALS_PER_GPU)
    plan = plan_resources({"CPU": 8, "GPU": 2}, gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=50)
    assert (plan.gpus, plan.gpus_per_trial, plan.concurrency) == (2, 0.25, 8)


@pytest.mark.parametrize("kwargs, expected", [
    (dict(gpus=4), "no GPUs in this Ray cluster (0 found); drop --gpus to run on CPUs"),
    (dict(gpus=3, cluster_gpus=2), "this Ray cluster has 2 GPU(s); use --gpus 2 or fewer"),
    (dict(gpus_per_trial=0.5), "the search may use no GPUs"),
    (dict(gpus=0.5, gpus_per_trial=1, cluster_gpus=4), "more than the 0.5 GPU(s)"),
    (dict(gpus=4, gpus_per_trial=2, cluster_gpus=4), "a trial trains on one GPU"),
    (dict(cpus_per_trial=3), "no node of this Ray cluster has that many CPUs (largest: 2)"),
])
def test_plan_resources_errors(kwargs, expected):
    cluster = {"CPU": 2, "GPU": kwargs.pop("cluster_gpus", 0)}
    args = dict(gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=4) | kwargs
    with pytest.raises(ResourceError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        plan_resources(cluster, **args)


def test_search_options_check_each_setting_once_and_are_frozen():
    opts = SearchOptions()
    assert (opts.trials, opts.max_epochs, opts.grace, opts.scheduler, opts.sampler, opts.verbose) == (
        50, 30, 5, "asha", "mix", True)
    assert SearchOptions(max_epochs=3, grace_period=2).grace == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.trials = 3
    with pytest.raises(FersearchError, match=r"^--seed -1: must be >= 0$"):
        SearchOptions(trials=5, max_epochs=3, grace_period=1, seed=-1)
    with pytest.raises(ExperimentError, match="--name 'a/b': must be a plain directory name"):
        SearchOptions(name="a/b")
    with pytest.raises(TypeError, match="max_epoch"):
        SearchOptions(max_epoch=3)  # a typo in the Python API is not silently ignored


def test_search_options_record_plain_values_and_drive_cli_and_api(tmp_path):
    import inspect

    record = SearchOptions(space=notebook_space, data=tmp_path / "fer.csv", results=tmp_path, gpus=2).to_dict()
    assert json.loads(json.dumps(record)) == record
    assert (record["space"], record["data"], record["gpus"], record["verbose"]) == (
        "notebook_space", str(tmp_path / "fer.csv"), 2, True)
    fields = [f.name for f in dataclasses.fields(SearchOptions)]
    assert list(inspect.signature(tune).parameters)[-len(fields):] == fields  # help(fersearch.tune)
    from fersearch.cli import tune_cmd

    cli = inspect.signature(tune_cmd).parameters  # `tune` declares every field, in order, with its default
    assert list(cli) == [*fields[:-1], "quiet"] and cli["quiet"].default is False
    defaults = SearchOptions()
    for name in fields[:-1]:
        assert cli[name].default == getattr(defaults, name), name


def test_tune_help_lists_every_option_with_its_help_and_default():
    result = runner.invoke(app, ["tune", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for f in dataclasses.fields(SearchOptions):
        flag = "--quiet" if f.name == "verbose" else "--" + f.name.replace("_", "-")
        assert flag in result.output, flag
    assert "[default: 50]" in result.output and "[default: 127.0.0.1]" in result.output
    assert "<asha|fifo>" in result.output and "<mix|tpe|random>" in result.output
    assert "Epochs every trial gets before ASHA may stop it" in result.output


def test_close_study_fails_trials_no_one_will_tell(tmp_path):
    import optuna

    from fersearch.search.study import close_study, load_study, storage

    write_meta(tmp_path, {"name": "s"})
    study = optuna.create_study(study_name="s", storage=storage(tmp_path), direction="maximize")
    study.tell(study.ask({"lr": optuna.distributions.FloatDistribution(0.1, 1)}), 0.5)
    study.ask()  # asked just before a crash: Ray's restored searcher never knew it
    assert close_study(tmp_path) == 1
    assert [t.state.name for t in load_study(tmp_path).trials] == ["COMPLETE", "FAIL"]
    assert close_study(tmp_path / "none") == 0  # an experiment without a study.journal


def test_storage_location_paths_and_uris(in_tmp):
    assert storage_location(None) == (in_tmp.resolve() / "results", str(in_tmp.resolve() / "results"))
    shared = in_tmp / "nfs" / "exps"
    assert storage_location(f"file://{shared}") == (shared.resolve(), str(shared.resolve()))
    # cloud storage holds Ray's state; fersearch's own files stay in ./results/<name>/
    assert storage_location("s3://bucket/fersearch/") == (in_tmp.resolve() / "results", "s3://bucket/fersearch")


# ------------------------------------------------------------------ real searches
def majority_rate(data) -> float:
    _, labels = data.subset("val")
    return float(pd.Series(labels).value_counts().max() / len(labels))


@pytest.mark.slow
def test_search_end_to_end(ray_local, tuned_experiment, tiny_data, fast_space):
    trials = ex.read_trials(tuned_experiment)
    history = ex.read_history(tuned_experiment)
    meta = read_meta(tuned_experiment)
    assert len(trials) == TUNED["trials"] and trials["trial_id"].is_unique
    assert set(trials["status"]) <= FINISHED, trials[["trial_id", "status", "error"]]
    stopped = trials[trials["status"] == "stopped"]
    # ASHA stops only gaps beyond the noise of 60 validation images: maybe none here (a real stop is
    # tested in test_search_explains.py); any it stopped, it stopped early.
    assert (stopped["epochs"] < TUNED["max_epochs"]).all()
    assert (trials.loc[trials["status"] == "completed", "epochs"] == TUNED["max_epochs"]).all()
    per_trial = history.groupby("trial_id")["epoch"].apply(sorted)
    for row in trials.itertuples():
        assert per_trial[row.trial_id] == list(range(1, row.epochs + 1))
        assert row.best_val_acc == history.query("trial_id == @row.trial_id")["val_acc"].max()
        assert row.node and row.gpu_ids == "" and row.device == "cpu"
    best = ex.best_trial(trials)
    assert best["best_val_acc"] > majority_rate(tiny_data)
    cfg = ex.trial_config(best)
    assert cfg.epochs == TUNED["max_epochs"] and cfg.blocks == 2 and cfg.filters[0] == best["config/filters_1"]
    assert ex.param_columns(trials) == ["config/filters_1", "config/filters_2", "config/lr"]
    assert meta["space"]["source"] == fast_space.read_text() and meta["space"]["sha256"]
    assert meta["data"]["sha256"] and meta["data"]["n"] == len(tiny_data.labels)
    assert meta["data"]["counts"]["val"] and meta["versions"]["ray"] and meta["seed"] == 0
    assert (meta["scheduler"], meta["sampler"], meta["metric"], meta["mode"]) == ("asha", "mix", "val_acc", "max")
    assert (tuned_experiment / "tuner.pkl").is_file()  # Ray's own experiment state, for --resume
    assert meta["options"] == {**SearchOptions(**TUNED).to_dict(), "space": str(fast_space),
                               "data": meta["data"]["path"], "name": "tuned", "results": str(tuned_experiment.parent),
                               "verbose": False}
    assert meta["grace_period"] == TUNED["grace_period"] and meta["study"]["name"] == "tuned"
    assert ex.resolve_experiment(results=tuned_experiment.parent) == tuned_experiment


@pytest.mark.slow
def test_the_study_in_the_experiment_folder_has_the_trials_and_values_of_trials_csv(tuned_experiment):
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from fersearch.results.study import STUDY_FILE, load_study

    # exactly as a user would open it, without fersearch
    study = optuna.load_study(study_name="tuned",
                              storage=JournalStorage(JournalFileBackend(str(tuned_experiment / STUDY_FILE))))
    trials = ex.read_trials(tuned_experiment)
    names = [c[len(ex.PARAM_PREFIX):] for c in ex.param_columns(trials)]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert len(study.trials) == len(trials) == TUNED["trials"]
    states = {"completed": optuna.trial.TrialState.COMPLETE, "stopped": optuna.trial.TrialState.PRUNED}
    assert sorted(t.state.name for t in study.trials) == sorted(states[s].name for s in trials.status)

    def key(params, value):
        return tuple(round(float(params[n]), 9) for n in names), round(float(value), 9)

    # value = the trial's best val_acc (not its last epoch's), so ASHA-stopped trials are judged fairly
    assert sorted(key(t.params, t.value) for t in study.trials) == sorted(
        key({n: row[ex.PARAM_PREFIX + n] for n in names}, row["best_val_acc"]) for _, row in trials.iterrows())
    assert study.trials[0].distributions == {"filters_1": IntDistribution(8, 16, step=8),
                                             "filters_2": IntDistribution(16, 32, step=16),
                                             "lr": FloatDistribution(1e-3, 5e-3, log=True)}
    assert study.best_value == pytest.approx(ex.best_trial(trials)["best_val_acc"])
    assert [t.params for t in load_study(tuned_experiment).trials] == [t.params for t in study.trials]
    assert load_study(tuned_experiment.parent) is None  # no study.journal (an older search): None


@pytest.mark.slow
def test_a_finished_search_keeps_no_checkpoints_and_still_resumes_and_evaluates(ray_local, fast_space, tiny_csv,
                                                                              tmp_path):
    """Ended trials' checkpoints are deleted at the end (nothing reads them); `status`,
    `best --evaluate` and `--resume` work on what is left."""
    from fersearch.search.checkpoints import folder_bytes

    results = tmp_path / "results"
    args = ["--space", fast_space, "--data", tiny_csv, "--trials", 3, "--max-epochs", 2, "--scheduler", "fifo",
            "--gpus", 0, "--name", "slim", "--results", results, "--quiet"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    exp = results / "slim"
    trials = ex.read_trials(exp)
    assert set(trials["status"]) == {"completed"} and len(trials) == 3
    assert sorted(p.name for p in exp.glob("trial_*")) == sorted(f"trial_{t}" for t in trials["trial_id"])
    assert not list(exp.glob("trial_*/checkpoint_*"))  # each trial had one (epoch 2, its last) before the end
    assert folder_bytes(exp) < 2_000_000
    resumed = cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed.output
    again = ex.read_trials(exp)
    pd.testing.assert_frame_equal(again, trials)  # nothing rerun, nothing lost
    assert len(ex.read_history(exp)) == 3 * 2
    status = runner.invoke(app, ["status", "slim", "--results", str(results)])
    assert status.exit_code == 0, status.output
    best = runner.invoke(app, ["best", "slim", "--evaluate", "--epochs", "1", "--results", str(results)])
    assert best.exit_code == 0, best.output
    assert (exp / "best" / "metrics.json").is_file()


@pytest.mark.slow
def test_fifo_trains_every_trial_to_the_end_and_more_epochs_than_asha(ray_local, tuned_experiment, fast_space,
                                                                      tiny_csv, tmp_path):
    fifo = tune(space=fast_space, data=tiny_csv, scheduler="fifo", name="fifo", results=tmp_path,
                verbose=False, **TUNED)
    asha = ex.read_trials(tuned_experiment)
    assert (fifo.trials["status"] == "completed").all()
    assert fifo.trials["epochs"].sum() == TUNED["trials"] * TUNED["max_epochs"]
    assert asha["epochs"].sum() <= fifo.trials["epochs"].sum()


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
    resources = result.record.resources
    assert (resources["concurrency"], resources["threads"], resources["gpus_per_trial"]) == (8, 1, 0.5)
    assert len(result.trials) == 8 and set(result.trials["status"]) == {"completed"}
    assert set(result.trials["gpu_ids"]) <= {"0", "1", "2", "3"}  # every trial got one logical GPU
    assert result.record.space.name == "notebook_space" and ex.param_columns(result.trials) == [
        "config/filters_1", "config/lr"]
    reports = _ray_results(result.path)
    # Logical GPUs: Ray sets CUDA_VISIBLE_DEVICES to the trial's id, so only ids that exist (on a GPU
    # box) train there; the rest, and every trial of a GPU-less machine, stay on the CPU and say so.
    import torch

    real = torch.cuda.device_count()
    assert all(r["device"] == ("cuda" if int(r["gpu_ids"]) < real else "cpu") for r in reports), reports
    assert list(result.trials["device"]) == [("cuda" if int(g) < real else "cpu") for g in result.trials["gpu_ids"]]
    spans = [(r["timestamp"] - r["time_total_s"], r["timestamp"]) for r in reports]
    assert _max_overlap(spans) > 2  # more than 2 CPUs x 1 trial could run at once


# A driver SIGKILLed mid-search and resumed:
# tests/test_faults.py::test_a_killed_driver_resumes_from_its_last_saved_state (it also checks the study
# carried over and the `next:` line that this file's copy of it checked).


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="torch sees a GPU here")
def test_gpus_torch_cannot_use_are_refused_before_any_trial(ray_local, in_tmp, tiny_csv, fast_space, monkeypatch):
    # The machine's NVML count stands in for GPUs this CPU build of torch cannot use.
    from fersearch.search import resources

    monkeypatch.setattr(resources, "local_gpu_count", lambda: 2)
    result = cli("--space", fast_space, "--data", tiny_csv, "--trials", 2, "--max-epochs", 1, "--quiet")
    line = assert_one_line_error(result, "this machine has 2 GPU(s) but torch", "cannot use them", "--gpus 0")
    assert not list(Path("results").glob("*/trial_*")), line  # refused before any trial ran


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
    assert result.record.resources["cluster_cpus"] == 2
