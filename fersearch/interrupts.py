"""Ctrl+C that always stops a command: exit 130, results whole.

Python raises KeyboardInterrupt wherever the main thread happens to be, and some places
swallow it: a weakref callback or a `__del__` prints "Exception ignored" and goes on, a
library's `except BaseException` retries. The CLI therefore installs `handler` (`install`):
it records the Ctrl+C and raises KeyboardInterrupt as Python would, and a watchdog thread
raises it again every REPEAT_S until the command has stopped (`stopped`), so an interrupt
that was swallowed is delivered again a moment later in ordinary code. The "Exception ignored
... KeyboardInterrupt" traceback Python prints for one swallowed by a finaliser is dropped
(`quiet_unraisable`): the watchdog's next delivery is the one that stops the command.

`deferred()` holds a Ctrl+C back for a block that must not be cut in two (a directory swap):
it is raised when the block ends, so a result is the old one or the new one, never neither.
"""

from __future__ import annotations

import _thread
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_CODE = 130  # 128 + SIGINT: what shells and scripts expect of a command stopped by Ctrl+C
REPEAT_S = 2.0  # a swallowed interrupt is raised again this often
_state = {"requested": False, "stopped": False, "deferring": 0, "pending": False, "armed": False}
_watchdog: list[threading.Thread] = []


def install(armed: bool = True) -> None:
    """The CLI's SIGINT handler (main thread only; elsewhere Python's stays). Not armed (while the CLI's
    modules import, see fersearch/__init__.py): a Ctrl+C is recorded, and `arm` then exits 130 at once."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, handler)
        quiet_unraisable(KeyboardInterrupt)
        if armed:
            arm()


def arm() -> None:
    """From here on a Ctrl+C raises KeyboardInterrupt; one recorded before arming raises now."""
    _state["armed"] = True
    if _state["pending"] and not _state["deferring"]:
        _state["pending"] = False
        handler(signal.SIGINT, None)


def handler(signum: int, frame: object) -> None:
    if _state["stopped"]:
        return  # the command is already on its way out: let its cleanup finish
    if _state["deferring"] or not _state["armed"]:
        _state["pending"] = True  # raised when the block ends, or once the CLI is armed
        return
    _state["requested"] = True
    if not _watchdog:
        _watchdog.append(threading.Thread(target=_repeat, daemon=True, name="fersearch-interrupt"))
        _watchdog[0].start()
    raise KeyboardInterrupt


def quiet_unraisable(*stops: type[BaseException]) -> None:
    """Python's unraisable hook, less these stop signals raised inside a finaliser: in the CLI our handler's
    KeyboardInterrupt (delivered again by the watchdog), in a trial worker Ray's SystemExit too."""

    def hook(info: sys.UnraisableHookArgs) -> None:
        if not isinstance(info.exc_value, stops):
            sys.__unraisablehook__(info)

    sys.unraisablehook = hook


def _repeat() -> None:
    while True:
        time.sleep(REPEAT_S)
        if _state["stopped"]:
            return
        if not _state["deferring"]:
            _thread.interrupt_main(signal.SIGINT)  # runs `handler` again in the main thread


def requested() -> bool:
    """A Ctrl+C arrived (even if some library swallowed its KeyboardInterrupt)."""
    return bool(_state["requested"] or _state["pending"])


def uncaught() -> bool:
    """A Ctrl+C arrived and the command has not caught it yet: an error raised now is its consequence."""
    return requested() and not _state["stopped"]


def stopped() -> None:
    """The command has caught the interrupt and is leaving: no more re-raising."""
    _state["stopped"] = True


@contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl+C back for the block; raise it once the block is done."""
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        if not _state["deferring"] and _state["pending"] and not _state["stopped"]:
            _state["pending"] = False
            _state["requested"] = True
            raise KeyboardInterrupt


def finished(result: object) -> object:
    """A command's result, unless a Ctrl+C arrived meanwhile (KeyboardInterrupt: the CLI exits 130)."""
    if requested():
        raise KeyboardInterrupt
    return result
