"""The token explorer end to end, on the checkpoint whose head 1.2 is copy suppression for every
token: its data equal a dense top-k of the head's circuits, and in headless Chromium, from file://,
a keyboard user searches a token, reads its lists and clicks through to another, with no console
error and no request; hostile tokens are shown literally and stay inert."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import zlib

import numpy as np
import pytest
import torch

from headreport.analysis import explorer_codec
from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.circuits import RankCircuits
from headreport.analysis.config import ModelConfig, ProcessingConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from headreport.cli import main
from headreport.report import explorer
from headreport.report.escaping import visible
from headreport.report.render import render
from tests.integration.test_browser import open_page
from tests.oracles import dense_reference
from tests.report_fixtures import HOSTILE_TOKENS, reseal

LABEL = "1.2"
PREFIX = "#hrx-1-2-"


def dense_circuits(folder):
    """The head's OV and QK circuits as dense vocab × vocab matrices, from the same factors the
    analysis ranks (float64 products)."""
    model = load_model(ModelConfig(name=str(folder), device="cpu"), ProcessingConfig())
    layer0 = effective_embedding(model, "residual", progress=False)
    rc = RankCircuits(model, 1, layer0.W_EE, "none")
    out = {}
    for name, c in (("ov", rc.ov(2)), ("qk", rc.qk(2))):
        rows = c.rows_of(torch.arange(c.n_rows))
        out[name] = rows.double() @ c.B.double()
    return out


def test_explorer_lists_equal_a_dense_top_k(explorer_build, everywhere_checkpoint):
    arts = load_artifacts(explorer_build / "artifacts")
    assert set(arts["explorers"]) == {LABEL}  # the dead head 0.1 has degenerate circuits: no lists
    got = explorer_codec.decode(arts["explorers"][LABEL])
    dense = dense_circuits(everywhere_checkpoint[0])
    ov, qk = dense["ov"], dense["qk"]
    n = ov.shape[0]
    ref_ov, ref_qk = dense_reference(ov), dense_reference(qk)
    # products in float32 blocks vs float64: compare lists where the k-th and (k+1)-th values are apart
    def agree(got_ids, ref_ids, M, axis_rows=True):
        mismatch = np.nonzero((got_ids != ref_ids).any(axis=1))[0]
        for r in mismatch:  # only near-ties may differ: the listed values must match the reference's
            vals = M[r] if axis_rows else M[:, r]
            np.testing.assert_allclose(np.sort(vals[got_ids[r]].numpy()), np.sort(vals[ref_ids[r]].numpy()),
                                       rtol=1e-5, atol=1e-6)
        return len(mismatch)
    assert agree(got["ov_low"], ref_ov["row_low"], ov) <= n // 100
    assert agree(got["ov_high"], ref_ov["row_high"], ov) <= n // 100
    assert agree(got["qk_keys"], ref_qk["row_high"], qk) <= n // 100
    assert agree(got["qk_queries"], ref_qk["col_high"], qk, axis_rows=False) <= n // 100
    # own ranks: ties count against the token (>= for the highest, <= for the lowest)
    diag_ov, diag_qk = ov.diagonal()[:, None], qk.diagonal()[:, None]
    want_ov = (ov <= diag_ov).sum(dim=1).numpy()
    want_qk = (qk >= diag_qk).sum(dim=1).numpy()
    assert (got["ov_rank"] == want_ov).mean() > 0.99 and (got["qk_rank"] == want_qk).mean() > 0.99
    # the planted answer: every token's own logit is the one it lowers most
    assert (got["ov_low"][:, 0] == np.arange(n)).mean() > 0.95
    assert (got["ov_rank"] == 1).mean() > 0.95


def shard_payload(path) -> dict:
    """The shard object a data script registers (``h.shards[N] = {...};``)."""
    text = path.read_text(encoding="utf-8")
    assert "<" not in text  # every < is a \u003c escape: nothing can close a script element
    return json.loads(text[text.index("] = {") + 4 : text.rindex("; })")])


def tokens_of(path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert "<" not in text
    packed = json.loads(text[text.index(".tokenData = ") + 13 : text.rindex(";")])
    raw = zlib.decompress(base64.b64decode(packed["data"]))
    assert len(raw) == packed["raw_bytes"] and hashlib.sha256(raw).hexdigest() == packed["sha256"]
    return json.loads(raw.decode("utf-8"))


def test_head_page_carries_the_explorer_and_its_data(explorer_build):
    site = explorer_build / "site"
    html = (site / "head-1.2.html").read_text(encoding="utf-8")
    assert 'class="hr-explorer"' in html and 'src="assets/explorer.js"' in html
    assert "hr-explorer" not in (site / "head-0.1.html").read_text(encoding="utf-8")
    artifact = json.loads((explorer_build / "artifacts" / "explorer_1.2.json").read_text())
    shards = [shard_payload(p) for p in sorted((site / "assets" / "explorer" / "head-1.2").glob("*.js"))]
    assert [s["start"] for s in shards] == list(range(0, artifact["d_vocab"], explorer.SHARD_TOKENS))
    want, got = explorer_codec.decode(artifact), [explorer_codec.decode(s) for s in shards]
    for f in explorer_codec.FIELDS:
        np.testing.assert_array_equal(np.concatenate([g[f] for g in got]), want[f])
    vocabulary = load_artifacts(explorer_build / "artifacts")["vocabulary"]
    assert tokens_of(site / "assets" / "explorer" / "tokens.js") == explorer.visible_forms(vocabulary)
    # the standalone report carries the head's payload whole, as the artifact holds it: no shards
    standalone = (site / "report.html").read_text(encoding="utf-8")
    assert 'h.shards["whole"] = ' in standalone and "h.shards[0] = " not in standalone
    assert artifact["data"] in standalone


def test_a_sharded_head_loads_only_the_shards_it_shows(browser, explorer_build, tmp_path, monkeypatch):
    """With 300-token shards (7 for this 2,048-token vocabulary), showing a token loads the
    vocabulary and that token's shard only; a token of another range loads its shard, one of the
    same range nothing more; the lists are those of the unsharded data."""
    monkeypatch.setattr(explorer, "SHARD_TOKENS", 300)
    render(explorer_build / "artifacts", tmp_path / "out", engine="pandoc")
    site = tmp_path / "out" / "site"
    assert len(list((site / "assets" / "explorer" / "head-1.2").glob("*.js"))) == 7
    page, errors, foreign, _ = open_page(browser, site / "head-1.2.html")
    loaded = []
    page.on("request", lambda r: loaded.append(r.url.rsplit("/assets/explorer/", 1)[-1])
            if "/assets/explorer/" in r.url else None)
    want = explorer_codec.decode(json.loads((explorer_build / "artifacts" / "explorer_1.2.json").read_text()))

    def show(token: int) -> None:
        page.fill(".hrx-input", f"#{token}")
        page.press(".hrx-input", "Enter")
        page.wait_for_function(f"() => document.querySelector('.hrx-result').getAttribute('data-token') === '{token}'")
        listed = [int(a.get_attribute("href").removeprefix(PREFIX)) for a in page.locator(".hrx-card a").all()]
        assert listed == [*want["ov_low"][token], *want["ov_high"][token], *want["qk_queries"][token],
                          *want["qk_keys"][token]]

    show(1799)
    assert loaded == ["tokens.js", "head-1.2/00005.js"]
    show(1500)  # the same shard (1,500–1,799): nothing more
    show(5)
    assert loaded == ["tokens.js", "head-1.2/00005.js", "head-1.2/00000.js"]
    assert errors == [] and foreign == []
    page.close()


def search_and_click(page):
    """Keyboard only: focus the box, type, pick the first suggestion, then Tab to a listed token
    and press Enter. Returns (first token id shown, second token id shown)."""
    page.focus(".hrx-input")
    page.keyboard.type(" th")
    page.wait_for_selector(".hrx-option")
    options = page.locator(".hrx-option .hrx-token").all_inner_texts()
    assert options and all(o.startswith("␣th") for o in options)
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_selector(".hrx-result[data-token]")
    first = int(page.get_attribute(".hrx-result", "data-token"))
    assert page.locator(".hrx-title .hrx-token").inner_text() == options[0]
    # every list is full: k links each
    assert page.locator(".hrx-card").count() == 3
    assert page.locator(".hrx-card li").count() == 40
    # Tab from the box (past the button) to the first listed token other than itself, Enter
    target = page.locator(".hrx-card a").nth(1)
    target_id = target.get_attribute("href").removeprefix(PREFIX)
    page.focus(".hrx-go")
    for _ in range(3):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.getAttribute('href')") == PREFIX + target_id:
            break
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.querySelector('.hrx-result').getAttribute('data-token') === '{target_id}'")
    return first, int(target_id)


@pytest.mark.parametrize("name", ["head-1.2.html", "report.html"])
def test_search_and_click_through_from_file_url(browser, explorer_build, name):
    page, errors, foreign, dialogs = open_page(browser, explorer_build / "site" / name)
    first, second = search_and_click(page)
    assert first != second
    assert page.url.endswith(f"{PREFIX}{second}")
    assert page.evaluate("document.activeElement.classList.contains('hrx-result')")
    # the first token's own logit is the one it lowers most (the planted head), shown as rank 1
    ov_card = page.locator(".hrx-card").first.inner_text()
    assert "ranks 1 of 2,048" in ov_card
    # back goes to the first token; an id search finds a token by number
    page.go_back()
    page.wait_for_function(f"() => document.querySelector('.hrx-result').getAttribute('data-token') === '{first}'")
    page.fill(".hrx-input", "#1799")
    page.press(".hrx-input", "Enter")
    page.wait_for_function("() => document.querySelector('.hrx-result').getAttribute('data-token') === '1799'")
    assert errors == [] and foreign == [] and dialogs == []
    page.close()


def test_a_shared_link_opens_the_token(browser, explorer_build):
    page, errors, foreign, _ = open_page(browser, (explorer_build / "site" / "head-1.2.html").as_uri() + PREFIX + "294")
    page.wait_for_selector(".hrx-result[data-token='294']")
    assert page.locator(".hrx-title .hrx-token").inner_text() == "␣th"
    assert errors == [] and foreign == []
    page.close()


def test_hostile_tokens_are_literal_and_inert_in_the_explorer(browser, explorer_build, tmp_path):
    """Tokens that would be markup anywhere are rewritten into the vocabulary; the explorer shows
    their visible forms as text and creates no element from them."""
    arts = tmp_path / "artifacts"
    shutil.copytree(explorer_build / "artifacts", arts)
    vocab = json.loads((arts / "vocabulary.json").read_text(encoding="utf-8"))
    got = explorer_codec.decode(json.loads((arts / "explorer_1.2.json").read_text(encoding="utf-8")))
    victim = 294
    ids = [int(i) for i in got["ov_low"][victim][: len(HOSTILE_TOKENS)]]
    for i, text in zip(ids, HOSTILE_TOKENS):
        vocab["tokens"][i] = text
    (arts / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # the prompts too: a prompt's text (menu, table) and its tokens (axis labels, tooltips, table)
    prompts = json.loads((arts / "prompts.json").read_text(encoding="utf-8"))
    first = prompts["results"]["prompts"][0]
    first["text"] = "<b>bold</b> <script>alert(2)</script> & done"
    for tok, text in zip(first["tokens"][1:], HOSTILE_TOKENS):
        tok.pop("bytes_hex", None)
        tok["token"] = text
    (arts / "prompts.json").write_text(json.dumps(prompts, ensure_ascii=False), encoding="utf-8")
    reseal(arts)
    render(arts, tmp_path / "out", engine="pandoc")
    page, errors, foreign, dialogs = open_page(browser, (tmp_path / "out" / "site" / "head-1.2.html").as_uri()
                                               + PREFIX + str(victim))
    page.wait_for_selector(f".hrx-result[data-token='{victim}']")
    listed = page.locator(".hrx-card").first.locator(".hrx-link .hrx-token").all_inner_texts()
    for text in HOSTILE_TOKENS:
        assert visible(text) in listed, text
    # only the explorer's own elements: tags and classes it creates, nothing a token could have made
    made = page.evaluate("""() => [...document.querySelectorAll('.hrx-result *')].map(e => e.tagName + '.' +
                                    (e.className || ''))""")
    assert set(made) <= {"H4.hrx-title", "SPAN.hrx-token", "SPAN.hrx-id", "DIV.hrx-grid", "SECTION.hrx-card",
                         "H5.hrx-card-title", "P.", "DIV.hrx-list", "H5.", "OL.", "LI.", "A.hrx-link"}, set(made)
    # search by a hostile token's visible form finds it
    page.fill(".hrx-input", visible(HOSTILE_TOKENS[0]))
    page.press(".hrx-input", "Enter")
    page.wait_for_function(f"() => document.querySelector('.hrx-result').getAttribute('data-token') === '{ids[0]}'")
    assert dialogs == [] and errors == [] and foreign == []
    # the prompt's text is literal in the menu and the table; its tokens literal on the chart's axes
    options = page.locator("#fig-head-1-2-prompt-attention select option").all_inner_texts()
    assert options[0].startswith("1: <b>bold</b> <script>alert(2)")
    assert "<b>bold</b>" in page.evaluate("document.body.innerText")
    assert page.evaluate("""document.querySelectorAll('main b, main script:not([type="application/json"])')
                            .length""") == 0
    axis = page.evaluate("""() => [...document.querySelectorAll(
        '#fig-head-1-2-prompt-attention svg .role-axis-label text')].map(e => e.textContent).join('|')""")
    assert "1 <script>alert(1)" in axis and "2 </div>" in axis and "3 *a*" in axis  # long labels are cut with …
    page.close()


def _explorer_render(explorer_build, tmp_path, edit):
    arts = tmp_path / "artifacts"
    shutil.copytree(explorer_build / "artifacts", arts)
    path = arts / "explorer_1.2.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")
    reseal(arts)
    return main(["render", "--artifacts", str(arts), "--out", str(tmp_path / "out"), "--engine", "pandoc"])


def _reencode(doc, change):
    arrays = explorer_codec.decode(doc)
    change(arrays)
    # encoded for a slightly larger vocabulary (same id width), so that the encoder's own check lets the
    # out-of-range value through, as a hostile or broken writer would
    fresh = explorer_codec.encode({f: arrays[f] for f in explorer_codec.FIELDS}, doc["d_vocab"] + 100)
    assert fresh["dtype"] == doc["dtype"]
    doc.update({k: fresh[k] for k in ("data", "sha256", "palettes", "raw_bytes")})


@pytest.mark.parametrize("edit, words", [
    (lambda d: _reencode(d, lambda a: a["ov_rank"].__setitem__(3, d["d_vocab"] + 7)), "ov_rank holds values outside"),
    (lambda d: _reencode(d, lambda a: a["qk_keys"].__setitem__((5, 0), d["d_vocab"])),
     "qk_keys holds values outside|lists do not fit head 1.2"),
    (lambda d: d.update(data=d["data"][:-40] + "A" * 40), "payload is corrupt"),
    (lambda d: d.update(sha256="0" * 64), "sha256 mismatch"),
    (lambda d: d.update(data=base64.b64encode(b"not deflated").decode()), "payload is corrupt"),
])
def test_explorer_ids_and_ranks_outside_the_vocabulary_or_a_corrupt_payload_are_refused(
        edit, words, explorer_build, tmp_path, capsys):
    """The page would say "ranks 65,535 of 50,257", or the browser only "Failed to fetch": render
    refuses first, naming the file."""
    code = _explorer_render(explorer_build, tmp_path, edit)
    err = capsys.readouterr().err
    assert code == 2 and re.search(words, err) and "explorer_1.2.json" in err and "Traceback" not in err, err
    assert not (tmp_path / "out" / "site").exists()


@pytest.mark.parametrize("raw", ["a\\b", "\u202eevil", "x\u200dy", "\x1b[31m"])
def test_the_explorer_finds_a_token_by_its_real_text(raw, browser, explorer_build, tmp_path):
    """Typing a token's real text finds it even when its visible form differs (a backslash is shown
    doubled, U+202E, a zero-width joiner and ESC as code points)."""
    arts = tmp_path / "artifacts"
    shutil.copytree(explorer_build / "artifacts", arts)
    vocab = json.loads((arts / "vocabulary.json").read_text(encoding="utf-8"))
    victim = 1500
    vocab["tokens"][victim] = raw
    (arts / "vocabulary.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    reseal(arts)
    render(arts, tmp_path / "out", engine="pandoc")
    page, errors, foreign, dialogs = open_page(browser, (tmp_path / "out" / "site" / "head-1.2.html").as_uri())
    page.fill(".hrx-input", raw)
    page.wait_for_selector(".hrx-option")
    assert visible(raw) in page.locator(".hrx-option .hrx-token").all_inner_texts()
    page.press(".hrx-input", "Enter")
    page.wait_for_function(f"() => (document.querySelector('.hrx-result') || {{}}).getAttribute && "
                           f"document.querySelector('.hrx-result').getAttribute('data-token') === '{victim}'")
    assert errors == [] and dialogs == [] and foreign == []
    page.close()
