"""Hostile results folders and Ctrl+C, end to end: Ray's pickles tampered with before
`--resume` (the payload must never run, the folder must not change), and SIGINT at many moments of
a real `best --evaluate` (exit 130; best/ the old files or a whole new set)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import EVALUATE_ARGS, Payload, assert_one_line_error, checksums, copy_experiment
from fersearch.cli import app
from fersearch.search.pickles import MANIFEST

runner = CliRunner()


def resumable_copy(src: Path, results: Path) -> Path:
    """The whole search folder (Ray's state too) under another --results, pointed at its new place."""
    dst = results / src.name
    shutil.copytree(src, dst)
    meta = json.loads((dst / "fersearch.json").read_text())
    meta["storage"] = str(results.resolve())
    (dst / "fersearch.json").write_text(json.dumps(meta))
    return dst


def _tamper_tuner(exp: Path, marker: Path) -> str:
    (exp / "tuner.pkl").write_bytes(pickle.dumps(Payload(marker)))
    return "tuner.pkl"


def _tamper_searcher(exp: Path, marker: Path) -> str:
    path = max(exp.glob("searcher-state-*.pkl"))
    path.write_bytes(pickle.dumps(Payload(marker)))
    return path.name


def _tamper_state_json(exp: Path, marker: Path) -> str:
    """experiment_state-*.json holds cloudpickled trial fields: one flipped byte is a change."""
    path = max(exp.glob("experiment_state-*.json"))
    path.write_text(path.read_text().replace('"trial_data"', '"trial_data" '))
    return path.name


def _add_pickle(exp: Path, marker: Path) -> str:
    trial = next(exp.glob("trial_*"))
    (trial / "error.pkl").write_bytes(pickle.dumps(Payload(marker)))
    return "error.pkl"


def _drop_manifest(exp: Path, marker: Path) -> str:
    _tamper_tuner(exp, marker)
    (exp / MANIFEST).unlink()
    return f"no signature in {MANIFEST}"


def _forged_manifest(exp: Path, marker: Path) -> str:
    """A manifest rewritten by someone without the key: a plain SHA-256 of the new file."""
    _tamper_tuner(exp, marker)
    record = json.loads((exp / MANIFEST).read_text())
    record["files"]["tuner.pkl"] = [hashlib.sha256((exp / "tuner.pkl").read_bytes()).hexdigest()]
    (exp / MANIFEST).write_text(json.dumps(record))
    return "tuner.pkl"


def _swapped(exp: Path, marker: Path) -> str:
    """A signed pickle moved under another signed pickle's name."""
    searcher = max(exp.glob("searcher-state-*.pkl"))
    shutil.copy(searcher, exp / "tuner.pkl")
    return "tuner.pkl"


TAMPER = {"tuner.pkl": _tamper_tuner, "searcher-state": _tamper_searcher, "experiment_state": _tamper_state_json,
          "new pickle": _add_pickle, "no manifest": _drop_manifest, "forged manifest": _forged_manifest,
          "swapped": _swapped}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(TAMPER), ids=list(TAMPER))
def test_a_tampered_ray_pickle_is_refused_before_it_runs(tuned_experiment, tmp_path, ray_never_started, kind):
    results, marker = tmp_path / "results", tmp_path / "PWNED"
    exp = resumable_copy(tuned_experiment, results)
    culprit = TAMPER[kind](exp, marker)
    before = checksums(exp)
    res = runner.invoke(app, ["tune", "--name", exp.name, "--results", str(results), "--resume", "-q"])
    line = assert_one_line_error(res, f"--resume {exp.name}:", culprit, "--name")
    assert "not read" in line
    assert not marker.exists(), "the payload ran"
    assert checksums(exp) == before, "the refused resume changed the folder"
    assert "resumed" not in json.loads((exp / "fersearch.json").read_text())
    assert sorted(p.name for p in results.iterdir()) == [exp.name], "a lock or probe was left"


@pytest.mark.slow
def test_ray_state_a_full_disk_cut_short_is_named_so_not_called_tampered(tuned_experiment, tmp_path, ray_never_started):
    """Ray copies its state from staging, where fersearch signed it: a full disk leaves a shorter file whose
    signature cannot match. Refused either way; the line gives the true reason (seen under load in CI)."""
    results = tmp_path / "results"
    exp = resumable_copy(tuned_experiment, results)
    state = max(exp.glob("callback-states-*.pkl"))
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    before = checksums(exp)
    res = runner.invoke(app, ["tune", "--name", exp.name, "--results", str(results), "--resume", "-q"])
    assert_one_line_error(res, "--resume: Ray's saved state", state.name, "is cut short", "--name")
    assert checksums(exp) == before, "the refused resume changed the folder"


@pytest.mark.slow
def test_the_untampered_copy_passes_the_check(tuned_experiment, tmp_path):
    from fersearch.search.pickles import pickle_files, verify

    exp = resumable_copy(tuned_experiment, tmp_path / "results")
    assert {"tuner.pkl"} <= set(pickle_files(exp)) and any(f.startswith("searcher-state") for f in pickle_files(exp))
    verify(exp, exp.name)  # every pickle Ray would read is signed


# ------------------------------------------------------------------ Ctrl+C during best --evaluate
SIGINT_DELAYS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.5, 7.0, 9.0, 12.0, 16.0)  # from 0.5 s: fersearch/__init__.py has run


def _evaluate(project: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fersearch", "best", "--evaluate", *EVALUATE_ARGS, "--quiet",
                             "--results", str(project / "results")], cwd=project, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.mark.slow
def test_ctrl_c_at_any_moment_of_best_evaluate_stops_it_and_best_is_old_or_whole_new(evaluated_experiment, tmp_path):
    """SIGINT at spread moments of a real run: each stops with 130 within seconds (or the run had already
    ended, 0), and best/ is byte for byte the old set or a complete new one (whose metrics.json reads)."""
    project = tmp_path / "project"
    exp = copy_experiment(evaluated_experiment, project / "results")
    shutil.copytree(evaluated_experiment / "best", exp / "best")
    old = checksums(exp / "best")
    outcomes = []
    for delay in SIGINT_DELAYS:
        proc = _evaluate(project)
        time.sleep(delay)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"SIGINT after {delay} s was not honoured within 30 s")
        took = time.monotonic() - sent
        # -SIGINT: the signal came while the interpreter was shutting down after the command had ended (its
        # handlers are gone then); a shell reports that as 130 too, and best/ must be the whole new set
        assert proc.returncode in (130, 0, -signal.SIGINT), (delay, proc.returncode, err)
        assert "Traceback" not in err and "Exception ignored" not in err, (delay, err)
        now = checksums(exp / "best")
        if proc.returncode == 130:
            assert took < 10, (delay, took)
            assert now == old or _whole(exp / "best", now, old), (delay, sorted(now))
        else:
            assert _whole(exp / "best", now, old)
        outcomes.append(proc.returncode)
        old = now  # the next run replaces this set or leaves it
    assert outcomes.count(130) >= len(SIGINT_DELAYS) // 2, outcomes


def _whole(best: Path, now: dict[str, str], old: dict[str, str]) -> bool:
    metrics = json.loads((best / "metrics.json").read_text())
    return set(now) == set(old) and "accuracy" in metrics
