"""Tables that hold tokens, rendered directly to HTML and to Typst, never through Markdown.

A pipe table cannot hold every token (``|`` ends a cell even inside code), so a :class:`Table` is
data — a header and rows of typed cells — and :func:`markdown_table` emits it as two raw blocks,
``{=html}`` and ``{=typst}``, each escaped for its own target. Pandoc and Quarto keep the block of
the format they are writing and copy it verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import outputs
from .escaping import Safe, html_text, raw_block, typst_markup, typst_raw, visible_token


@dataclass(frozen=True)
class Cell:
    """One cell: ``kind`` "text" (plain text), "token" (visible token, monospace) or "number"
    (already formatted text, right-aligned)."""

    text: str
    kind: str = "text"


def text(value: Any) -> Cell:
    return Cell(str(value), "text")


def number(formatted: str) -> Cell:
    return Cell(formatted, "number")


def token(record: Mapping[str, Any]) -> Cell:
    return Cell(visible_token(record), "token")


def code(value: str) -> Cell:
    """Verbatim monospace text that is not a token (hashes, paths, flags)."""
    return Cell(value, "token")


@dataclass
class Table:
    """A captioned table; ``columns`` are plain-text headers. ``slug`` (a keyword, always given) names
    the table's LaTeX export ``tables/<slug>.tex`` and its label ``tab:<slug>``: unique in the report,
    and always a safe file name (passed through :func:`report.outputs.slug`)."""

    caption: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    css_class: str = ""
    number: int = 0  # global table number (set in reading order); Typst numbers its own copy
    slug: str = field(kw_only=True)

    def __post_init__(self) -> None:
        self.slug = outputs.slug(self.slug)


def html_table(table: Table) -> str:
    """The table as HTML; every cell escaped with :func:`html_text`."""
    def cell(c: Cell, tag: str) -> str:
        inner = html_text(c.text)
        if c.kind == "token":
            inner = f'<code class="tok">{inner}</code>'
        cls = ' class="num"' if c.kind == "number" else ""
        return f"<{tag}{cls}>{inner}</{tag}>"

    kinds = [c.kind for c in table.rows[0]] if table.rows else ["text"] * len(table.columns)
    num_class = ' class="num"'
    head = "".join(
        f'<th{num_class if k == "number" else ""}>{html_text(h)}</th>' for h, k in zip(table.columns, kinds)
    )
    body = "\n".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in table.rows)
    cls = f' class="{html_text(table.css_class)}"' if table.css_class else ""
    number = f'<span class="tab-number">Table {table.number}.</span> ' if table.number else ""
    return (
        f'<div class="table-wrap"><table{cls}>\n<caption>{number}{html_text(table.caption)}</caption>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>"
    )


def typst_table(table: Table) -> str:
    """The table as a Typst ``#figure(table(...), kind: table)``: numbered "Table N" with caption."""
    def cell(c: Cell) -> str:
        if c.kind == "token":
            return f"[{typst_raw(c.text)}]"
        return f"[{typst_markup(c.text)}]"

    n = len(table.columns)
    kinds = [c.kind for c in table.rows[0]] if table.rows else ["text"] * n
    align = ", ".join("right" if k == "number" else "left" for k in kinds)
    header = ", ".join(f"[*{typst_markup(h)}*]" for h in table.columns)
    body = ",\n    ".join(", ".join(cell(c) for c in row) for row in table.rows)
    return (
        f"#figure(\n  table(\n    columns: {n},\n    align: ({align},),\n"
        f"    table.header({header}),\n    {body}{',' if body else ''}\n  ),\n"
        f"  kind: table,\n  caption: [{typst_markup(table.caption)}],\n)"
    )


def markdown_table(table: Table) -> Safe:
    """The table as Markdown: a raw HTML block and a raw Typst block."""
    return raw_block(html_table(table), typst_table(table))
