"""Inline display in Jupyter (JupyterLab, classic Notebook, VS Code): the report's own
self-contained page, in a sandboxed ``<iframe srcdoc>``.

The page is what ``headreport render --standalone`` writes as ``site/report.html``
(:func:`report.render.standalone_html`, the same renderer, so every token is escaped exactly as on the
site), with the explorer's and the prompt menu's data and the vendored Vega scripts inlined: nothing
is requested from any host. Each display is its own frame, so no script of one display can reach or
break another on the same notebook page.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

from .analysis.artifacts import TIMINGS, merged_timings, write_artifacts
from .report.render import standalone_html

FRAME_HEIGHT = 900
#: in an ``srcdoc`` frame a link ``#anchor`` resolves against the notebook's address, which the
#: sandbox does not let the frame load: the page's own links are followed by scrolling instead
IN_PAGE_LINKS = """<script>
document.addEventListener("click", function (e) {
  var a = e.target.closest ? e.target.closest('a[href^="#"]') : null;
  if (!a) return;
  var target = document.getElementById(decodeURIComponent(a.getAttribute("href").slice(1)));
  if (target) { e.preventDefault(); target.scrollIntoView(); }
});
</script>
"""


def inline_report(results: dict[str, dict[str, Any]], timings: dict[str, float], device: str | None,
                  inputs: dict[str, Any]) -> str:
    """The standalone report page of ``results``, from an artifact set written to a temporary folder
    (so it is read back through the same checks as any other) that is removed before this returns."""
    with tempfile.TemporaryDirectory(prefix="headreport-inline-") as tmp:
        artifacts = Path(tmp) / "artifacts"
        write_artifacts(artifacts, {**results, TIMINGS: merged_timings(artifacts, timings, device)}, inputs=inputs)
        return standalone_html(artifacts)


def frame(page: str, title: str, height: int = FRAME_HEIGHT) -> str:
    """One display: ``page`` in a sandboxed frame (scripts run in their own origin, isolated from
    the notebook and from other displays)."""
    end = page.rindex("</body>")
    page = page[:end] + IN_PAGE_LINKS + page[end:]
    return (f'<iframe srcdoc="{html.escape(page, quote=True)}" title="{html.escape(title, quote=True)}" '
            f'sandbox="allow-scripts allow-popups" '
            f'style="width:100%;height:{height}px;border:1px solid #d0d7de;border-radius:4px"></iframe>')
