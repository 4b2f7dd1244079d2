"""Reliability and security: diverging trials, unusable results folders, two searches of
one name, crashes in the middle of a write, and what is never printed, loaded or run.

Every fault is real: a NaN loss from a learning rate that blows up, a read-only or full
filesystem (a tmpfs mounted for the test; skipped where mounting is not allowed), two real
`fersearch tune` processes, writer processes killed with SIGKILL in the middle of their writes.
"""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

import fersearch
from conftest import assert_one_line_error, read_meta
from fersearch.cli import app
from fersearch.errors import ExperimentError, ResultsError
from fersearch.io import write_json
from fersearch.results import experiment as ex
from fersearch.results.state import TrialState
from fersearch.results.trial_files import HistoryFile, write_history, write_trials
from fersearch.search.guard import check_writable, experiment_lock, full_disk_error, lock_path

runner = CliRunner()
PACKAGE = Path(fersearch.__file__).parent
FERSEARCH = [sys.executable, "-m", "fersearch"]


# ------------------------------------------------------------------ filesystems for the faults
@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, ro=False) -> a fresh folder with a tmpfs of that size on it (unmounted after)."""
    mounted: list[Path] = []

    def mount(size: str = "256k", ro: bool = False) -> Path:
        where = tmp_path / f"mnt{len(mounted)}"
        where.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(folder: Path) -> None:
    """Write to `folder` until its filesystem is full (ENOSPC)."""
    with open(folder / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == 28, e
    with pytest.raises(OSError):
        (folder / "one-more").write_bytes(b"\0" * 8192)
    (folder / "one-more").unlink()


def unwritable_dir(tmp_path: Path, tmpfs) -> Path:
    """A folder this process cannot write to: chmod for a normal user, a read-only mount for root."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir(mode=0o555)
        return d
    return tmpfs("64k", ro=True)


def tune_args(results: Path, *extra: str) -> list[str]:
    return ["tune", "--trials", "1", "--results", str(results), *extra]


# ------------------------------------------------------------------ 6. results folder unusable
def test_read_only_results_is_one_line_before_ray(tmp_path, tmpfs, ray_never_started):
    ro = unwritable_dir(tmp_path, tmpfs)
    line = assert_one_line_error(runner.invoke(app, tune_args(ro)), f"--results {ro} is not writable")
    assert "Read-only file system" in line or "Permission denied" in line
    line = assert_one_line_error(runner.invoke(app, tune_args(ro / "sub")), f"--results {ro / 'sub'} cannot be created")


def test_full_results_disk_is_one_line_before_ray(tmpfs, ray_never_started):
    disk = tmpfs("256k")
    (disk / "results").mkdir()
    fill(disk)
    for results in (disk / "results", disk / "new"):  # an existing folder (the probe) and one to create
        line = assert_one_line_error(runner.invoke(app, tune_args(results)), f"--results {results}: no space left")
        assert "free some space" in line
    assert sorted(p.name for p in disk.iterdir()) == ["filler", "results"], "a folder or probe was left"
    assert not list((disk / "results").iterdir()), "the probe file was left behind"


def test_a_full_disk_mid_write_keeps_the_old_file_whole(tmpfs):
    disk = tmpfs("256k")
    path = write_json(disk / "metrics.json", {"accuracy": 0.5})
    fill(disk)
    with pytest.raises(OSError) as caught:
        write_json(path, {"accuracy": 0.7, "pad": "x" * 200_000})
    assert json.loads(path.read_text()) == {"accuracy": 0.5}  # the old version, whole
    assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")], "a temp file was left on the full disk"
    err = full_disk_error(caught.value, "continue with `fersearch tune --name x --resume`")
    assert isinstance(err, ResultsError) and "no space left on the device" in str(err) and "--resume" in str(err)


