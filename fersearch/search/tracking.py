"""MLflow tracking of a search: one parent run per search, one child run per trial.

    fersearch tune --mlflow                        # sqlite:///results/<name>/mlflow.db
    fersearch tune --mlflow-uri http://host:5000   # any tracking URI MLflow accepts

Through MLflow's own client, not Ray's MLflowLoggerCallback: Ray's makes no parent run
(ray-project/ray#19978) and keys runs by experiment, so concurrent trials of one search
collide. The child run of a trial holds its parameters, its per-epoch metrics (step = epoch)
and a `fersearch.status` tag (completed, stopped, diverged, failed: trials.csv's words).
`best --evaluate` logs the winner's test metrics and files to the parent (log_evaluation).

A tracker is never worth a search: any MLflow failure after the start warns once, and the
search goes on without it (trials.csv, history.csv and the study are fersearch's own record).
fersearch.json's "mlflow" block names the URI and the parent run, so a resumed search and
`best --evaluate` find them.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import FersearchError
from ..results.record import ExperimentRecord, Mlflow
from .workarounds import pickle_as

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    from .options import SearchOptions

DB_FILE = "mlflow.db"
DEFAULT = "default"  # --mlflow without a URI: the store in the experiment folder
STATUS_TAG = "fersearch.status"
INSTALL = "pip install 'fersearch[mlflow]'"
# MLflow retries an unanswering server for minutes by default: a check (and a dead server
# mid-run) should cost seconds.
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "databricks", "databricks-uc")
CHECK_S = 20  # the check's wait for a store to answer
RUN_STATUS = {"completed": "FINISHED", "stopped": "KILLED", "diverged": "FAILED", "failed": "FAILED"}


def wanted(opts: SearchOptions) -> str | None:
    """What --mlflow / --mlflow-uri ask for: a URI, DEFAULT (the folder's store) or None."""
    if opts.mlflow_uri is not None and not str(opts.mlflow_uri).strip():
        raise FersearchError("--mlflow-uri is empty; pass a tracking URI (http://host:5000, sqlite:///path/mlflow.db) "
                             "or --mlflow alone for a store in the experiment folder")
    return opts.mlflow_uri or (DEFAULT if opts.mlflow else None)


def tracking_uri(value: object, exp_dir: Path) -> str:
    """The tracking URI for --mlflow's value: the experiment folder's SQLite store by default."""
    if value == DEFAULT:
        return f"sqlite:///{Path(exp_dir).resolve() / DB_FILE}"
    return str(value)


def _client(uri: str) -> MlflowClient:
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise FersearchError(f"--mlflow needs MLflow, which is not installed: {INSTALL}") from None
    return MlflowClient(tracking_uri=uri)


def check(value: object) -> None:
    """Before the search starts: MLflow importable, and a given URI answers (one line if not).
    The default store is made with the experiment folder, so only the import is checked for it."""
    if not value:
        return
    if value != DEFAULT:
        check_uri(str(value))  # the URI's form and a local store's folder: no MLflow call, no retries
    _client("sqlite://")  # MLflow importable (one line naming the extra if not)
    if value == DEFAULT:
        return
    _answers(lambda: _client(str(value)).search_experiments(max_results=1), str(value))


def check_uri(uri: str) -> None:
    """A scheme MLflow tracks to, and for SQLite a file in a folder this user can write."""
    from urllib.parse import urlsplit

    where = f"--mlflow-uri {uri}"
    scheme = urlsplit(uri).scheme.lower() or (uri if uri in ("databricks", "databricks-uc") else "")  # MLflow's names
    if not scheme or scheme == "file":
        raise FersearchError(f"{where}: a folder (MLflow's legacy file store) is not supported; pass "
                             f"sqlite:///<folder>/mlflow.db for a local store, or an http(s):// server")
    if scheme.partition("+")[0] not in SCHEMES:
        raise FersearchError(f"{where}: unknown scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    if scheme.startswith("sqlite"):  # sqlite:///relative.db, sqlite:////absolute.db (SQLAlchemy's form)
        rest = uri.split(":", 1)[1]
        _check_sqlite(rest[3:] if rest.startswith("///") else "", where)


def _check_sqlite(name: str, where: str) -> None:
    if not name or name.startswith(":memory:"):
        raise FersearchError(f"{where}: no database file (an in-memory store keeps nothing); pass "
                             f"sqlite:///<folder>/mlflow.db")
    path = Path(name.split("?", 1)[0]).expanduser()
    folder = path.parent
    if path.is_dir():
        raise FersearchError(f"{where}: {path} is a folder; name the database file, e.g. {path / DB_FILE}")
    if not folder.is_dir():
        raise FersearchError(f"{where}: the folder {folder} does not exist (or is a file); create it or pass another")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise FersearchError(f"{where}: {path} cannot be written; pass a database file you can write")
    probe = folder / f".fersearch-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as e:
        raise FersearchError(f"{where}: cannot write in {folder} ({e.strerror}); SQLite keeps its journal beside "
                             f"the database: pass a folder you can write to") from None


def _answers(query: Callable[[], object], value: str) -> None:
    """The store answers one query within CHECK_S (MLflow's SQL stores retry for minutes otherwise)."""
    import threading

    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            query()
            outcome.append(None)
        except Exception as e:  # MLflow raises many kinds (MlflowException, requests', sqlalchemy's)
            outcome.append(e)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(CHECK_S)
    if not outcome:
        raise FersearchError(f"--mlflow-uri {value}: the tracking store did not answer within {CHECK_S} s; start "
                             f"the server or pass another URI (or --mlflow alone: a store in the experiment folder)")
    e = outcome[0]
    if e is not None:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FersearchError(f"--mlflow-uri {value}: the tracking store does not answer ({first[:200]}); start "
                             f"the server or pass another URI (or --mlflow alone: a store in the experiment folder)"
                             ) from None


def start_parent(exp_dir: Path, record: ExperimentRecord, value: object) -> Mlflow:
    """Create (or, resuming, find) the search's parent run; returns fersearch.json's "mlflow" block."""
    if record.mlflow is not None:
        return record.mlflow
    uri = tracking_uri(value, exp_dir)
    client = _client(uri)
    name = record.name
    exp = client.get_experiment_by_name("fersearch")
    exp_id = exp.experiment_id if exp is not None else client.create_experiment("fersearch")
    s = record.settings
    params: dict[str, object] = {k: getattr(s, k, None) for k in ("trials", "max_epochs", "grace_period",
                                                               "reduction_factor", "scheduler", "sampler", "seed")}
    params.update(space=record.space.label, data_sha256=record.data.sha256)
    run = client.create_run(exp_id, run_name=name, tags={"fersearch.experiment": name,
                                                         "fersearch.folder": str(Path(exp_dir).resolve())})
    client.log_batch(run.info.run_id, params=_params(params))
    return Mlflow(uri=uri, experiment_id=exp_id, parent_run_id=run.info.run_id)


def _params(values: Mapping[str, object]) -> list:
    from mlflow.entities import Param

    return [Param(str(k), str(v)[:6000]) for k, v in values.items()]


def _metrics(result: Mapping[str, object], step: int) -> list:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and k in METRIC_KEYS]


METRIC_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "best_val_acc", "lr", "epoch_s", "latency_ms")


