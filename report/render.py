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

Engines
-------
``quarto`` (used by ``auto`` when ``quarto`` is on PATH): a Quarto website project is written to
``source/quarto`` (``_quarto.yml`` + one ``.qmd`` per page + ``report.qmd`` for the PDF in Typst
format) and rendered with ``quarto render``. ``pandoc`` (the fallback): each page's Markdown goes
through pandoc (from pypandoc-binary) to an HTML fragment (MathML, no CDN) wrapped by
``templates/page.html.j2``, and the pages together through pandoc's Typst writer into
``source/report.typ``, compiled with the ``typst`` Python package. Both engines read the same
Markdown, in which every token, table and chart is a pair of raw blocks (``{=html}``,
``{=typst}``) escaped for its target (:mod:`report.escaping`). Every HTML page inlines the Vega,
Vega-Lite and vega-embed scripts once (from vl-convert) and requests nothing from the network.

Pages come from :data:`report.pages.PAGE_BUILDERS` (one module per page kind; see
:mod:`report.pages` for how to add one).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from headreport.analysis.artifacts import load_artifacts, package_versions, remove_stale_temps
from headreport.analysis.errors import UserError

from . import explorer, incremental, outputs, prompt_data
from .context import LOADER_JS, Page, ReportContext, environment, tool_versions
from .escaping import markdown_text, typst_markup, typst_string
from .figures import export_figures
from .latex import TABLES_DIR, write_tables
from .outputs import anchor
from .pages import build_pages

ENGINES = ("auto", "quarto", "pandoc")
OUTPUT_DIRS = outputs.OUTPUT_DIRS
MANIFEST = outputs.MANIFEST

# pandoc template for an HTML fragment that still carries the table of contents
_FRAGMENT_TEMPLATE = "$if(toc)$\n$table-of-contents$\n$endif$\n<!--headreport:body-->\n$body$\n"
_BODY_MARK = "<!--headreport:body-->"


class RenderError(UserError):
    """The report could not be rendered (missing tool, engine failure)."""


# --- engines ---------------------------------------------------------------------------------------