def test_a_full_disk_is_one_line_in_any_command(tmpfs):
    disk = tmpfs("256k")
    fill(disk)
    assert_one_line_error(runner.invoke(app, ["data", "synth", "--out", str(disk / "d"), "--n", "60"]),
                          "no space left on the device")


def test_enospc_from_the_kernel_is_recognised_even_when_wrapped():
    """/dev/full answers every write with ENOSPC: the same error on any machine, mount or not."""
    try:
        with open("/dev/full", "wb") as f:
            f.write(b"x")
            f.flush()
    except OSError as e:
        wrapped = RuntimeError("Tune failed")  # how Ray may hand it back: as the cause of its own error
        wrapped.__cause__ = e
        assert "no space left" in str(full_disk_error(wrapped))
    else:
        pytest.skip("/dev/full accepted a write")
    assert full_disk_error(RuntimeError("unrelated")) is None


def test_probe_is_removed_and_results_created(tmp_path):
    check_writable(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())


def test_an_experiment_link_leading_outside_results_is_refused(tmp_path, ray_never_started):
    results, elsewhere = tmp_path / "results", tmp_path / "elsewhere"
    results.mkdir()
    (elsewhere / "exp").mkdir(parents=True)
    (elsewhere / "exp" / "fersearch.json").write_text(json.dumps({"name": "exp"}))
    (results / "exp").symlink_to(elsewhere / "exp")
    (results / "dangling").symlink_to(elsewhere / "nowhere")
    assert_one_line_error(runner.invoke(app, tune_args(results, "--name", "exp", "--resume")),
                          "leads outside --results")
    assert_one_line_error(runner.invoke(app, tune_args(results, "--name", "dangling")), "leads outside --results")
    assert not (elsewhere / "nowhere").exists()


