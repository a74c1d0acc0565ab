"""Render the report: artifacts → figures + Markdown pages → HTML site and PDF.

``render(artifacts_dir, out_dir, engine="auto") -> dict`` is the one entry point (the CLI's
``headreport render``, ``headreport build`` and the benchmark call it). It reads *only* the JSON
artifacts (:func:`analysis.artifacts.load_artifacts`) and writes, under ``out_dir``::

    site/index.html, site/head-L.H.html, site/reproducibility.html   the HTML site (self-contained)
    site/figures/…, site/report.pdf                                  downloads linked from the site
    pdf/report.pdf                                                   the PDF (title page, contents,
                                                                     numbered figures and tables)
    figures/<slug>.{svg,png,pdf,csv}                                 every chart, for papers
    tables/<slug>.tex, tables/headreport.sty                         every table as LaTeX, for papers
                                                                     (also under site/tables/)
    source/*.qmd, source/report.typ, source/style.typ                the generated sources
    report.json                                                      manifest: engine, versions,
                                                                     files, timings

Everything is first written to a staging folder inside ``out_dir`` and moved into place at the
end, so a failed render leaves the previous report untouched. The output folders are owned through
the manifest ``report.json`` (:mod:`report.outputs`): a render replaces only files that the previous
render listed there, and refuses a folder holding files it did not write unless ``force``.

The engines (``quarto`` when on PATH, else ``pandoc`` + ``typst``) are :mod:`report.engines`; this
module stages, runs the chosen engine over the pages, and installs the outputs.

Pages come from :data:`report.pages.PAGE_BUILDERS` (one module per page kind; see
:mod:`report.pages` for how to add one).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from headreport.analysis.artifacts import load_artifacts, remove_stale_temps

from . import incremental, outputs
from .context import Page, ReportContext, tool_versions
from .engines import RenderError, engine_versions, pandoc, quarto, select_engine
from .figures import export_figures
from .latex import TABLES_DIR, write_tables
from .pages import build_pages

OUTPUT_DIRS = outputs.OUTPUT_DIRS
MANIFEST = outputs.MANIFEST

__all__ = ["MANIFEST", "OUTPUT_DIRS", "RenderError", "render"]


# --- the entry point ---------------------------------------------------------------------------------

def render(artifacts_dir: str | Path, out_dir: str | Path, engine: str = "auto",
           log: Callable[[str], None] | None = None, force: bool = False, standalone: bool = False) -> dict[str, Any]:
    """Render the report of ``artifacts_dir`` into ``out_dir`` and return the manifest.

    Nothing changed (same artifacts, report code, engine, options: :mod:`report.incremental`) →
    nothing done: the previous manifest is returned. Otherwise: the pages, the figure exports
    (cached by content), the LaTeX tables, the engine, then the files moved into place
    (:mod:`report.outputs`). The manifest (also written to ``out_dir/report.json``) holds ``engine``,
    ``tools`` (versions), ``site`` (index.html path), ``pdf``, ``pages``, ``figures`` (slug → format →
    path), ``tables`` (slug → path), ``written`` (every file, as paths), ``seconds`` and
    ``render_key``; ``up_to_date`` says whether it was reused."""
    log = log or (lambda message: None)
    t_start = time.perf_counter()
    artifacts_dir, out_dir = Path(artifacts_dir), Path(out_dir)
    outputs.check_output_dir(out_dir)
    engine_name = select_engine(engine)
    if not artifacts_dir.is_dir():
        load_artifacts(artifacts_dir)  # its own clear error
    key = incremental.render_key(artifacts_dir, engine_name, {"standalone": standalone})
    previous = incremental.current_manifest(out_dir, key)
    if previous is not None:
        log("report is up to date (same artifacts, report code and engine): nothing to render")
        return {**previous, "written": [str(out_dir / f) for f in previous["files"]] + [str(out_dir / MANIFEST)],
                "up_to_date": True}
    arts = load_artifacts(artifacts_dir)
    outputs.foreign_files(out_dir, force)  # refuse an output folder that is not ours, before any work
    ctx = report_context(arts, engine_name)
    out_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    remove_stale_temps(out_dir)  # what a killed render left behind
    stage = Path(tempfile.mkdtemp(prefix=f".headreport-render-{os.getpid()}-", dir=out_dir))
    try:
        for name in OUTPUT_DIRS:
            (stage / name).mkdir()
        t = time.perf_counter()
        pages = build_pages(ctx)
        seconds["pages"] = time.perf_counter() - t
        figures = stage_figures(pages, stage, out_dir, seconds, log)
        tables = stage_tables(pages, stage, out_dir, seconds)
        run_engine(ctx, pages, stage, seconds, standalone)
        manifest = install_outputs(ctx, pages, figures, tables, stage, artifacts_dir, out_dir, seconds, t_start,
                                   key, force)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    manifest["written"] = [str(out_dir / f) for f in manifest["files"]] + [str(out_dir / MANIFEST)]
    manifest["up_to_date"] = False
    log(f"rendered {len(pages)} pages and the PDF with {engine_name} in {seconds['total']:.1f} s")
    return manifest


def report_context(arts: dict[str, Any], engine_name: str) -> ReportContext:
    """What the page builders read for a rendering by ``engine_name``: the artifacts, the tools'
    versions and where the PDF source finds the figures."""
    return ReportContext(artifacts=arts, engine=engine_name, tool_versions=tool_versions(engine_versions(engine_name)),
                         # the PDF source sits in source/ (pandoc) or source/quarto/ (figures copied in)
                         typst_figures_path="../figures" if engine_name == "pandoc" else "figures")


def standalone_html(artifacts_dir: str | Path) -> str:
    """The report of ``artifacts_dir`` as one self-contained HTML page (what ``render(...,
    standalone=True)`` writes as ``site/report.html``, by the same pandoc path), rendered alone: no
    figure exports, LaTeX tables or PDF, nothing left on disk. For a notebook's inline display."""
    ctx = report_context(load_artifacts(Path(artifacts_dir)), "pandoc")
    pages = build_pages(ctx)
    with tempfile.TemporaryDirectory(prefix="headreport-html-") as tmp:
        return pandoc.standalone_html(ctx, pages, Path(tmp))


