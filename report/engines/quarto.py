"""The ``quarto`` engine: a Quarto website project (``_quarto.yml``, one ``.qmd`` per page) plus
``report.qmd`` (the PDF, Typst format, every page a chapter), rendered with ``quarto render``."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from .. import prompt_data
from ..context import Page, ReportContext, environment
from . import (
    REPORT_TITLE,
    RenderError,
    asset,
    combined_markdown,
    data_assets,
    inline_script,
    site_title,
    vega_bundle,
)


def _write_pages(ctx: ReportContext, pages: list[Page], project: Path, resources: list[str]) -> None:
    """``_quarto.yml`` (``resources``: the data files the site carries), one ``.qmd`` per page, and
    ``report.qmd`` with every page as a chapter."""
    (project / "_quarto.yml").write_text(
        environment().get_template("_quarto.yml.j2").render(
            pages=pages, site_title=site_title(ctx), resources=resources), encoding="utf-8")
    for page in pages:
        (project / f"{page.slug}.qmd").write_text(
            f"---\ntitle: {json.dumps(page.title, ensure_ascii=False)}\n---\n\n{page.markdown}", encoding="utf-8")
    (project / "report.qmd").write_text(
        "---\n"
        f"title: {json.dumps(REPORT_TITLE)}\n"
        f"subtitle: {json.dumps(site_title(ctx), ensure_ascii=False)}\n"
        "format:\n  typst:\n    toc: true\n    number-sections: true\n    papersize: a4\n"
        "---\n\n" + combined_markdown(pages), encoding="utf-8")


def _write_assets(ctx: ReportContext, project: Path, data: dict[str, str]) -> None:
    """The CSS, the Vega scripts (header), the chart loader and the on-demand scripts (after the
    body), and the ``data`` those load by relative path."""
    (project / "style.css").write_text(asset("style.css"), encoding="utf-8")
    (project / "vega-header.html").write_text(f"<script>\n{vega_bundle()}\n</script>\n", encoding="utf-8")
    on_demand = ([asset("explorer.js")] if ctx.artifacts.get("explorers") else []) + \
        ([asset("prompts.js")] if prompt_data.has_menu(ctx.artifacts) else [])
    after = [asset("charts.js")] + ([asset("load.js")] + on_demand if on_demand else [])
    (project / "vega-after-body.html").write_text(
        "".join(f"<script>\n{inline_script(js)}\n</script>\n" for js in after), encoding="utf-8")
    for rel, text in data.items():  # data loaded on demand, by relative path
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text, encoding="utf-8")


def write_project(ctx: ReportContext, pages: list[Page], project: Path) -> Path:
    """A Quarto website project (``_quarto.yml``, one ``.qmd`` per page) plus ``report.qmd`` (Typst
    PDF with every page as a chapter), with its styles, scripts and data."""
    project.mkdir(parents=True, exist_ok=True)
    data = data_assets(ctx.artifacts)  # once: the explorer's shards are cut from its payload here
    _write_pages(ctx, pages, project, sorted(data))
    _write_assets(ctx, project, data)
    return project


def render_project(ctx: ReportContext, pages: list[Page], stage: Path) -> tuple[list[Path], Path]:
    """``quarto render`` the website, then ``report.qmd`` to Typst/PDF; collect both outputs. The
    figures are copied into ``project/figures``."""
    project = write_project(ctx, pages, stage / "source" / "quarto")
    shutil.copytree(stage / "figures", project / "figures", dirs_exist_ok=True)
    for cmd in (["quarto", "render"], ["quarto", "render", "report.qmd", "--to", "typst"]):
        proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RenderError(f"`{' '.join(cmd)}` failed in {project}:\n{proc.stderr.strip()[-4000:]}")
    shutil.copytree(project / "_site", stage / "site", dirs_exist_ok=True)
    pdf = stage / "pdf" / "report.pdf"
    pdf.parent.mkdir(parents=True, exist_ok=True)
    produced = project / "report.pdf"
    if not produced.exists():
        produced = project / "_site" / "report.pdf"
    shutil.copy2(produced, pdf)
    return sorted((stage / "site").glob("*.html")), pdf
