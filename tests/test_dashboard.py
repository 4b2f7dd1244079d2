"""The Ray dashboard, its token, and the trials' custom metrics (search/dashboard.py, search/gauges.py).

The slow tests share one local Ray (started with dashboard.ray_init_kwargs, metrics
reported every second) and one tiny real search run inside it, during which a
thread scrapes Ray's Prometheus endpoints.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

from fersearch.results import experiment as ex
from fersearch.search import dashboard, gauges


# ------------------------------------------------------------------ helpers (HTTP clients of the dashboard)
def read_token() -> str | None:
    """The dashboard token itself, where dashboard.token_source says it is."""
    kind, path = dashboard.token_source()
    if kind == "env":
        return os.environ[dashboard.TOKEN_ENV].strip()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def auth_headers(token: str | None = None) -> dict[str, str]:
    token = token if token is not None else read_token()
    return {dashboard.AUTH_HEADER: f"Bearer {token}"} if token else {}


def http_get(url: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ------------------------------------------------------------------ Ray start-up, token, lines
def test_ray_init_kwargs_loopback_by_default_and_warns_otherwise():
    err = io.StringIO()
    kw = dashboard.ray_init_kwargs(stream=err)
    assert kw == {"include_dashboard": True, "dashboard_host": "127.0.0.1"}  # port: Ray picks a free one
    assert err.getvalue() == ""
    kw = dashboard.ray_init_kwargs("0.0.0.0", 9000, metrics_export_port=9100, stream=err)
    assert kw["dashboard_port"] == 9000 and kw["_metrics_export_port"] == 9100
    assert len(err.getvalue().strip().splitlines()) == 1 and "0.0.0.0" in err.getvalue()
    assert dashboard.is_loopback("localhost") and dashboard.is_loopback("::1")
    assert not dashboard.is_loopback("10.0.0.5") and not dashboard.is_loopback("head-node")


def test_token_source_follows_rays_order(monkeypatch, tmp_path):
    monkeypatch.delenv(dashboard.TOKEN_ENV, raising=False)
    monkeypatch.delenv(dashboard.TOKEN_PATH_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert dashboard.token_source() == ("file", tmp_path / ".ray" / "auth_token")
    custom = tmp_path / "tok"
    custom.write_text("secret-1\n")
    monkeypatch.setenv(dashboard.TOKEN_PATH_ENV, str(custom))
    assert dashboard.token_source() == ("file", custom)
    assert auth_headers() == {"Authorization": "Bearer secret-1"}
    monkeypatch.setenv(dashboard.TOKEN_ENV, "secret-2")
    assert dashboard.token_source() == ("env", None) and read_token() == "secret-2"


def test_dashboard_lines_say_where_the_token_is_and_how_to_reach_a_remote_head(monkeypatch, tmp_path):
    monkeypatch.delenv(dashboard.TOKEN_ENV, raising=False)
    monkeypatch.setenv(dashboard.TOKEN_PATH_ENV, str(tmp_path / "tok"))
    (tmp_path / "tok").write_text("s3cr3t")
    local = dashboard.format_dashboard_lines("http://127.0.0.1:8265", None, auth_on=True)
    assert local == ["Ray dashboard (local Ray): http://127.0.0.1:8265",
                     f"  sign in with the token in {tmp_path / 'tok'}; API clients send "
                     f"'Authorization: Bearer $(cat {tmp_path / 'tok'})'"]
    remote = dashboard.format_dashboard_lines("http://127.0.0.1:8265", "10.0.0.7:6379", auth_on=False)
    assert remote[0] == "Ray dashboard (Ray cluster 10.0.0.7:6379): http://127.0.0.1:8265"
    assert "ssh -L 8265:localhost:8265 10.0.0.7" in remote[1] and "authentication is off" in remote[2]
    assert dashboard.format_dashboard_lines(None, None, auth_on=True) == [
        "local Ray: no dashboard (install ray[default] to get one)"]
    monkeypatch.setenv(dashboard.TOKEN_ENV, "s3cr3t")
    env = dashboard.format_dashboard_lines("http://127.0.0.1:8265", None, auth_on=True)
    assert "$RAY_AUTH_TOKEN" in env[1] and "s3cr3t" not in "\n".join(env)


def test_parse_samples_keeps_only_fersearch_gauges():
    page = (
        "# HELP ray_fersearch_trial_val_acc Validation accuracy\n"
        "# TYPE ray_fersearch_trial_val_acc gauge\n"
        'ray_fersearch_trial_val_acc{Component="core_worker",experiment="a,b \\"x\\"",trial_id="t1"} 0.5\n'
        "# HELP ray_node_cpu_count CPUs\n# TYPE ray_node_cpu_count gauge\n"
        'ray_node_cpu_count{ip="127.0.0.1"} 2.0\n'
        'ray_fersearch_trial_epoch{experiment="e",trial_id="t2"} 3\n'
    )
    assert gauges.parse_samples(page) == [
        ("ray_fersearch_trial_val_acc", {"Component": "core_worker", "experiment": 'a,b "x"', "trial_id": "t1"}, 0.5),
        ("ray_fersearch_trial_epoch", {"experiment": "e", "trial_id": "t2"}, 3.0)]


# ------------------------------------------------------------------ a real search in a monitored Ray
class MetricsScraper(threading.Thread):
    """Scrapes every node's Prometheus endpoint until stopped; keeps the fersearch samples."""

    def __init__(self):
        super().__init__(daemon=True)
        self.samples: list[tuple[float, str, dict, float]] = []
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            with contextlib.suppress(OSError):
                self.samples += [(time.time(), n, labels, v) for n, labels, v in gauges.trial_samples()]
            self.halt.wait(0.3)


