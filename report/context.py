"""What every page builder shares: the artifacts, the rendering facts, one cached Jinja environment.

Templates are package resources (``report.templates``, the top-level ``templates/`` folder), so an
installed wheel renders from any directory. One environment serves every template:

* ``*.qmd.j2`` (Markdown pages): every ``{{ value }}`` is escaped as Markdown text unless it is
  :class:`report.escaping.Safe` (the ``finalize`` hook), so a string from a config, a path or an
  artifact never becomes markup; the filters and helpers below return Safe text;
* ``*.html.j2``: Jinja's HTML autoescaping;
* ``*.yml.j2``: values go through ``tojson`` (valid YAML scalars).

Page-dependent helpers (``figure``, ``table``, ``link``) are passed to each render by
:meth:`ReportContext.render`, so the environment itself never changes; ``figure`` and ``table`` number
what they place, so the numbers follow the template's order and never drift from it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2

from headreport.analysis.artifacts import package_versions

from . import formatting as fmt
from . import tables as tb
from .escaping import (
    Safe,
    code_block,
    html_text,
    markdown_raw_inline,
    markdown_text,
    markdown_token,
    markdown_value,
    raw_block,
    typst_markup,
)
from .figures import Figure, html_figure, typst_figure
from .outputs import anchor, head_slug

#: the loader the explorer's and the prompt menu's scripts share (report/load.js): first, on every
#: page that runs either
LOADER_JS = "assets/load.js"


@dataclass
class Page:
    """One page of the site, one chapter of the PDF."""

    slug: str  # file stem: index, head-10.7, survey, reproducibility
    title: str
    nav_title: str
    markdown: str = ""
    figures: list[Figure] = field(default_factory=list)
    tables: list[tb.Table] = field(default_factory=list)  # each exported as tables/<slug>.tex
    scripts: list[str] = field(default_factory=list)  # site assets the page runs (after its body)


def template_source(name: str) -> str:
    """A template's text, read from the package resources."""
    return resources.files("headreport.report.templates").joinpath(name).read_text(encoding="utf-8")


def _load(name: str) -> tuple[str, None, Any]:
    try:
        return template_source(name), None, lambda: True
    except FileNotFoundError:
        raise jinja2.TemplateNotFound(name) from None


@jinja2.pass_context
def _finalize(context: jinja2.runtime.Context, value: Any) -> Any:
    """Markdown templates escape every value that is not Safe; other templates leave it to
    autoescaping (HTML) or ``tojson`` (YAML)."""
    if (context.name or "").endswith(".qmd.j2"):
        return markdown_value(value)
    return value


@functools.cache
def environment() -> jinja2.Environment:
    """The one Jinja environment of the report (cached)."""
    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(_load),
        undefined=jinja2.StrictUndefined,
        autoescape=lambda name: bool(name) and name.endswith(".html.j2"),
        finalize=_finalize,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({
        "md": lambda v: markdown_text(str(v)),
        "tok": markdown_token,
        "num": lambda v, d=3: markdown_text(fmt.num(v, d)),
        "int": lambda v: markdown_text(fmt.integer(v)),
        "pct": lambda v, d=2: markdown_text(fmt.percent(v, d)),
        "ci": lambda v: markdown_text(fmt.ci(v)),
        "p": lambda v: markdown_text(fmt.p_value(v)),
    })
    env.globals.update({"head_slug": head_slug, "code_block": code_block})
    return env


def page_link(slug: str, text: str) -> Safe:
    """A link to another page: ``slug.html`` on the site, the chapter's label in the PDF."""
    return markdown_raw_inline(
        f'<a href="{html_text(slug)}.html">{html_text(text)}</a>',
        f"#link(<{anchor(slug)}>)[{typst_markup(text)}];",
    )


@dataclass
class ReportContext:
    """Everything a page builder may read: the artifacts and facts about this rendering."""

    artifacts: dict[str, Any]  # :func:`analysis.artifacts.load_artifacts` output
    engine: str  # "pandoc" or "quarto"
    tool_versions: dict[str, str]  # rendering tools and libraries → version
    figures_href: str = "figures"  # figure files, relative to the HTML pages
    typst_figures_path: str = "figures"  # figure files, relative to the Typst document
    figure_count: int = 0
    tables: list[tb.Table] = field(default_factory=list)  # every table placed so far, in order
    _placed: tuple[list[Figure], list[tb.Table]] = field(default_factory=lambda: ([], []), repr=False)

    def figure_block(self, figure: Figure) -> Safe:
        """A figure where the template places it, numbered there: the next figure number, so the
        numbers follow the pages' reading order and Typst's own numbering of the PDF."""
        if not any(f is figure for f in self._placed[0]):
            self.figure_count += 1
            figure.number = self.figure_count
            self._placed[0].append(figure)
        return raw_block(html_figure(figure, self.figures_href), typst_figure(figure, self.typst_figures_path))

    def table_block(self, table: tb.Table) -> Safe:
        """A table where the template places it, numbered there (the next table number; listed in
        :attr:`tables`)."""
        if not any(t is table for t in self._placed[1]):
            self.tables.append(table)
            table.number = len(self.tables)
            self._placed[1].append(table)
        return tb.markdown_table(table)

    def render(self, template: str, **values: Any) -> str:
        """Render a Markdown page template with this context's helpers; the figures and tables it
        places are numbered as it places them (:meth:`figure_block`, :meth:`table_block`)."""
        self._placed = ([], [])
        return environment().get_template(template).render(
            figure=self.figure_block, table=self.table_block, link=page_link, **values)

    def page(self, slug: str, title: str, nav_title: str, template: str, scripts: list[str] | None = None,
             **values: Any) -> Page:
        """A page rendered from ``template``: its figures and tables are those the template placed,
        in the order it placed (and numbered) them."""
        markdown = self.render(template, **values)
        figures, tables = self._placed
        return Page(slug, title, nav_title, markdown, list(figures), list(tables), scripts=scripts or [])

    @property
    def model(self) -> dict[str, Any]:
        return self.artifacts["model"]

    @property
    def heads(self) -> list[dict[str, Any]]:
        return self.artifacts["heads"]

    @property
    def survey(self) -> Mapping[str, Any] | None:
        return self.artifacts.get("survey")


def tool_versions(engine_versions: Mapping[str, str]) -> dict[str, str]:
    """Versions of the report's libraries plus the engine's tools."""
    return {**package_versions(("headreport", "altair", "vl-convert-python", "jinja2"), missing=None),
            **engine_versions}
