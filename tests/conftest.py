"""Shared pytest fixtures: tiny synthetic data and a scratch working directory.

Other helpers may append fixtures below (str_replace); keep them tiny and fast.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

TINY_N = 600  # ~480 train / 60 val / 60 test, every class in every split


def assert_one_line_error(result, *fragments: str) -> str:
    """The one error contract of the CLI, checked in one place: exit code 1, no traceback, and on
    stderr exactly one line saying `error: ...`, its last line (progress lines such as "reading ..."
    may come before it), containing every fragment. Returns that line."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    assert "error:" not in result.stdout, result.stdout
    for fragment in fragments:
        assert fragment in errors[0], (fragment, errors[0])
    return errors[0]


@pytest.fixture(scope="session")
def tiny_data():
    """A small FerData from the synthetic generator (fixed seed; all 7 classes in every split).
    Session-scoped and shared: do not modify its arrays in place."""
    from fersearch.data.synth import synthetic_data

    data = synthetic_data(n=TINY_N, seed=0)
    for arr in (data.images, data.labels, data.split):
        arr.flags.writeable = False  # a test that mutates shared data fails loudly instead of leaking
    return data


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside tmp_path, so data/ and results/ defaults never touch the repo."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ---- search fixtures ---------------------------------------------------------
FAST_SPACE = '''"""Fast test space: a small CNN that learns within a few epochs on tiny synthetic data."""


def space(trial):
    trial.suggest_int("filters_1", 8, 16, step=8)
    trial.suggest_int("filters_2", 16, 32, step=16)
    trial.suggest_float("lr", 1e-3, 5e-3, log=True)
    return {"blocks": 2, "dropout": [0.0, 0.0], "dense": 64, "dense_dropout": 0.0, "batch_norm": True,
            "batch_size": 16, "normalize": "standardize"}
'''
# The settings of `tuned_experiment` (tests compare other schedulers against it).
TUNED = dict(trials=6, max_epochs=3, grace_period=1, reduction_factor=2, cpus_per_trial=1, gpus=0, seed=0)


@pytest.fixture(scope="session")
def fast_space(tmp_path_factory):
    """Path of a search-space file whose CNNs learn in a few epochs on tiny data."""
    path = tmp_path_factory.mktemp("spaces") / "fast.py"
    path.write_text(FAST_SPACE)
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory):
    """The tiny synthetic set as a fer2013.csv (what `tiny_data` holds), for runs that need a data file."""
    from fersearch.data.synth import write_synthetic

    return write_synthetic(tmp_path_factory.mktemp("data"), n=TINY_N, seed=0)


@pytest.fixture(scope="session")
def tuned_experiment(tmp_path_factory, fast_space, tiny_csv):
    """A finished real search (Ray Tune + TPE + ASHA): 6 trials x <= 3 epochs on the tiny set, 1 CPU each.
    Run once per session (about 20-30 s); returns the experiment directory (results/tuned/).
    Uses a Ray already initialised in this process (and leaves it), else starts and stops its own."""
    from fersearch.search.driver import tune

    results = tmp_path_factory.mktemp("results")
    return tune(space=fast_space, data=tiny_csv, name="tuned", results=results, verbose=False, **TUNED).path


# ---- best / predict fixtures --------------------------------------------------
EVALUATE_ARGS = ("--epochs", "2", "--seeds", "2", "--tta")
EXPERIMENT_FILES = ("fersearch.json", "trials.csv", "history.csv", "study.journal")


def copy_experiment(src, results_dir):
    """The record files of an experiment copied under another results dir (Ray's state left out),
    so a test can change or evaluate it without touching the shared search."""
    import shutil

    dst = results_dir / src.name
    dst.mkdir(parents=True)
    for name in EXPERIMENT_FILES:
        if (src / name).exists():  # study.journal: searches before the study was kept have none
            shutil.copy(src / name, dst / name)
    return dst


@pytest.fixture(scope="session")
def evaluated_experiment(tmp_path_factory, tuned_experiment):
    """A copy of `tuned_experiment` in <project>/results/ after a real
    `fersearch best --evaluate --epochs 2 --seeds 2 --tta` through the CLI (about 10-20 s).
    Returns the experiment dir; the command's stdout is in <project>/best_evaluate.out."""
    from typer.testing import CliRunner

    from fersearch.cli import app

    project = tmp_path_factory.mktemp("project")
    exp = copy_experiment(tuned_experiment, project / "results")
    res = CliRunner().invoke(app, ["best", "--evaluate", *EVALUATE_ARGS, "--results", str(project / "results")])
    assert res.exit_code == 0, res.output
    (project / "best_evaluate.out").write_text(res.stdout)
    return exp


# ---- bad input / reliability fixtures ----------------------------------------
@pytest.fixture
def ray_never_started(monkeypatch):
    """ray.init fails the test if called: for mistakes that must be answered before Ray starts."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(a) or (_ for _ in ()).throw(
        AssertionError("ray.init called for a mistake seen without Ray")))
    yield started
    assert not started


def read_meta(exp) -> dict:
    """An experiment's fersearch.json as the JSON on disk (what a test checks or damages on purpose)."""
    from fersearch.io import read_json

    return read_json(Path(exp) / "fersearch.json")


def write_meta(exp, meta: dict) -> None:
    """A hand-made fersearch.json (old formats, damaged values): the raw JSON, not through the record."""
    from fersearch.io import write_json

    write_json(Path(exp) / "fersearch.json", meta)


# ------------------------------------------------------------------ hostile inputs (test_hostile*.py)
def checksums(folder: Path) -> dict[str, str]:
    """sha256 of every file below `folder`: a folder left untouched has the same checksums."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class Payload:
    """Touches `marker` when unpickled: a pickle that must never run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
