"""Every table of the report as LaTeX for papers: a booktabs ``table`` float per table, pure ASCII.

A render writes ``tables/<slug>.tex`` for each :class:`report.tables.Table` and, beside them,
``tables/headreport.sty`` (the macros they use); a paper loads ``\\usepackage{booktabs}`` and
``\\usepackage{headreport}`` and writes ``\\input{tables/<slug>.tex}``. Two escapers, like those of
:mod:`report.escaping`, for text that LaTeX must print and never interpret:

* :func:`latex_text`, text mode (captions, headers, text and number cells): the TeX specials and
  the characters that the default (OT1) fonts print as something else (``<`` is ``¡`` there) are
  written with text commands (``\\textless{}``, ``\\textbackslash{}``…); ``[`` and ``]`` are braced,
  so a cell is never read as an optional argument (``\\\\[2pt]``, ``\\midrule[1pt]``); ligatures
  (``--``, ``''``, ``!```…) are broken with ``{}``; the report's mathematical characters become math
  (``σ₁`` → ``$\\sigma_{1}$``, ``1.2×10⁻⁴`` → ``$1.2\\times10^{-4}$``).
* :func:`latex_code`, monospace (tokens in their visible form, hashes, versions): ``\\texttt{…}`` in
  which every TeX special, and ``" < >`` (babel shorthands in some languages), is typed by its code
  point from the typewriter font (``\\char"5C{}``), whose ASCII slots hold ASCII in OT1, T1 and TU.
  A token such as ``\\input{/etc/passwd}`` is printed, never run.

Any other character outside ASCII becomes ``\\hrchar{XXXX}`` (its code point in hex):
``headreport.sty`` prints the character with XeLaTeX and LuaLaTeX and a visible ``<U+XXXX>`` with
pdflatex. The open box ``␣`` of a token's visible form is ``\\hrvisiblespace{}``, a glyph in both.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from importlib import resources
from pathlib import Path

from .escaping import OPEN_BOX
from .tables import Cell, Table

#: the folder of the exported tables, under the output folder and under ``site/``
TABLES_DIR = "tables"
STYLE_FILE = "headreport.sty"

_TEXT_ESCAPES = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"\textquotedbl{}", "[": "{[}", "]": "{]}",
}
#: a character of the first set followed by one of the second can form a ligature (``--``, ``''``,
#: ``!``` → ``¡``, T1's ``,,`` → ``„``): ``{}`` between them keeps both
_LIGATURE_FIRST = frozenset("-`'!?,")
_LIGATURE_SECOND = frozenset("-`',")
_LINE_BREAKS = re.compile("[\t\n\r\u2028\u2029]")

_TEXT_SYMBOLS = {
    OPEN_BOX: r"\hrvisiblespace{}", "\u2013": r"\textendash{}", "\u2014": r"\textemdash{}",
    "\u2026": r"\ldots{}", "\u2018": r"\textquoteleft{}", "\u2019": r"\textquoteright{}",
    "\u201c": r"\textquotedblleft{}", "\u201d": r"\textquotedblright{}", "\u00a0": "~",
}
_GREEK_SMALL = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi - pi rho varsigma "
                "sigma tau upsilon phi chi psi omega")  # U+03B1 … U+03C9; omicron has no command
_GREEK_CAPITAL = {"\u0393": "Gamma", "\u0394": "Delta", "\u0398": "Theta", "\u039b": "Lambda", "\u039e": "Xi",
                  "\u03a0": "Pi", "\u03a3": "Sigma", "\u03a5": "Upsilon", "\u03a6": "Phi", "\u03a8": "Psi",
                  "\u03a9": "Omega"}
_MATH_SYMBOLS = {
    "\u00d7": r"\times", "\u00b7": r"\cdot", "\u2212": "-", "\u00b1": r"\pm", "\u221a": r"\surd",
    "\u2264": r"\leq", "\u2265": r"\geq", "\u2248": r"\approx", "\u2260": r"\neq", "\u221e": r"\infty",
    "\u2192": r"\rightarrow", "\u2190": r"\leftarrow", "\u22a4": r"\top", "\u2211": r"\sum", "\u2208": r"\in",
    **{chr(0x3B1 + i): "\\" + name for i, name in enumerate(_GREEK_SMALL.split()) if name != "-"},
    **{ch: "\\" + name for ch, name in _GREEK_CAPITAL.items()},
}
#: a number written next to a mathematical character joins its formula (``1.2×10⁻⁴``, ``−0.5``)
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")

#: TeX specials (and babel shorthands) that monospace text types by code point
_CODE_BY_NUMBER = frozenset('\\{}$&#^_%~"<>')


def _hrchar(ch: str) -> str:
    return f"\\hrchar{{{ord(ch):04X}}}"


def _script(ch: str) -> tuple[str, str] | None:
    """``("_", "1")`` for a subscript ``₁``, ``("^", "-")`` for a superscript ``⁻``…; None for any
    other character (or a script whose content math cannot write literally)."""
    kind = unicodedata.decomposition(ch).split(" ", 1)[0]
    if kind not in ("<sub>", "<super>"):
        return None
    content = unicodedata.normalize("NFKC", ch).replace("\u2212", "-")
    if not re.fullmatch(r"[A-Za-z0-9+\-=()]+", content):
        return None
    return ("_" if kind == "<sub>" else "^"), content


def _text_items(text: str) -> list[tuple[str, str]]:
    """One ``(kind, latex)`` per character: kind ``text``, ``math`` (inside ``$…$``), or ``_`` / ``^``
    (a subscript / superscript character, also math)."""
    text = _LINE_BREAKS.sub(" ", text)
    items = []
    for i, ch in enumerate(text):
        if ch in _TEXT_ESCAPES:
            items.append(("text", _TEXT_ESCAPES[ch]))
        elif " " <= ch <= "~":
            ligature = ch in _LIGATURE_FIRST and text[i + 1:i + 2] in _LIGATURE_SECOND
            items.append(("text", ch + "{}" if ligature else ch))
        elif ch in _TEXT_SYMBOLS:
            items.append(("text", _TEXT_SYMBOLS[ch]))
        elif ch in _MATH_SYMBOLS:
            items.append(("math", _MATH_SYMBOLS[ch]))
        else:
            items.append(_script(ch) or ("text", _hrchar(ch)))
    for m in _NUMBER.finditer(text):
        start, end = m.span()
        if (start and items[start - 1][0] != "text") or (end < len(items) and items[end][0] != "text"):
            items[start:end] = [("math", digit) for digit in m.group()]
    return items


def _formula(items: list[tuple[str, str]]) -> str:
    """Consecutive math items as one ``$…$``: script characters in a row share one ``_{…}`` or
    ``^{…}`` on the base before them; a second script of the same kind gets an empty base ``{}``
    (``x_{1}_{2}`` would be an error)."""
    parts: list[str] = []
    attached = ""  # the script kinds already on the current base
    previous = ""
    for kind, latex in items:
        if kind == "math":
            parts.append(latex)
            attached = ""
        elif kind == previous:
            parts[-1] = parts[-1][:-1] + latex + "}"
        else:
            if kind in attached:
                parts.append("{}")
                attached = ""
            parts.append(f"{kind}{{{latex}}}")
            attached += kind
        previous = kind
    return "$" + "".join(parts) + "$"


def latex_text(text: str) -> str:
    """``text`` for LaTeX text mode, in ASCII (see the module docstring). Line breaks and tabs become
    spaces; a character with no ASCII form becomes ``\\hrchar{XXXX}``."""
    out = []
    for is_math, group in itertools.groupby(_text_items(text), key=lambda item: item[0] != "text"):
        items = list(group)
        out.append(_formula(items) if is_math else "".join(latex for _, latex in items))
    return "".join(out)


def latex_code(text: str) -> str:
    """``text`` in monospace, literally: ``\\texttt{…}`` in ASCII (see the module docstring). Each
    space is a ``\\ `` (runs of spaces are kept)."""
    out = []
    for i, ch in enumerate(text):
        if ch == " ":
            out.append("\\ ")
        elif ch in _CODE_BY_NUMBER:
            out.append(f'\\char"{ord(ch):02X}{{}}')
        elif " " < ch <= "~":
            ligature = ch in _LIGATURE_FIRST and text[i + 1:i + 2] in _LIGATURE_SECOND
            out.append(ch + "{}" if ligature else ch)
        elif ch == OPEN_BOX:
            out.append(r"\hrvisiblespace{}")
        else:
            out.append(_hrchar(ch))
    return "\\texttt{" + "".join(out) + "}"


def latex_label(name: str) -> str:
    """``name`` as a label: lower-case ASCII letters, digits and ``-`` only."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "table"


