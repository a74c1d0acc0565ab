"""A figure = one chart + its caption + its data, exported for papers and embedded in pages.

:func:`export_figures` writes ``<figures>/<slug>.{svg,png,pdf,csv}`` (PNG at 1× scale) with
vl-convert, so the static figures are drawn by the same Vega-Lite spec as the interactive charts.
:func:`html_figure` and :func:`typst_figure` produce the two format-specific blocks a page embeds
(see :mod:`report.pages`): the HTML one carries the spec as escaped JSON for vega-embed, the Typst
one includes the PDF export as a numbered ``#figure`` with its caption.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import altair as alt
import vl_convert as vlc

from headreport.analysis.artifacts import sha256_file

from .charts import themed
from .escaping import csv_cell, html_text, json_for_script, typst_markup, typst_string
from .incremental import figure_key

FORMATS = ("svg", "png", "pdf", "csv")
#: PNG exports at the chart's own size (a 2× PNG of a token chart was 0.7–1.2 MB; the SVG and PDF
#: exports are vector for print)
PNG_SCALE = 1
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
    number: int = 0  # global figure number, set where the template places it (ReportContext.figure_block)
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


#: active content no vl-convert export holds: an SVG cache entry with any of it is not ours
ACTIVE_SVG = re.compile(r"<\s*script|<\s*foreignObject|\son[a-z]+\s*=|javascript:|<\s*iframe|<\s*object|<\s*embed",
                        re.IGNORECASE)
#: the first bytes of each binary export
MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-"}
ENTRY = "entry.json"


def entry_is_valid(entry: Path, csv: str) -> bool:
    """Whether a cache entry can be used as this figure's exports: a real folder of plain files whose
    sha256s are those its ``entry.json`` recorded when this tool exported them, whose CSV is exactly
    the figure's, whose SVG holds no active content (scripts, event handlers, foreign objects) and
    whose PNG and PDF start as such files do. Anything else (a poisoned, truncated or edited entry,
    a link) is exported again."""
    try:
        if entry.is_symlink() or not entry.is_dir():
            return False
        meta = json.loads((entry / ENTRY).read_text(encoding="utf-8"))
        files = {fmt: entry / f"figure.{fmt}" for fmt in FORMATS}
        if any(p.is_symlink() or not p.is_file() or sha256_file(p) != meta["sha256"][fmt] for fmt, p in files.items()):
            return False
        if (files["csv"].read_text(encoding="utf-8") != csv
                or ACTIVE_SVG.search(files["svg"].read_text(encoding="utf-8"))):
            return False
        return all(files[fmt].read_bytes()[: len(magic)] == magic for fmt, magic in MAGIC.items())
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False


def _discard(entry: Path) -> None:
    """Move an invalid cache entry out of the way (a link is removed itself, never followed)."""
    if entry.is_symlink() or entry.is_file():
        entry.unlink()
    elif entry.is_dir():
        trash = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        os.replace(entry, trash / "old")
        shutil.rmtree(trash, ignore_errors=True)


def _export(job: tuple[dict[str, Any], str, str]) -> str:
    """In a worker process: write the SVG, PNG and PDF of one spec into ``folder`` (the figure's cache
    entry, with the files' sha256s in ``entry.json``) via a temp folder renamed into place, so a
    cache entry is whole or absent; the temp folder is removed on any failure (a full disk too)."""
    spec, csv, folder = job
    target = Path(folder)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        svg = vlc.vegalite_to_svg(spec)  # one Vega run; PNG and PDF are drawn from this SVG (resvg/svg2pdf)
        (tmp / "figure.svg").write_text(svg, encoding="utf-8")
        (tmp / "figure.png").write_bytes(vlc.svg_to_png(svg, scale=PNG_SCALE))
        (tmp / "figure.pdf").write_bytes(vlc.svg_to_pdf(svg))
        (tmp / "figure.csv").write_text(csv, encoding="utf-8")
        digests = {fmt: sha256_file(tmp / f"figure.{fmt}") for fmt in FORMATS}
        (tmp / ENTRY).write_text(json.dumps({"sha256": digests}, sort_keys=True), encoding="utf-8")
        if target.exists() or target.is_symlink():
            if entry_is_valid(target, csv):  # another render filled this entry meanwhile: same content
                return folder
            _discard(target)
        os.replace(tmp, target)
    except OSError:
        if not entry_is_valid(target, csv):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def export_figures(figures: list[Figure], out_dir: Path, cache: Path, workers: int = 2) -> list[dict[str, Path]]:
    """Write every figure's SVG, PNG, PDF and CSV into ``out_dir`` (``<slug>.<format>``): from the
    content-keyed ``cache`` when it has them, else exported by ``workers`` processes (vl-convert's
    JavaScript engine serialises threads; separate processes run side by side) and cached."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    entries = []
    for fig in figures:
        csv = csv_text(fig.rows)
        entries.append((fig, csv, cache / figure_key(fig.spec(), csv, PNG_SCALE)))
    missing = [(fig.spec(), csv, str(entry)) for fig, csv, entry in entries if not entry_is_valid(entry, csv)]
    if len(missing) == 1 or workers <= 1:
        for job in missing:
            _export(job)
    elif missing:
        context = multiprocessing.get_context("spawn")  # vl-convert's runtime does not survive fork
        with ProcessPoolExecutor(min(workers, len(missing)), mp_context=context) as pool:
            list(pool.map(_export, missing))
    paths = []
    for fig, _, entry in entries:
        out = {fmt: out_dir / f"{fig.slug}.{fmt}" for fmt in FORMATS}
        for fmt, path in out.items():
            shutil.copyfile(entry / f"figure.{fmt}", path)  # a copy: editing an output never touches the cache
        paths.append(out)
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
