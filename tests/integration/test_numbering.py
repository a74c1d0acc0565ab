"""Figures and tables are numbered where the templates place them: the numbers run 1, 2, … in
reading order, each page lists what its template placed in that order, and the Typst labels (which
Typst numbers by position) come in the same order, so the HTML and the PDF numbers agree."""

from __future__ import annotations

import re

from headreport.analysis.artifacts import load_artifacts
from headreport.report.context import ReportContext
from headreport.report.pages import build_pages


def test_figures_and_tables_are_numbered_where_the_templates_place_them(tiny_artifacts):
    ctx = ReportContext(artifacts=load_artifacts(tiny_artifacts), engine="pandoc", tool_versions={})
    pages = build_pages(ctx)
    figures = [f for page in pages for f in page.figures]
    tables = [t for page in pages for t in page.tables]
    assert figures and [f.number for f in figures] == list(range(1, len(figures) + 1))
    assert tables == ctx.tables and [t.number for t in tables] == list(range(1, len(tables) + 1))
    for page in pages:
        shown = [int(n) for n in re.findall(r'class="fig-number">Figure (\d+)\.', page.markdown)]
        assert shown == [f.number for f in page.figures]
        assert re.findall(r"<fig-([A-Za-z0-9._-]+)>", page.markdown) == [f.slug for f in page.figures]
        shown = [int(n) for n in re.findall(r'class="tab-number">Table (\d+)\.', page.markdown)]
        assert shown == [t.number for t in page.tables]