def test_ray_state_cut_short_is_named_before_resume(tmp_path):
    import pickle

    from fersearch.search.guard import check_ray_state

    (tmp_path / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": ["x" * 500]}))
    (tmp_path / "searcher-state-2026-01-01_00-00-00.pkl").write_bytes(pickle.dumps({"searcher": list(range(500))}))
    check_ray_state(tmp_path, "exp")  # whole: fine
    for name in ("experiment_state-2026-01-01_00-00-00.json", "searcher-state-2026-01-01_00-00-00.pkl"):
        whole = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        with pytest.raises(ResultsError, match=f"Ray's saved state {tmp_path / name} is cut short"):
            check_ray_state(tmp_path, "exp")
        (tmp_path / name).write_bytes(whole)


# ------------------------------------------------------------------ 7. the experiment lock
def test_lock_is_exclusive_released_and_names_its_holder(tmp_path):
    with experiment_lock(tmp_path, "same") as path:
        assert path == lock_path(tmp_path, "same") and path.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        with pytest.raises(ResultsError, match=f"another search named 'same' is running \\(pid {os.getpid()}"):
            with experiment_lock(tmp_path, "same"):
                pass
        assert path.exists()  # the refused one did not remove the holder's lock
        with experiment_lock(tmp_path, "other"):
            pass
    assert not path.exists()
    with pytest.raises(RuntimeError):
        with experiment_lock(tmp_path, "same"):
            raise RuntimeError("the search failed")
    assert not path.exists(), "a failed search left its lock"


HOLDER = """
import sys, time
from pathlib import Path
from fersearch.search.guard import experiment_lock
with experiment_lock(Path(sys.argv[1]), "exp"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_lock_whose_process_died_is_taken_over(tmp_path):
    """A live search in another process holds (its pid in the error); SIGKILLed, it can run no
    cleanup, and the next search takes the lock over. A leftover file naming a dead pid holds nothing."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        with pytest.raises(ResultsError, match=f"another search named 'exp' is running \\(pid {holder.pid} on "):
            with experiment_lock(tmp_path, "exp"):
                pass
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
        holder.stdout.close()
    path = lock_path(tmp_path, "exp")
    assert path.read_text() == f"{holder.pid} {socket.gethostname()}\n"  # the dead search's lock file is still there
    with experiment_lock(tmp_path, "exp"):
        assert path.read_text().startswith(f"{os.getpid()} ")
    assert not list(tmp_path.iterdir()), "the taken-over lock was left"


# ------------------------------------------------------------------ 5. divergence
def test_training_stops_at_the_first_non_finite_loss(tiny_data):
    from fersearch.config import TrainConfig
    from fersearch.train.loop import fit

    cfg = TrainConfig.from_dict({"optimizer": "sgd", "lr": 10.0, "epochs": 5})  # the seed CNN: NaN in epoch 1
    seen = []
    result = fit(cfg, tiny_data, on_epoch=lambda m, _state: seen.append(m), threads=1)
    assert result.epochs == 1 and len(seen) == 1, "trained on after the loss went non-finite"
    last = seen[0]
    assert not math.isfinite(last["train_loss"]) and math.isnan(last["val_acc"]) and math.isnan(last["val_loss"])
    assert result.diverged == last["diverged"] and "training loss became nan in epoch 1 at lr 10" in result.diverged
    fine = fit(cfg.replace(lr=0.01, epochs=1, blocks=2, filters=(8, 16), dropout=(0.0, 0.0), dense=32), tiny_data,
               threads=1)
    assert fine.diverged is None and math.isfinite(fine.history[0]["train_loss"])


def _epoch(epoch: int, val_acc: float, **extra) -> dict:
    return {"epoch": epoch, "training_iteration": epoch, "train_loss": 1.0, "train_acc": 0.4, "val_loss": 1.1,
            "val_acc": val_acc, "lr": 0.01, "images_per_s": 100.0, "epoch_time_s": 1.0, **extra}


def diverged_folder(results: Path) -> Path:
    """A search whose best-scoring trial diverged after a strong first epoch: b (0.9, then NaN);
    d diverged in its first epoch (no val_acc at all)."""
    state = TrialState(total=4, max_epochs=3)
    exp = results / "exp"
    exp.mkdir(parents=True)
    config = json.dumps({"lr": 0.01})
    rows = []
    for tid in ("a", "b", "c", "d"):
        state.add(tid, config, {"lr": 0.01})
        state.start(tid)
    for tid, m in (("a", _epoch(1, 0.5)), ("b", _epoch(1, 0.9)), ("a", _epoch(2, 0.6)), ("c", _epoch(1, 0.4)),
                   ("b", _epoch(2, float("nan"), train_loss=float("nan"), val_loss=float("nan"),
                                diverged="training loss became nan in epoch 2 at lr 10; lower the learning rate")),
                   ("d", _epoch(1, float("nan"), train_loss=float("inf"), val_loss=float("nan"),
                                diverged="training loss became inf in epoch 1 at lr 10; lower the learning rate"))):
        rows.append(state.result(tid, m))
    assert state.best()["trial_id"] == "a", "the live view's best is a diverged trial"
    for tid in ("a", "b", "c", "d"):
        state.end(tid)
    assert state.rows["b"]["status"] == "diverged" and state.counts()["diverged"] == 2
    write_trials(exp, state.rows.values())
    write_history(exp, rows)
    write_json(exp / ex.META_FILE, {"name": "exp", "trials": 4, "max_epochs": 3, "scheduler": "asha",
                                    "grace_period": 1, "reduction_factor": 2, "created": "2025-01-01T00:00:00"})
    return exp


def test_a_diverged_trial_is_recorded_and_never_the_best(tmp_path):
    exp = diverged_folder(tmp_path / "results")
    trials = ex.read_trials(exp).set_index("trial_id")
    assert list(trials.columns[:9]) == list(ex.TRIAL_COLUMNS[1:])  # trials.csv's contract holds
    assert trials.loc["b", "status"] == "diverged" and "training loss became nan" in trials.loc["b", "error"]
    assert trials.loc["b", "best_val_acc"] == 0.9  # its finite epoch is kept as data ...
    assert ex.best_trial(ex.read_trials(exp))["trial_id"] == "a"  # ... but never wins
    assert TrialState.load(exp).best()["trial_id"] == "a"
    best = runner.invoke(app, ["best", "exp", "--results", str(tmp_path / "results"), "--json"])
    assert best.exit_code == 0, best.output
    assert json.loads(best.stdout)["trial_id"] == "a"
    status = runner.invoke(app, ["status", "exp", "--results", str(tmp_path / "results")])
    assert "2 diverged" in status.stdout and "b: training loss became nan in epoch 2" in status.stdout


def test_best_says_so_when_every_trial_diverged(tmp_path):
    exp = diverged_folder(tmp_path / "results")
    trials = ex.read_trials(exp)
    trials["status"] = "diverged"
    write_trials(exp, [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                       for r in trials.to_dict("records")])
    assert_one_line_error(runner.invoke(app, ["best", "exp", "--results", str(tmp_path / "results")]),
                          "every trial that reported diverged (4")


# ------------------------------------------------------------------ 8. crashes mid-write
WRITER = textwrap.dedent('''
    import sys, json
    kind, path = sys.argv[1], sys.argv[2]

    def version(i):  # two versions, large enough that a write takes a while
        tag = "AB"[i % 2]
        return tag, 3000 + 500 * (i % 2)

    if kind == "trials.csv":
        from fersearch.results.trial_files import TrialsFile
        f = TrialsFile(path)
        def write(i):
            tag, n = version(i)
            f.write([{"trial_id": f"t{j}", "status": tag, "epochs": j, "error": tag * 300, "config_json": "{}",
                      "config/lr": j} for j in range(n)])
    elif kind == "naive-trials.csv":  # the control: a plain rewrite, which the harness must catch torn
        def write(i):
            tag, n = version(i)
            with open(path, "w") as out:
                out.write("trial_id,status,error\\n" + "".join(f"t{j},{tag},{tag * 300}\\n" for j in range(n)))
    elif kind == "metrics.json":
        from fersearch.io import write_json
        def write(i):
            tag, n = version(i)
            write_json(path, {"tag": tag, "rows": [[tag] * 100 for _ in range(n)]})
    elif kind == "model.pt":
        import torch
        from fersearch.config import TrainConfig
        from fersearch.model import build_model, save_model
        cfg = TrainConfig()
        model = build_model(cfg)
        def write(i):
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float(i % 2 + 1))
            save_model(path, model, cfg, {"tag": "AB"[i % 2]})
    elif kind == "study.journal":
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)),
                                    load_if_exists=True)
        def write(i):
            t = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            t.set_user_attr("pad", "x" * 20000)
            study.tell(t, t.params["x"])
    i = 0
    while True:
        write(i)
        if i == 0:
            print("ready", flush=True)
        i += 1
''')


def _check_trials(path: Path) -> None:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    tags = set(df["status"])
    assert len(tags) == 1 and len(df) == {"A": 3000, "B": 3500}[tags.pop()], "torn trials.csv"
    assert (df["error"].str.len() == 300).all(), "torn trials.csv row"


def _check_metrics(path: Path) -> None:
    d = json.loads(path.read_text())
    assert len(d["rows"]) == {"A": 3000, "B": 3500}[d["tag"]]


def _check_model(path: Path) -> None:
    from fersearch.model import load_model

    model, _cfg, meta = load_model(path)  # refuses anything but a whole fersearch model file
    values = {float(v) for p in model.parameters() for v in (p.detach().min(), p.detach().max())}
    assert values == {"AB".index(meta["tag"]) + 1.0}, "weights of two versions mixed"


def _check_study(path: Path) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from fersearch.search.study import reopen_study_journal

    def load():
        return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))

    done = [t for t in load().trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(t.value == t.params["x"] for t in done)
    reopen_study_journal(path.parent)  # what --resume does before appending again
    study, t0 = load(), time.monotonic()
    study.tell(study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}), 0.5)
    assert time.monotonic() - t0 < 5, "a killed writer's journal lock held the next writer up"
    assert len(load().trials) > len(done)


