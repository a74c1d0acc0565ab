"""Token strings are hostile text: visible forms and per-target escaping (report/escaping.py)."""

from __future__ import annotations

import csv
import html as html_mod
import io
import json
import subprocess

import pytest
import typst

from headreport.report import escaping as esc
from headreport.report.engines.pandoc import run_pandoc
from headreport.report.escaping import html_text, markdown_text, typst_markup, typst_string, visible

HOSTILE = ["<script>alert(1)</script>", "</div>", "*a*", "#set page(width: 1pt)", "$x$", "\\", "@fig",
           "{{ x }}", "<|endoftext|>", "\n", "`", "``a", "[x](y)", "| a |", "// c", "<!--", "\u202e"]


@pytest.mark.parametrize("token, shown", [
    (" James", "␣James"), ("\n", "\\n"), ("\t", "\\t"), ("\\", "\\\\"), ("  ", "␣␣"),
    ("\u202eevil", "\\u202eevil"), ("\x00", "\\x00"), ("␣", "\\u2423"), ("", esc.EMPTY_TOKEN),
    ("<|endoftext|>", "<|endoftext|>"), ("é", "é"),
])
def test_visible_form(token, shown):
    assert esc.visible(token) == shown


def test_visible_shows_invalid_utf8_bytes_as_hex():
    # " " + the first two bytes of U+2014: the tokenizer decodes them as U+FFFD
    assert esc.visible(" \ufffd", "20e280") == "␣\\xe2\\x80"
    assert esc.visible_token({"id": 1, "token": "\ufffd", "bytes_hex": "e2"}) == "\\xe2"


def test_long_tokens_are_cut_with_a_marker():
    """A hostile 64 KB token is shown as its first MAX_SHOWN_CHARS characters and how many were left
    out; a token of the limit's length is shown whole."""
    n = esc.MAX_SHOWN_CHARS
    assert esc.visible("a" * n) == "a" * n
    assert esc.visible("a" * (n + 5)) == "a" * n + "…(+5 characters)"
    long = esc.visible("\n" * 60_000)  # each shown as two characters
    assert long == "\\n" * (n // 2) + f"…(+{60_000 - n // 2} characters)"
    assert len(esc.visible("<" * 65_536)) < n + 30


def test_visible_is_injective_on_tricky_pairs():
    pairs = [("\n", "\\n"), (" ", "␣"), ("\\x41", "A"), ("\ufffd", "\\xef")]
    for a, b in pairs:
        assert esc.visible(a) != esc.visible(b)


def test_html_text_escapes_markup():
    assert esc.html_text('<a href="x">&') == "&lt;a href=&quot;x&quot;&gt;&amp;"


def test_json_for_script_cannot_close_the_script_element():
    text = esc.json_for_script({"t": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"t": "</script><!-- & \u2028"}


def test_csv_cell_guards_formulas_and_round_trips():
    assert esc.csv_cell("=1+1") == "'=1+1" and esc.csv_cell("@fig") == "'@fig"
    assert esc.csv_cell("␣James") == "␣James"
    buf = io.StringIO()
    csv.writer(buf).writerow([esc.csv_cell(t) for t in ("a,b", 'q"q', "x\ny")])
    assert next(csv.reader(io.StringIO(buf.getvalue()))) == ["a,b", 'q"q', "x\ny"]


def _pandoc(markdown: str, to: str) -> str:
    return run_pandoc(markdown, to)


def test_markdown_text_is_literal_in_pandoc_html():
    for text in HOSTILE[:-1]:
        html = _pandoc(esc.markdown_text(text), "html5")
        visible = html.replace("<p>", "").replace("</p>", "").strip()
        assert html_mod.unescape(visible) == " ".join(text.split()) or text.strip() == "", text


def test_markdown_token_reaches_html_and_typst_verbatim():
    for text in HOSTILE:
        md = f"before {esc.markdown_token({'id': 0, 'token': text})} after"
        html = _pandoc(md, "html5")
        shown = esc.visible(text)
        assert f'<code class="tok">{esc.html_text(shown)}</code>' in html
        assert html_mod.unescape(html).count(shown) >= 1
        typst = _pandoc(md, "typst")
        assert esc.typst_raw(shown) in typst
        assert "html" not in typst.lower() or "<code" not in typst


def test_typst_escapes_compile_to_the_literal_text(tmp_path):
    shown = [esc.visible(t) for t in HOSTILE]
    doc = "\n\n".join(f"{esc.typst_markup(s)} | {esc.typst_raw(s)}.tail" for s in shown)
    (tmp_path / "t.typ").write_text(doc, encoding="utf-8")
    typst.compile(str(tmp_path / "t.typ"), output=str(tmp_path / "t.pdf"))
    if subprocess.run(["which", "pdftotext"], check=False, capture_output=True).returncode != 0:
        pytest.skip("pdftotext not installed")
    text = subprocess.run(["pdftotext", str(tmp_path / "t.pdf"), "-"],
                          check=False, capture_output=True, text=True).stdout
    for s in shown:
        assert text.count(s) >= 2, s  # once as markup, once as raw
    assert ".tail" in text


def test_raw_bytes_and_characters_never_share_a_visible_form():
    """GPT-2's id 254 is the raw byte 0xA0 and id 1849 the character U+00A0 (likewise 0xAD / U+00AD):
    distinct tokens, distinct forms."""
    for byte in (0xA0, 0xAD, 0x80, 0x9F):  # (printable characters such as U+00FF show as themselves)
        assert visible("\ufffd", bytes_hex=f"{byte:02x}") == f"\\x{byte:02x}"
        assert visible(chr(byte)) == f"\\u{byte:04x}"
    assert visible("\x7f") == "\\x7f" and visible("\x00") == "\\x00"


def test_direction_overrides_are_neutralised_in_every_target():
    """A U+202E in a model path would reverse the site title and the PDF title page."""
    path = "models/\u202egpt2\u2066x\u2069"
    for out in (html_text(path), markdown_text(path), typst_markup(path), typst_string(path)):
        assert "\u202e" not in out and "\u2066" not in out and "\u2069" not in out
        assert "u202e" in out
