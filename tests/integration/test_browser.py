"""The site in a real browser: headless Debian Chromium opens every page from file://.

Every chart container gets an SVG with marks, the console shows no error, no request leaves
file://, and hostile tokens neither execute (no dialog, no injected element) nor disappear (they
are in the page's visible text and in the chart tooltips, escaped)."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

from headreport.report.escaping import visible
from headreport.report.render import render
from tests.report_fixtures import HOSTILE_TOKENS

CHART_MARKS_JS = """() => [...document.querySelectorAll('div.vega-chart')].map(el => ({
  rendered: el.getAttribute('data-rendered'),
  marks: el.querySelectorAll('svg [class*="mark-"] path, svg [class*="mark-"] line, \
svg [class*="mark-"] rect, svg [class*="mark-"] text').length,
}))"""


def open_page(browser, path, allowed: tuple[str, ...] = ("file://", "data:", "blob:", "about:")):
    """Open ``path`` (a file or a URL); return (page, console errors, other requests, dialogs)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, foreign, dialogs = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    def route(r):
        if r.request.url.startswith(allowed):
            r.continue_()
        else:
            foreign.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(path if isinstance(path, str) else path.as_uri())
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


def assert_charts_drawn(page, errors, foreign, dialogs, name):
    charts = page.evaluate(CHART_MARKS_JS)
    assert charts and all(c["rendered"] == "true" and c["marks"] > 0 for c in charts), name
    assert errors == [] and foreign == [] and dialogs == [], (name, errors, foreign)
    return len(charts)


def test_the_site_works_from_a_web_server(browser, report_build):
    """The same pages served over HTTP (GitHub Pages): the shared assets load, every chart draws."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(report_build / "site"))
    handler.log_message = lambda *a: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        for name in ("index.html", "head-1.3.html"):
            page, errors, foreign, dialogs = open_page(browser, base + name, allowed=(base, "data:", "blob:", "about:"))
            if name != "index.html":
                assert_charts_drawn(page, errors, foreign, dialogs, name)
            else:
                assert errors == [] and foreign == []
            page.close()
    finally:
        server.shutdown()


def test_the_standalone_report_is_one_file_that_draws_every_chart(browser, tiny_artifacts, tmp_path):
    out = tmp_path / "out"
    render(tiny_artifacts, out, engine="pandoc", standalone=True)
    single = out / "site" / "report.html"
    lone = tmp_path / "attached" / "report.html"  # away from the site: nothing else beside it
    lone.parent.mkdir()
    lone.write_bytes(single.read_bytes())
    page, errors, foreign, dialogs = open_page(browser, lone)
    assert assert_charts_drawn(page, errors, foreign, dialogs, "report.html") == 16
    assert page.evaluate("document.querySelectorAll('link[href], script[src]').length") == 0
    page.close()