def _cell(cell: Cell, column_kind: str) -> str:
    """One cell. A cell whose kind is not its column's (a number in a text column, ``yes`` in a
    number column) is pushed to its own side with ``\\hfill``, as the HTML table aligns each cell."""
    if not cell.text:
        return ""
    body = latex_code(cell.text) if cell.kind == "token" else latex_text(cell.text)
    if cell.kind == "number" and column_kind != "number":
        return r"\hfill " + body
    if cell.kind != "number" and column_kind == "number":
        return body + r"\hfill"
    return body


def _row(cells: list[str]) -> str:
    """A table row. A first cell that starts with ``*`` is braced off: after ``\\\\`` it would be
    read as ``\\\\*``."""
    if cells and cells[0].startswith("*"):
        cells = ["{}" + cells[0], *cells[1:]]
    return " & ".join(cells) + r" \\"


def latex_table(table: Table, label: str) -> str:
    """``table`` as a LaTeX ``table`` float: ``\\caption`` (above the table, as booktabs advises) and
    ``\\label{tab:<label>}``, a ``tabular`` with ``\\toprule``, ``\\midrule`` and ``\\bottomrule``.
    Columns are aligned by the first row's cell kinds, as in the HTML and Typst tables: numbers
    right, text and tokens left."""
    kinds = [c.kind for c in table.rows[0]] if table.rows else ["text"] * len(table.columns)
    name = latex_label(label)
    lines = [
        f"% Table {name} of a headreport report (written by each render; edits are overwritten).",
        r"% Preamble: \usepackage{booktabs} \usepackage{headreport}",
        r"\begin{table}[htbp]",
        r"\centering",
        rf"\caption{{{latex_text(table.caption)}}}",
        rf"\label{{tab:{name}}}",
        r"\hrtablefont",
        rf"\begin{{tabular}}{{{''.join('r' if k == 'number' else 'l' for k in kinds)}}}",
        r"\toprule",
        _row([latex_text(h) for h in table.columns]),
        r"\midrule",
        *(_row([_cell(c, k) for c, k in zip(row, kinds)]) for row in table.rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"


def style_file() -> str:
    """The text of ``headreport.sty`` (a package resource)."""
    return resources.files("headreport.report").joinpath(STYLE_FILE).read_text(encoding="ascii")


def write_tables(tables: list[Table], folder: Path) -> dict[str, Path]:
    """Write ``folder/<slug>.tex`` for each table and ``folder/headreport.sty``; returns slug → path.

    Two tables with one slug (or one label) would overwrite each other: a page builder's bug, refused."""
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    labels: set[str] = set()
    for table in tables:
        if table.slug in paths or latex_label(table.slug) in labels:
            raise ValueError(f"two tables of the report have the slug {table.slug!r} (one is {table.caption!r})")
        labels.add(latex_label(table.slug))
        paths[table.slug] = folder / f"{table.slug}.tex"
        paths[table.slug].write_text(latex_table(table, table.slug), encoding="ascii")
    (folder / STYLE_FILE).write_text(style_file(), encoding="ascii")
    return paths
