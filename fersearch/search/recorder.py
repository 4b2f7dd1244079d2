"""The search's Tune callback: feeds the TrialState (state.py) from Tune's events, persists it
in trials.csv / history.csv, and has the live view (live.py) draw it.

Made by make_recorder. The class subclasses ray.tune.Callback, so it is built on
first use: `fersearch status` (which loads a TrialState) never pays for importing Ray Tune.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from ray.tune import Callback
    from ray.tune.experiment import Trial

    from ..config import TrainConfig

from .. import paired
from ..fmt import cut, first_line
from ..io import cut_torn_tail
from ..results.experiment import HISTORY_FILE, PER_IMAGE_FILE, TRIALS_FILE
from ..results.state import TrialState
from ..results.trial_files import HistoryFile, TrialsFile
from .live import LiveView, end_line, recover_line
from .workarounds import PROPOSAL_SOURCES, pickle_as

SAVE_EVERY_S = 3.0  # trials.csv between trial ends: a reader (status) is at most this stale
# Ray restores a resumed search's callbacks as the first run pickled them; the driver sets this to
# the resuming run's own choice (`-q` or not), which setup() then applies. None: keep the view as made.
LIVE: bool | None = None


def trial_error(trial: Trial) -> str:
    """The exception line of a trial's latest failure (Ray keeps the whole traceback in the trial dir)."""
    err: object = ""  # the file's text, or the TuneError Ray keeps
    try:  # Ray writes error.txt to the driver's staging dir at once, to the trial dir only later
        local = trial.error_file
        err = Path(local).read_text() if local and Path(local).is_file() else (trial.get_error() or "")
    except (AttributeError, OSError, ValueError):  # no storage (a stub) or unreadable: just "failed"
        pass
    # error.txt appends one "Failure # N (occurred at ...)" block per failure: the last one
    err = re.split(r"^Failure # \d+ \(occurred at [^)]*\)$", str(err), flags=re.MULTILINE)[-1].strip()
    if not err:
        return "trial failed"
    if "its node has died" in err:  # Ray's ActorDiedError texts carry no exception line to show
        return "its node went away (removed, or lost contact with the cluster)"
    if err.startswith("The actor died"):
        return "its worker process died (killed, or out of memory)"
    return cut(first_line(err), 300)