def _tracker_class() -> type:
    from ray.tune import Callback

    class MlflowTracker(Callback):
        """Child run per trial under the search's parent run; any MLflow failure: one warning, then off."""

        def __init__(self, record: Mlflow, hide: frozenset[str], max_epochs: int):
            self.record = record
            self.hide = hide
            self.max_epochs = max_epochs
            self.runs: dict[str, str] = {}  # trial id -> child run id (kept in Ray's callback state)
            self.last: dict[str, dict] = {}
            self.broken = False
            self._client: MlflowClient | None = None

        def __getstate__(self) -> dict[str, object]:
            return {**self.__dict__, "_client": None, "last": {}}

        # Tune saves this with its experiment state: a resumed search logs on into the same child runs.
        def get_state(self) -> dict[str, object]:
            return {"runs": dict(self.runs)}

        def set_state(self, state: dict) -> None:
            self.runs.update(state.get("runs") or {})

        def setup(self, *args: object, **info: object) -> None:
            self.broken = False  # a resumed search tries the store again (its run ids came back with Ray's state)

        def _call(self, fn_name: str, *args: object, **kwargs: object) -> Any:
            if self.broken:
                return None
            try:
                if self._client is None:
                    self._client = _client(self.record.uri)
                return getattr(self._client, fn_name)(*args, **kwargs)
            except Exception as e:
                self.broken = True  # one warning; the search goes on untracked
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                print(f"warning: MLflow stopped answering ({first}); the search goes on without tracking "
                      f"(trials.csv keeps every trial)", file=sys.stderr)
                return None

        def _run(self, trial: Trial) -> str | None:
            if trial.trial_id not in self.runs:
                run = self._call("create_run", self.record.experiment_id, run_name=trial.trial_id,
                                 tags={"mlflow.parentRunId": self.record.parent_run_id,
                                       "fersearch.trial_id": trial.trial_id, STATUS_TAG: "running"})
                if run is None:
                    return None
                self.runs[trial.trial_id] = run.info.run_id
                params = {k: v for k, v in trial.config.items() if k not in self.hide}
                self._call("log_batch", run.info.run_id, params=_params(params))
            return self.runs[trial.trial_id]

        def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._run(trial)

        def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: object) -> None:
            run_id = self._run(trial)
            self.last[trial.trial_id] = result
            if run_id is not None:
                self._call("log_batch", run_id, metrics=_metrics(result, int(result.get("training_iteration", 0))))

        def _end(self, trial: Trial, status: str) -> None:
            run_id = self._run(trial)
            if run_id is not None:
                self._call("set_tag", run_id, STATUS_TAG, status)
                self._call("set_terminated", run_id, RUN_STATUS[status])

        def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            last = self.last.get(trial.trial_id) or trial.last_result or {}
            if last.get("diverged"):
                status = "diverged"
            elif last.get("done") and int(last.get("training_iteration", 0)) < self.max_epochs:
                status = "stopped"  # state.end_status's rule: done before max_epochs is ASHA's stop
            else:
                status = "completed"
            self._end(trial, status)

        def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._end(trial, "failed")

        def on_experiment_end(self, trials: list, **info: object) -> None:
            if any(not t.is_finished() for t in trials):
                return  # interrupted: the parent stays open for --resume
            self._call("set_terminated", self.record.parent_run_id, "FINISHED")

    return MlflowTracker


