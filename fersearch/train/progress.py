"""Training progress on stderr: a rich bar per epoch on a terminal, plain lines otherwise.

On a terminal each epoch shows a bar over its batches with the running loss, accuracy
and images/s, then leaves one kept line with the epoch's metrics. Anywhere else (CI,
log files, pipes) only that one plain line per epoch is written, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from ..fmt import plural

# The running loss/acc needs a device sync; twice a second is plenty for a person.
EVERY_S = 0.5


def epoch_line(m: dict, epochs: int) -> str:
    """The kept line of one epoch."""
    return (f"epoch {m['epoch']}/{epochs}  loss {m['train_loss']:.3f}  acc {m['train_acc']:.3f}  "
            f"val_loss {m['val_loss']:.3f}  val_acc {m['val_acc']:.3f}  lr {m['lr']:.2g}  "
            f"{m['images_per_s']:,.0f} img/s  {m['epoch_time_s']:.1f}s")


class EpochProgress:
    """Progress of one `fit`: `start(epoch)`, `batch(...)` per batch, `end(metrics)`; `close()` at the end.
    `console`: where to draw (default: stderr); a bar only where it is a terminal."""

    def __init__(self, epochs: int, device: torch.device, precision: str, n_train: int, n_val: int,
                 console: Console | None = None):
        self.epochs, self.n_train = epochs, n_train
        self.console = console or Console(stderr=True)
        self.tty = self.console.is_terminal
        self.last = self.t0 = 0.0
        self.epoch = 0
        self.task: TaskID | None = None
        self.bar: Progress | None = None
        self._write(f"training on {device} ({precision}, {plural(torch.get_num_threads(), 'thread')}): "
                    f"{n_train} train / {n_val} val images, up to {plural(epochs, 'epoch')}")
        if self.tty:
            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  acc {task.fields[acc]}  {task.fields[rate]} img/s"),
                TimeElapsedColumn(),
                # stdout stays the caller's (a summary or JSON may go there); stray stderr lines go above the bar.
                console=self.console, transient=True, redirect_stdout=False,
            )
            self.bar.start()

    def _write(self, line: str) -> None:
        if self.tty:
            self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        else:  # exactly the line: no rich wrapping at 80 columns in a log file
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def start(self, epoch: int) -> None:
        self.epoch, self.t0, self.last = epoch, time.perf_counter(), 0.0
        if self.bar is not None:
            self.task = self.bar.add_task("", total=self.n_train, epoch=epoch, epochs=self.epochs, loss="-", acc="-",
                                          rate="-")

    def batch(self, seen: int, total: int, running: Callable[[], tuple[float, float]]) -> None:
        """After a batch: `seen` of `total` images; `running()` gives (loss, acc) so far."""
        now = time.perf_counter()
        if self.bar is None or self.task is None or now - self.last < EVERY_S:
            return
        self.last = now
        loss, acc = running()
        rate = seen / max(now - self.t0, 1e-9)
        self.bar.update(self.task, completed=seen, total=total, loss=f"{loss:.3f}", acc=f"{acc:.3f}",
                        rate=f"{rate:,.0f}", refresh=True)

    def end(self, metrics: dict) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.refresh()  # the bar goes; the kept line below takes its place
            self.task = None
        self._write(epoch_line(metrics, self.epochs))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def __enter__(self) -> EpochProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
