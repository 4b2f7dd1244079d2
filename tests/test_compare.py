"""`fersearch compare`: a real search against copies of it changed as another search would differ."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import assert_one_line_error, copy_experiment
from fersearch.cli import app


@pytest.fixture
def searches(tuned_experiment, tmp_path):
    """results/ holding the real search `tuned` and `other`, a copy of it recorded as a random-sampler search."""
    results = tmp_path / "results"
    copy_experiment(tuned_experiment, results)
    other = results / "other"
    copy_experiment(tuned_experiment, tmp_path / "x").rename(other)
    meta = json.loads((other / "fersearch.json").read_text())
    meta.update(name="other", sampler="random")
    (other / "fersearch.json").write_text(json.dumps(meta))
    return results


def test_compare_tables_each_search_and_plots_best_so_far_against_epochs(searches, tmp_path):
    out = tmp_path / "cmp.png"
    res = CliRunner().invoke(app, ["compare", "tuned", "other", "--results", str(searches), "--out", str(out)])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["search", "data", "space", "sampler"]
    trials = pd.read_csv(searches / "tuned" / "trials.csv")
    history = pd.read_csv(searches / "tuned" / "history.csv")
    tuned = next(ln for ln in lines if ln.startswith("tuned "))
    assert f"{trials.best_val_acc.max():.4f}" in tuned and f" {len(history)} " in tuned and "mix" in tuned
    assert "random" in next(ln for ln in lines if ln.startswith("other "))
    assert "warning" not in res.stderr  # same data, same split
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"

    res = CliRunner().invoke(app, ["compare", "tuned", "other", "--results", str(searches), "--json"])
    got = json.loads(res.stdout)
    row = got["searches"][0]
    assert row["epochs_trained"] == len(history) and row["trials"] == len(trials) and not row["running"]
    assert row["curve"][-1] == [len(history), pytest.approx(history.val_acc.max())]  # best so far ends at the best
    ys = [y for _, y in row["curve"]]
    assert ys == sorted(ys) and row["wall_s"] > 0 and row["test_acc"] is None


def test_compare_warns_on_other_data_and_compares_a_running_search(searches):
    other = searches / "other"
    meta = json.loads((other / "fersearch.json").read_text())
    meta["data"]["sha256"] = "0" * 64
    meta.pop("ended", None)  # a search in progress: no end recorded, a trial still running
    (other / "fersearch.json").write_text(json.dumps(meta))
    trials = pd.read_csv(other / "trials.csv")
    trials.loc[0, "status"] = "running"
    trials.to_csv(other / "trials.csv", index=False)
    res = CliRunner().invoke(app, ["compare", "tuned", "other", "--results", str(searches), "--json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.stdout)
    assert any("different data" in w for w in got["warnings"])
    assert [r["running"] for r in got["searches"]] == [False, True]


def test_compare_of_one_search_or_of_a_folder_that_is_no_search_is_one_line(searches, tmp_path):
    assert_one_line_error(CliRunner().invoke(app, ["compare", "tuned", "--results", str(searches)]),
                          "at least two searches")
    (tmp_path / "plain").mkdir()
    assert_one_line_error(CliRunner().invoke(app, ["compare", "tuned", str(tmp_path / "plain"), "--results",
                                                   str(searches)]), "not a fersearch experiment")
