"""The live view of a running search: draws the TrialState (state.py) as Tune's events arrive.

On a terminal: a table of the running trials and the best so far (rich.live.Live),
redrawn in place, with a line above it for every trial that ends. Elsewhere (CI, log
files, pipes): plain lines, one per ended trial and a status line at most every
`interval` seconds (every `heartbeat` seconds when nothing changes). The state
recorder (recorder.make_recorder) owns the view and calls update / close.

Tune pickles its callbacks with the experiment: the stream, console and Live object
are looked up or made on first use and never pickled.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, TextIO

from ..fmt import acc, clock, text_table
from ..results.experiment import TrialStatus
from ..results.state import TrialState

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table


# ------------------------------------------------------------------ the lines
def status_line(state: TrialState, elapsed: float, width: int | None = None, final: bool = False,
                params: bool = True) -> str:
    """Counts of the search's trials and its best so far, in one line. `params`: the best trial's
    hyperparameters too (the terminal's line); a log file gets its id and value only, every line."""
    c = state.counts()
    ended_states = [s for s in TrialStatus if s.ended]
    ended = sum(c[s] for s in ended_states)
    how = ", ".join(f"{c[s]} {s.label}" for s in ended_states if c[s])
    how = f" ({how})" if how else ""
    if final and c["running"] + c["pending"]:  # Ctrl+C stopped it with trials unfinished: not "finished"
        line = f"[{clock(elapsed)}] search interrupted: {ended}/{state.total} trials ended{how}"
    elif final:
        line = f"[{clock(elapsed)}] search finished: {ended} trials{how}"
    else:
        waiting = max(0, state.total - ended - c["running"])
        line = f"[{clock(elapsed)}] {ended}/{state.total} ended{how}, {c['running']} running, {waiting} waiting"
    best = state.best()
    if best:
        line += f" | best val_acc {acc(best['best_val_acc'])} (trial {best['trial_id']} epoch {best['best_epoch']}"
        room = None if width is None else width - len(line) - 3
        shown = state.short_params(best["trial_id"], room) if params and (room is None or room > 8) else ""
        line += f": {shown})" if shown else ")"
    return line if width is None else line[:width]


def end_line(state: TrialState, trial_id: str, elapsed: float) -> str:
    """How a trial ended: stopped by ASHA, completed, or failed; at which epoch; its best."""
    row, max_epochs = state.rows[trial_id], state.max_epochs
    epochs = row["epochs"] or 0
    of = f"/{max_epochs}" if max_epochs else ""
    how = {TrialStatus.STOPPED: f"{TrialStatus.STOPPED.label} at epoch {epochs}{of}",
           TrialStatus.FAILED: f"FAILED at epoch {epochs}{of}: {row['error']}",
           TrialStatus.DIVERGED: f"DIVERGED at epoch {epochs}{of}: {row['error']}"}.get(row["status"])
    if how is None:
        early = max_epochs and epochs < max_epochs
        how = f"completed {epochs}{of} epochs" + (" (early stopping)" if early else "")
    best = f"; best val_acc {acc(row['best_val_acc'])} at epoch {row['best_epoch']}" \
        if row["best_val_acc"] is not None else ""
    return f"[{clock(elapsed)}] trial {trial_id} {how}{best}"


def recover_line(trial_id: str, error: str, elapsed: float) -> str:
    return f"[{clock(elapsed)}] trial {trial_id} crashed, retrying from its last checkpoint: {error}"


def trial_table(state: TrialState, max_rows: int = 20) -> Table:
    """A rich Table: the best trial so far, then the running ones (best first)."""
    best = state.best()
    running = sorted((r for r in state.running() if r is not best), key=lambda r: -(r["best_val_acc"] or 0.0))
    of = f"/{state.max_epochs}" if state.max_epochs else ""
    cells = [["best" if row is best else "", row["trial_id"], row["status"], f"{row['epochs'] or 0}{of}",
              acc(row["last_val_acc"]), acc(row["best_val_acc"]), str(row["best_epoch"] or "-"),
              state.short_params(row["trial_id"])] for row in ([best] if best else []) + running[:max_rows]]
    table = text_table([("", "left"), ("trial", "left"), ("status", "left"), ("epoch", "right"),
                        ("val_acc", "right"), ("best", "right"), ("@epoch", "right"), ("hyperparameters", "left")],
                       cells)
    if best:
        table.rows[0].style = "bold"
    if len(running) > max_rows:
        table.caption = f"... and {len(running) - max_rows} more running"
    return table


# ------------------------------------------------------------------ the view
class LiveView:
    """Draws a TrialState on `stream` (default: stderr, looked up late: pytest and notebooks
    swap it). tty None: ask the stream."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, interval: float | None = None,
                 heartbeat: float = 60.0):
        self._stream = stream
        self._tty = tty
        self.interval = interval
        self.heartbeat = heartbeat
        self._last_print = -math.inf
        self._dirty = True
        self._console: Console | None = None
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_stream": None, "_console": None, "_live": None}

    @property
    def stream(self) -> TextIO:
        return self._stream or sys.stderr

    @property
    def tty(self) -> bool:
        if self._tty is None:
            try:
                return self.stream.isatty()
            except (AttributeError, ValueError):
                return False
        return self._tty

    # ---- what the recorder calls
    def update(self, state: TrialState, elapsed: float, *, changed: bool = True, force: bool = False,
               line: str | None = None) -> None:
        """After an event: `line` to keep (a trial ended) is printed at once; the status is
        redrawn when due (`force`: now, on a terminal; a new best, say)."""
        self._dirty = self._dirty or changed
        if line is not None:
            self._print(line)
        now = time.monotonic()
        since = now - self._last_print
        if self.tty:
            due = force or line is not None or since >= (self.interval or 1.0)
        else:
            due = (self._dirty and since >= (self.interval or 10.0)) or since >= self.heartbeat
        if not due or not state.rows:  # nothing to say before the first trial starts
            return
        if self.tty:
            self._draw(state, elapsed)
        else:
            self._write(status_line(state, elapsed, params=False) + "\n")
        self._last_print = now
        self._dirty = False

    def close(self, state: TrialState, elapsed: float) -> None:
        """The search ended: the table goes, the final status line stays."""
        if self._live is not None:
            self._live.stop()
            self._live = None
        self._print(status_line(state, elapsed, final=True))

    # ---- output
    def _print(self, line: str) -> None:
        if self.tty:
            from rich.text import Text

            self._terminal().print(Text(line), soft_wrap=True)  # above the live table, if one is on screen
        else:
            self._write(line + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream must never break the search
            pass

    def _terminal(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(file=self.stream, force_terminal=True, highlight=False)
        return self._console

    def _draw(self, state: TrialState, elapsed: float) -> None:
        from rich.console import Group
        from rich.live import Live
        from rich.text import Text

        console = self._terminal()
        width = max(20, console.width - 1)
        view = Group(Text(status_line(state, elapsed, width), no_wrap=True, overflow="ellipsis"),
                     trial_table(state, max_rows=max(3, console.height - 8)))
        try:
            if self._live is None:
                self._live = Live(view, console=console, auto_refresh=False, transient=True,
                                  redirect_stdout=False, redirect_stderr=False)
                self._live.start()
            self._live.update(view, refresh=True)
        except (OSError, ValueError):  # a closed stream must never break the search
            pass