CHECKS = {"trials.csv": _check_trials, "metrics.json": _check_metrics, "model.pt": _check_model,
          "study.journal": _check_study}


def kill_writer_repeatedly(kind: str, folder: Path, kills: int, check) -> int:
    """Start a writer of `kind` rewriting one file in a loop, SIGKILL it at a random moment after its
    first whole write, run `check` on the file; `kills` times. Returns how many checks failed."""
    import random

    rng = random.Random(0)
    script = folder / "writer.py"
    script.write_text(WRITER)
    torn = 0
    for k in range(kills):
        target = folder / f"run{k}" / kind.removeprefix("naive-")
        target.parent.mkdir()
        proc = subprocess.Popen([sys.executable, str(script), kind, str(target)], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.01, 0.25))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        try:
            check(target)
        except Exception:  # unreadable, or read but not one whole version
            torn += 1
    return torn


@pytest.mark.slow
@pytest.mark.parametrize("kind, kills", [("trials.csv", 8), ("metrics.json", 8), ("model.pt", 5), ("study.journal", 5)])
def test_a_writer_killed_mid_write_leaves_the_old_or_the_new_file(tmp_path, kind, kills):
    assert kill_writer_repeatedly(kind, tmp_path, kills, CHECKS[kind]) == 0


@pytest.mark.slow
def test_the_kill_harness_catches_a_plain_rewrite(tmp_path):
    """The control: the same kills tear a file rewritten in place (so the tests above can fail)."""
    assert kill_writer_repeatedly("naive-trials.csv", tmp_path, 6, _check_trials) > 0


