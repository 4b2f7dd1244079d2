"""Monitoring: Ray dashboard + token auth, custom trial metrics, the live view, `fersearch status`.

The slow tests share one local Ray (started with monitor.ray_init_kwargs, metrics
reported every second) and one tiny real search run inside it, during which a
thread scrapes Ray's Prometheus endpoints.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import threading
import time
import urllib.error
import urllib.request

import pytest
from typer.testing import CliRunner

from fersearch.search import experiment as ex
from fersearch.search import monitor
from fersearch.cli import app

runner = CliRunner()


# ------------------------------------------------------------------ helpers
def http_get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def stub_trial(config: dict):
    """A real ray.tune Trial (stub: no trainable registered, no Ray needed)."""
    from ray.tune.experiment import Trial

    return Trial("run_trial", config=config, stub=True)


def write_experiment(exp, *, statuses, planned=None, max_epochs=3):
    """A hand-written experiment dir that follows the COMMON.md contract."""
    ex.write_meta(exp, {"name": exp.name, "command": "fersearch tune", "created": "2026-01-01T10:00:00+00:00",
                        "space": {"name": "fast", "path": "fast.py"}, "seed": 0, "trials": planned or len(statuses),
                        "max_epochs": max_epochs, "grace_period": 1, "reduction_factor": 2, "scheduler": "asha",
                        "sampler": "tpe", "metric": "val_acc", "mode": "max"})
    rows, history = [], []
    for i, status in enumerate(statuses):
        epochs = {"stopped": 1, "pending": 0, "failed": 2}.get(status, max_epochs if status == "completed" else 2)
        accs = [0.2 + 0.1 * i + 0.01 * e for e in range(1, epochs + 1)]
        if accs:
            accs[0] += 0.05  # the best epoch is not always the last
        rows.append({"trial_id": f"t{i}", "status": status, "epochs": epochs,
                     "best_val_acc": max(accs) if accs else None,
                     "best_epoch": accs.index(max(accs)) + 1 if accs else None,
                     "last_val_acc": accs[-1] if accs else None, "node": "n1", "gpu_ids": "",
                     "error": "RuntimeError: boom" if status == "failed" else "", "config_json": "{}",
                     "config/filters_1": 8 * (i + 1), "config/filters_2": 16, "config/lr": 0.001 * (i + 1)})
        history += [{"trial_id": f"t{i}", "epoch": e + 1, "val_acc": a, "epoch_time_s": 0.5}
                    for e, a in enumerate(accs)]
    ex.write_trials(exp, rows)
    ex.write_history(exp, history)
    return exp


# ------------------------------------------------------------------ Ray start-up and short forms
def test_ray_init_kwargs_loopback_by_default_and_warns_otherwise():
    err = io.StringIO()
    kw = monitor.ray_init_kwargs(stream=err)
    assert kw == {"include_dashboard": True, "dashboard_host": "127.0.0.1"}  # port: Ray picks a free one
    assert err.getvalue() == ""
    kw = monitor.ray_init_kwargs("0.0.0.0", 9000, metrics_export_port=9100, stream=err)
    assert kw["dashboard_port"] == 9000 and kw["_metrics_export_port"] == 9100
    assert len(err.getvalue().strip().splitlines()) == 1 and "0.0.0.0" in err.getvalue()
    assert monitor.is_loopback("localhost") and monitor.is_loopback("::1") and not monitor.is_loopback("10.0.0.5")


def test_token_source_follows_rays_order(monkeypatch, tmp_path):
    monkeypatch.delenv(monitor.TOKEN_ENV, raising=False)
    monkeypatch.delenv(monitor.TOKEN_PATH_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert monitor.token_source() == ("file", tmp_path / ".ray" / "auth_token")
    custom = tmp_path / "tok"
    custom.write_text("secret-1\n")
    monkeypatch.setenv(monitor.TOKEN_PATH_ENV, str(custom))
    assert monitor.token_source() == ("file", custom)
    assert monitor.auth_headers() == {"Authorization": "Bearer secret-1"}
    monkeypatch.setenv(monitor.TOKEN_ENV, "secret-2")
    assert monitor.token_source() == ("env", None) and monitor.read_token() == "secret-2"


def test_dashboard_lines_say_where_the_token_is_and_how_to_reach_a_remote_head(monkeypatch, tmp_path):
    monkeypatch.delenv(monitor.TOKEN_ENV, raising=False)
    monkeypatch.setenv(monitor.TOKEN_PATH_ENV, str(tmp_path / "tok"))
    (tmp_path / "tok").write_text("s3cr3t")
    local = monitor.format_dashboard_lines("http://127.0.0.1:8265", None, auth_on=True)
    assert local[0] == "Ray dashboard (local Ray): http://127.0.0.1:8265"
    assert str(tmp_path / "tok") in local[1] and "Authorization: Bearer" in local[1]
    assert "s3cr3t" not in "\n".join(local) and len(local) == 2
    remote = monitor.format_dashboard_lines("http://127.0.0.1:8265", "10.0.0.7:6379", auth_on=False)
    assert remote[0] == "Ray dashboard (Ray cluster 10.0.0.7:6379): http://127.0.0.1:8265"
    assert "ssh -L 8265:localhost:8265 10.0.0.7" in remote[1] and "authentication is off" in remote[2]
    assert "no dashboard" in monitor.format_dashboard_lines(None, None, auth_on=True)[0]


def test_short_params_groups_blocks_and_orders_like_the_config():
    text = monitor.short_params({"lr": 0.000316, "dense": 512, "filters_2": 64, "filters_1": 32, "dropout_1": 0.25,
                                 "dropout_2": 0.3, "batch_norm": True})
    assert text == "filters=32/64 dropout=.25/.3 batch_norm=on dense=512 lr=3.2e-4"
    assert monitor.short_params({"dropout": [0.0, 0.5], "optimizer": "adamw"}) == "dropout=0/.5 optimizer=adamw"
    assert monitor.short_params({"filters_1": 32, "lr": 0.1}, width=10) == "filters=3…"
    # trials.csv gives a 3-block trial an empty filters_4 when others have 4 blocks
    assert monitor.short_params({"filters_1": 16, "filters_2": 48, "filters_4": None, "dropout_3": float("nan"),
                                 "dropout_1": 0.2}) == "filters=16/48 dropout=.2"
    assert monitor.clock(42) == "0:42" and monitor.clock(3725) == "1:02:05"


def test_end_status_rule_shared_with_the_recorder():
    assert ex.end_status(True, 1, 3) == "stopped"  # ASHA said stop before the budget
    assert ex.end_status(True, 3, 3) == "completed"  # ASHA also says stop at max_t
    assert ex.end_status(False, 2, 3) == "completed"  # the trainer's own early stopping


# ------------------------------------------------------------------ live view on real Trial objects
def drive(view, trials):
    """A recorded sequence of what Tune tells its callbacks: 3 of 4 trials, one stopped by ASHA at
    epoch 1, one run to the end, one failed."""
    a, b, c = trials
    view.setup()
    for t in trials:
        view.on_trial_start(iteration=0, trials=trials, trial=t)
    view.on_trial_result(iteration=1, trials=trials, trial=a, result={"epoch": 1, "val_acc": 0.30, "done": False})
    view.on_trial_result(iteration=1, trials=trials, trial=b, result={"epoch": 1, "val_acc": 0.20, "done": True})
    view.on_trial_complete(iteration=1, trials=trials, trial=b)
    for epoch, acc in ((2, 0.45), (3, 0.40)):
        view.on_trial_result(iteration=2, trials=trials, trial=a,
                             result={"epoch": epoch, "val_acc": acc, "done": epoch == 3})
    view.on_trial_complete(iteration=3, trials=trials, trial=a)
    view.on_trial_error(iteration=3, trials=trials, trial=c)
    view.on_step_end(iteration=3, trials=trials)
    view.on_experiment_end(trials=trials)


def test_live_view_counts_best_and_trial_ends_in_a_log():
    trials = [stub_trial({"filters_1": 32, "lr": 0.001, "blocks": 2}), stub_trial({"filters_1": 8, "lr": 0.01,
              "blocks": 2}), stub_trial({"filters_1": 16, "lr": 0.003, "blocks": 2})]
    out = io.StringIO()
    view = monitor.LiveView(4, out, max_epochs=3, hide=("blocks",), tty=False)
    drive(view, trials)
    text = out.getvalue()
    a, b, c = (t.trial_id for t in trials)
    assert "\r" not in text and "\x1b" not in text  # a log gets plain lines
    assert f"trial {b} stopped by ASHA at epoch 1/3; best val_acc 0.2000 at epoch 1" in text
    assert f"trial {a} completed 3/3 epochs; best val_acc 0.4500 at epoch 2" in text
    assert f"trial {c} FAILED" in text
    last = text.strip().splitlines()[-1]
    assert "search finished: 3 trials (1 completed, 1 stopped by ASHA, 1 FAILED)" in last
    assert f"best val_acc 0.4500 (trial {a} epoch 2: filters=32 lr=1e-3)" in last and "blocks" not in last
    # rate limit: per-epoch results alone print no line (one status line at most per interval)
    assert len(text.strip().splitlines()) <= 6


def test_live_view_rewrites_one_line_on_a_terminal_and_survives_pickling():
    trials = [stub_trial({"filters_1": 32}), stub_trial({"filters_1": 8}), stub_trial({"filters_1": 16})]
    out = io.StringIO()
    view = monitor.LiveView(3, out, max_epochs=3, tty=True)
    drive(view, trials)
    text = out.getvalue()
    assert "\r\x1b[K" in text  # the status line is redrawn in place
    assert text.count("\n") == 4  # 3 trial ends + the final line; status redraws add no lines
    assert "running" in text and "waiting" in text
    # Tune pickles callbacks with the experiment (tuner.pkl) and checkpoints their state
    clone = pickle.loads(pickle.dumps(view))
    assert clone.stream is not out and clone.state.counts() == view.state.counts()
    fresh = monitor.LiveView(3, io.StringIO(), max_epochs=3)
    fresh.set_state(view.get_state())
    assert fresh.state.best()[0] == trials[0].trial_id and fresh.elapsed() >= view.get_state()["elapsed"] - 1


# ------------------------------------------------------------------ status on a hand-written experiment
def test_status_summarises_a_handwritten_running_experiment(in_tmp):
    exp = write_experiment(in_tmp / "results" / "exp1", statuses=["completed", "stopped", "running", "failed"],
                           planned=6)
    st = monitor.experiment_status(exp)
    assert st["state"] == "running"  # unfinished trials, files just written
    assert st["counts"] == {"pending": 0, "running": 1, "completed": 1, "stopped": 1, "failed": 1, "not_started": 2}
    assert st["best"]["trial_id"] == "t3" and st["best"]["params"] == {"filters_1": 32, "filters_2": 16,
                                                                         "lr": 0.004}
    assert [t["trial_id"] for t in st["trials"]] == ["t3", "t2", "t1", "t0"]  # best first
    assert st["epochs_run"] == 3 + 1 + 2 + 2
    assert monitor.experiment_status(exp, now=time.time() + 120)["state"] == "running"  # an epoch may be slow
    assert monitor.experiment_status(exp, now=time.time() + 3600)["state"] == "interrupted"
    # Tune's experiment state, rewritten every few seconds while the driver lives, is a sharper heartbeat
    (exp / "experiment_state-2026-01-01_10-00-00.json").write_text("{}")
    assert monitor.experiment_status(exp, now=time.time() + 10)["state"] == "running"
    stale = monitor.experiment_status(exp, now=time.time() + 120)
    assert stale["state"] == "interrupted"
    assert "fersearch tune --resume --name exp1" in monitor.format_status(stale)

    res = runner.invoke(app, ["status"])  # newest experiment under ./results
    assert res.exit_code == 0, res.output
    assert "1 completed, 1 stopped by ASHA, 1 failed, 1 running, 2 pending" in res.output
    assert "val_acc 0.5600 at epoch 1 of trial t3" in res.output and "t3: RuntimeError: boom" in res.output
    assert "filters=32/16 lr=4e-3" in res.output


def test_status_json_and_missing_experiment(in_tmp):
    write_experiment(in_tmp / "results" / "done", statuses=["completed", "stopped"])
    res = runner.invoke(app, ["status", "done", "--json"])
    assert res.exit_code == 0
    st = json.loads(res.stdout)
    assert st["state"] == "finished" and st["counts"]["completed"] == 1 and st["best"]["trial_id"] == "t1"
    res = runner.invoke(app, ["status", "nope"])
    assert res.exit_code == 1
    assert res.output.startswith("error: experiment 'nope' not found") and len(res.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_status_on_a_real_search(tuned_experiment):
    res = runner.invoke(app, ["status", str(tuned_experiment), "--json"])
    assert res.exit_code == 0, res.output
    st = json.loads(res.stdout)
    trials = ex.read_trials(tuned_experiment)
    assert st["state"] == "finished" and sum(st["counts"][s] for s in ex.STATUSES) == len(trials)
    assert st["best"]["trial_id"] == ex.best_trial(trials)["trial_id"]
    res = runner.invoke(app, ["status", str(tuned_experiment)])
    assert res.exit_code == 0
    assert f"of trial {st['best']['trial_id']}" in res.output and "judged by its best epoch" in res.output
    assert all(t in res.output for t in trials["trial_id"])


# ------------------------------------------------------------------ a real search in a monitored Ray
class MetricsScraper(threading.Thread):
    """Scrapes every node's Prometheus endpoint until stopped; keeps the fersearch samples."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, str, dict, float]] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            for url in monitor.metrics_urls():
                with contextlib.suppress(OSError):
                    text = urllib.request.urlopen(url, timeout=5).read().decode()
                    self.samples += [(time.time(), n, labels, v) for n, labels, v in monitor.parse_prometheus(text)]
            self.halt.wait(0.3)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, fast_space, tiny_data):
    """A local Ray started the way `fersearch tune` starts it, and a tiny real search run in it."""
    import ray

    if ray.is_initialized():
        pytest.skip("another test left Ray running in this process")
    # Metrics are exported every report interval (10 s by default); 1 s keeps the test short.
    ray.init(address="local", num_cpus=2, logging_level="ERROR",
             _system_config={"metrics_report_interval_ms": 1000}, **monitor.ray_init_kwargs())
    scraper = MetricsScraper()
    try:
        from fersearch.search.driver import tune

        lines = monitor.dashboard_lines()
        scraper.start()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result = tune(space=fast_space, data=tiny_data, trials=3, max_epochs=3, grace_period=1,
                          reduction_factor=2, cpus_per_trial=1, gpus=0, seed=0, name="monitored",
                          results=tmp_path_factory.mktemp("results"), log=lambda _m: None)
        time.sleep(1.5)  # one more report interval for the last epoch's values
        scraper.halt.set()
        scraper.join()
        yield {"lines": lines, "url": monitor.dashboard_url(), "result": result, "live": err.getvalue(),
               "samples": scraper.samples}
    finally:
        scraper.halt.set()
        ray.shutdown()


