"""The report page as data, and its two renderings: a Page is a title and a list of small typed
blocks (paragraphs, cards, tables, figures, commands, nested sections); render_html and
render_markdown walk the same list, so report.html and report.md cannot say different things.

What the page says is decided once, in pages.build_page; this module only knows how each block
looks in HTML (self-contained: images as data URIs, CSS from report.css) and in Markdown
(relative image links). Text is escaped here, in one place, never by the builder.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Literal

import pandas as pd
from pandas.io.formats.style import Styler

from ..fmt import cells


@dataclass(frozen=True)
class Strong:
    """Bold text inside a paragraph."""

    text: str


@dataclass(frozen=True)
class Mono:
    """A path or command inside a paragraph."""

    text: str


Inline = str | Strong | Mono


@dataclass(frozen=True)
class Para:
    """A paragraph. kind: "sub" (the line under the title), "warn" (a warning the reader must see),
    "note" (small print under a table), "plain" (body text)."""

    parts: tuple[Inline, ...]
    kind: Literal["sub", "warn", "note", "plain"] = "note"

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else p.text for p in self.parts)


def para(*parts: Inline, kind: Literal["sub", "warn", "note", "plain"] = "note") -> Para:
    return Para(parts, kind)


@dataclass(frozen=True)
class Points:
    """Sentences that belong together: paragraphs in HTML, a bulleted list in Markdown."""

    items: tuple[str, ...]


@dataclass(frozen=True)
class Cards:
    """The headline figures: (label, value, detail) as cards in HTML, a three-column table in Markdown."""

    rows: tuple[tuple[str, str, str], ...]


@dataclass(frozen=True, eq=False)
class Table:
    """A pandas frame, numbers through fmt.cells. `name` makes the HTML table's id; `css` its class;
    `highlight` marks the first row; `row_class` gives a CSS class per row ("" for none); `halves`
    shows a long key/value table as two side by side in HTML; `wide` lets it scroll sideways."""

    df: pd.DataFrame
    name: str
    css: str = ""
    highlight: bool = False
    row_class: tuple[str, ...] = ()
    halves: bool = False
    wide: bool = False


@dataclass(frozen=True)
class Details:
    """A two-column (key, value) table shown on demand in HTML; one sentence in Markdown."""

    summary: str
    table: Table


@dataclass(frozen=True)
class Figure:
    """An image in the page's folder; several side by side in HTML, on one line in Markdown."""

    title: str
    file: str


@dataclass(frozen=True)
class Figures:
    items: tuple[Figure, ...]


@dataclass(frozen=True)
class Command:
    """A command to copy, under its label."""

    label: str
    text: str


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...]
    level: int = 2


Block = Para | Points | Cards | Table | Details | Figures | Command | Section


@dataclass(frozen=True)
class Page:
    title: str
    folder: Path  # where the figures' files are
    blocks: tuple[Block, ...] = field(default=())

    def sections(self) -> Iterator[Section]:
        """Every section and subsection, in page order."""
        def walk(blocks: tuple[Block, ...]) -> Iterator[Section]:
            for b in blocks:
                if isinstance(b, Section):
                    yield b
                    yield from walk(b.blocks)
        return walk(self.blocks)


# ---------------------------------------------------------------- HTML
def css() -> str:
    return files("fersearch.report").joinpath("report.css").read_text(encoding="utf-8")


def html_table(t: Table) -> str:
    """The table through pandas' Styler (escaped), with its per-row CSS classes."""
    df = t.df
    styler = Styler(cells(df), uuid=t.name, cell_ids=False).hide(axis="index")
    styler = styler.format(escape="html").format_index(escape="html", axis=1)
    if (t.highlight or t.row_class) and len(df):
        marks = pd.DataFrame("", index=df.index, columns=df.columns)
        for i, c in enumerate(t.row_class):
            marks.iloc[i] = c
        if t.highlight:
            marks.iloc[0] = "hl"
        styler = styler.set_td_classes(marks)
    return styler.to_html(table_attributes=f'class="{t.css}"' if t.css else None)


def _inline_html(p: Inline) -> str:
    if isinstance(p, Strong):
        return f"<b>{html.escape(p.text)}</b>"
    return html.escape(p if isinstance(p, str) else p.text)