def stage_figures(pages: list[Page], stage: Path, out_dir: Path, seconds: dict[str, float],
                  log: Callable[[str], None]) -> dict[str, dict[str, str]]:
    """Every figure's exports into ``stage/figures`` (cached by content: :func:`export_figures`)."""
    t = time.perf_counter()
    all_figures = [fig for page in pages for fig in page.figures]
    exported = export_figures(all_figures, stage / "figures", incremental.cache_dir(out_dir))
    figures = {fig.slug: {fmt: str(out_dir / "figures" / p.name) for fmt, p in paths.items()}
               for fig, paths in zip(all_figures, exported)}
    seconds["figures"] = time.perf_counter() - t
    log(f"exported {len(figures)} figures (SVG, PNG, PDF, CSV) in {seconds['figures']:.1f} s")
    return figures


def stage_tables(pages: list[Page], stage: Path, out_dir: Path, seconds: dict[str, float]) -> dict[str, str]:
    """Every table of every page as LaTeX into ``stage/tables``, with the style file they use."""
    t = time.perf_counter()
    written = write_tables([table for page in pages for table in page.tables], stage / TABLES_DIR)
    seconds["tables"] = time.perf_counter() - t
    return {name: str(out_dir / TABLES_DIR / path.name) for name, path in written.items()}


def run_engine(ctx: ReportContext, pages: list[Page], stage: Path, seconds: dict[str, float],
               standalone: bool) -> None:
    """The Markdown sources, then the site and the PDF by the context's engine."""
    for page in pages:
        (stage / "source" / f"{page.slug}.qmd").write_text(page.markdown, encoding="utf-8")
    if ctx.engine == "pandoc":
        t = time.perf_counter()
        pandoc.render_html(ctx, pages, stage / "site", stage / "source", standalone)
        seconds["html"] = time.perf_counter() - t
        t = time.perf_counter()
        pandoc.render_pdf(ctx, pages, stage)
        seconds["pdf"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        quarto.render_project(ctx, pages, stage)
        seconds["quarto"] = time.perf_counter() - t
    shutil.copytree(stage / "figures", stage / "site" / "figures", dirs_exist_ok=True)
    shutil.copytree(stage / TABLES_DIR, stage / "site" / TABLES_DIR, dirs_exist_ok=True)
    shutil.copy2(stage / "pdf" / "report.pdf", stage / "site" / "report.pdf")
    (stage / "site" / ".nojekyll").write_text("", encoding="utf-8")


def install_outputs(ctx: ReportContext, pages: list[Page], figures: dict[str, dict[str, str]],
                    tables: dict[str, str], stage: Path, artifacts_dir: Path, out_dir: Path,
                    seconds: dict[str, float], t_start: float, key: str, force: bool) -> dict[str, Any]:
    """Move the staged files into place (only over files the tool wrote) and write the manifest."""
    new_files = outputs.relative_files(stage)
    seconds["total"] = time.perf_counter() - t_start
    manifest = {
        "engine": ctx.engine,
        "tools": ctx.tool_versions,
        "artifacts": str(artifacts_dir),
        "site": str(out_dir / "site" / "index.html"),
        "pdf": str(out_dir / "pdf" / "report.pdf"),
        "pages": [str(out_dir / "site" / f"{p.slug}.html") for p in pages],
        "figures": figures,
        "tables": tables,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "render_key": key,
    }
    return outputs.install(stage, out_dir, new_files, force=force, manifest=manifest)