@pytest.mark.slow
def test_dashboard_answers_on_loopback_and_its_api_needs_the_token(monitored):
    url, lines = monitored["url"], monitored["lines"]
    assert url.startswith("http://127.0.0.1:") and lines[0].endswith(url)
    kind, path = monitor.token_source()
    token = monitor.read_token()
    assert token and token not in "\n".join(lines)  # where the token is, never the token
    if kind == "file":
        assert str(path) in lines[1]
    assert http_get(url + "/")[0] == 200
    if monitor.token_auth_enabled():
        status, _ = http_get(url + "/api/v0/actors")
        assert status == 401
        assert http_get(url + "/api/v0/actors", {"Authorization": "Bearer wrong"})[0] == 403


@pytest.mark.slow
def test_state_api_with_the_token_lists_the_trial_actors(monitored):
    status, body = http_get(monitored["url"] + "/api/v0/actors?limit=1000&detail=true", monitor.auth_headers())
    assert status == 200
    actors = json.loads(body)["data"]["result"]["result"]
    trial_actors = [a for a in actors if a.get("repr_name") == "run_trial"]  # Tune's ImplicitFunc running run_trial
    trials = monitored["result"].trials
    assert len(trials) == 3
    # Tune reuses a finished trial's actor for the next trial, so there may be fewer actors than trials
    assert 1 <= len(trial_actors) <= len(trials)
    # Ray names the class by its qualified name on some paths ("wrap_function.<locals>.ImplicitFunc")
    assert all(a["class_name"].split(".")[-1] == "ImplicitFunc" for a in trial_actors)
    assert {a["node_id"] for a in trial_actors} <= set(trials["node"])  # the node trials.csv recorded