def make_tracker(record: Mlflow, hide: Iterable[str], max_epochs: int) -> Callback:
    """The Tune callback for fersearch.json's "mlflow" block."""
    return __getattr__("MlflowTracker")(record, frozenset(hide), max_epochs)


def log_evaluation(exp_dir: Path, experiment: ExperimentRecord, metrics: Mapping[str, object], trial_id: str,
                   best_dir: Path) -> str | None:
    """`best --evaluate` on a search tracked in MLflow: the winner's (`trial_id`) test metrics and the
    best/ folder's files (confusion matrix, report, model) on the parent run. Returns a warning line, or None."""
    record = experiment.mlflow
    if record is None:
        return None
    try:
        client = _client(record.uri)
        run_id = record.parent_run_id
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        logged = [Metric(f"test_{k}", float(v), now, 0) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
        client.log_batch(run_id, metrics=logged)
        client.set_tag(run_id, "fersearch.best_trial", trial_id)
        client.log_artifacts(run_id, str(best_dir), artifact_path="best")
    except FersearchError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        return f"warning: could not log the evaluation to MLflow ({first}); results/{exp_dir.name}/best/ has it all"
    return None


def __getattr__(name: str) -> type:
    if name == "MlflowTracker" and "MlflowTracker" in globals():
        return globals()["MlflowTracker"]
    if name == "MlflowTracker":  # built on first use (no Ray import for `fersearch status`); pickles find it here
        cls = pickle_as(_tracker_class(), __name__, "MlflowTracker")
        globals()["MlflowTracker"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
