"""The live view (search/live.py): what a search prints while it runs, on a terminal and in a log.

Driven through the recorder callback (state.make_recorder) with real stub ray.tune
Trial objects and a recorded sequence of Tune's events; no Ray cluster.
"""

from __future__ import annotations

import io
import re

from fersearch.config import TrainConfig
from fersearch.results.state import TrialState
from fersearch.search.live import LiveView, status_line
from fersearch.search.recorder import make_recorder

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def stub_trial(config: dict):
    from ray.tune.experiment import Trial

    return Trial("run_trial", config=config, stub=True)


def three_trials():
    return [stub_trial({"filters_1": 32, "lr": 0.001, "blocks": 2}),
            stub_trial({"filters_1": 8, "lr": 0.01, "blocks": 2}),
            stub_trial({"filters_1": 16, "lr": 0.003, "blocks": 2})]


def drive(rec, trials):
    """What Tune tells its callbacks: 3 of 4 trials, one stopped by ASHA at epoch 1, one run
    to the end, one failed."""
    a, b, c = trials
    rec.setup()
    for t in trials:
        rec.on_trial_start(iteration=0, trials=trials, trial=t)
    rec.on_trial_result(iteration=1, trials=trials, trial=a, result={"epoch": 1, "val_acc": 0.30, "done": False})
    rec.on_trial_result(iteration=1, trials=trials, trial=b, result={"epoch": 1, "val_acc": 0.20, "done": True})
    rec.on_trial_complete(iteration=1, trials=trials, trial=b)
    for epoch, acc in ((2, 0.45), (3, 0.40)):
        rec.on_trial_result(iteration=2, trials=trials, trial=a,
                            result={"epoch": epoch, "val_acc": acc, "done": epoch == 3})
    rec.on_step_end(iteration=2, trials=trials)
    rec.on_trial_complete(iteration=3, trials=trials, trial=a)
    rec.on_trial_error(iteration=3, trials=trials, trial=c)
    rec.on_step_end(iteration=3, trials=trials)
    rec.on_experiment_end(trials=trials)


def recorder(tmp_path, **kw):
    return make_recorder(tmp_path, total_trials=4, max_epochs=3, to_config=TrainConfig.from_dict, hide=("blocks",),
                         **kw)


def test_a_log_gets_plain_lines_for_trial_ends_and_a_final_line(tmp_path):
    trials, out = three_trials(), io.StringIO()
    drive(recorder(tmp_path, live=True, stream=out, tty=False), trials)
    text = out.getvalue()
    a, b, c = (t.trial_id for t in trials)
    assert "\r" not in text and "\x1b" not in text  # a log gets plain lines
    lines = text.strip().splitlines()
    assert re.fullmatch(r"\[0:00\] 0/4 ended, 1 running, 3 waiting", lines[0])  # the first status line
    assert f"] trial {b} stopped by ASHA at epoch 1/3; best val_acc 0.2000 at epoch 1" in text
    assert f"] trial {a} completed 3/3 epochs; best val_acc 0.4500 at epoch 2" in text
    assert f"] trial {c} FAILED at epoch 0/3: trial failed" in text
    assert lines[-1].endswith(f"search finished: 3 trials (1 completed, 1 stopped by ASHA, 1 FAILED) | best val_acc "
                              f"0.4500 (trial {a} epoch 2: filters=32 lr=1e-3)")  # no constant (blocks) shown
    # rate limit: per-epoch results print no line; status lines at most every 10 s
    assert len(lines) == 5



def test_a_logs_status_lines_name_the_best_trial_by_id_and_value_not_its_config(tmp_path):
    """Every 10 s a log gets a status line: with a best so far, its id, value and epoch, not its whole
    configuration (about 300 characters on `wide`, on every line). The final line still gives it once."""
    state = TrialState(total=4, max_epochs=3)
    state.add("t1", "{}", {"filters_1": 32, "lr": 0.001, "dense_dropout": 0.5, "erasing": 0.25})
    state.start("t1")
    state.result("t1", {"epoch": 1, "val_acc": 0.4})
    out = io.StringIO()
    view = LiveView(out, tty=False, interval=0.0)
    view.update(state, 12.0)
    line = out.getvalue().strip()
    assert line == "[0:12] 0/4 ended, 1 running, 3 waiting | best val_acc 0.4000 (trial t1 epoch 1)", line
    view.close(state, 20.0)
    assert out.getvalue().strip().splitlines()[-1].endswith("(trial t1 epoch 1: filters=32 dense_dropout=.5 lr=1e-3 "
                                                            "erasing=.25)")