def _recorder_class() -> type:
    from ray.tune import Callback

    class Recorder(Callback):
        """Feeds the TrialState from Tune's events, persists it, and has the live view draw it."""

        def __init__(self, exp_dir: str | os.PathLike, state: TrialState, *, to_config: Callable[[dict], TrainConfig],
                     hide: Iterable[str], view: LiveView | None):
            self.exp_dir = Path(exp_dir)
            self.to_config = to_config
            self.hide = frozenset(hide)
            self.state = state
            self.history = HistoryFile(self.exp_dir / HISTORY_FILE)
            self.trials_file = TrialsFile(self.exp_dir / TRIALS_FILE)
            self.view = view
            self._seen = 0  # how many of Tune's trials (an append-only list) are in the state
            self._reconciled = False
            self._saved_at = -math.inf
            self._dirty = False  # trials.csv is behind the state (saved at most every SAVE_EVERY_S)
            self._t0 = time.monotonic()
            self._elapsed_before = 0.0  # seconds spent in earlier runs of a resumed search

        # ---- Tune saves set_state's dict with its experiment state; the files hold the rest
        def get_state(self) -> dict[str, object]:
            return {"elapsed": self.elapsed()}

        def set_state(self, state: dict) -> None:
            self._elapsed_before = float(state.get("elapsed", 0.0))

        def elapsed(self) -> float:
            return self._elapsed_before + time.monotonic() - self._t0

        # ---- keeping up with Tune
        def setup(self, **info: object) -> None:  # type: ignore[override]  # Tune passes only keywords
            if LIVE is not None:
                self.view = LiveView() if LIVE else None
            self.state = type(self.state).load(self.exp_dir, self.state.total, self.state.max_epochs)
            self.history.repair()  # a torn last line from a crash must not swallow the next row
            cut_torn_tail(self.exp_dir / PER_IMAGE_FILE)
            self._seen, self._reconciled, self._t0 = 0, False, time.monotonic()

        def _sync(self, trials: list, trial: Trial | None = None) -> None:
            if not self._reconciled:  # the first event sees every trial Ray restored
                self.state.reconcile(t.trial_id for t in trials)
                self._reconciled = True
            if len(trials) < self._seen:
                self._seen = 0
            for t in [*trials[self._seen:], *([trial] if trial is not None else [])]:
                if t.trial_id not in self.state.rows:
                    params = {k: v for k, v in t.config.items() if k not in self.hide}
                    self.state.add(t.trial_id, json.dumps(self.to_config(t.config).to_dict()), params,
                                   source=PROPOSAL_SOURCES.get(t.trial_id, ""))
            self._seen = len(trials)

        def _save(self, force: bool = False) -> None:
            now = time.monotonic()
            self._dirty = not (force or now - self._saved_at >= SAVE_EVERY_S)
            if not self._dirty:
                self.trials_file.write(self.state.rows.values(), self.state.changed, self.state.param_columns)
                self.state.changed.clear()
                self._saved_at = now

        def _draw(self, *, changed: bool = True, force: bool = False, line: str | None = None) -> None:
            if self.view is not None:
                self.view.update(self.state, self.elapsed(), changed=changed, force=force, line=line)

        # ---- Tune's hooks
        def on_trial_start(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._sync(trials, trial)
            self.state.start(trial.trial_id)
            self._save()
            self._draw()

        def on_trial_result(self, iteration: int, trials: list, trial: Trial, result: dict, **info: object) -> None:
            self._sync(trials, trial)
            before = self.state.best_id, self.state.best_acc()
            self.history.append(self.state.result(trial.trial_id, result, stop_decided=bool(result.get("done"))))
            if isinstance(result.get(paired.CORRECT_KEY), str):
                with open(self.exp_dir / PER_IMAGE_FILE, "a") as f:
                    f.write(json.dumps({"trial_id": trial.trial_id, "epoch": result.get("epoch"),
                                        paired.CORRECT_KEY: result[paired.CORRECT_KEY],
                                        paired.LOSSES_KEY: result.get(paired.LOSSES_KEY)}) + "\n")
            self._save()
            self._draw(force=(self.state.best_id, self.state.best_acc()) != before)  # a new best shows at once

        def on_trial_complete(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._sync(trials, trial)
            self.state.end(trial.trial_id)
            self._save(force=True)
            self._draw(line=end_line(self.state, trial.trial_id, self.elapsed()))

        def on_trial_recover(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._sync(trials, trial)
            error = trial_error(trial)
            self.state.retry(trial.trial_id, error)
            self._save()
            self._draw(line=recover_line(trial.trial_id, error, self.elapsed()))

        def on_trial_error(self, iteration: int, trials: list, trial: Trial, **info: object) -> None:
            self._sync(trials, trial)
            self.state.fail(trial.trial_id, trial_error(trial))
            self._save(force=True)
            self._draw(line=end_line(self.state, trial.trial_id, self.elapsed()))

        def on_step_end(self, iteration: int, trials: list, **info: object) -> None:
            if self._dirty:
                self._save()
            self._draw(changed=False)

        def on_experiment_end(self, trials: list, **info: object) -> None:
            self._sync(trials)
            self._save(force=True)
            if self.view is not None:
                self.view.close(self.state, self.elapsed())

    return Recorder


def make_recorder(exp_dir: str | os.PathLike, *, total_trials: int, max_epochs: int,
                  to_config: Callable[[dict], TrainConfig], hide: Iterable[str] = (), live: bool = True,
                  stream: TextIO | None = None, tty: bool | None = None) -> Callback:
    """The search's one Tune callback: keeps the TrialState, writes trials.csv/history.csv
    (in exp_dir) and, with `live`, draws the live view on `stream` (stderr).
    to_config(config) -> the trial's full TrainConfig (trials.csv's config_json);
    hide: the space's constants (the same in every trial: not parameter columns)."""
    cls = __getattr__("Recorder")
    return cls(exp_dir, TrialState(total_trials, max_epochs), to_config=to_config, hide=hide,
               view=LiveView(stream, tty=tty) if live else None)


def __getattr__(name: str) -> type:
    # Registered here under its own name, so pickle finds it as fersearch.search.recorder.Recorder.
    if name == "Recorder":
        cls = pickle_as(_recorder_class(), __name__, "Recorder")
        globals()["Recorder"] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