@pytest.mark.slow
def test_trial_metrics_are_readable_from_rays_prometheus_endpoint(monitored):
    result = monitored["result"]
    ids = set(result.trials["trial_id"])
    ours = [s for s in monitored["samples"] if s[2].get("experiment") == "monitored"]
    assert ours, "no fersearch_trial_* sample seen on any node's /metrics"
    names = {name for _, name, _, _ in ours}
    assert names == {"ray_fersearch_trial_epoch", "ray_fersearch_trial_val_acc", "ray_fersearch_trial_best_val_acc"}
    assert {labels["trial_id"] for _, _, labels, _ in ours} <= ids
    history = ex.read_history(result.path)
    for _, name, labels, value in ours:
        mine = history[history["trial_id"] == labels["trial_id"]]
        if name == "ray_fersearch_trial_epoch":
            assert value in set(mine["epoch"])
        elif name == "ray_fersearch_trial_val_acc":  # float32 on the wire
            assert min(abs(mine["val_acc"] - value)) < 1e-6


@pytest.mark.slow
def test_live_view_of_a_real_search(monitored):
    live, trials = monitored["live"], monitored["result"].trials
    assert "search finished: 3 trials" in live
    final = [ln for ln in live.splitlines() if "search finished" in ln][-1]
    for status, label in (("completed", "completed"), ("stopped", "stopped by ASHA"), ("failed", "FAILED")):
        n = int((trials["status"] == status).sum())
        assert (f"{n} {label}" in final) == (n > 0)  # the same verdict as trials.csv
    for row in trials.itertuples():
        how = "stopped by ASHA" if row.status == "stopped" else "completed"
        assert f"trial {row.trial_id} {how}" in live
    best = ex.best_trial(trials)
    assert f"best val_acc {best['best_val_acc']:.4f} (trial {best['trial_id']}" in final
