"""Inline display in Jupyter (JupyterLab, classic Notebook, VS Code): the report's own
self-contained page, in a sandboxed ``<iframe srcdoc>``.

The page is what ``headreport render --standalone`` writes as ``site/report.html`` — the same
renderer, so every token is escaped exactly as on the site — with the explorer's and the prompt
menu's data scripts inlined too (in an ``srcdoc`` frame there is no folder to load them from). The
Vega scripts are the vendored ones inlined in that page: nothing is requested from any host. Each
display is its own frame, so no script of one display can reach or break another on the same
notebook page.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

from .analysis.artifacts import TIMINGS, merged_timings, write_artifacts
from .report.engines import inline_script
from .report.render import render

#: the folders under ``site/assets`` whose scripts are data, loaded on first use by the page
DATA_FOLDERS = ("explorer", "prompts")
FRAME_HEIGHT = 900


def inline_report(results: dict[str, dict[str, Any]], timings: dict[str, float], device: str | None,
                  inputs: dict[str, Any]) -> str:
    """The standalone report page of ``results`` with its data scripts inline, rendered in a
    temporary folder that is removed before this returns."""
    with tempfile.TemporaryDirectory(prefix="headreport-inline-") as tmp:
        artifacts, out = Path(tmp) / "artifacts", Path(tmp) / "out"
        write_artifacts(artifacts, {**results, TIMINGS: merged_timings(artifacts, timings, device)}, inputs=inputs)
        render(artifacts, out, engine="pandoc", standalone=True)
        site = out / "site"
        return with_data_scripts((site / "report.html").read_text(encoding="utf-8"), site / "assets")


def with_data_scripts(page: str, assets: Path) -> str:
    """``page`` with every data script under ``assets/explorer`` and ``assets/prompts`` run first
    (each registers its data, so the page's loader finds it present and requests nothing)."""
    scripts = [path for folder in DATA_FOLDERS for path in sorted((assets / folder).rglob("*.js"))]
    block = "".join(f"<script>{inline_script(p.read_text(encoding='utf-8'))}</script>\n" for p in scripts)
    head_end = page.index("</head>")
    return page[:head_end] + block + page[head_end:]


def frame(page: str, title: str, height: int = FRAME_HEIGHT) -> str:
    """One display: ``page`` in a sandboxed frame (scripts run in their own origin, isolated from
    the notebook and from other displays)."""
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="{html.escape(title, quote=True)}" '
            f'sandbox="allow-scripts allow-popups" '
            f'style="width:100%;height:{height}px;border:1px solid #d0d7de;border-radius:4px"></iframe>')