def _figure_html(f: Figure, folder: Path) -> str:
    data = base64.b64encode((folder / f.file).read_bytes()).decode("ascii")
    title = html.escape(f.title)
    return f'<figure><img alt="{title}" src="data:image/png;base64,{data}"><figcaption>{title}</figcaption></figure>'


def _block_html(b: Block, folder: Path) -> str:
    e = html.escape
    if isinstance(b, Section):
        return f"<h{b.level}>{e(b.title)}</h{b.level}>\n" + "\n".join(_block_html(x, folder) for x in b.blocks)
    if isinstance(b, Para):
        cls = "" if b.kind == "plain" else f" class={b.kind}"
        return f"<p{cls}>" + "".join(map(_inline_html, b.parts)) + "</p>"
    if isinstance(b, Points):
        return "".join(f"<p>{e(s)}</p>" for s in b.items)
    if isinstance(b, Cards):
        return "<div class=cards>" + "".join(
            f"<div class=card><div class=l>{e(label)}</div><div class=v>{e(v)}</div><div class=d>{e(d)}</div></div>"
            for label, v, d in b.rows) + "</div>"
    if isinstance(b, Table):
        if b.halves:
            half = (len(b.df) + 1) // 2
            parts = [Table(b.df.iloc[:half], f"{b.name}1", b.css), Table(b.df.iloc[half:], f"{b.name}2", b.css)]
            return "<div class=tables>" + "".join(map(html_table, parts)) + "</div>"
        return f"<div class=wide>{html_table(b)}</div>" if b.wide else html_table(b)
    if isinstance(b, Details):
        return f"<details><summary>{e(b.summary)}</summary>{html_table(b.table)}</details>"
    if isinstance(b, Figures):
        inner = "".join(_figure_html(f, folder) for f in b.items)
        return f"<div class=row>{inner}</div>" if len(b.items) > 1 else inner
    if isinstance(b, Command):
        return f"<p class=note>{e(b.label)}</p><pre>{e(b.text)}</pre>"
    raise TypeError(f"not a page block: {b!r}")


def render_html(page: Page) -> str:
    title = html.escape(page.title)
    head = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>\n"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{css()}</style></head>"
            f"<body><main>\n<h1>{title}</h1>")
    body = [_block_html(b, page.folder) for b in page.blocks]
    return "\n".join([head, *body, "</main></body></html>\n"])


# ---------------------------------------------------------------- Markdown
def md_table(df: pd.DataFrame) -> str:
    """`df` as a Markdown table (pandas writes Markdown only through the optional tabulate)."""
    text = cells(df)
    lines = ["| " + " | ".join(map(str, text.columns)) + " |", "|" + "---|" * len(text.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in text.itertuples(index=False)]
    return "\n".join(lines)


def _inline_md(p: Inline) -> str:
    if isinstance(p, Strong):
        return f"**{p.text}**"
    return f"`{p.text}`" if isinstance(p, Mono) else p


def _block_md(b: Block) -> list[str]:
    """The block's lines, each block followed by a blank line."""
    if isinstance(b, Section):
        return ["#" * b.level + " " + b.title, "", *(line for x in b.blocks for line in _block_md(x))]
    if isinstance(b, Para):
        text = "".join(map(_inline_md, b.parts))
        return [f"> {text}" if b.kind == "warn" else text, ""]
    if isinstance(b, Points):
        return [*(f"- {s}" for s in b.items), ""]
    if isinstance(b, Cards):
        return [md_table(pd.DataFrame(list(b.rows), columns=["figure", "value", "detail"])), ""]
    if isinstance(b, Table):
        return [md_table(b.df), ""]
    if isinstance(b, Details):
        kv = cells(b.table.df)
        pairs = ", ".join(f"{k}={v}" for k, v in zip(kv.iloc[:, 0], kv.iloc[:, 1]))
        return [f"{b.summary}: {pairs}.", ""]
    if isinstance(b, Figures):
        return [" ".join(f"![{f.title}]({f.file})" for f in b.items), ""]
    if isinstance(b, Command):
        return [b.label, "", "```", b.text, "```", ""]
    raise TypeError(f"not a page block: {b!r}")


def render_markdown(page: Page) -> str:
    lines = [f"# {page.title}", ""]
    for b in page.blocks:
        lines += _block_md(b)
    return "\n".join(lines)
