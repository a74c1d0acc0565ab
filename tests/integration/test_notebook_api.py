"""docs/examples/quickstart.ipynb executed by a real Jupyter kernel (nbclient): an in-memory model
analysed and displayed inline; the displayed HTML requests nothing from any host, draws its charts
in headless Chromium, and shows the hostile-token fixture literally, with two displays on one page
neither breaking the other."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import headreport
from headreport.report.escaping import visible
from tests.integration.test_browser import CHART_MARKS_JS, open_page
from tests.report_fixtures import HOSTILE_TOKENS

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "examples" / "quickstart.ipynb"
FAST = {"prompts": "off", "model.device": "cpu", "analysis.ov_mode": "sampled", "analysis.ov_sample_size": 500}


@pytest.fixture(scope="module")
def executed(tiny_gpt2, hostile_artifacts, tmp_path_factory):
    """The example notebook with its parameters cell set to the tiny checkpoint, plus one cell that
    displays the hostile artifacts; run in a fresh kernel. Returns (notebook, working folder)."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source = f"CHECKPOINT = {str(tiny_gpt2)!r}\nHEADS = ['1.3']\nSETTINGS = {FAST!r}"
    nb.cells.append(nbformat.v4.new_code_cell(f"headreport.load({str(hostile_artifacts)!r})"))
    work = tmp_path_factory.mktemp("notebook")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    return nb, work


def outputs(nb, kind: str) -> list[dict]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def displays(nb) -> list[str]:
    return [o["data"]["text/html"] for o in outputs(nb, "execute_result") + outputs(nb, "display_data")
            if "text/html" in o.get("data", {})]


def test_the_notebook_runs_and_shows_the_findings(executed):
    nb, work = executed
    assert outputs(nb, "error") == []
    shown = displays(nb)
    assert len(shown) == 2  # one display per object: the analysis, the hostile set
    page = html.unescape(re.search(r'srcdoc="([^"]*)"', shown[0]).group(1))
    assert "Head 1.3" in page and "OV self-suppression" in page
    assert list(work.iterdir()) == []  # nothing written unless asked


def test_the_inline_html_requests_no_other_host(executed):
    for shown in displays(executed[0]):
        page = html.unescape(re.search(r'srcdoc="([^"]*)"', shown).group(1))
        assert not re.search(r'<(script|link|img|iframe)[^>]+(src|href)="(https?:)?//', page)
        assert "cdn.jsdelivr" not in page and "@import url(" not in page


def test_two_displays_draw_in_chromium_and_hostile_tokens_show_literally(executed, browser, tmp_path):
    shown = displays(executed[0])
    path = tmp_path / "notebook-output.html"
    path.write_text("<!doctype html><html><head><meta charset='utf-8'></head><body>"
                    + "".join(f"<div class='output'>{s}</div>" for s in shown) + "</body></html>", encoding="utf-8")
    page, errors, foreign, dialogs = open_page(browser, path)
    frames = [f for f in page.frames if f != page.main_frame]
    assert len(frames) == 2
    for frame in frames:
        frame.wait_for_function("() => [...document.querySelectorAll('div.vega-chart')].length > 0 && "
                                "[...document.querySelectorAll('div.vega-chart')]"
                                ".every(e => e.hasAttribute('data-rendered'))",
                                timeout=30000)
        charts = frame.evaluate(CHART_MARKS_JS)
        assert charts and all(c["rendered"] == "true" and c["marks"] > 0 for c in charts)
    text = frames[1].evaluate("document.body.innerText")
    for token in HOSTILE_TOKENS:
        assert visible(token) in text, token
    assert errors == [] and foreign == [] and dialogs == []
    page.close()


def test_the_explorer_works_inline_from_its_inlined_data(explorer_build, browser, tmp_path):
    """The inline display of a set with a token explorer: its data are inside the frame (nothing to
    load from a folder), so a search lists tokens and a choice shows its lists."""
    shown = headreport.load(explorer_build / "artifacts")._repr_html_()
    path = tmp_path / "notebook-output.html"
    path.write_text(f"<!doctype html><html><body>{shown}</body></html>", encoding="utf-8")
    page, errors, foreign, dialogs = open_page(browser, path)
    frame = next(f for f in page.frames if f != page.main_frame)
    frame.wait_for_selector(".hrx-input")
    frame.focus(".hrx-input")
    page.keyboard.type(" th")
    frame.wait_for_selector(".hrx-option", timeout=15000)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    frame.wait_for_selector(".hrx-result[data-token]", timeout=15000)
    assert frame.locator(".hrx-card").count() == 3
    assert errors == [] and foreign == [] and dialogs == []
    page.close()


def test_the_contents_links_scroll_inside_the_frame(tiny_artifacts, browser, tmp_path):
    """A ``#anchor`` link in an srcdoc frame would resolve against the notebook's address (which the
    sandbox does not load): the display's links scroll to their section in the frame instead."""
    path = tmp_path / "notebook-output.html"
    path.write_text(f"<!doctype html><html><body>{headreport.load(tiny_artifacts)._repr_html_()}</body></html>",
                    encoding="utf-8")
    page, errors, foreign, dialogs = open_page(browser, path)
    frame = next(f for f in page.frames if f != page.main_frame)
    target = frame.evaluate("""() => [...document.querySelectorAll('a[href^="#"]')]
        .map(a => a.getAttribute('href').slice(1)).filter(id => id && document.getElementById(id)).pop()""")
    link = frame.locator(f'a[href="#{target}"]').first
    assert frame.evaluate(f"document.getElementById({target!r}).getBoundingClientRect().top") > 900
    link.click()
    page.wait_for_timeout(300)
    assert frame.url == "about:srcdoc"
    assert abs(frame.evaluate(f"document.getElementById({target!r}).getBoundingClientRect().top")) < 50
    assert errors == [] and foreign == [] and dialogs == []
    page.close()
