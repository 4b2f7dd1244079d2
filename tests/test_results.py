"""The results package: the experiment record (load/save, old formats, damaged files), the
scheduler's Decision written and read back, and the one rung rule against Ray's ASHA."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, write_meta
from fersearch.cli import app
from fersearch.errors import RecordError
from fersearch.results.decisions import DECISIONS_FILE, Decision, DecisionLog, read_decisions
from fersearch.results.record import META_FILE, ExperimentRecord, Noise, load_record, save_record
from fersearch.results.rungs import rung_epochs, search_rungs

runner = CliRunner()

FULL = {
    "name": "demo", "command": "fersearch tune --trials 4", "created": "2026-12-01T10:00:00+00:00",
    "data": {"path": "data/x.csv", "format": "fer2013.csv", "sha256": "ab" * 32, "n": 600,
             "counts": {"train": {"Happy": 300}, "val": {"Happy": 40, "Sad": 20, "unlabeled": 3}}, "synthetic": True,
             "notes": ["a note"]},
    "noise": {"n_val": 60, "majority": 2 / 3, "z": 2.0},
    "space": {"path": "search_spaces/fast.py", "name": "fast", "source": "def space(trial): ...", "sha256": "cd"},
    "space_params": ["lr"], "space_constants": ["epochs"],
    "seed": 0, "trials": 4, "max_epochs": 30, "grace_period": 4, "reduction_factor": 1.5, "scheduler": "asha",
    "sampler": "tpe", "objectives": ["val_acc"], "metric": "val_acc", "mode": "max",
    "study": {"file": "study.journal", "name": "demo", "metric": "best_val_acc"},
    "options": {"trials": 4, "checkpoint_every": 7, "space": "fast"}, "resources": {"concurrency": 2},
    "storage": "/tmp/results", "host": "box", "base_config": {"lr": 0.001}, "versions": {"ray": "2.60.0"},
    "resumed": [{"at": "2026-12-01T11:00:00+00:00", "command": "fersearch tune --resume", "options": {},
                 "resources": {"concurrency": 1}, "ended": "2026-12-01T11:05:00+00:00", "search_s": 300.0}],
    "mlflow": {"uri": "sqlite:///x.db", "experiment_id": "1", "parent_run_id": "p"},
    "ended": "2026-12-01T10:30:00+00:00", "search_s": 1800.0,
    "a_key_from_the_future": {"kept": True},
}


# ------------------------------------------------------------------ the record
def test_the_record_loads_every_block_typed_and_saves_the_same_json(tmp_path):
    write_meta(tmp_path, FULL)
    record = load_record(tmp_path)
    s = record.settings
    assert s is not None and (s.grace_period, s.reduction_factor, s.checkpoint_every) == (4, 1.5, 7)
    assert record.data.labelled("val") == {"Happy": 40, "Sad": 20} and record.data.notes == ("a note",)
    assert record.noise == Noise(60, 2 / 3, 2.0) and record.space.label == "fast"
    assert record.mlflow is not None and record.mlflow.parent_run_id == "p"
    assert record.search_seconds == [1800.0, 300.0] and not record.running and not record.lacks
    save_record(tmp_path, record)
    assert json.loads((tmp_path / META_FILE).read_text()) == FULL  # nothing lost, nothing added
    assert load_record(tmp_path) == record


def test_an_old_folder_reads_with_its_defaults_and_cannot_resume_without_its_settings(tmp_path):
    old = {k: v for k, v in FULL.items()
           if k not in ("noise", "objectives", "metric", "mode", "resumed", "mlflow", "ended", "search_s", "options",
                        "grace_period")}
    write_meta(tmp_path, old)
    record = load_record(tmp_path)
    s = record.settings
    assert s is not None and s.objectives == ("val_acc",) and (s.metric, s.mode) == ("val_acc", "max")
    assert s.grace_period == 5 and s.checkpoint_every == 5  # a sixth of 30 epochs; the default checkpoint interval
    assert record.noise == Noise(60, 40 / 60, 2.0)  # from the data block's validation counts
    assert record.resumes == () and record.mlflow is None and record.running
    assert record.lacks == ("grace_period",)
    with pytest.raises(RecordError, match="lacks a valid grace_period setting"):
        record.require_settings(tmp_path)
    write_meta(tmp_path, {"name": "x", "created": "2026"})  # hand-made: no settings at all
    bare = load_record(tmp_path)
    assert bare.settings is None and bare.planned_trials is None and search_rungs(bare) == []
    assert bare.noise == Noise(0, None, 2.0)


@pytest.mark.parametrize("content, fragment", [
    ("[1, 2]", "must hold a JSON object, not a list"),
    ("{not json", "is not valid JSON"),
    (json.dumps({**FULL, "max_epochs": "30"}), "max_epochs must be a whole number >= 1, not text"),
    (json.dumps({**FULL, "data": {"counts": {"val": {"Happy": "many"}}}}), "data.counts.val must be"),
    (json.dumps({**FULL, "resumed": [3]}), "resumed[0] must be a JSON object"),
    (json.dumps({**FULL, "mlflow": {"uri": "x"}}), "mlflow must be a JSON object with uri"),
    (json.dumps({**FULL, "space": "fast"}), "space must be a JSON object, not text"),
])
def test_a_damaged_record_is_one_line_naming_the_file_and_what_is_wrong(tmp_path, content, fragment):
    exp = tmp_path / "results" / "bad"
    exp.mkdir(parents=True)
    (exp / META_FILE).write_text(content)
    with pytest.raises(RecordError, match="fersearch.json") as e:
        load_record(exp)
    assert fragment in str(e.value) and "\n" not in str(e.value)
    result = runner.invoke(app, ["status", "bad", "--results", str(tmp_path / "results")])
    assert_one_line_error(result, "fersearch.json", fragment)


def test_a_record_made_in_memory_has_the_layout_of_a_new_search():
    record = ExperimentRecord(name="new")
    out = record.to_json()
    assert out["name"] == "new" and "resumed" not in out and "mlflow" not in out and "seed" not in out


# ------------------------------------------------------------------ decisions
def test_a_decision_is_written_and_read_back_equal_and_old_logs_read_too(tmp_path):
    log = DecisionLog(tmp_path / DECISIONS_FILE)
    paired = Decision(trial_id="a", rung=13.5, iteration=14, compared=3, value=0.5, cutoff=0.6, margin=0.04,
                      action="STOP", reason="stop", loss=1.2, loss_cutoff=1.1, loss_margin=0.05,
                      asha_would_stop=True, paired=True, ref_trial="b", unpaired_reason="close",
                      unpaired_margin=0.12, per_image={"val_correct": "3:oA=="})
    log.append(paired)
    log.append(Decision(trial_id="c", rung=4, iteration=4, compared=0, value=None, cutoff=None, margin=None,
                        action="CONTINUE", reason="no value", unpaired_reason="no value"))
    with open(log.path, "a") as f:  # an older version's line (no paired keys), then a torn one
        f.write(json.dumps({"trial_id": "d", "rung": 4, "iteration": 4, "compared": 2, "value": 0.3, "cutoff": 0.3,
                            "margin": 0.1, "action": "CONTINUE", "reason": "above"}) + '\n{"trial_id": "e", "ru')
    back = read_decisions(tmp_path)
    assert back[:2] == list(log)
    assert back[0].rung_epoch == 14 and back[0].stopped and back[0].images is not None
    old = back[2]
    assert (old.unpaired_reason, old.unpaired_margin, old.paired, old.metric) == ("above", 0.1, False, "val_acc")
    assert len(back) == 3
    line = json.loads((tmp_path / DECISIONS_FILE).read_text().splitlines()[0])
    assert line["val_correct"] == "3:oA==" and line["rung"] == 13.5 and "per_image" not in line


# ------------------------------------------------------------------ the rung rule
@pytest.mark.parametrize("max_epochs, grace, rf", [
    (30, 1, 3), (30, 5, 3), (3, 1, 2), (4, 1, 2), (10, 2, 4), (27, 3, 3), (30, 4, 1.5), (30, 1, 1.7), (50, 2, 2.5),
    (100, 3, 1.1), (12, 1, 1.9),
])
def test_the_rung_epochs_are_where_rays_asha_decides(max_epochs, grace, rf):
    """Ray decides at the first reported epoch at or past each milestone below max_t."""
    from ray.tune.schedulers import ASHAScheduler

    milestones = [m for m, _ in ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=grace,
                                              reduction_factor=rf, metric="val_acc", mode="max")._brackets[0]._rungs]
    expected = sorted({math.ceil(m) for m in milestones if math.ceil(m) < max_epochs})
    assert rung_epochs(max_epochs, grace, rf) == expected
    if rf == 1.5:
        assert expected == [4, 6, 9, 14, 21]


def test_every_consumer_of_the_rungs_agrees_for_a_float_factor(tmp_path):
    """--reduction-factor 1.5 is accepted: the checkpoint schedule, status, the report and the scheduler's
    decisions all place the rungs where Ray decides (one function)."""
    from fersearch.report.diagnose import held_rungs
    from fersearch.results.status import experiment_status, format_status
    from fersearch.search.checkpoints import schedule_for

    write_meta(tmp_path, FULL)  # grace 4, reduction factor 1.5, 30 epochs
    record = load_record(tmp_path)
    rungs = [4, 6, 9, 14, 21]
    assert search_rungs(record) == rungs
    assert set(rungs) <= schedule_for(record.settings)  # a checkpoint at each rung
    st = experiment_status(tmp_path)
    assert st["rungs"] == rungs and "rungs at epochs 4, 6, 9, 14, 21" in format_status(st)
    held = [Decision(trial_id=t, rung=13.5, iteration=14, compared=3, value=0.3, cutoff=0.31, margin=0.05,
                     action="CONTINUE", reason="close", asha_would_stop=True) for t in "ab"]
    d = held_rungs(held, rungs[0])
    assert d is not None and "at epoch 14" in d.message and "past the first rung (epoch 4)" in d.message
