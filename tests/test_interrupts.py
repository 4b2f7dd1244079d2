"""Ctrl+C that lands inside a finaliser (fersearch/interrupts.py): Python can only report the
KeyboardInterrupt there as "Exception ignored"; the CLI's handler must still stop the command, a
moment later, without that traceback (seen in the Ctrl+C test of `best --evaluate` on CI)."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import os, signal, time
from fersearch import interrupts
interrupts.install()

class Broken:
    def __del__(self): raise ValueError("a real fault")

class Interrupted:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(100000): pass  # the handler runs here, inside the finaliser

Broken()
try:
    Interrupted()
    print("went on", flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    print("never stopped")
except KeyboardInterrupt:
    print("stopped")
"""


def test_a_ctrl_c_swallowed_by_a_finaliser_stops_the_command_without_a_traceback():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "went on\nstopped\n", done
    # the real fault still prints; the swallowed Ctrl+C does not
    assert done.stderr.count("Exception ignored") == 1 and "ValueError: a real fault" in done.stderr, done.stderr
    assert "KeyboardInterrupt" not in done.stderr, done.stderr


APP = """
import os, signal, sys, time
import typer
from fersearch import interrupts
from fersearch.commands.common import Group

app = typer.Typer(cls=Group)
sub = typer.Typer(cls=Group)
app.add_typer(sub, name="sub")

@app.command()
def other():
    pass

@sub.command()
def load(kind: str):
    try:  # what a pybind11 module's import does with a KeyboardInterrupt raised while it initialises
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt as e:
        if kind == "converted":
            raise ImportError("initialization failed") from e
    raise ValueError("a real fault")

interrupts.install()
sys.argv[0] = "app"
app()
"""


def test_an_error_a_library_made_of_a_ctrl_c_still_exits_130_in_one_line():
    for kind in ("converted", "swallowed"):  # raised at once / after a library swallowed the interrupt
        done = subprocess.run([sys.executable, "-c", APP, "sub", "load", kind], capture_output=True, text=True,
                              timeout=120)
        assert (done.returncode, done.stderr) == (130, "interrupted\n"), (kind, done)
