"""The engines: the pages' Markdown → the HTML site and the PDF, and what both engines share.

``quarto`` (:mod:`report.engines.quarto`, used by ``auto`` when ``quarto`` is on PATH): a Quarto
website project is written to ``source/quarto`` (``_quarto.yml`` + one ``.qmd`` per page +
``report.qmd`` for the PDF in Typst format) and rendered with ``quarto render``. ``pandoc``
(:mod:`report.engines.pandoc`, the fallback): each page's Markdown goes through pandoc (from
pypandoc-binary) to an HTML fragment (MathML, no CDN) wrapped by ``templates/page.html.j2``, and the
pages together through pandoc's Typst writer into ``source/report.typ``, compiled with the ``typst``
Python package. Both engines read the same Markdown, in which every token, table and chart is a pair
of raw blocks (``{=html}``, ``{=typst}``) escaped for its target (:mod:`report.escaping`). Every HTML
page inlines the Vega, Vega-Lite and vega-embed scripts once (from vl-convert) and requests nothing
from the network.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from importlib import resources
from typing import Any

import altair as alt
import pypandoc
import vl_convert as vlc

from headreport.analysis.artifacts import package_versions
from headreport.analysis.errors import UserError

from .. import explorer, prompt_data
from ..context import LOADER_JS, Page, ReportContext
from ..escaping import markdown_text
from ..outputs import anchor

ENGINES = ("auto", "quarto", "pandoc")
#: the PDF's title (its subtitle is the site's title, :func:`site_title`)
REPORT_TITLE = "Weights-based analysis of attention heads"


class RenderError(UserError):
    """The report could not be rendered (missing tool, engine failure)."""


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


@functools.cache
def engine_versions(engine: str) -> dict[str, str]:
    """The tools an engine runs, with their versions (recorded in the report and the manifest)."""
    if engine == "quarto":
        out = subprocess.run(["quarto", "--version"], capture_output=True, text=True, check=False)
        return {"quarto": out.stdout.strip() or "unknown"}
    return {"pandoc": pypandoc.get_pandoc_version(), **package_versions(["typst"])}


def asset(name: str) -> str:
    """A file shipped in the ``report`` package (CSS, JS, Typst style)."""
    return resources.files("headreport.report").joinpath(name).read_text(encoding="utf-8")


def inline_script(text: str) -> str:
    """A script's text made safe to inline: nothing in it can end or confuse the element."""
    return text.replace("</script", "<\\/script").replace("<!--", "<\\!--")


@functools.lru_cache(maxsize=1)
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one classic script (globals ``vegaEmbed``, ``vega``,
    ``vegaLite``), made safe to inline (:func:`inline_script`)."""
    return inline_script(vlc.javascript_bundle())


def vegalite_version() -> str:
    return alt.SCHEMA_VERSION.lstrip("v")


def site_title(ctx: ReportContext) -> str:
    heads = ctx.model["results"]["heads"]
    name = ctx.model["results"]["model"]["name"]
    if not heads:
        return f"{name}: survey of all heads"
    return f"{name}: head{'s' if len(heads) != 1 else ''} {', '.join(heads)}"


def data_assets(artifacts: dict[str, Any], inline: bool = False) -> dict[str, str]:
    """The scripts a page loads on demand and their data: the token explorer's
    (:func:`report.explorer.site_assets`; ``inline``: for a page that carries them all) and the prompt
    menu's (:func:`report.prompt_data.site_assets`), with the loader both use
    (:data:`report.context.LOADER_JS`)."""
    out = explorer.site_assets(artifacts, inline=inline) | prompt_data.site_assets(artifacts)
    return {LOADER_JS: asset("load.js"), **out} if out else {}


def combined_markdown(pages: list[Page]) -> str:
    """All pages as one document: each page a level-1 chapter labelled ``page-SLUG``."""
    parts = []
    for page in pages:
        parts.append(f"# {markdown_text(page.title)} {{#{anchor(page.slug)}}}\n\n{page.markdown}")
    return "\n\n".join(parts)


__all__ = ["ENGINES", "REPORT_TITLE", "RenderError", "asset", "combined_markdown", "data_assets", "engine_versions",
           "inline_script", "select_engine", "site_title", "vega_bundle", "vegalite_version"]
