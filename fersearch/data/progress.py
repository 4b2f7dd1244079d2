"""A transient rich progress bar for a first (uncached) data load, drawn on stderr.

Readers report `tick(what, done, total)` as they go (rows parsed, images read);
`load_progress(True)` draws those as a bar that disappears when the load ends,
`load_progress(False)` draws nothing, so logs, pipes and `--json` output get only
the loader's usual lines. `fersearch.data.load` shows it when stderr is a terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Tick = Callable[[str, int, int], None]  # (what, done, total): e.g. ("fer2013.csv: rows parsed", 8192, 35887)


def no_progress(what: str, done: int, total: int) -> None:
    """A Tick that shows nothing."""


def stderr_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@contextmanager
def load_progress(show: bool) -> Iterator[Tick]:
    """A Tick drawing one bar per `what` on stderr while the block runs (nothing if not `show`)."""
    if not show:
        yield no_progress
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr_console(), transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def tick(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield tick
