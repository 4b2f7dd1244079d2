"""Hostile input, part two: damaged experiment files, generated here from a copy of the real tiny search
(`tuned_experiment`), through the real CLI in-process. Each damaged file kind x each command that reads
it: one `error:` line naming the file and what is wrong, exit 1, no traceback, and every file of the
results folder byte for byte the same after. Listing experiments (status and best without a name,
predict without --model, the "not found" message) skips a damaged one with a one-line note."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, checksums, copy_experiment
from fersearch.cli import app

runner = CliRunner()
LOG_FILES = ("per_image.jsonl", "scheduler.jsonl")  # beside EXPERIMENT_FILES: what copy_experiment leaves out


def _json(edit):
    """A damage that edits fersearch.json's (or metrics.json's) parsed JSON in place."""
    def damage(data: bytes) -> bytes:
        raw = json.loads(data)
        edit(raw)
        return json.dumps(raw).encode()
    return damage


def _line(extra: bytes, last: bool = False):
    """A damage that adds a whole line (with its newline) to a JSON-lines file, first or last."""
    return lambda data: data + extra + b"\n" if last else extra + b"\n" + data


def _csv_cell(column: str, value: str):
    def damage(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        header = lines[0].split(",")
        i = header.index(column)
        cells = lines[1].split(",")
        cells[i] = value
        return "\n".join([lines[0], ",".join(cells), *lines[2:]]).encode() + b"\n"
    return damage


GARBAGE = bytes(range(256)) * 8 + b"\n\x00\xff{[\n"
# id: (file, damage, fragments of the error line)
DAMAGES = {
    "record a list": ("fersearch.json", lambda d: b"[1, 2]", ["fersearch.json", "JSON object, not a list"]),
    "record garbage": ("fersearch.json", lambda d: GARBAGE, ["fersearch.json", "not valid JSON"]),
    "record trials as text": ("fersearch.json", _json(lambda r: r.update(trials="6")), ["trials", "not text"]),
    "record infinite factor": ("fersearch.json", _json(lambda r: r.update(reduction_factor=1e999)),
                               ["reduction_factor", "finite"]),
    "record negative epochs": ("fersearch.json", _json(lambda r: r.update(max_epochs=-3)), ["max_epochs"]),
    "record counts as text": ("fersearch.json", _json(lambda r: r["data"].update(counts={"val": "x"})),
                              ["data.counts.val"]),
    "record versions a list": ("fersearch.json", _json(lambda r: r.update(versions=[1])), ["versions"]),
    "record nested deep": ("fersearch.json", lambda d: b"[" * 200_000, ["fersearch.json", "not valid JSON"]),
    "metrics garbage": ("best/metrics.json", lambda d: GARBAGE, ["metrics.json", "not valid JSON"]),
    "metrics a list": ("best/metrics.json", lambda d: b"[0.5]", ["metrics.json", "JSON object"]),
    "metrics accuracy text": ("best/metrics.json", _json(lambda r: r.update(accuracy="high")),
                              ["metrics.json", "accuracy"]),
    "per_image not UTF-8": ("per_image.jsonl", _line(b'{"trial_id": "a\xff", "epoch": 1}'),
                            ["per_image.jsonl", "UTF-8"]),
    "per_image epoch 1e999": ("per_image.jsonl", _line(b'{"trial_id": "a", "epoch": 1e999}'),
                              ["per_image.jsonl", "line 1", "epoch"]),
    "per_image a list line": ("per_image.jsonl", _line(b"[1, 2]", last=True), ["per_image.jsonl", "JSON object"]),
    "per_image correct a number": ("per_image.jsonl", _line(b'{"trial_id": "a", "epoch": 1, "val_correct": 5}'),
                                   ["per_image.jsonl", "val_correct"]),
    "decisions a list line": ("scheduler.jsonl", _line(b"[1, 2]"), ["scheduler.jsonl", "line 1", "JSON object"]),
    "decisions garbage line": ("scheduler.jsonl", _line(b"\x00garbage", last=True), ["scheduler.jsonl"]),
    "decisions rung 1e999": ("scheduler.jsonl", _line(b'{"trial_id": "a", "rung": 1e999, "action": "STOP", '
                                                      b'"reason": "x"}'), ["scheduler.jsonl", "rung"]),
    "study garbage lines": ("study.journal", _line(b"garbage\n{not json", last=False), ["study.journal"]),
    "trials garbage": ("trials.csv", lambda d: GARBAGE, ["trials.csv"]),
    "trials best_val_acc text": ("trials.csv", _csv_cell("best_val_acc", "high"), ["trials.csv", "best_val_acc"]),
    "trials epochs 1e999": ("trials.csv", _csv_cell("epochs", "1e999"), ["trials.csv", "epochs"]),
    "history garbage": ("history.csv", lambda d: GARBAGE, ["history.csv"]),
    "history epoch text": ("history.csv", _csv_cell("epoch", "one"), ["history.csv", "epoch"]),
}
RESUME = ["tune", "--name", "exp", "--resume"]
READERS = {  # which commands read each file (best --evaluate stops before it trains)
    "fersearch.json": [["status", "exp"], ["best", "exp"], ["best", "exp", "--evaluate", "--epochs", "1"],
                       ["compare", "exp", "ok"], RESUME],
    "best/metrics.json": [["compare", "exp", "ok"]],
    "per_image.jsonl": [["best", "exp"], ["best", "exp", "--evaluate", "--epochs", "1"], RESUME],
    "scheduler.jsonl": [["best", "exp"], ["best", "exp", "--evaluate", "--epochs", "1"], RESUME],
    "study.journal": [["best", "exp"], ["best", "exp", "--evaluate", "--epochs", "1"], RESUME],
    "trials.csv": [["status", "exp"], ["best", "exp"], ["best", "exp", "--evaluate", "--epochs", "1"],
                   ["compare", "exp", "ok"], RESUME],
}
READERS["history.csv"] = READERS["trials.csv"]
CASES = [pytest.param(kind, args, id=f"{kind} | {' '.join(args[:3])}")
         for kind, (file, _, _) in DAMAGES.items() for args in READERS[file]]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tuned_experiment):
    """A pristine copy of the real search with its logs and a best/ (metrics.json, a model.pt), to copy per case."""
    from fersearch.config import TrainConfig
    from fersearch.model import build_model, save_model

    src = copy_experiment(tuned_experiment, tmp_path_factory.mktemp("pristine"))
    for name in LOG_FILES:
        assert (tuned_experiment / name).is_file(), name
        shutil.copy(tuned_experiment / name, src / name)
    (src / "best").mkdir()
    (src / "best" / "metrics.json").write_text(json.dumps({"accuracy": 0.5, "loss": 1.2, "n": 60}))
    cfg = TrainConfig.from_dict({"blocks": 2, "filters": [8, 16], "dropout": [0.0, 0.0], "dense": 16})
    save_model(src / "best" / "model.pt", build_model(cfg).eval(), cfg, {"source": "test"})
    return src


def _results(project: Path, tmp_path: Path, *names: str) -> Path:
    results = tmp_path / "results"
    for name in names:
        shutil.copytree(project, results / name)
    return results


@pytest.mark.parametrize("kind,args", CASES)
def test_a_damaged_experiment_file_is_one_line_and_changes_nothing(project, tmp_path, monkeypatch, kind, args):
    file, damage, fragments = DAMAGES[kind]
    results = _results(project, tmp_path, "exp", "ok")
    target = results / "exp" / file
    target.write_bytes(damage(target.read_bytes()))
    monkeypatch.chdir(tmp_path)
    before = checksums(results)
    res = runner.invoke(app, [*args, "--results", str(results)])
    assert_one_line_error(res, file.split("/")[-1], *fragments)
    assert checksums(results) == before


def _train_run(folder: Path) -> Path:
    """What `fersearch train` leaves (its own fersearch.json, config.json, history.csv, model.pt)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"blocks": 2}))
    (folder / "fersearch.json").write_text(json.dumps({"command": "fersearch train", "created": "2026-01-01T00:00:00",
                                                       "data": {"path": "x.csv", "counts": {"train": 5}},
                                                       "config": {"blocks": 2}, "result": {"val_acc": 0.5}}))
    (folder / "history.csv").write_text("epoch,train_loss,val_acc\n1,1.0,0.5\n")
    return folder


