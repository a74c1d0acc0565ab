"""The report's pages, one module per page kind: artifact data → figures, tables, sentences →
Markdown (Quarto ``.qmd`` bodies).

A page builder is a function ``(ReportContext) -> list[Page]``; :data:`PAGE_BUILDERS` lists them in
reading order. Each renders one template from ``templates/`` with plain values; every value is
escaped unless marked safe (:mod:`report.context`). Headings in a page body start at level 2; the
page title is level 1 (the HTML wrapper prints it, the PDF makes it a numbered chapter labelled
``<page-SLUG>``). To add a page: a template, a module here with its builder (returning ``[]`` when
its artifact is absent), and one entry in :data:`PAGE_BUILDERS`; navigation, PDF chapters, figure
exports and the manifest follow the page list. A builder returns
``ctx.page(slug, title, nav_title, template, **values)``: the template's ``figure()`` and ``table()``
number each figure and table where they place it, and the page lists what its template placed, in that
order (their exports: ``figures/``, ``tables/<slug>.tex``), so the numbering cannot drift from the
page.
"""

from __future__ import annotations

from collections.abc import Callable

from ..context import Page, ReportContext
from .atlas import atlas_pages
from .compare import compare_pages
from .head import head_pages
from .index import index_page
from .reproducibility import reproducibility_page
from .survey import survey_pages

PAGE_BUILDERS: list[Callable[[ReportContext], list[Page]]] = [index_page, head_pages, compare_pages, survey_pages,
                                                              atlas_pages, reproducibility_page]


def build_pages(ctx: ReportContext, builders: list[Callable[[ReportContext], list[Page]]] | None = None) -> list[Page]:
    pages: list[Page] = []
    for builder in builders if builders is not None else PAGE_BUILDERS:
        pages.extend(builder(ctx))
    return pages


__all__ = ["PAGE_BUILDERS", "Page", "ReportContext", "build_pages"]
