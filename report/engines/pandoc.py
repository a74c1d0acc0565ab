"""The ``pandoc`` engine: each page → pandoc → an HTML fragment (MathML) in ``templates/page.html.j2``;
all pages → pandoc's Typst writer → ``source/report.typ`` → the ``typst`` package → the PDF."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pypandoc
import typst

from ..context import Page, ReportContext, environment
from ..escaping import typst_markup, typst_string
from ..outputs import anchor
from . import (
    REPORT_TITLE,
    RenderError,
    asset,
    combined_markdown,
    data_assets,
    engine_versions,
    inline_script,
    site_title,
    vega_bundle,
    vegalite_version,
)

# pandoc template for an HTML fragment that still carries the table of contents
_FRAGMENT_TEMPLATE = "$if(toc)$\n$table-of-contents$\n$endif$\n<!--headreport:body-->\n$body$\n"
_BODY_MARK = "<!--headreport:body-->"

#: the shared files every page loads (from file:// and from a web server alike: classic scripts)
ASSETS = {"assets/vega.js": lambda: vega_bundle(), "assets/charts.js": lambda: asset("charts.js"),
          "assets/style.css": lambda: asset("style.css")}


def run_pandoc(markdown: str, to: str, extra: list[str] | None = None) -> str:
    """Markdown (pandoc's dialect, as Quarto writes it) → ``to``; raises :class:`RenderError`."""
    cmd = [pypandoc.get_pandoc_path(), "--from", "markdown", "--to", to, "--wrap", "none", *(extra or [])]
    proc = subprocess.run(cmd, input=markdown, capture_output=True, text=True, encoding="utf-8", check=False)
    if proc.returncode != 0:
        raise RenderError(f"pandoc failed writing {to}: {proc.stderr.strip()}")
    return proc.stdout


def write_assets(ctx: ReportContext, site_dir: Path) -> None:
    """One copy of the Vega, Vega-Lite and vega-embed scripts, the chart loader and the CSS per site,
    and the scripts loaded on demand with their data (:func:`report.engines.data_assets`)."""
    files = {rel: content() for rel, content in ASSETS.items()} | data_assets(ctx.artifacts)
    for rel, text in files.items():
        path = site_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _html_page(ctx: ReportContext, page: Page, pages: list[Page], body: str, toc: str, inline: bool) -> str:
    versions = engine_versions("pandoc")
    inline_scripts = []
    if inline and page.scripts:  # the explorer and the prompt menu: their data first, then their code
        data = data_assets(ctx.artifacts, inline=True)
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


def _standalone_page(ctx: ReportContext, pages: list[Page], site_dir: Path, template: Path) -> Path:
    """``site/report.html``: every page in one file, the CSS, the scripts and the charts inlined."""
    whole = Page("report", site_title(ctx), "Report", combined_markdown(pages),
                 [f for p in pages for f in p.figures], [t for p in pages for t in p.tables],
                 scripts=list(dict.fromkeys(s for p in pages for s in p.scripts)))  # (the loader first)
    body, toc = _pandoc_html(whole.markdown, whole.title, template)
    # links between pages become links within the one document
    body = re.sub(r'href="([A-Za-z0-9._-]+)\.html"', lambda m: f'href="#{anchor(m.group(1))}"', body)
    path = site_dir / "report.html"
    path.write_text(_html_page(ctx, whole, [], body, toc, inline=True), encoding="utf-8")
    return path


def standalone_html(ctx: ReportContext, pages: list[Page], work_dir: Path) -> str:
    """The standalone page alone (``report.html``: every page, the CSS, the scripts, the charts and the
    data inlined), written in ``work_dir`` and returned: for a notebook's inline display."""
    template = work_dir / "fragment.html"
    template.write_text(_FRAGMENT_TEMPLATE, encoding="utf-8")
    return _standalone_page(ctx, pages, work_dir, template).read_text(encoding="utf-8")


def render_html(ctx: ReportContext, pages: list[Page], site_dir: Path, src_dir: Path,
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
        written.append(_standalone_page(ctx, pages, site_dir, template))
    return written


def typst_document(ctx: ReportContext, body: str) -> str:
    """The Typst main file: the style, a title page with the run's facts, contents, then ``body``."""
    m = ctx.model
    model = m["results"]["model"]
    prov = m["provenance"]
    meta = [
        ("Model", f"{model['name']} ({model['n_layers']} layers × {model['n_heads']} heads, "
                  f"d_model {model['d_model']})"),
        ("Heads", ", ".join(m["results"]["heads"]) or "none analysed in full (survey only)"),
        ("Effective embedding", m["results"]["effective_embedding"]["variant"]),
        ("Analysis code", prov["analysis_code_sha256"][:16]),
        ("Rendered with", ", ".join(f"{k} {v}" for k, v in engine_versions(ctx.engine).items())
         + f"; headreport {ctx.tool_versions.get('headreport', '?')}"),
    ]
    meta_typst = ", ".join(f"({typst_string(k)}, [{typst_markup(v)}])" for k, v in meta)
    return (
        '#import "style.typ": *\n'
        f"#show: report.with(\n  title: [{typst_markup(REPORT_TITLE)}],\n"
        f"  subtitle: [{typst_markup(site_title(ctx))}],\n  meta: ({meta_typst},),\n)\n\n{body}\n"
    )


def render_pdf(ctx: ReportContext, pages: list[Page], stage: Path) -> Path:
    """All pages → pandoc's Typst writer → ``source/report.typ`` → ``typst.compile`` → PDF."""
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
