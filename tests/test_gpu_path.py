"""The GPU path as a CPU machine can check it: packing and spreading GPU shares, the
refusals before a search starts, which GPUs a local Ray sees, the checkpoint schedule, the
Makefile's TORCH line. Training on a device is tested in test_train.py (gpu-marked)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error
from fersearch.cli import app
from fersearch.search.checkpoints import checkpoint_epochs, rung_epochs
from fersearch.search.resources import (
    TRIALS_PER_GPU,
    local_gpu_count,
    plan_resources,
    spread_share,
    unseen_gpu_error,
    visible_gpus,
)
from fersearch.search.trainable import gpu_unseen_warning, trial_device

ROOT = Path(__file__).resolve().parent.parent


def plan(cpus: float, cluster_gpus: float, **kw):
    args = dict(gpus=None, gpus_per_trial=None, cpus_per_trial=None, trials=50) | kw
    return plan_resources({"CPU": cpus, "GPU": cluster_gpus}, **args)


# ------------------------------------------------------------------ shares (faults 3 and 4, the default)
def test_fewer_trials_than_slots_are_spread_over_every_gpu():
    # Ray fills one GPU before the next: 8 trials at 0.25 would sit on 2 of the 4 GPUs.
    p = plan(16, 4, gpus=4, gpus_per_trial=0.25, trials=8)
    assert (p.concurrency, p.gpus_per_trial) == (8, 0.5)
    p = plan(4, 4, gpus_per_trial=0.25)  # 4 CPUs cap it at 4 trials: one whole GPU each
    assert (p.concurrency, p.gpus_per_trial) == (4, 1.0)
    p = plan(32, 4, gpus_per_trial=0.25)  # every slot used: the share asked for
    assert (p.concurrency, p.gpus_per_trial) == (16, 0.25)
    assert spread_share(0.25, 3, 4) == 0.5 and spread_share(0.1, 2, 6) == 0.3333
    assert spread_share(0.25, 0.5, 1) == 0.25  # less than one GPU in all: as asked


def test_each_spread_share_still_fits_every_trial_at_once():
    for gpus in (1, 2, 3, 4, 8):
        for concurrency in range(1, 4 * gpus + 1):
            share = spread_share(1 / TRIALS_PER_GPU, gpus, concurrency)
            assert gpus * int(1 / share + 1e-9) >= concurrency, (gpus, concurrency, share)
            assert share >= 1 / TRIALS_PER_GPU


def test_the_default_packs_trials_per_gpu_by_the_model():
    p = plan(64, 4)
    assert (p.gpus_per_trial, p.concurrency) == (1 / TRIALS_PER_GPU, 4 * TRIALS_PER_GPU)
    assert plan(8, 0).gpus_per_trial == 0.0


def test_a_share_above_one_gpu_is_refused_in_one_line_by_the_cli(in_tmp):
    for share in ("2", "1.5"):
        result = CliRunner().invoke(app, ["tune", "--trials", "4", "--gpus-per-trial", share])
        line = assert_one_line_error(result, f"--gpus-per-trial {share}: a trial trains on one GPU", "use 1 or less")
        assert result.output.strip() == line  # before any data or Ray
    with pytest.raises(Exception, match="trains on one GPU"):
        plan(8, 4, gpus_per_trial=2)


# ------------------------------------------------------------------ a GPU torch cannot see (fault 2)
def test_gpus_torch_cannot_use_are_refused_before_the_search():
    error = unseen_gpu_error(0.25, 2, False, "2.13.0+cpu", None)
    assert error is not None and str(error) == (
        "this machine has 2 GPU(s) but torch 2.13.0+cpu without CUDA cannot use them, so every trial would train on "
        "the CPU; install a CUDA build of torch (make install TORCH=...) or pass --gpus 0")
    assert unseen_gpu_error(0.25, 2, True, "2.13.0", "12.8") is None  # torch sees them
    assert unseen_gpu_error(0.5, 0, False, "2.13.0", None) is None  # logical GPUs of a GPU-less machine
    assert unseen_gpu_error(0.0, 2, False, "2.13.0", None) is None  # a CPU search


def test_a_trial_holding_an_unusable_gpu_trains_on_the_cpu_and_says_so():
    assert trial_device([0], True) == "cuda" and trial_device([0], False) == "cpu" and trial_device([], True) == "cpu"
    text = gpu_unseen_warning([2], "2.13.0+cpu", None)
    assert "holds GPU 2 but torch cannot see it (torch 2.13.0+cpu without CUDA)" in text and "device=cpu" in text


# ------------------------------------------------------------------ which GPUs a local Ray sees (fault 9)
def test_local_gpu_count_honours_cuda_visible_devices(monkeypatch):
    assert visible_gpus(4, None) == 4 and visible_gpus(4, ["1"]) == 1 and visible_gpus(4, []) == 0
    assert visible_gpus(1, ["0", "1", "2"]) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpu_count() == 0


def test_the_makefile_passes_torch_as_separate_words():
    # TORCH="torch --index-url URL" (the Makefile's own advice) must reach pip as three words.
    out = subprocess.run(["make", "-n", "-B", "-C", str(ROOT), "install", "VENV=/nonexistent-venv",
                          "TORCH=torch --index-url https://download.pytorch.org/whl/cu128"],
                         capture_output=True, text=True, check=True).stdout
    pip = [shlex.split(line) for line in out.splitlines() if "pip install" in line and "torch" in line]
    assert pip and pip[0][-3:] == ["torch", "--index-url", "https://download.pytorch.org/whl/cu128"], out


# ------------------------------------------------------------------ the checkpoint schedule
@pytest.mark.parametrize("max_epochs, grace, rf", [(30, 1, 3), (30, 5, 3), (3, 1, 2), (4, 1, 2), (10, 2, 4)])
def test_rung_epochs_are_rays_asha_milestones(max_epochs, grace, rf):
    from ray.tune.schedulers import ASHAScheduler

    ray_rungs = ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=grace, reduction_factor=rf,
                              metric="val_acc", mode="max")._brackets[0]._rungs
    expected = sorted(int(m) for m, _ in ray_rungs if m < max_epochs)
    assert rung_epochs(max_epochs, grace, rf) == expected


def test_checkpoints_at_rungs_every_n_epochs_and_the_end():
    assert sorted(checkpoint_epochs(30, 5, rung_epochs(30, 1, 3))) == [1, 3, 5, 9, 10, 15, 20, 25, 27, 30]
    assert sorted(checkpoint_epochs(7, 5)) == [5, 7]
    assert sorted(checkpoint_epochs(3, 1)) == [1, 2, 3]  # the benchmarks' every-epoch switch


def test_the_device_benchmark_runs_here_and_skips_gpu_parts_with_a_note(tmp_path):
    out = tmp_path / "bench_gpu.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--parts", "facts,fit", "--out",
                    str(out)], capture_output=True, text=True, check=True, timeout=120)
    figures = json.loads(out.read_text())
    assert figures["facts"]["torch"] and "auto_precision" in figures["facts"]
    import torch

    if not torch.cuda.is_available():
        assert figures["fit"].startswith("skipped: no CUDA device") and "--cpu" in figures["fit"]
