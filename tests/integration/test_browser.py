"""The site in a real browser: headless Debian Chromium opens every page from file://.

Every chart container gets an SVG with marks, the console shows no error, no request leaves
file://, and hostile tokens neither execute (no dialog, no injected element) nor disappear (they
are in the page's visible text and in the chart tooltips, escaped)."""

from __future__ import annotations

from report.escaping import visible
from tests.report_fixtures import HOSTILE_TOKENS

CHART_MARKS_JS = """() => [...document.querySelectorAll('div.vega-chart')].map(el => ({
  rendered: el.getAttribute('data-rendered'),
  marks: el.querySelectorAll('svg [class*="mark-"] path, svg [class*="mark-"] line, svg [class*="mark-"] rect, svg [class*="mark-"] text').length,
}))"""


def open_page(browser, path):
    """Open ``path``; return (page, console errors, non-file requests, dialogs)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, foreign, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith(("file://", "data:", "blob:", "about:")):
            r.continue_()
        else:
            foreign.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path.as_uri())
    n = page.evaluate("document.querySelectorAll('div.vega-chart').length")
    if n:
        page.wait_for_function(
            "() => [...document.querySelectorAll('div.vega-chart')].every(e => e.hasAttribute('data-rendered'))",
            timeout=30000)
    return page, errors, foreign, dialogs


def test_every_page_renders_every_chart_offline(browser, report_build):
    pages = sorted((report_build / "site").glob("*.html"))
    assert len(pages) == 4
    total = 0
    for path in pages:
        page, errors, foreign, dialogs = open_page(browser, path)
        charts = page.evaluate(CHART_MARKS_JS)
        for i, c in enumerate(charts):
            assert c["rendered"] == "true", (path.name, i)
            assert c["marks"] > 0, (path.name, i)
        total += len(charts)
        assert errors == [], (path.name, errors)
        assert foreign == [], (path.name, foreign)
        assert dialogs == []
        assert page.evaluate("document.querySelectorAll('math').length") >= (1 if path.stem.startswith("head") else 0)
        page.close()
    assert total == 16  # 8 per head


def test_hostile_tokens_are_visible_and_inert_in_the_browser(browser, hostile_build):
    out, _ = hostile_build
    page, errors, foreign, dialogs = open_page(browser, out / "site" / "head-1.3.html")
    text = page.evaluate("document.body.innerText")
    for token in HOSTILE_TOKENS:
        assert visible(token) in text, token
    assert dialogs == [] and errors == [] and foreign == []
    # no element came out of a token: the only scripts are the page's own
    assert page.evaluate("document.querySelectorAll('script:not([type=\"application/json\"])').length") == 2
    assert page.evaluate("document.querySelectorAll('main b, main i').length") == 0
    # tooltips: hover the first bar of the effective-circuit direction chart, read the tooltip
    chart = page.locator("#fig-head-1-3-directions-effective-qk .vega-chart svg")
    bar = chart.locator(".mark-rect path").first
    bar.hover()
    page.wait_for_selector("#vg-tooltip-element.visible", timeout=5000)
    tip_html = page.inner_html("#vg-tooltip-element")
    tip_text = page.inner_text("#vg-tooltip-element")
    assert "<script>" not in tip_html
    assert visible(HOSTILE_TOKENS[0]) in tip_text
    page.close()