def test_history_torn_last_line_is_dropped_and_cut_before_the_next_append(tmp_path):
    log = HistoryFile(tmp_path / ex.HISTORY_FILE)
    for epoch in (1, 2):
        log.append({"trial_id": "a", "epoch": epoch, "val_acc": 0.5})
    with open(log.path, "a") as f:
        f.write("a,3,0.9,0.6,1.0")  # a crash in the middle of the third append
    assert list(ex.read_history(tmp_path)["epoch"]) == [1, 2]
    log.repair()
    log.append({"trial_id": "a", "epoch": 3, "val_acc": 0.7})
    h = ex.read_history(tmp_path)
    assert list(h["epoch"]) == [1, 2, 3] and h["val_acc"].iloc[-1] == 0.7


# ------------------------------------------------------------------ security defaults
def _calls():
    """(file, line, called name as written, call node) for every call in the package."""
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                yield str(path.relative_to(PACKAGE)), node.lineno, ast.unparse(node.func), node


def test_every_torch_load_is_weights_only():
    loads = [(p, n, node) for p, n, called, node in _calls() if called == "torch.load"]
    assert loads, "no torch.load found: the scan is broken"
    for path, line, node in loads:
        flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert flags.get("weights_only") == "True", f"{path}:{line}: torch.load without weights_only=True"
    np_loads = [(p, n) for p, n, called, node in _calls() if called == "np.load"]
    assert np_loads and all("allow_pickle=False" in ast.unparse(node) for p, n, called, node in _calls()
                            if called == "np.load")


RUNS_CODE = {"exec", "eval", "compile", "pickle.load", "pickle.loads", "cloudpickle.load", "cloudpickle.loads",
             "marshal.loads", "runpy.run_path", "runpy.run_module", "yaml.load", "torch.jit.load", "dill.loads"}


