"""What every `fersearch` command shares: the group that turns a user's mistake into one line, and
the option types more than one command takes. Nothing heavy is imported here (--help stays fast)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from typer.core import TyperGroup

from .. import interrupts
from ..errors import FersearchError
from ..search.guard import full_disk_error


class Group(TyperGroup):
    """Turns a user's mistake into one line and exit 1, for every (sub)command."""

    def invoke(self, ctx: typer.Context):  # type: ignore[override]  # typer's Context is click's, vendored
        try:
            try:
                return interrupts.finished(super().invoke(ctx))  # a Ctrl+C some library swallowed: still 130
            except Exception:
                if interrupts.uncaught():  # a library turned the Ctrl+C into its own error (a pybind11
                    raise KeyboardInterrupt from None  # module's import: ImportError "initialization failed")
                raise
        except KeyboardInterrupt:
            interrupts.stopped()
            typer.echo("interrupted", err=True)
            raise typer.Exit(interrupts.EXIT_CODE) from None
        except FersearchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None
        except typer.BadParameter as e:  # e.g. a choice flag's value: one line too, not a usage screen
            typer.echo(f"error: {e.format_message().replace('Value error, ', '')}", err=True)
            raise typer.Exit(1) from None
        except OSError as e:  # a full disk is no bug of fersearch's: say so in one line
            full = full_disk_error(e)
            if full is None:
                raise
            typer.echo(f"error: {full}", err=True)
            raise typer.Exit(1) from None



DataOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--data",
        help="FER2013 file or folder (fer2013.csv, icml_face_data.csv, train.csv+test.csv, "
        "train/ test/ image folders, fer2013new.csv beside fer2013.csv). "
        "Default: data/fer2013.csv if present, else the synthetic set in data/synthetic/.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines or bars; print only the result.")]
SYNTH_PRESETS = Literal["default", "hard"]  # data.presets.PRESETS (not imported: --help stays light; a test compares)

ResizeOpt = Annotated[
    bool, typer.Option("--resize", help="Scale images that are not 48x48 (image folders) to 48x48 instead of "
                       "stopping with an error.")
]
PathArg = Annotated[
    Optional[Path], typer.Argument(help="FER2013 file or folder (same as --data; default as --data).",
                                   show_default=False)
]
