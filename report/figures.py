"""A figure = one chart + its caption + its data, exported for papers and embedded in pages.

:func:`export_figure` writes ``<figures>/<slug>.{svg,png,pdf,csv}`` (PNG at 2× scale) with
vl-convert, so the static figures are drawn by the same Vega-Lite spec as the interactive charts.
:func:`html_figure` and :func:`typst_figure` produce the two format-specific blocks a page embeds
(see :mod:`report.pages`): the HTML one carries the spec as escaped JSON for vega-embed, the Typst
one includes the PDF export as a numbered ``#figure`` with its caption.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt

from .charts import themed
from .escaping import csv_cell, html_text, json_for_script, typst_markup, typst_string

FORMATS = ("svg", "png", "pdf", "csv")
PNG_SCALE = 2
#: columns of a figure's rows that hold visible token text (formula-guarded in CSV)
TEXT_COLUMNS = frozenset({"token", "label", "word"})


@dataclass
class Figure:
    """One chart of the report. ``slug`` is unique in the report and safe in file names and ids."""

    slug: str
    title: str
    caption: str  # plain text, escaped per target by the renderers below
    chart: alt.TopLevelMixin
    rows: list[dict[str, Any]]
    number: int = 0  # global figure number, set by the page builder in reading order
    _spec: dict[str, Any] | None = field(default=None, repr=False)

    def spec(self) -> dict[str, Any]:
        """The themed Vega-Lite spec (a plain dict, data inline); computed once (Altair validates it)."""
        if self._spec is None:
            self._spec = themed(self.chart).to_dict()
        return self._spec


def csv_text(rows: list[dict[str, Any]]) -> str:
    """The figure's rows as CSV: a header of every key in first-seen order; text cells guarded."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([
            csv_cell(str(row[c])) if c in TEXT_COLUMNS and row.get(c) is not None
            else ("" if row.get(c) is None else repr(row[c]) if isinstance(row[c], float) else row[c])
            for c in columns
        ])
    return buf.getvalue()


def export_figure(figure: Figure, out_dir: Path) -> dict[str, Path]:
    """Write the SVG, PNG (2×), PDF and CSV of ``figure`` into ``out_dir``; return format → path."""
    import vl_convert as vlc

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = figure.spec()
    paths = {fmt: out_dir / f"{figure.slug}.{fmt}" for fmt in FORMATS}
    svg = vlc.vegalite_to_svg(spec)  # one Vega run; PNG and PDF are drawn from this SVG (resvg/svg2pdf)
    paths["svg"].write_text(svg, encoding="utf-8")
    paths["png"].write_bytes(vlc.svg_to_png(svg, scale=PNG_SCALE))
    paths["pdf"].write_bytes(vlc.svg_to_pdf(svg))
    paths["csv"].write_text(csv_text(figure.rows), encoding="utf-8")
    return paths


def html_figure(figure: Figure, figures_href: str) -> str:
    """HTML for one interactive chart: container, inline JSON spec, numbered caption, downloads.

    The spec sits in ``<script type="application/json">`` (never executed; escaped by
    :func:`json_for_script`); ``report/charts.js`` hands it to vega-embed."""
    fid = f"fig-{figure.slug}"
    downloads = " · ".join(
        f'<a href="{html_text(figures_href)}/{html_text(figure.slug)}.{fmt}" download>{fmt.upper()}</a>'
        for fmt in FORMATS
    )
    return (
        f'<figure class="chart-figure" id="{fid}">\n'
        f'<div class="vega-chart" data-spec="{fid}-spec" role="img" aria-label="{html_text(figure.title)}"></div>\n'
        f'<script type="application/json" id="{fid}-spec">{json_for_script(figure.spec())}</script>\n'
        f'<figcaption><span class="fig-number">Figure {figure.number}.</span> {html_text(figure.caption)}'
        f' <span class="downloads">Download: {downloads}</span></figcaption>\n'
        f"</figure>"
    )


def typst_figure(figure: Figure, figures_path: str) -> str:
    """A numbered Typst ``#figure`` of the static PDF export, labelled ``<fig-slug>``."""
    path = typst_string(f"{figures_path}/{figure.slug}.pdf")
    return (
        f"#figure(image({path}, width: 100%, fit: \"contain\"),\n"
        f"  caption: [{typst_markup(figure.caption)}],\n) <fig-{figure.slug}>"
    )
