"""The head on prompts, on the checkpoint whose head 1.2 attends to a repeated token and pushes its
logit down (copy suppression planted for every token) and whose head 0.1 is dead: the evidence
finds the plant, the artifact is schema-valid and reproducible, and the pages show it."""

from __future__ import annotations

import json

import pytest

from headreport.analysis import attention_patterns
from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig, config_from_dict
from headreport.analysis.errors import ConfigError
from headreport.analysis.inputs.prompt_files import PromptSet, load_prompts
from headreport.analysis.model.loader import load_model
from headreport.analysis.prompts import analyze_prompts
from tests.integration.test_browser import CHART_MARKS_JS, open_page

#: each prompt ends on a token that occurred earlier
REPEATS = (
    "The cat sat on the mat and the cat",
    "We went to the store and then back to",
    "Paris is big. I like Paris",
    "one two three four one",
)


@pytest.fixture(scope="module")
def everywhere_model(everywhere_checkpoint):
    return load_model(ModelConfig(name=str(everywhere_checkpoint[0]), device="cpu"), ProcessingConfig())


def test_planted_head_attends_to_the_repeated_token_and_pushes_it_down(everywhere_model):
    r = analyze_prompts(everywhere_model, [HeadRef(1, 2), HeadRef(0, 1)], PromptSet("test", REPEATS, "0" * 64))
    assert r["checks"]["direct_effects_exact"]
    assert r["checks"]["attn_out_max_relative_error"] < 1e-5
    for prompt, rec in zip(r["prompts"], r["heads"]["1.2"]["records"]):
        ids = [t["id"] for t in prompt["tokens"]]
        largest = rec["largest"]
        assert ids[largest["pos"]] == ids[-1], prompt["text"]  # the repeated token (or the query itself)
        assert largest["effect"] < 0 and largest["weight"] > 0.2
        # attention is split between the earlier occurrence(s) and the final position: nothing else
        repeated = sum(s["weight"] for s in rec["sources"] if ids[s["pos"]] == ids[-1])
        assert repeated > 0.95
        # its logit is the one pushed down most among the prompt's tokens
        assert largest["effect"] == min(s["effect"] for s in rec["sources"])
        # the stored pattern: causal rows that sum to 1, the last one the final position's weights
        pattern = attention_patterns.decode(rec["pattern"], len(ids))
        assert all(abs(sum(row) - 1) < len(row) * 1e-4 for row in pattern)
        assert all(abs(w - s["weight"]) <= 0.6e-4 for w, s in zip(pattern[-1], rec["sources"]))  # 1e-4 units
    assert (r["pattern_encoding"], r["pattern_scale"]) == (attention_patterns.ENCODING, attention_patterns.SCALE)
    assert r["heads"]["1.2"]["summary"] == {"n_prompts": 4, "n_negative": 4, "share_negative": 1.0}
    dead = r["heads"]["0.1"]
    assert dead["summary"]["n_negative"] == 0
    assert all(s["effect"] == 0 for rec in dead["records"] for s in rec["sources"])


def test_prompt_artifact_and_pages(explorer_build):
    arts = load_artifacts(explorer_build / "artifacts")  # schema-valid and consistent with the heads
    doc = arts["prompts"]
    r = doc["results"]
    assert r["source"] == "builtin:ioi" and len(r["prompts"]) == len(load_prompts("builtin:ioi").texts)
    assert r["prompts"][0]["text"].startswith("When Mary and John")
    assert set(r["heads"]) == {"1.2", "0.1"}
    assert r["heads"]["1.2"]["summary"]["share_negative"] == 1.0
    page = (explorer_build / "site" / "head-1.2.html").read_text(encoding="utf-8")
    assert "The head on prompts" in page and "evidence on" in page and "not the dataset-wide numbers" in page
    assert "on 25 of 25 prompts (100%) the head lowers the logit" in page.replace("\n", " ")
    assert (explorer_build / "figures" / "head-1-2-prompt-attention.svg").exists()
    assert (explorer_build / "tables" / "head-1-2-prompts.tex").exists()


def test_comparison_page_renders(explorer_build, browser):
    path = explorer_build / "site" / "compare-1.2-0.1.html"
    html = path.read_text(encoding="utf-8")
    for heading in ("Spectra", "Rank metrics", "Most-suppressed tokens", "On prompts"):
        assert f">{heading}<" in html
    assert ("at least one head’s OV circuit is degenerate" in html
            or "at least one head's OV circuit is degenerate" in html)
    nav = (explorer_build / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="compare-1.2-0.1.html"' in nav
    page, errors, foreign, _ = open_page(browser, path)
    charts = page.evaluate(CHART_MARKS_JS)
    assert charts and all(c["rendered"] == "true" and c["marks"] > 0 for c in charts)
    assert errors == [] and foreign == []
    page.close()


LABELS = """() => [...document.querySelectorAll(
    '#fig-head-1-2-prompt-FIG svg .role-axis-label text')].map(e => e.textContent).join('|')"""
SHOWN = """() => ['attention', 'final'].map(f => document.getElementById('fig-head-1-2-prompt-' + f)
    .getAttribute('data-prompt'))"""


def switch_prompts(page) -> None:
    """Choose prompt 21 in the menu: both charts draw it (the menu sits in the attention figure)."""
    heat, final = LABELS.replace("FIG", "attention"), LABELS.replace("FIG", "final")
    before, before_final = page.evaluate(heat), page.evaluate(final)
    assert "ary" in before and "ary" in before_final  # prompt 1: "When Mary and John ..."
    assert page.evaluate(SHOWN) == ["1", "1"]
    page.locator("#fig-head-1-2-prompt-attention select").select_option(index=20)  # the first prose passage
    page.wait_for_function(f"() => ({SHOWN})().every(n => n === '21')")
    after, after_final = page.evaluate(heat), page.evaluate(final)
    assert "ary" not in after and "comm" in after
    assert "ary" not in after_final and "comm" in after_final
    assert page.inner_text(".hr-prompt-status") == "Showing prompt 21 of 25."


def test_prompt_menu_switches_the_charts(explorer_build, browser):
    page, errors, foreign, _ = open_page(browser, explorer_build / "site" / "head-1.2.html")
    switch_prompts(page)
    # the chosen prompt's data, and only it, came as its own script from file://
    assert page.evaluate("""[...document.querySelectorAll('script[src*="assets/prompts/"]')]
                            .map(s => s.getAttribute('src'))""") == ["assets/prompts/head-1.2/21.js"]
    assert errors == [] and foreign == []
    page.close()


def test_the_standalone_report_switches_prompts_from_its_inline_data(explorer_build, browser, tmp_path):
    lone = tmp_path / "report.html"  # away from the site: nothing beside it to load
    lone.write_bytes((explorer_build / "site" / "report.html").read_bytes())
    page, errors, foreign, _ = open_page(browser, lone)
    switch_prompts(page)
    assert page.evaluate("document.querySelectorAll('link[href], script[src]').length") == 0
    assert errors == [] and foreign == []
    page.close()


def test_the_comparison_of_a_copy_suppression_head_with_itself_is_refused():
    with pytest.raises(ConfigError):
        config_from_dict({"compare": [["1.2", "1.2"]]})
    assert json.dumps(config_from_dict({"compare": [["1.2", "0.1"]]}).to_dict()["compare"]) == '[["1.2", "0.1"]]'