def select_engine(engine: str = "auto") -> str:
    """``auto`` → ``quarto`` when the ``quarto`` executable is on PATH, else ``pandoc``."""
    if engine not in ENGINES:
        raise RenderError(f"--engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "quarto" if shutil.which("quarto") else "pandoc"
    if engine == "quarto" and not shutil.which("quarto"):
        raise RenderError("--engine quarto: the `quarto` executable is not on PATH "
                          "(install Quarto, or use --engine pandoc)")
    return engine


def pandoc_path() -> str:
    import pypandoc

    return pypandoc.get_pandoc_path()


@functools.cache
def engine_versions(engine: str) -> dict[str, str]:
    """The tools an engine runs, with their versions (recorded in the report and the manifest)."""
    if engine == "quarto":
        out = subprocess.run(["quarto", "--version"], capture_output=True, text=True, check=False)
        return {"quarto": out.stdout.strip() or "unknown"}
    import pypandoc

    return {"pandoc": pypandoc.get_pandoc_version(), **package_versions(["typst"])}


def run_pandoc(markdown: str, to: str, extra: list[str] | None = None) -> str:
    """Markdown (pandoc's dialect, as Quarto writes it) → ``to``; raises :class:`RenderError`."""
    cmd = [pandoc_path(), "--from", "markdown", "--to", to, "--wrap", "none", *(extra or [])]
    proc = subprocess.run(cmd, input=markdown, capture_output=True, text=True, encoding="utf-8", check=False)
    if proc.returncode != 0:
        raise RenderError(f"pandoc failed writing {to}: {proc.stderr.strip()}")
    return proc.stdout


# --- assets -----------------------------------------------------------------------------------------

def asset(name: str) -> str:
    """A file shipped in the ``report`` package (CSS, JS, Typst style)."""
    return resources.files("headreport.report").joinpath(name).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one classic script (globals ``vegaEmbed``, ``vega``,
    ``vegaLite``), made safe to inline: no ``</script`` or ``<!--`` can end or confuse the element."""
    import vl_convert as vlc

    return vlc.javascript_bundle().replace("</script", "<\\/script").replace("<!--", "<\\!--")


def vegalite_version() -> str:
    import altair as alt

    return alt.SCHEMA_VERSION.lstrip("v")


def site_title(ctx: ReportContext) -> str:
    heads = ctx.model["results"]["heads"]
    name = ctx.model["results"]["model"]["name"]
    if not heads:
        return f"{name}: survey of all heads"
    return f"{name}: head{'s' if len(heads) != 1 else ''} {', '.join(heads)}"


# --- pandoc + typst engine -----------------------------------------------------------------------------

#: the shared files every page loads (from file:// and from a web server alike: classic scripts)
ASSETS = {"assets/vega.js": lambda: vega_bundle(), "assets/charts.js": lambda: asset("charts.js"),
          "assets/style.css": lambda: asset("style.css")}


def data_assets(artifacts: dict[str, Any]) -> dict[str, str]:
    """The scripts a page loads on demand and their data: the token explorer's
    (:func:`report.explorer.site_assets`) and the prompt menu's (:func:`report.prompt_data.site_assets`),
    with the loader both use (:data:`report.context.LOADER_JS`)."""
    out = explorer.site_assets(artifacts) | prompt_data.site_assets(artifacts)
    return {LOADER_JS: asset("load.js"), **out} if out else {}


def write_assets(ctx: ReportContext, site_dir: Path) -> None:
    """One copy of the Vega, Vega-Lite and vega-embed scripts, the chart loader and the CSS per site,
    and the scripts loaded on demand with their data (:func:`data_assets`)."""
    files = {rel: content() for rel, content in ASSETS.items()} | data_assets(ctx.artifacts)
    for rel, text in files.items():
        path = site_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def inline_script(text: str) -> str:
    """A script's text made safe to inline: nothing in it can end or confuse the element."""
    return text.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _html_page(ctx: ReportContext, page: Page, pages: list[Page], body: str, toc: str, inline: bool) -> str:
    versions = engine_versions("pandoc")
    inline_scripts = []
    if inline and page.scripts:  # the explorer and the prompt menu: their data first, then their code
        data = data_assets(ctx.artifacts)
        inline_scripts = [inline_script(text) for rel, text in data.items() if rel not in page.scripts]
        inline_scripts += [inline_script(data[rel]) for rel in page.scripts]
    return environment().get_template("page.html.j2").render(
        page=page, pages=pages, site_title=site_title(ctx), body=body, toc=toc,
        scripts=[] if inline else page.scripts, inline_scripts=inline_scripts,
        inline=inline, css=asset("style.css") if inline else "", charts_js=asset("charts.js") if inline else "",
        vega_bundle=vega_bundle() if inline and page.figures else "", has_charts=bool(page.figures),
        engine="pandoc", engine_detail=f"pandoc {versions['pandoc']} → HTML, Typst {versions['typst']} → PDF",
        version=ctx.tool_versions.get("headreport", "?"), schema_version=ctx.model["schema_version"],
        vegalite_version=vegalite_version(),
    )


def _pandoc_html(markdown: str, title: str, template: Path) -> tuple[str, str]:
    out = run_pandoc(markdown, "html5", [
        "--standalone", f"--template={template}", "--mathml", "--toc", "--toc-depth=2",
        "--metadata", f"title={title}", "--section-divs",
    ])
    toc, _, body = out.partition(_BODY_MARK)
    return body, toc.strip()


def render_html_pandoc(ctx: ReportContext, pages: list[Page], site_dir: Path, src_dir: Path,
                       standalone: bool = False) -> list[Path]:
    """Each page: pandoc → HTML fragment (MathML) → ``page.html.j2``, loading the site's shared
    assets (``site/assets/``). ``standalone``: also ``site/report.html``, every page in one file with
    the CSS, the scripts and the charts inlined (for attaching to a paper)."""
    template = src_dir / "fragment.html"
    template.write_text(_FRAGMENT_TEMPLATE, encoding="utf-8")
    write_assets(ctx, site_dir)
    written = []
    for page in pages:
        body, toc = _pandoc_html(page.markdown, page.title, template)
        path = site_dir / f"{page.slug}.html"
        path.write_text(_html_page(ctx, page, pages, body, toc, inline=False), encoding="utf-8")
        written.append(path)
    if standalone:
        whole = Page("report", site_title(ctx), "Report", combined_markdown(pages),
                     [f for p in pages for f in p.figures], [t for p in pages for t in p.tables],
                     scripts=list(dict.fromkeys(s for p in pages for s in p.scripts)))  # (the loader first)
        body, toc = _pandoc_html(whole.markdown, whole.title, template)
        # links between pages become links within the one document
        body = re.sub(r'href="([A-Za-z0-9._-]+)\.html"', lambda m: f'href="#{anchor(m.group(1))}"', body)
        path = site_dir / "report.html"
        path.write_text(_html_page(ctx, whole, [], body, toc, inline=True), encoding="utf-8")
        written.append(path)
    return written


def combined_markdown(pages: list[Page]) -> str:
    """All pages as one document: each page a level-1 chapter labelled ``page-SLUG``."""
    parts = []
    for page in pages:
        parts.append(f"# {markdown_text(page.title)} {{#{anchor(page.slug)}}}\n\n{page.markdown}")
    return "\n\n".join(parts)


def typst_document(ctx: ReportContext, body: str) -> str:
    """The Typst main file: the style, a title page with the run's facts, contents, then ``body``."""
    m = ctx.model
    model = m["results"]["model"]
    prov = m["provenance"]
    meta = [
        ("Model", f"{model['name']} ({model['n_layers']} layers × {model['n_heads']} heads, d_model {model['d_model']})"),
        ("Heads", ", ".join(m["results"]["heads"]) or "none analysed in full (survey only)"),
        ("Effective embedding", m["results"]["effective_embedding"]["variant"]),
        ("Analysis code", prov["analysis_code_sha256"][:16]),
        ("Rendered with", ", ".join(f"{k} {v}" for k, v in engine_versions(ctx.engine).items())
         + f"; headreport {ctx.tool_versions.get('headreport', '?')}"),
    ]
    meta_typst = ", ".join(f"({typst_string(k)}, [{typst_markup(v)}])" for k, v in meta)
    return (
        '#import "style.typ": *\n'
        f"#show: report.with(\n  title: [{typst_markup('Weights-based analysis of attention heads')}],\n"
        f"  subtitle: [{typst_markup(site_title(ctx))}],\n  meta: ({meta_typst},),\n)\n\n{body}\n"
    )


def render_pdf_typst(ctx: ReportContext, pages: list[Page], stage: Path) -> Path:
    """All pages → pandoc's Typst writer → ``source/report.typ`` → ``typst.compile`` → PDF."""
    import typst

    src = stage / "source"
    body = run_pandoc(combined_markdown(pages), "typst")
    (src / "style.typ").write_text(asset("style.typ"), encoding="utf-8")
    main = src / "report.typ"
    main.write_text(typst_document(ctx, body), encoding="utf-8")
    pdf = stage / "pdf" / "report.pdf"
    pdf.parent.mkdir(parents=True, exist_ok=True)
    try:
        typst.compile(str(main), output=str(pdf), root=str(stage))
    except typst.TypstError as exc:  # carries the diagnostics
        raise RenderError(f"typst could not compile {main}: {exc}") from None
    return pdf


# --- quarto engine ---------------------------------------------------------------------------------

def write_quarto_project(ctx: ReportContext, pages: list[Page], project: Path) -> Path:
    """A Quarto website project (``_quarto.yml``, one ``.qmd`` per page) plus ``report.qmd`` (Typst
    PDF with every page as a chapter). Figures are copied into ``project/figures``."""
    project.mkdir(parents=True, exist_ok=True)
    (project / "_quarto.yml").write_text(
        environment().get_template("_quarto.yml.j2").render(
            pages=pages, site_title=site_title(ctx), resources=sorted(data_assets(ctx.artifacts))), encoding="utf-8")
    for page in pages:
        (project / f"{page.slug}.qmd").write_text(
            f"---\ntitle: {json.dumps(page.title, ensure_ascii=False)}\n---\n\n{page.markdown}", encoding="utf-8")
    (project / "report.qmd").write_text(
        "---\n"
        f"title: {json.dumps('Weights-based analysis of attention heads')}\n"
        f"subtitle: {json.dumps(site_title(ctx), ensure_ascii=False)}\n"
        "format:\n  typst:\n    toc: true\n    number-sections: true\n    papersize: a4\n"
        "---\n\n" + combined_markdown(pages), encoding="utf-8")
    (project / "style.css").write_text(asset("style.css"), encoding="utf-8")
    (project / "vega-header.html").write_text(f"<script>\n{vega_bundle()}\n</script>\n", encoding="utf-8")
    on_demand = ([asset("explorer.js")] if ctx.artifacts.get("explorers") else []) + \
        ([asset("prompts.js")] if prompt_data.has_menu(ctx.artifacts) else [])
    after = [asset("charts.js")] + ([asset("load.js")] + on_demand if on_demand else [])
    (project / "vega-after-body.html").write_text(
        "".join(f"<script>\n{inline_script(js)}\n</script>\n" for js in after), encoding="utf-8")
    for rel, text in data_assets(ctx.artifacts).items():  # data loaded on demand, by relative path
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(text, encoding="utf-8")
    return project


def render_quarto(ctx: ReportContext, pages: list[Page], stage: Path) -> tuple[list[Path], Path]:
    """``quarto render`` the website, then ``report.qmd`` to Typst/PDF; collect both outputs."""
    project = write_quarto_project(ctx, pages, stage / "source" / "quarto")
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
    ctx = ReportContext(artifacts=arts, engine=engine_name,
                        tool_versions=tool_versions(engine_versions(engine_name)),
                        # the PDF source sits in source/ (pandoc) or source/quarto/ (figures copied in)
                        typst_figures_path="../figures" if engine_name == "pandoc" else "figures")
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
        render_html_pandoc(ctx, pages, stage / "site", stage / "source", standalone)
        seconds["html"] = time.perf_counter() - t
        t = time.perf_counter()
        render_pdf_typst(ctx, pages, stage)
        seconds["pdf"] = time.perf_counter() - t
    else:
        t = time.perf_counter()
        render_quarto(ctx, pages, stage)
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