@pytest.fixture(scope="module")
def monitored(tmp_path_factory, fast_space, tiny_data):
    """A local Ray started the way `fersearch tune` starts it, and a tiny real search run in it."""
    import ray

    if ray.is_initialized():  # another test's Ray: this one must be started as `fersearch tune` starts it
        ray.shutdown()
    # Metrics are exported every report interval (10 s by default); 1 s keeps the test short.
    ray.init(address="local", num_cpus=2, logging_level="ERROR",
             _system_config={"metrics_report_interval_ms": 1000}, **dashboard.ray_init_kwargs())
    scraper = MetricsScraper()
    try:
        from fersearch.search.driver import tune

        lines = dashboard.dashboard_lines()
        scraper.start()
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            result = tune(space=fast_space, data=tiny_data, trials=3, max_epochs=3, grace_period=1,
                          reduction_factor=2, cpus_per_trial=1, gpus=0, seed=0, name="monitored",
                          results=tmp_path_factory.mktemp("results"), log=lambda _m: None)
        time.sleep(1.5)  # one more report interval for the last epoch's values
        scraper.halt.set()
        scraper.join()
        yield {"lines": lines, "url": dashboard.dashboard_url(), "result": result, "live": err.getvalue(),
               "samples": scraper.samples}
    finally:
        scraper.halt.set()
        ray.shutdown()


@pytest.mark.slow
def test_dashboard_answers_on_loopback_and_its_api_needs_the_token(monitored):
    url, lines = monitored["url"], monitored["lines"]
    assert url.startswith("http://127.0.0.1:") and lines[0].endswith(url)
    kind, path = dashboard.token_source()
    token = read_token()
    assert token and token not in "\n".join(lines)  # where the token is, never the token
    if kind == "file":
        assert str(path) in lines[1]
    assert http_get(url + "/")[0] == 200
    if dashboard.token_auth_enabled():
        assert http_get(url + "/api/v0/actors")[0] == 401
        assert http_get(url + "/api/v0/actors", {"Authorization": "Bearer wrong"})[0] == 403


@pytest.mark.slow
def test_state_api_with_the_token_lists_the_trial_actors(monitored):
    status, body = http_get(monitored["url"] + "/api/v0/actors?limit=1000&detail=true", auth_headers())
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
    assert "\x1b" not in live  # stderr was not a terminal: plain lines
    final = [ln for ln in live.splitlines() if "search finished" in ln]
    assert len(final) == 1 and "search finished: 3 trials" in final[0]
    for status, label in (("completed", "completed"), ("stopped", "stopped by ASHA"), ("failed", "FAILED")):
        n = int((trials["status"] == status).sum())
        assert (f"{n} {label}" in final[0]) == (n > 0)  # the same verdict as trials.csv
    for row in trials.itertuples():
        how = "stopped by ASHA" if row.status == "stopped" else "completed"
        assert f"trial {row.trial_id} {how}" in live
    best = ex.best_trial(trials)
    assert f"best val_acc {best['best_val_acc']:.4f} (trial {best['trial_id']}" in final[0]