def test_only_search_space_files_and_rays_own_state_are_run():
    """Code runs only from a search-space file (space_fn.py: exec of the file; pickle.loads of the space
    Ray saved with its state, for --resume). status, best, the report and predict (model.pt with
    weights_only, model.onnx parsed by ONNX Runtime) read results as data; TorchScript is gone."""
    found = {(path, called) for path, _line, called, node in _calls()
             if called in RUNS_CODE or called.endswith(".exec_module") or called.endswith("import_module")
             and "fersearch" not in ast.unparse(node) and path not in ("__init__.py", "data/__init__.py")}
    assert found == {("search/space_fn.py", "exec"), ("search/space_fn.py", "compile"),
                     ("search/space_fn.py", "pickle.loads")}, found


def test_the_dashboard_binds_to_loopback_unless_asked(capsys):
    from fersearch.search.dashboard import ray_init_kwargs
    from fersearch.search.options import SearchOptions

    assert SearchOptions().dashboard_host == "127.0.0.1"
    assert ray_init_kwargs()["dashboard_host"] == "127.0.0.1" and not capsys.readouterr().err
    ray_init_kwargs("0.0.0.0")
    assert "warning: the Ray dashboard listens on 0.0.0.0" in capsys.readouterr().err


@pytest.mark.slow
def test_a_cluster_without_a_dashboard_is_told_how_to_start_one():
    import ray
    from ray.cluster_utils import Cluster

    from fersearch.search.dashboard import dashboard_lines

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"include_dashboard": False, "num_cpus": 1})
    address = cluster.address
    try:
        ray.init(address=address, logging_level="WARNING")
        lines = dashboard_lines(address)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert lines == [f"Ray cluster {address}: the cluster runs no dashboard; to get one, start its head with "
                     "`ray start --head --include-dashboard=true`"]


# ------------------------------------------------------------------ a real search: 5, 7 and the token
DIVERGING_SPACE = '''"""One configuration that diverges (SGD at lr 10: NaN loss in the first epoch) among good ones."""

points = [{"lr": 10.0}, {"lr": 0.003}, {"lr": 0.01}]


def space(trial):
    if trial.suggest_categorical("lr", [10.0, 0.003, 0.01]) == 10.0:
        return {"optimizer": "sgd"}  # the seed CNN: SGD at lr 10 goes NaN in its first epoch
    return {"optimizer": "sgd", "blocks": 2, "filters": [8, 16], "dropout": [0.0, 0.0], "dense": 32,
            "dense_dropout": 0.0, "batch_norm": True, "batch_size": 32, "normalize": "standardize"}
'''