@pytest.mark.parametrize("what", ["train run", "file", "empty folder"])
@pytest.mark.parametrize("command", [["status"], ["best"], ["best", "--evaluate", "--epochs", "1"], ["compare", "ok"],
                                     ["tune", "--resume", "--name"]])
def test_a_train_run_or_a_file_given_as_an_experiment_is_one_line(project, tmp_path, monkeypatch, what, command):
    results = _results(project, tmp_path, "ok")
    given = results / "x"
    if what == "train run":
        _train_run(given)
    elif what == "file":
        given.write_text("not an experiment\n")
    else:
        given.mkdir()
    monkeypatch.chdir(tmp_path)
    before = checksums(results)
    res = runner.invoke(app, [*command, "x", "--results", str(results)])
    line = assert_one_line_error(res, "x")
    assert "not" in line and "experiment" in line or "no search named" in line, line
    assert checksums(results) == before


# ------------------------------------------------------------------ listing skips a damaged experiment
@pytest.fixture
def listed(project, tmp_path, monkeypatch):
    """results/ with the good search `ok`, a newer one whose fersearch.json is a list, and a train run."""
    results = _results(project, tmp_path, "ok", "zbad")
    (results / "zbad" / "fersearch.json").write_text("[1, 2]")
    os.utime(results / "zbad" / "fersearch.json")
    _train_run(results / "train-20260101-000000")
    monkeypatch.chdir(tmp_path)
    return results


def _note(res) -> None:
    notes = [ln for ln in res.stderr.splitlines() if "zbad" in ln]
    assert len(notes) == 1 and "fersearch.json" in notes[0] and "skipped" in notes[0], res.stderr
    assert "train-2026" not in res.stderr and "Traceback" not in res.output


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["best"]])
def test_listing_skips_a_damaged_experiment_with_a_note(listed, command):
    before = checksums(listed)
    res = runner.invoke(app, [*command, "--results", str(listed)])
    assert res.exit_code == 0, res.output
    assert "ok" in res.stdout and "zbad" not in res.stdout
    _note(res)
    assert checksums(listed) == before


def test_predict_without_a_model_skips_a_damaged_experiment(listed, tmp_path):
    from PIL import Image

    Image.new("L", (48, 48), 128).save(tmp_path / "face.png")
    before = checksums(listed)
    res = runner.invoke(app, ["predict", str(tmp_path / "face.png"), "--no-detect", "--results", str(listed)])
    assert res.exit_code == 0, res.output
    _note(res)
    assert checksums(listed) == before


def test_not_found_still_names_the_others_past_a_damaged_one(listed):
    res = runner.invoke(app, ["status", "nope", "--results", str(listed)])
    assert_one_line_error(res, "'nope' not found", "ok")
    _note(res)
