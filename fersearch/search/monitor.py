"""Watching a search: the Ray dashboard, custom trial metrics, a live terminal view, `fersearch status`.

    ray.init(address="local", **ray_init_kwargs())     # dashboard on 127.0.0.1, metrics exported
    for line in dashboard_lines(): print(line)          # URL + how to authenticate (token file path)
    TrialGauges(experiment, trial_id).update(metrics)   # inside a trial, every epoch
    tune.RunConfig(callbacks=[LiveView(trials, max_epochs=30)], verbose=0)
    experiment_status(exp_dir)                          # a running or finished search, from its files

Authentication: Ray 2.60 turns on token authentication for a new local cluster.
The token lives in $RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else
~/.ray/auth_token (Ray creates it on first use). HTTP clients send
`Authorization: Bearer <token>`; the dashboard's login page takes the token once and
keeps it in a cookie. We print where the token is, never the token.

Metrics: every Ray node exports Prometheus metrics at
http://<node ip>:<MetricsExportPort>/metrics (ray.nodes() lists the port). Custom
`ray.util.metrics` values appear there with a `ray_` prefix, about one report
interval (metrics_report_interval_ms, 10 s by default) after they are set, and
disappear about two intervals after the reporting trial ends.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import os
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping, TextIO

METRIC_PREFIX = "fersearch_trial_"
GAUGES = {  # gauge name -> (metrics key, description)
    "fersearch_trial_epoch": ("epoch", "Epochs a fersearch trial has finished"),
    "fersearch_trial_val_acc": ("val_acc", "Validation accuracy of a fersearch trial's latest epoch"),
    "fersearch_trial_best_val_acc": ("best_val_acc", "Best validation accuracy of a fersearch trial so far"),
}
TAG_KEYS = ("experiment", "trial_id")
PROMETHEUS_PREFIX = "ray_"  # Ray's exporter puts custom metrics in its own namespace
TOKEN_ENV, TOKEN_PATH_ENV = "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"
AUTH_HEADER = "Authorization"  # value: "Bearer <token>" (Ray also accepts X-Ray-Authorization)


# ------------------------------------------------------------------ Ray start-up
def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.x, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_init_kwargs(dashboard_host: str = "127.0.0.1", dashboard_port: int | None = None, *,
                    metrics_export_port: int | None = None, stream: TextIO | None = None) -> dict[str, Any]:
    """Keyword arguments for `ray.init(address="local", ...)`: the dashboard on, bound to
    `dashboard_host`, and node metrics exported for Prometheus.

    dashboard_port None lets Ray pick (8265, or the next free port: parallel tests
    and searches do not collide). Ray always exports metrics; metrics_export_port
    None lets it pick a free port (ray.nodes() tells which). A host other than a
    loopback address gets a one-line warning on `stream` (stderr).
    """
    if not is_loopback(dashboard_host):
        print(f"warning: the Ray dashboard listens on {dashboard_host}, not only 127.0.0.1: anyone who can reach "
              f"this machine can open it; keep Ray's token auth on and the port firewalled",
              file=stream or sys.stderr)
    kwargs: dict[str, Any] = {"include_dashboard": True, "dashboard_host": dashboard_host}
    if dashboard_port is not None:
        kwargs["dashboard_port"] = int(dashboard_port)
    if metrics_export_port is not None:
        kwargs["_metrics_export_port"] = int(metrics_export_port)
    return kwargs


# ------------------------------------------------------------------ dashboard + auth
def dashboard_url() -> str | None:
    """The running Ray's dashboard URL (http://host:port), or None without a dashboard.

    Ray's public route is the context `ray.init()` returns (`.dashboard_url`); after
    the fact the same value is the connected node's webui_url (for `--address`, the
    cluster head's, read from the cluster's GCS).
    """
    import ray
    from ray._private import worker

    if not ray.is_initialized():
        return None
    url = os.environ.get("RAY_OVERRIDE_DASHBOARD_URL") or getattr(worker._global_node, "webui_url", None)
    if not url:
        return None
    return url if "://" in url else f"http://{url}"


def token_auth_enabled() -> bool:
    """Whether the connected Ray cluster requires the token (Ray's own switch)."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        return bool(is_token_auth_enabled())
    except Exception:  # private module moved: assume on, which only costs a line of advice
        return True


def token_source() -> tuple[str, Path | None]:
    """Where Ray reads the token from, in Ray's own order: ('env', None) for $RAY_AUTH_TOKEN,
    else ('file', path) for $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token."""
    if os.environ.get(TOKEN_ENV):
        return "env", None
    path = os.environ.get(TOKEN_PATH_ENV)
    return "file", Path(path).expanduser() if path else Path.home() / ".ray" / "auth_token"


def read_token() -> str | None:
    """The token itself (for HTTP clients such as the tests); None if there is none."""
    kind, path = token_source()
    if kind == "env":
        return os.environ[TOKEN_ENV].strip()
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def auth_headers(token: str | None = None) -> dict[str, str]:
    """HTTP headers that authenticate to the dashboard / state API ({} without a token)."""
    token = token if token is not None else read_token()
    return {AUTH_HEADER: f"Bearer {token}"} if token else {}


def dashboard_lines(address: str | None = None) -> list[str]:
    """What to print once Ray is up: the dashboard URL and how to authenticate.

    address: what the search joined (`--address`); the URL is then the cluster's.
    The token is never printed, only where it is.
    """
    return format_dashboard_lines(dashboard_url(), address, token_auth_enabled())


def format_dashboard_lines(url: str | None, address: str | None, auth_on: bool) -> list[str]:
    where = f"Ray cluster {address}" if address else "local Ray"
    if not url:
        return [f"{where}: no dashboard (install ray[default] to get one)"]
    lines = [f"Ray dashboard ({where}): {url}"]
    head = _address_host(address)
    url_host = urllib.parse.urlparse(url).hostname or ""
    if head and is_loopback(url_host) and not is_loopback(head):
        port = urllib.parse.urlparse(url).port or 8265
        lines.append(f"  it listens on the head node's loopback only; from here: ssh -L {port}:localhost:{port} "
                     f"{head}, then open http://localhost:{port}")
    if not auth_on:
        lines.append("  token authentication is off for this cluster: anyone who reaches the URL can use it")
        return lines
    kind, path = token_source()
    if kind == "env":
        lines.append(f"  sign in with the token in ${TOKEN_ENV}; API clients send "
                     f"'{AUTH_HEADER}: Bearer <token>'")
    else:
        note = "" if path.is_file() else " (on the head node)" if address else ""
        lines.append(f"  sign in with the token in {path}{note}; API clients send "
                     f"'{AUTH_HEADER}: Bearer $(cat {path})'")
    return lines


def _address_host(address: str | None) -> str | None:
    """The head's host from --address (host:port, ray://host:port); None for auto or nothing."""
    if not address or address in ("auto", "local"):
        return None
    return urllib.parse.urlparse(address if "://" in address else f"ray://{address}").hostname


def metrics_urls() -> list[str]:
    """The Prometheus endpoints of the cluster's live nodes (http://ip:port/metrics)."""
    import ray

    return [f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
            for n in ray.nodes() if n.get("Alive") and n.get("MetricsExportPort")]


# ------------------------------------------------------------------ per-trial gauges
_gauges: dict[str, Any] = {}  # one Gauge object per name and process (Ray registers by name)


def _gauge(name: str) -> Any:
    if name not in _gauges:
        from ray.util.metrics import Gauge

        _gauges[name] = Gauge(name, description=GAUGES[name][1], tag_keys=TAG_KEYS)
    return _gauges[name]


class TrialGauges:
    """Custom Ray metrics of one trial (epoch, val_acc, best val_acc), tagged with the
    experiment and trial id, so the dashboard's Prometheus/Grafana panels chart the search.
    Create it inside the trial; call update(metrics) after every epoch."""

    def __init__(self, experiment: str, trial_id: str):
        self.tags = {"experiment": str(experiment), "trial_id": str(trial_id)}

    def update(self, metrics: Mapping[str, Any]) -> None:
        for name, (key, _) in GAUGES.items():
            value = metrics.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                _gauge(name).set(float(value), tags=self.tags)


def parse_prometheus(text: str, prefix: str = PROMETHEUS_PREFIX + METRIC_PREFIX) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of the samples whose name starts with `prefix`, from Prometheus text format."""
    out = []
    for line in text.splitlines():
        if not line.startswith(prefix):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in _split_labels(rest.rstrip("}")):
            k, _, v = part.partition("=")
            labels[k.strip()] = v.strip().strip('"')
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            continue
    return out


def _split_labels(text: str) -> Iterable[str]:
    """Split `a="x",b="y,z"` on the commas outside quotes."""
    part, quoted = "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            yield part
            part = ""
        else:
            part += ch
    if part:
        yield part


# ------------------------------------------------------------------ short forms
def short_value(v: Any) -> str:
    """A hyperparameter value in a few characters: 0.25 -> .25, 0.000316 -> 3.2e-4, True -> on."""
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return "/".join(short_value(x) for x in v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        text = f"{v:.1e}" if 0 < abs(v) < 1e-2 else f"{v:.3g}"
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
        return text.replace("0.", ".", 1) if text.startswith("0.") else text
    return str(v)


def short_params(params: Mapping[str, Any], width: int | None = None) -> str:
    """Hyperparameters in one short line; per-block values (filters_1, filters_2, ...) are
    joined as `filters=32/64/128`. Cut at `width` characters with an ellipsis."""
    groups: dict[str, list[tuple[int, Any]]] = {}
    for key, value in params.items():
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue  # a parameter this trial does not have (filters_4 of a 3-block trial in trials.csv)
        key = str(key).removeprefix("config/")
        stem, _, idx = key.rpartition("_")
        if stem and idx.isdigit():
            groups.setdefault(stem, []).append((int(idx), value))
        else:
            groups.setdefault(key, []).append((0, value))
    order = _config_order()
    parts = [f"{name}=" + "/".join(short_value(v) for _, v in sorted(vals, key=lambda iv: iv[0]))
             for name, vals in sorted(groups.items(), key=lambda kv: _param_rank(kv[0], order))]
    text = " ".join(parts)
    if width is not None and len(text) > width:
        text = text[: max(0, width - 1)] + "…"
    return text


def clock(seconds: float) -> str:
    """Elapsed time as m:ss or h:mm:ss (0:42, 12:05, 1:02:03)."""
    s = int(max(0.0, seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# ------------------------------------------------------------------ live view
class _LiveState:
    """What the live view knows about the search, independent of Ray (tested directly)."""

    def __init__(self, total_trials: int, max_epochs: int | None, hide: Iterable[str] = ()):
        self.total = total_trials
        self.max_epochs = max_epochs
        self.hide = frozenset(hide)  # a space's constants: the same in every trial, so not worth the room
        self.trials: dict[str, dict[str, Any]] = {}
        self.elapsed_before = 0.0  # seconds spent in earlier runs of a resumed search

    def _trial(self, trial_id: str, config: Mapping[str, Any] | None = None) -> dict[str, Any]:
        t = self.trials.setdefault(trial_id, {"status": "pending", "epoch": 0, "best": None, "best_epoch": None,
                                              "done": False, "params": {}})
        if config:
            t["params"] = {k: v for k, v in config.items() if k not in self.hide}
        return t

    def sync(self, trials: Iterable[Any]) -> None:
        """Know every trial Tune has created, in Tune's order (the recorder's row order, so a tie
        for the best val_acc names the same trial as trials.csv)."""
        for t in trials:
            self._trial(t.trial_id, t.config)

    def start(self, trial_id: str, config: Mapping[str, Any]) -> None:
        self._trial(trial_id, config)["status"] = "running"

    def result(self, trial_id: str, result: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> bool:
        """One reported epoch; True if it set a new best of the whole search."""
        t = self._trial(trial_id, config)
        t["status"] = "running"
        t["epoch"] = int(result.get("epoch") or result.get("training_iteration") or t["epoch"])
        t["done"] = bool(result.get("done"))
        acc = result.get("val_acc")
        before = self.best()
        if isinstance(acc, (int, float)) and math.isfinite(acc) and (t["best"] is None or acc > t["best"]):
            t["best"], t["best_epoch"] = float(acc), t["epoch"]
        after = self.best()
        return after is not None and (before is None or after[1]["best"] > before[1]["best"])

    def end(self, trial_id: str) -> str:
        from .experiment import end_status  # the rule trials.csv is written with

        t = self._trial(trial_id)
        t["status"] = end_status(t["done"], t["epoch"], self.max_epochs)
        return t["status"]

    def fail(self, trial_id: str, error: str) -> None:
        t = self._trial(trial_id)
        t.update(status="failed", error=error)

    def counts(self) -> dict[str, int]:
        c = {s: 0 for s in ("running", "completed", "stopped", "failed")}
        for t in self.trials.values():
            if t["status"] in c:
                c[t["status"]] += 1
        c["pending"] = max(0, self.total - sum(c.values()))
        return c

    def best(self) -> tuple[str, dict[str, Any]] | None:
        scored = [(tid, t) for tid, t in self.trials.items() if t["best"] is not None]
        return max(scored, key=lambda it: it[1]["best"]) if scored else None

    def status_line(self, elapsed: float, width: int | None = None, final: bool = False) -> str:
        c = self.counts()
        ended = c["completed"] + c["stopped"] + c["failed"]
        how = ", ".join(f"{c[k]} {label}" for k, label in (
            ("completed", "completed"), ("stopped", "stopped by ASHA"), ("failed", "FAILED")) if c[k])
        how = f" ({how})" if how else ""
        if final:
            line = f"[{clock(elapsed)}] search finished: {ended} trials{how}"
        else:
            line = f"[{clock(elapsed)}] {ended}/{self.total} ended{how}, {c['running']} running, {c['pending']} waiting"
        best = self.best()
        if best:
            tid, t = best
            line += f" | best val_acc {t['best']:.4f} (trial {tid} epoch {t['best_epoch']}"
            room = None if width is None else width - len(line) - 3
            params = short_params(t["params"], room) if room is None or room > 8 else ""
            line += f": {params})" if params else ")"
        return line if width is None else line[:width]

    def end_line(self, trial_id: str, elapsed: float) -> str:
        t = self.trials[trial_id]
        of = f"/{self.max_epochs}" if self.max_epochs else ""
        how = {"stopped": f"stopped by ASHA at epoch {t['epoch']}{of}",
               "failed": f"FAILED at epoch {t['epoch']}{of}: {t.get('error', '')}"}.get(t["status"])
        if how is None:
            early = self.max_epochs and t["epoch"] < self.max_epochs
            how = f"completed {t['epoch']}{of} epochs" + (" (early stopping)" if early else "")
        best = f"; best val_acc {t['best']:.4f} at epoch {t['best_epoch']}" if t["best"] is not None else ""
        return f"[{clock(elapsed)}] trial {trial_id} {how}{best}"

    def to_state(self) -> dict[str, Any]:
        return {"trials": self.trials, "total": self.total, "max_epochs": self.max_epochs}

    def load_state(self, state: Mapping[str, Any], elapsed: float) -> None:
        self.trials = {k: dict(v) for k, v in state.get("trials", {}).items()}
        self.elapsed_before = elapsed


def _make_live_view_class() -> type:
    from ray.tune import Callback

    class LiveView(Callback):
        """A concise live view of a search for Tune's callbacks (use with RunConfig(verbose=0)).

        Counts of running / completed / stopped-by-ASHA / failed trials of the total,
        the best val_acc so far with its hyperparameters, elapsed time, and one line
        whenever a trial ends (how, at which epoch). On a terminal the status line is
        rewritten in place; elsewhere (CI logs) it is printed as a line at most every
        `interval` seconds, and every `heartbeat` seconds when nothing changes.
        max_epochs tells 'stopped by ASHA' from 'ran to the end' (ASHA also says stop at max_t);
        hide: config keys not to show (the space's constants).
        """

        def __init__(self, total_trials: int, stream: TextIO | None = None, *, max_epochs: int | None = None,
                     hide: Iterable[str] = (), interval: float | None = None, heartbeat: float = 60.0,
                     tty: bool | None = None):
            self.state = _LiveState(total_trials, max_epochs, hide)
            self._stream = stream
            self._tty = tty
            self.interval = interval
            self.heartbeat = heartbeat
            self._t0 = time.monotonic()
            self._last_print = -math.inf
            self._dirty = True
            self._drawn = False  # a TTY status line is on screen (to be overwritten)

        # ---- pickling: Tune saves callbacks with the experiment; streams do not pickle
        def __getstate__(self) -> dict[str, Any]:
            d = dict(self.__dict__)
            d["_stream"] = None
            return d

        def get_state(self) -> dict[str, Any]:
            return {**self.state.to_state(), "elapsed": self.elapsed()}

        def set_state(self, state: dict) -> None:
            self.state.load_state(state, float(state.get("elapsed", 0.0)))

        # ---- output
        @property
        def stream(self) -> TextIO:
            return self._stream or sys.stderr  # looked up late: pytest and notebooks swap sys.stderr

        @property
        def tty(self) -> bool:
            if self._tty is None:
                try:
                    return self.stream.isatty()
                except (AttributeError, ValueError):
                    return False
            return self._tty

        def elapsed(self) -> float:
            return self.state.elapsed_before + time.monotonic() - self._t0

        def _width(self) -> int | None:
            if not self.tty:
                return None
            import shutil

            return shutil.get_terminal_size((100, 24)).columns - 1

        def _write(self, text: str) -> None:
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError):  # a closed stream must never break the search
                pass

        def event(self, line: str) -> None:
            """A line that stays (trial ended, failed): printed at once, above the status line."""
            self._write(("\r\x1b[K" if self._drawn else "") + line + "\n")
            self._drawn = False
            self._dirty = True
            self.refresh(force=self.tty)

        def refresh(self, force: bool = False) -> None:
            now = time.monotonic()
            since = now - self._last_print
            if self.tty:
                due = force or since >= (self.interval or 1.0)
            else:
                due = force or (self._dirty and since >= (self.interval or 10.0)) or since >= self.heartbeat
            if not due or not self.state.trials:  # nothing to say before the first trial starts
                return
            line = self.state.status_line(self.elapsed(), self._width())
            self._write(f"\r\x1b[K{line}" if self.tty else line + "\n")
            self._drawn = self.tty
            self._last_print = now
            self._dirty = False

        # ---- Tune hooks
        def setup(self, **info: Any) -> None:
            self._t0 = time.monotonic()

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.sync(trials)
            self.state.start(trial.trial_id, trial.config)
            self._dirty = True
            self.refresh()

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.state.sync(trials)
            self._dirty = True
            self.refresh(force=self.state.result(trial.trial_id, result, trial.config) and self.tty)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.end(trial.trial_id)
            self.event(self.state.end_line(trial.trial_id, self.elapsed()))

        def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.event(f"[{clock(self.elapsed())}] trial {trial.trial_id} crashed, retrying from its last "
                       f"checkpoint: {_error_line(trial)}")

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.state.fail(trial.trial_id, _error_line(trial))
            self.event(self.state.end_line(trial.trial_id, self.elapsed()))

        def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
            self.refresh()

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            if self._drawn:
                self._write("\r\x1b[K")
                self._drawn = False
            self._write(self.state.status_line(self.elapsed(), final=True) + "\n")

    return LiveView


def _error_line(trial: Any) -> str:
    """The last exception line of a failed trial, short."""
    try:
        err = str(trial.get_error() or "")
    except Exception:
        err = ""
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    return (lines[-1] if lines else "error")[:160]


def __getattr__(name: str) -> Any:
    # LiveView subclasses ray.tune.Callback; build it on first use so `fersearch status`
    # and `import fersearch.monitor` do not pay for importing Ray Tune.
    if name == "LiveView":
        cls = _make_live_view_class()
        cls.__module__ = __name__
        cls.__qualname__ = "LiveView"
        globals()["LiveView"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ fersearch status
# While a search runs, Tune rewrites its experiment_state-<time>.json every few seconds
# (search.py sets TUNE_GLOBAL_CHECKPOINT_S=2), epochs or not: a heartbeat of the driver.
HEARTBEAT_GLOB = "experiment_state-*.json"
HEARTBEAT_STALE_S = 60.0
STALE_AFTER_S = 300.0  # without a heartbeat file (remote storage): no file update for this long, or 5 epochs


def experiment_status(exp_dir: str | os.PathLike, now: float | None = None) -> dict[str, Any]:
    """A running or finished experiment, summarised from its directory alone (plain JSON types).

    The best trial is judged by its best val_acc over its epochs (not its last one).
    `state` is finished (every planned trial ended), running (recent updates) or
    interrupted (unfinished trials, but no file written for a while: resume it).
    """
    from . import experiment as ex

    exp = Path(exp_dir)
    meta = ex.read_meta(exp)
    trials = ex.read_trials(exp)
    history = ex.read_history(exp)
    now = time.time() if now is None else now
    order = _config_order()
    rows = [_trial_summary(r, ex.PARAM_PREFIX, order) for r in ex.rows_from_frame(trials)]
    planned = int(meta.get("trials") or len(rows))
    counts = {s: sum(r["status"] == s for r in rows) for s in ex.STATUSES}
    counts["not_started"] = max(0, planned - len(rows))
    best = ex.best_trial(trials)
    heartbeat = list(exp.glob(HEARTBEAT_GLOB))
    files = [exp / ex.META_FILE, exp / ex.TRIALS_FILE, exp / ex.HISTORY_FILE, *heartbeat]
    updated = max((p.stat().st_mtime for p in files if p.is_file()), default=now)
    created = _timestamp(meta.get("created"), default=updated)
    epoch_times = [t for t in history.get("epoch_time_s", []) if isinstance(t, (int, float)) and t == t]
    stale_after = HEARTBEAT_STALE_S if heartbeat else max(STALE_AFTER_S, 5 * max(epoch_times, default=0.0))
    unfinished = counts["pending"] + counts["running"] + counts["not_started"] > 0
    state = "finished" if not unfinished else "running" if now - updated <= stale_after else "interrupted"
    return {
        "name": meta.get("name", exp.name),
        "path": str(exp),
        "state": state,
        "created": meta.get("created"),
        "updated_s_ago": round(now - updated, 1),
        "elapsed_s": round((now if state == "running" else updated) - created, 1),
        "resumed": len(meta.get("resumed", []) or []),
        "space": (meta.get("space") or {}).get("name"),
        "scheduler": meta.get("scheduler"), "sampler": meta.get("sampler"), "seed": meta.get("seed"),
        "max_epochs": meta.get("max_epochs"), "grace_period": meta.get("grace_period"),
        "reduction_factor": meta.get("reduction_factor"),
        "metric": meta.get("metric", "val_acc"), "mode": meta.get("mode", "max"),
        "trials_planned": planned,
        "counts": counts,
        "epochs_run": int(sum(r["epochs"] or 0 for r in rows)),
        "best": _trial_summary(best, ex.PARAM_PREFIX, order) if best else None,
        "best_by": "best val_acc over the trial's epochs",
        "trials": sorted(rows, key=lambda r: (r["best_val_acc"] is None, -(r["best_val_acc"] or 0.0))),
    }


def _trial_summary(row: Mapping[str, Any], prefix: str, order: tuple[str, ...]) -> dict[str, Any]:
    params = {k[len(prefix):]: _plain(v) for k, v in row.items() if str(k).startswith(prefix)}

    def num(key: str, kind: type) -> Any:
        v = row.get(key)
        return None if v is None or (isinstance(v, float) and v != v) else kind(v)

    return {
        "trial_id": str(row["trial_id"]), "status": str(row.get("status") or ""),
        "epochs": num("epochs", int), "best_val_acc": num("best_val_acc", float), "best_epoch": num("best_epoch", int),
        "last_val_acc": num("last_val_acc", float), "node": row.get("node") or "", "gpu_ids": row.get("gpu_ids") or "",
        "error": row.get("error") or "",
        "params": dict(sorted(params.items(), key=lambda kv: _param_rank(kv[0], order))),
    }


@functools.lru_cache(maxsize=1)
def _config_order() -> tuple[str, ...]:
    """TrainConfig's field order (architecture first, then training): reads better than the CSV's A-Z."""
    from dataclasses import fields

    from ..config import TrainConfig

    return tuple(f.name for f in fields(TrainConfig))


def _param_rank(name: str, order: tuple[str, ...]) -> tuple[int, str]:
    stem, _, idx = name.rpartition("_")
    key = stem if stem and idx.isdigit() else name  # filters_2 sorts with filters
    return (order.index(key) if key in order else len(order), name)


def _plain(v: Any) -> Any:
    """numpy scalars -> Python (json-able); NaN -> None."""
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and v != v else v


def _timestamp(iso: str | None, default: float) -> float:
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(iso)).timestamp()
    except (TypeError, ValueError):
        return default


def format_status(st: Mapping[str, Any], width: int | None = None) -> str:
    """`fersearch status` for people: header, counts, the best trial, a per-trial table (best first)."""
    c = st["counts"]
    state = {"finished": f"finished {clock(st['updated_s_ago'])} ago, ran {clock(st['elapsed_s'])}",
             "running": f"RUNNING for {clock(st['elapsed_s'])}, last update {clock(st['updated_s_ago'])} ago",
             "interrupted": f"INTERRUPTED? unfinished trials but no update for {clock(st['updated_s_ago'])}; "
                            f"continue with: fersearch tune --resume --name {st['name']}"}[st["state"]]
    sched = st["scheduler"] or "?"
    if sched == "asha":
        sched += f" (grace {st['grace_period']}, reduction {_num(st['reduction_factor'])})"
    lines = [
        f"experiment  {st['name']}  ({st['path']})",
        f"state       {state}" + (f"; resumed {st['resumed']}x" if st["resumed"] else ""),
        f"search      {st['trials_planned']} trials x <= {st['max_epochs']} epochs, {sched}, {st['sampler']} "
        f"sampler, space {st['space']}, seed {st['seed']}",
        f"trials      " + ", ".join(f"{n} {label}" for label, n in (
            ("completed", c["completed"]), ("stopped by ASHA", c["stopped"]), ("failed", c["failed"]),
            ("running", c["running"]), ("pending", c["pending"] + c["not_started"])) if n or label != "failed")
        + f"; {st['epochs_run']} epochs trained"
        + (f" of {st['trials_planned'] * st['max_epochs']} possible" if st["max_epochs"] else ""),
    ]
    best = st["best"]
    if best:
        lines.append(f"best        val_acc {best['best_val_acc']:.4f} at epoch {best['best_epoch']} of trial "
                     f"{best['trial_id']} ({best['status']}, {best['epochs']} epochs; judged by its best epoch)")
        lines.append(f"            {short_params(best['params'])}")
    else:
        lines.append("best        none yet (no trial has reported an epoch)")
    if st["trials"]:
        lines += ["", *_trial_table(st["trials"], width)]
    for t in st["trials"]:
        if t["status"] == "failed" or (t["error"] and t["status"] == "running"):
            lines.append(f"{t['trial_id']}: {t['error']}")
    return "\n".join(lines)


def _num(x: Any) -> str:
    return short_value(float(x)) if isinstance(x, (int, float)) else str(x)


def _trial_table(rows: list[Mapping[str, Any]], width: int | None) -> list[str]:
    multi_node = len({r["node"] for r in rows if r["node"]}) > 1
    gpus = any(r["gpu_ids"] for r in rows)

    def acc(v: float | None) -> str:
        return "-" if v is None else f"{v:.4f}"

    header = ["trial", "status", "epochs", "best_acc", "@epoch", "last_acc"] + (["node"] if multi_node else []) \
        + (["gpu"] if gpus else []) + ["hyperparameters"]
    table = [[r["trial_id"], r["status"], str(r["epochs"] if r["epochs"] is not None else "-"),
              acc(r["best_val_acc"]), str(r["best_epoch"] or "-"), acc(r["last_val_acc"])]
             + ([r["node"][:8]] if multi_node else []) + ([r["gpu_ids"] or "-"] if gpus else [])
             + [short_params(r["params"])] for r in rows]
    widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header) - 1)]
    right = {2, 3, 4, 5}  # numbers line up on the right
    out = []
    for row in [header, *table]:
        cells = [(f"{v:>{w}}" if i in right else f"{v:<{w}}") for i, (v, w) in enumerate(zip(row, widths))]
        line = "  ".join(cells + [row[-1]])
        out.append(line if width is None or len(line) <= width else line[: width - 1] + "…")
    return out
