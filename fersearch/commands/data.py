"""`fersearch data`: inspect, generate and preview FER2013 data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from .common import SYNTH_PRESETS, DataOpt, Group, JsonOpt, PathArg, QuietOpt, ResizeOpt

data_app = typer.Typer(cls=Group, no_args_is_help=True, help="Inspect, generate and preview FER2013 data.")


@data_app.command("synth")
def data_synth_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write fer2013.csv (+ synthetic.json) into.")] = Path(
        "data/synthetic"),
    n: Annotated[Optional[int], typer.Option("--n", min=1, help="Number of faces (default 4000; FER2013 has 35887).",
                                             show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same file.")] = 0,
    preset: Annotated[Literal[SYNTH_PRESETS], typer.Option(
        "--preset", help="default, or hard: low-contrast faces at random brightness, stronger lighting and noise, "
        "weaker expressions (the seed recipe stays at the majority-class rate for its first epochs).")] = "default",
) -> None:
    """Generate synthetic FER-format faces (not real FER2013) as a fer2013.csv."""
    from ..data.synth import DEFAULT_SYNTH_N, write_synthetic

    n = n or DEFAULT_SYNTH_N
    path = write_synthetic(out, n, seed, preset=preset)
    kind = "" if preset == "default" else f"{preset} "
    typer.echo(f"wrote {n} {kind}synthetic faces (seed {seed}) to {path}")


@data_app.command("info")
def data_info_cmd(path: PathArg = None, data: DataOpt = None, json_out: JsonOpt = False,
                  resize: ResizeOpt = False, quiet: QuietOpt = False) -> None:
    """Counts per split and emotion, the detected format, notes and the content hash."""
    from ..data import load
    from ..outputs import json_text

    d = load(path or data, resize=resize, quiet=quiet)
    if json_out:
        typer.echo(json_text(d.info()))
        return
    kind = f"{d.format}  (SYNTHETIC faces, not FER2013)" if d.synthetic else d.format
    typer.echo(f"source  {d.source}\nformat  {kind}\nsha256  {d.sha256}\nimages  {d.n} (48x48 grayscale)\n")
    typer.echo(d.table())
    for note in d.notes:
        typer.echo(f"note: {note}")


@data_app.command("preview")
def data_preview_cmd(
    path: PathArg = None,
    data: DataOpt = None,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("preview.png"),
    per_class: Annotated[int, typer.Option("--per-class", min=1, max=30, help="Samples per emotion.")] = 8,
    split: Annotated[Literal["train", "val", "test"],
                     typer.Option("--split", help="Which split to sample.")] = "train",
    seed: Annotated[int, typer.Option("--seed", help="Seed for picking the samples.")] = 0,
    resize: ResizeOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Draw a labelled grid of sample faces per emotion (PNG)."""
    from ..data import load
    from ..data.preview import preview_grid

    written = preview_grid(load(path or data, resize=resize, quiet=quiet), out, per_class=per_class,
                           split=split, seed=seed)
    typer.echo(f"wrote {written}")
