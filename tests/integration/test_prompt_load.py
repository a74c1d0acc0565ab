"""The documented maximum of prompts renders, small and fast: the head page carries the first
prompt's rows and the menu, never every prompt's data; each prompt's data is its own script, loaded
when the reader chooses it.

The artifact set of the copy-suppression checkpoint (two heads and a ``compare`` pair) with its
prompts replaced by the documented maximum, 200 prompts of 256 tokens (:mod:`tests.prompt_load`:
synthetic patterns, every prompt holding every hostile token). The render runs in a child process,
whose time and peak memory are measured (about 20 s and 0.9 GB, all processes together, on 2 cores;
``make bench`` measures the same)."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from headreport.analysis import attention_patterns
from headreport.analysis.attention_patterns import n_weights
from headreport.analysis.inputs.prompt_files import MAX_PROMPT_TOKENS, MAX_PROMPTS
from headreport.report import charts
from headreport.report.escaping import visible
from tests.integration.test_browser import open_page
from tests.prompt_load import measured_render, scale_prompts
from tests.report_fixtures import HOSTILE_TOKENS, pdf_text

N_TOKENS = MAX_PROMPT_TOKENS
HEADS = ("1.2", "0.1")


@pytest.fixture(scope="module")
def many_prompts(tmp_path_factory, explorer_build):
    """(out dir, the scaled prompts document, the render's measurements)."""
    root = tmp_path_factory.mktemp("many_prompts")
    arts = root / "artifacts"
    shutil.copytree(explorer_build / "artifacts", arts)
    doc = scale_prompts(arts, MAX_PROMPTS, N_TOKENS)
    run = measured_render(arts, root / "out", timeout=300)
    assert run["exit_code"] == 0, run["log"]
    return root / "out", doc, run


def spec_of(page: str, slug: str) -> dict:
    found = re.search(rf'<script type="application/json" id="fig-{slug}-spec">(.*?)</script>', page, re.S)
    assert found, slug
    return json.loads(found.group(1))


def inline_rows(spec: dict, name: str) -> list[dict]:
    """The rows of the spec's named inline data set (held as one JSON string)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == name and "values" in node:
                found.append(node["values"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(spec)
    assert len(found) == 1, (name, len(found))
    return json.loads(found[0])


def test_the_render_is_small_and_fast(many_prompts):
    _, doc, run = many_prompts
    assert run["peak_rss_gb"] < 2 and run["tree_peak_gb"] < 2, run
    assert run["wall_s"] < 120, run
    assert len(doc["results"]["prompts"]) == MAX_PROMPTS and set(doc["results"]["heads"]) == set(HEADS)


@pytest.mark.parametrize("label", HEADS)
def test_the_page_holds_one_prompt_and_each_prompt_is_its_own_script(many_prompts, label):
    out, doc, _ = many_prompts
    r = doc["results"]
    key = label.replace(".", "-")
    page = (out / "site" / f"head-{label}.html").read_text(encoding="utf-8")
    # the charts' inline data: the first prompt's rows only
    heat = inline_rows(spec_of(page, f"head-{key}-prompt-attention"), "prompt_attention")
    assert len(heat) == n_weights(N_TOKENS) and {row["prompt"] for row in heat} == {1}
    final = inline_rows(spec_of(page, f"head-{key}-prompt-final"), "prompt_final")
    assert [row["pos"] for row in final] == list(range(N_TOKENS)) and {row["prompt"] for row in final} == {1}
    # no prompt's pattern is in the page; each is in its prompt's script, and nowhere else
    records = r["heads"][label]["records"]
    manifest = json.loads((out / "report.json").read_text(encoding="utf-8"))
    for i, rec in enumerate(records, start=1):
        assert rec["pattern"] not in page
        script = out / "site" / "assets" / "prompts" / f"head-{label}" / f"{i}.js"
        assert rec["pattern"] in script.read_text(encoding="utf-8")
        assert f"site/assets/prompts/head-{label}/{i}.js" in manifest["files"]
    assert len(list((out / "site" / "assets" / "prompts" / f"head-{label}").iterdir())) == MAX_PROMPTS
    # the menu's labels are in the page (a few kB); all prompts' rows would be hundreds of MB
    assert page.count("hr-prompt-labels") == 1 and len(page.encode()) < 8_000_000
    # the figures' CSV: the first prompt's rows
    csv = (out / "figures" / f"head-{key}-prompt-attention.csv").read_text(encoding="utf-8")
    assert len(csv.splitlines()) == 1 + n_weights(N_TOKENS)


def test_the_pdf_shows_the_first_prompt_and_says_so(many_prompts):
    out, _, _ = many_prompts
    text = " ".join(pdf_text(out / "pdf" / "report.pdf").split())
    assert "one prompt at a time, chosen from a menu of all 200 prompts; this PDF shows prompt 1: Prompt 1:" in text
    assert "Head 1.2 on 200 prompts" in text and "one point per prompt" in text


def test_choosing_a_prompt_loads_and_draws_only_that_prompt(many_prompts, browser):
    out, doc, _ = many_prompts
    page, errors, foreign, dialogs = open_page(browser, out / "site" / "head-1.2.html")
    fig = "#fig-head-1-2-prompt-attention"
    assert page.locator(f"{fig} select option").count() == MAX_PROMPTS
    loaded = "() => [...document.querySelectorAll('script[src*=\"assets/prompts/\"]')].map(s => s.getAttribute('src'))"
    assert page.evaluate(loaded) == []  # nothing loaded before a prompt is chosen
    for number in (137, 200):
        page.locator(f"{fig} select").select_option(str(number))
        page.wait_for_function(f"""() => ['attention', 'final'].every(f => document.getElementById(
            'fig-head-1-2-prompt-' + f).getAttribute('data-prompt') === '{number}')""", timeout=30000)
        cells = page.evaluate(f"document.querySelectorAll('{fig} svg .mark-rect.role-mark path').length")
        assert cells == n_weights(N_TOKENS)
        axis = page.evaluate(f"() => [...document.querySelectorAll('{fig} svg .role-axis-label text')]"
                             ".map(e => e.textContent.trim())")  # "pos token", cut with … where long
        last = doc["results"]["prompts"][number - 1]["tokens"][-1]  # this prompt's, not the first one's
        assert any(a.startswith(f"{N_TOKENS - 1} {visible(last['token'])[:3]}") for a in axis), axis
        for text in HOSTILE_TOKENS:  # every prompt holds each hostile token: on the axes, as text
            assert any(a.split(" ", 1)[-1].startswith(visible(text)[:6]) for a in axis), (text, axis)
        bars = page.evaluate("document.querySelectorAll('#fig-head-1-2-prompt-final svg .mark-rect.role-mark path')"
                             ".length")
        assert bars == 2 * N_TOKENS
        assert page.inner_text(f"{fig} .hr-prompt-status") == f"Showing prompt {number} of {MAX_PROMPTS}."
        # the browser's rows are the rows the static exports would draw for this prompt
        prompt, rec = doc["results"]["prompts"][number - 1], doc["results"]["heads"]["1.2"]["records"][number - 1]
        pattern = attention_patterns.decode(rec["pattern"], N_TOKENS)
        for figure, name, want in (
                ("attention", "prompt_attention", charts.attention_rows(number - 1, prompt, pattern)),
                ("final", "prompt_final", charts.final_position_rows(number - 1, prompt, rec))):
            got = page.evaluate(f"""() => window.headreportCharts['fig-head-1-2-prompt-{figure}-spec']
                .then(view => view.data('{name}').map(row => Object.assign({{}}, row)))""")
            assert got == want, figure
    assert page.evaluate(loaded) == ["assets/prompts/head-1.2/137.js", "assets/prompts/head-1.2/200.js"]
    assert page.evaluate("document.querySelectorAll('main b, main i, main div.vega-chart script').length") == 0
    assert errors == [] and foreign == [] and dialogs == []
    page.close()
