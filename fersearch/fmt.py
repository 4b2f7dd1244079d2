"""Every number, value and short text fersearch shows people, in one place.

Precision is chosen once here: accuracies with 4 decimals (`acc`), percentages
with 2 (`pct`), hyperparameters in a few characters (`short_value`), counts with
their noun (`plural`), elapsed times as clocks (`clock`). `plain` turns numpy
scalars and NaN into plain JSON values, for every file and `--json` output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, SupportsFloat

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from rich.console import RenderableType
    from rich.table import Table


def missing(v: object) -> bool:
    """None or NaN: a value a row does not have."""
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def plain(v: object) -> object:
    """numpy scalars -> Python, NaN -> None; "True"/"False" text (a CSV cell) -> bool;
    an integral float (CSV's 128.0 for 128) -> int."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer() and abs(v) < 2**53:
            return int(v)
    if isinstance(v, str) and v in ("True", "False"):
        return v == "True"
    return v


def json_value(v: object) -> object:
    """numpy scalars -> Python and NaN -> None, nothing else changed (JSON output)."""
    if isinstance(v, np.generic):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def int_or_none(v: SupportsFloat | str | None) -> int | None:
    if v is None:
        return None
    try:

        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else int(f)


def plural(n: int, word: str) -> str:
    """'1 trial', '8 trials': counts in user-facing lines."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def num(x: object, digits: int = 6) -> str:
    """A count or setting as written: 3, 0.5, 1e-05 (never 3.0); a float to `digits`
    significant figures; a list as [32, 64, 0.25]."""
    if isinstance(x, (list, tuple)):
        return "[" + ", ".join(num(v, digits) for v in x) + "]"
    if isinstance(x, (int, float, np.number)) and not isinstance(x, bool):
        x = float(x)
        return str(int(x)) if x.is_integer() else f"{x:.{digits}g}"
    return str(x)


def acc(v: SupportsFloat | None) -> str:
    """An accuracy or loss: 4 decimals; '-' when missing."""
    return "-" if v is None or missing(v) else f"{float(v):.4f}"


def pct(v: SupportsFloat | None) -> str:
    return "n/a" if v is None or missing(v) else f"{100 * float(v):.2f}%"


def clock(seconds: float) -> str:
    """Elapsed time as m:ss or h:mm:ss (0:42, 12:05, 1:02:03)."""
    s = int(max(0.0, seconds))
    h, m, sec = s // 3600, s % 3600 // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def short_value(v: object) -> str:
    """A hyperparameter value in a few characters: 0.25 -> .25, 0.000316 -> 3.2e-4, True -> on."""
    v = plain(v) if not isinstance(v, str) else v
    if isinstance(v, bool):
        return "on" if v else "off"
    if isinstance(v, (list, tuple)):
        return "/".join(short_value(x) for x in v)
    if isinstance(v, float):
        text = f"{v:.1e}" if 0 < abs(v) < 1e-2 else f"{v:.3g}"
        if "e" in text:
            mant, exp = text.split("e")
            text = f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"
        return text.replace("0.", ".", 1) if text.startswith("0.") else text
    return str(v)


def short_params(params: Mapping[str, object], width: int | None = None,
                 order: Iterable[str] = ()) -> str:
    """Hyperparameters in one short line; per-block values (filters_1, filters_2, ...) are
    joined as `filters=32/64/128`; missing ones left out. `order`: names to put first, in
    that order (TrainConfig's field order). Cut at `width` characters with an ellipsis."""
    order = tuple(order)
    groups: dict[str, list[tuple[int, object]]] = {}
    for key, value in params.items():
        if missing(value):
            continue  # a parameter this trial does not have (filters_4 of a 3-block trial)
        key = str(key).removeprefix("config/")
        stem, _, idx = key.rpartition("_")
        if stem and idx.isdigit():
            groups.setdefault(stem, []).append((int(idx), value))
        else:
            groups.setdefault(key, []).append((0, value))

    def rank(name: str) -> tuple[int, str]:
        return (order.index(name) if name in order else len(order), name)

    parts = [f"{name}=" + "/".join(short_value(v) for _, v in sorted(vals, key=lambda iv: iv[0]))
             for name, vals in sorted(groups.items(), key=lambda kv: rank(kv[0]))]
    return cut(" ".join(parts), width)


def cut(text: str, width: int | None) -> str:
    """`text` cut to `width` characters with an ellipsis (None: uncut)."""
    if width is None or len(text) <= width:
        return text
    return text[: max(0, width - 1)] + "…"


def first_line(e: BaseException | str) -> str:
    """An exception (or a traceback text) as one line: its last `SomethingError: ...` line,
    else its first line, else its type name. For one-line error messages."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__ if isinstance(e, BaseException) else "error"
    if len(lines) == 1:
        return lines[0]
    import re

    excs = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", ln)]
    return excs[-1] if excs else lines[0]


def cells(df: pd.DataFrame) -> pd.DataFrame:
    """A DataFrame with every cell as display text, for tables: floats as `acc` (4 decimals),
    missing cells (None, NaN, pandas' NA) as '-', numpy scalars as plain values."""
    import pandas as pd

    def text(v: object) -> str:
        if v is None or v is pd.NA or missing(v):
            return "-"
        return acc(v) if isinstance(v, (float, np.floating)) else str(plain(v))

    return df.map(text).astype(object)


def text_table(header: Iterable[tuple[str, str]], rows: Iterable[Iterable[str]]) -> Table:
    """A rich Table of text cells, the one table renderer of the live view and `fersearch status`.
    header: (name, "left" | "right") per column. Every column but the last keeps its full width; the
    last (the hyperparameters) is cut with an ellipsis on a narrow screen."""
    from rich import box
    from rich.table import Table

    columns, cells = list(header), [list(r) for r in rows]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for i, (name, justify) in enumerate(columns[:-1]):
        table.add_column(name, justify=justify, no_wrap=True,  # type: ignore[arg-type]
                         min_width=max([len(name)] + [len(r[i]) for r in cells]))
    table.add_column(columns[-1][0], justify=columns[-1][1], no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    for r in cells:
        table.add_row(*r)
    return table


def render(renderable: RenderableType, width: int | None = None) -> str:

    """A rich renderable as plain text (no colour codes), `width` characters wide (None: as wide as it needs)."""
    import io

    from rich.console import Console

    console = Console(file=io.StringIO(), width=width or 10_000, color_system=None, highlight=False)
    console.print(renderable, soft_wrap=width is None)
    return "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())  # type: ignore[attr-defined]