def test_a_terminal_gets_a_live_table_redrawn_in_place(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")  # rich's width of a stream that is no real terminal
    trials, out = three_trials(), io.StringIO()
    drive(recorder(tmp_path, live=True, stream=out, tty=True), trials)
    raw = out.getvalue()
    assert "\x1b[?25l" in raw and "\x1b[?25h" in raw  # rich hides the cursor while the table is up, then shows it
    assert "\x1b[2K" in raw  # the table is erased and redrawn in place
    text = ANSI.sub("", raw)
    a, b, c = (t.trial_id for t in trials)
    assert "hyperparameters" in text and "val_acc" in text and "@epoch" in text
    # the best trial heads the table, running trials follow
    assert re.search(rf"best +{a} +running +2/3 +0\.4500 +0\.4500 +2 +filters=32 lr=1e-3", text)
    assert re.search(rf"best +{a} +completed +3/3 +0\.4000 +0\.4500 +2 +filters=32 lr=1e-3", text)
    assert re.search(rf"{c} +running +0/3 +- +- +- +filters=16 lr=3e-3", text)
    assert f"trial {b} stopped by ASHA at epoch 1/3" in text and f"trial {c} FAILED" in text
    assert all(len(ln) <= 100 for ln in text.splitlines() if "search finished" not in ln)


def test_on_a_narrow_terminal_only_the_hyperparameters_are_cut(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    trials, out = three_trials(), io.StringIO()
    drive(recorder(tmp_path, live=True, stream=out, tty=True), trials)
    text = ANSI.sub("", out.getvalue())
    a = trials[0].trial_id
    row = re.search(rf"best +{a} +completed +3/3 +0\.4000 +0\.4500 +2 +filters=32 lr=(\S*)\n", text)
    assert row and row.group(1) != "1e-3" and len(row.group(0)) <= 81
    assert text.rstrip().endswith("search finished: 3 trials (1 completed, 1 stopped by ASHA, 1 FAILED) | "
                                  f"best val_acc 0.4500 (trial {a} epoch 2: filters=32 lr=1e-3)")


def test_quiet_prints_nothing(tmp_path, capsys):
    drive(recorder(tmp_path, live=False), three_trials())
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "trials.csv").is_file()  # the files are written all the same


def test_status_line_fits_the_width_and_a_closed_stream_is_harmless(tmp_path):
    state = TrialState(total=2, max_epochs=5)
    state.add("t1", "{}", {"filters_1": 64, "filters_2": 128, "lr": 0.0003, "dropout_1": 0.25})
    state.start("t1")
    state.result("t1", {"epoch": 2, "val_acc": 0.5})
    full = status_line(state, 75)
    assert full == "[1:15] 0/2 ended, 1 running, 1 waiting | best val_acc 0.5000 (trial t1 epoch 2: " \
                   "filters=64/128 dropout=.25 lr=3e-4)"
    assert status_line(state, 75, width=100) == full[:98] + "…)"
    assert status_line(state, 75, width=70) == full[:70]  # no room for the parameters: cut
    closed = io.StringIO()
    closed.close()
    view = LiveView(closed, tty=False)
    view.update(state, 1.0, line="a line")  # a closed stream must never break the search
    view.close(state, 2.0)


def test_short_params_groups_blocks_and_orders_like_the_config():
    state = TrialState()
    params = {"lr": 0.000316, "dense": 512, "filters_2": 64, "filters_1": 32, "dropout_1": 0.25, "dropout_2": 0.3,
              "batch_norm": True}
    state.add("t", "{}", params)
    assert state.short_params("t") == "filters=32/64 dropout=.25/.3 batch_norm=on dense=512 lr=3.2e-4"
    assert list(state.params("t")) == ["filters_1", "filters_2", "dropout_1", "dropout_2", "batch_norm", "dense", "lr"]
    assert state.short_params("t", width=10) == "filters=3…"
    # trials.csv gives a 3-block trial an empty filters_4 when others have 4 blocks
    state.add("u", "{}", {"filters_1": 16, "filters_2": 48, "filters_4": None, "dropout_3": float("nan"),
                          "dropout_1": 0.2, "optimizer": "adamw"})
    assert state.short_params("u") == "filters=16/48 dropout=.2 optimizer=adamw"
