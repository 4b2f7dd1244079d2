"""The `fersearch` command line: thin typer commands over the Python API.

Library code raises FersearchError; only this module turns it into a one-line
`error: ...` on stderr and exit code 1. Heavy imports (torch, ray) happen
inside commands so `fersearch --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from .errors import FersearchError


class _Group(TyperGroup):
    """Turns a user's mistake into one line and exit 1, for every (sub)command."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FersearchError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    help="Distributed hyperparameter search for facial-expression CNNs on FER2013.",
)
data_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Inspect, generate and preview FER2013 data.")
app.add_typer(data_app, name="data")

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


@app.callback()
def _main() -> None:
    """Distributed hyperparameter search for facial-expression CNNs on FER2013."""


# ---- data commands (issue: data layer) -------------------------------------
# ---- train command (issue: trainer) ----------------------------------------
# ---- tune / spaces / status commands (issue: tune) ------------------------
# ---- best / predict commands (issue: best) ---------------------------------


def main() -> None:
    app()