@pytest.fixture(scope="module")
def contested_search(tmp_path_factory, tiny_csv):
    """A real `fersearch tune --name same` (3 trials, one of them diverging) in a subprocess, and a
    second `fersearch tune --name same` started while the first holds the lock."""
    root = tmp_path_factory.mktemp("contested")
    space = root / "diverging.py"
    space.write_text(DIVERGING_SPACE)
    results = root / "results"
    args = [*FERSEARCH, "tune", "--name", "same", "--space", str(space), "--data", str(tiny_csv), "--trials", "3",
            "--max-epochs", "2", "--grace-period", "2", "--cpus-per-trial", "1", "--results", str(results)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = lock_path(results, "same")
        deadline = time.monotonic() + 120
        while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists(), "the first search never took its lock"
        t0 = time.monotonic()
        second = subprocess.run(args, capture_output=True, text=True, timeout=120)
        second_s = time.monotonic() - t0
        first_out, first_err = first.communicate(timeout=540)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    return {"results": results, "exp": results / "same", "first": (first.returncode, first_out, first_err),
            "second": second, "second_s": second_s, "lock": lock}


@pytest.mark.slow
def test_a_second_search_of_the_same_name_is_refused_before_ray(contested_search):
    second = contested_search["second"]
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    lines = [ln for ln in second.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: another search named 'same' is running (pid "), lines
    assert "Ray" not in second.stdout + second.stderr  # it never got as far as Ray
    assert contested_search["second_s"] < 30


@pytest.mark.slow
def test_the_first_search_is_unharmed_records_the_divergence_and_goes_on(contested_search):
    rc, out, err = contested_search["first"]
    assert rc == 0, err[-3000:]
    assert not contested_search["lock"].exists(), "the lock outlived its search"
    trials = ex.read_trials(contested_search["exp"]).set_index("trial_id")
    assert len(trials) == 3 and set(trials["status"]) <= {"completed", "stopped", "diverged"}
    diverged = trials[trials["status"] == "diverged"]
    assert len(diverged) == 1 and diverged["config/lr"].iloc[0] == 10.0 and diverged["epochs"].iloc[0] == 1
    assert "training loss became nan in epoch 1 at lr 10" in diverged["error"].iloc[0]
    assert "1 diverged (non-finite loss; never the best)" in out
    assert "DIVERGED at epoch 1/2" in out + err  # the live view's line
    best = runner.invoke(app, ["best", "same", "--results", str(contested_search["results"]), "--json"])
    assert best.exit_code == 0 and json.loads(best.stdout)["trial_id"] not in diverged.index


@pytest.mark.slow
def test_the_dashboard_token_is_never_printed_or_written(contested_search):
    from fersearch.search.dashboard import TOKEN_ENV, token_source

    kind, path = token_source()
    token = os.environ[TOKEN_ENV] if kind == "env" else path.read_text().strip() if path.is_file() else ""
    assert len(token) >= 16, "the search ran with Ray's token authentication, so a token must exist"
    rc, out, err = contested_search["first"]
    assert "Ray dashboard" in out and "sign in with the token in" in out  # the lines that point at the token
    second = contested_search["second"]
    for text in (out, err, second.stdout, second.stderr):
        assert token not in text
    for f in contested_search["results"].rglob("*"):
        if f.is_file():
            assert token.encode() not in f.read_bytes(), f"the token is in {f}"


@pytest.mark.slow
def test_a_disk_that_fills_mid_search_stops_it_in_one_line_and_resume_completes(tmpfs, tiny_csv, tmp_path):
    """The results disk fills after the first epoch: the search stops with one line saying how to go
    on, and fersearch's own files stay whole. With space freed, --resume completes the search; or,
    when the full disk cut short Ray's own state file (Ray writes it in place), it says so in one
    line instead of letting Ray restore half a state."""
    disk = tmpfs("16m")
    space = tmp_path / "diverging.py"
    space.write_text(DIVERGING_SPACE)
    args = [*FERSEARCH, "tune", "--name", "full", "--space", str(space), "--data", str(tiny_csv), "--trials", "3",
            "--max-epochs", "2", "--grace-period", "2", "--cpus-per-trial", "1", "--results", str(disk / "results")]
    search = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        history = disk / "results" / "full" / ex.HISTORY_FILE
        deadline = time.monotonic() + 180
        # a row in it, not the file alone: appending opens (makes) the file a moment before it writes the row
        while not (history.exists() and len(ex.read_history(history.parent))) and search.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        fill(disk)
        out, err = search.communicate(timeout=300)
    finally:
        if search.poll() is None:
            search.kill()
            search.wait()
    assert search.returncode == 1, out + err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: no space left on the device") and "fersearch tune --name full --resume" in last
    assert not lock_path(disk / "results", "full").exists()
    exp = disk / "results" / "full"
    before = ex.read_trials(exp), ex.read_history(exp), read_meta(exp)  # whole: each reads
    assert len(before[1]) >= 1
    (disk / "filler").unlink()
    resumed = subprocess.run([*FERSEARCH, "tune", "--name", "full", "--resume", "--results", str(disk / "results")],
                             capture_output=True, text=True, timeout=300)
    if resumed.returncode == 1:  # Ray's state was cut short: refused in one line, nothing changed
        last = resumed.stderr.strip().splitlines()[-1]
        assert last.startswith("error: --resume: Ray's saved state") and "is cut short" in last, resumed.stderr
        assert ex.read_trials(exp).equals(before[0])
        return
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = ex.read_trials(exp)
    assert len(trials) == 3 and set(trials["status"]) <= {"completed", "stopped", "diverged"}, trials
    # lr 10 diverges, and only it. A configuration Optuna handed out just before the disk filled, but that Ray's
    # saved state never got to, is drawn anew on resume: with three choices, now and then lr 10 again (seen on CI)
    diverged = trials["status"] == "diverged"
    assert diverged.any() and (trials["config/lr"].astype(float)[diverged] == 10.0).all(), trials.to_string()
    ended = before[0][before[0]["status"].isin(["completed", "stopped", "diverged"])]
    kept = trials.set_index("trial_id").loc[ended["trial_id"], ["status", "epochs", "best_val_acc"]]
    assert kept.equals(ended.set_index("trial_id")[["status", "epochs", "best_val_acc"]]), trials.to_string()


def test_resume_bridges_a_checkpoint_ray_deleted_just_before_a_crash(tmp_path):
    """Ray deletes checkpoint_<k> when checkpoint_<k+1> is written and saves its state (naming k) a moment
    later: a driver killed in between must still resume that trial (seen under load in the resume test)."""
    from fersearch.search.workarounds import bridge_checkpoints

    raced = tmp_path / "trial_a" / "checkpoint_000002"
    raced.mkdir(parents=True)
    (raced / "state.pt").write_bytes(b"epoch 3")
    first = tmp_path / "trial_b" / "checkpoint_000000"  # a first checkpoint: nothing older to name
    first.mkdir(parents=True)
    both = tmp_path / "trial_c"
    for k in (0, 1):
        (both / f"checkpoint_00000{k}").mkdir(parents=True)
    made = bridge_checkpoints(tmp_path)
    assert made == [tmp_path / "trial_a" / "checkpoint_000001"]
    assert (made[0] / "state.pt").read_bytes() == b"epoch 3"
    assert os.stat(made[0] / "state.pt").st_ino == os.stat(raced / "state.pt").st_ino  # a link, not a copy
    assert bridge_checkpoints(tmp_path) == []  # idempotent


# ------------------------------------------------------------------ fersearch.json across versions
@pytest.mark.slow
def test_the_record_keeps_fersearch_jsons_keys_and_an_old_folder_still_reads(tuned_experiment, tmp_path):
    """The driver, scheduler and trials read one typed record; saving it writes back the JSON it read,
    and a folder written before `objectives` and the noise record existed still works (status, best,
    compare) and reads with those defaults; a record without its settings cannot be resumed."""
    from conftest import copy_experiment
    from fersearch.results.record import Noise, load_record, save_record
    from fersearch.search.options import SearchOptions

    meta = read_meta(tuned_experiment)
    record = load_record(tuned_experiment)
    assert SearchOptions(**{**meta["options"], "name": "tuned"}).settings() == record.settings
    old = copy_experiment(tuned_experiment, tmp_path / "results")
    save_record(old, record)
    assert read_meta(old) == meta  # the same JSON, key for key
    before = {k: v for k, v in meta.items() if k not in ("objectives", "noise", "metric", "mode")}
    write_json(old / "fersearch.json", before)
    again = load_record(old)
    assert again.settings is not None and again.settings.objectives == ("val_acc",)
    assert (again.settings.metric, again.settings.mode) == ("val_acc", "max")
    val = [v for k, v in meta["data"]["counts"]["val"].items() if k != "unlabeled"]
    assert again.noise == Noise(sum(val), max(val) / sum(val), 2.0)  # from the data block's counts
    for args in (["status", "tuned"], ["best", "tuned"], ["compare", "tuned", str(tuned_experiment)]):
        result = runner.invoke(app, [*args, "--results", str(tmp_path / "results")])
        assert result.exit_code == 0 and "error" not in result.output, result.output
    write_json(old / "fersearch.json", {k: v for k, v in before.items() if k != "grace_period"})
    with pytest.raises(ExperimentError, match="grace_period"):
        load_record(old).require_settings(old)
