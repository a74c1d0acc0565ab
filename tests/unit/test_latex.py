"""Tables as LaTeX (report/latex.py): escaping for text mode and for monospace, the table float, and
hostile tokens typeset by pdflatex and read back from the PDF."""

from __future__ import annotations

import re

import pytest

from headreport.report import latex
from headreport.report import tables as tb
from headreport.report.escaping import visible
from tests.report_fixtures import HOSTILE_TOKENS, compile_latex, pdf_text, pdflatex_view

#: token strings that would run, break or hide something in LaTeX if they were not escaped
LATEX_TOKENS = HOSTILE_TOKENS + [
    "\\input{secret}", "}{", "%", "\\\\", "~", "^", "_", "&", "#", "$", "{", "}", "é", " James", "␣",
    "中文", "😀", "end\\", "\\end{tabular}", "\\\\[2pt]", "--", "``a''", "!`", "'s", '"', "<<", "|", "[x]",
    "\\def\\x{y}\\x", "\\catcode`\\{=12", "#1", "\\verb|x|", "\u202e", "\t",
]
SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "^": r"\textasciicircum{}",
    "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "|": r"\textbar{}", '"': r"\textquotedbl{}", "[": "{[}", "]": "{]}",
}
ALL_KINDS_OF_TEXT = "".join(chr(c) for c in range(0x20, 0x7F)) + "\x00\x1b\x7f\u00a0é␣–—…×·−σΣ₁ᵢ²⁻ᵀ√≤中文😀\u202e\udc80"


@pytest.mark.parametrize("ch, escaped", SPECIALS.items())
def test_latex_text_escapes_every_special_character(ch, escaped):
    assert latex.latex_text(f"a{ch}b") == f"a{escaped}b"


@pytest.mark.parametrize("escape", [latex.latex_text, latex.latex_code])
def test_output_is_ascii_and_every_brace_is_paired(escape):
    out = escape(ALL_KINDS_OF_TEXT)
    assert out.isascii()
    bare = re.sub(r'\\[{}]|\\char"7[BD]', "", out)  # escaped braces are not groups
    depth = 0
    for ch in bare:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0, out
    assert depth == 0, out
    assert "\n" not in escape("a\nb\r\tc\u2028d")


@pytest.mark.parametrize("text, escaped", [
    ("1.2×10⁻⁴", r"$1.2\times10^{-4}$"),
    ("−0.5", "$-0.5$"),
    ("p < 10⁻¹⁰", r"p \textless{} $10^{-10}$"),
    ("σ₁/σ₂", r"$\sigma_{1}$/$\sigma_{2}$"),
    ("σ₁²/Σσᵢ²", r"$\sigma_{1}^{2}$/$\Sigma\sigma_{i}^{2}$"),
    ("cos²", "cos$^{2}$"),
    ("W_Eᵀ", r"W\_E$^{T}$"),
    ("x²₁²", "x$^{2}_{1}{}^{2}$"),  # never a double superscript
    ("√(e_OV · e_QK)", r"$\surd$(e\_OV $\cdot$ e\_QK)"),
    ("2 × 4", r"2 $\times$ 4"),
    ("0.1–0.2 — ok…", r"0.1\textendash{}0.2 \textemdash{} ok\ldots{}"),
    ("a--b ``c''", "a-{}-b `{}`c'{}'"),
    ("␣James", r"\hrvisiblespace{}James"),
    ("é 中 😀", r"\hrchar{00E9} \hrchar{4E2D} \hrchar{1F600}"),
])
def test_latex_text_maps_the_reports_characters(text, escaped):
    assert latex.latex_text(text) == escaped


@pytest.mark.parametrize("text, escaped", [
    ("\\input{x}", r'\texttt{\char"5C{}input\char"7B{}x\char"7D{}}'),
    ("<|endoftext|>", r'\texttt{\char"3C{}|endoftext|\char"3E{}}'),
    ("$x$ 100%", r'\texttt{\char"24{}x\char"24{}\ 100\char"25{}}'),
    ("␣é", r"\texttt{\hrvisiblespace{}\hrchar{00E9}}"),
    ("a--b", r"\texttt{a-{}-b}"),
    ("", r"\texttt{}"),
])
def test_latex_code_types_specials_by_code_point(text, escaped):
    assert latex.latex_code(text) == escaped


def test_latex_table_is_a_booktabs_float_with_caption_and_label():
    table = tb.Table("Ranks: σ₁ & more.", ["statistic", "value"], [
        [tb.text("median rank"), tb.number("12")],
        [tb.text("effect supported"), tb.text("yes")],
        [tb.text("*starred"), tb.number("")],
    ], slug="x")
    text = latex.latex_table(table, "Head_1.3 Ranks")
    assert text.isascii()
    body = [line for line in text.splitlines() if not line.startswith("%")]
    assert body[:7] == [r"\begin{table}[htbp]", r"\centering", r"\caption{Ranks: $\sigma_{1}$ \& more.}",
                        r"\label{tab:head-1-3-ranks}", r"\hrtablefont", r"\begin{tabular}{lr}", r"\toprule"]
    assert body[7:] == [r"statistic & value \\", r"\midrule", r"median rank & 12 \\",
                        r"effect supported & yes\hfill \\",  # text in a number column: left
                        r"{}*starred &  \\",  # `\\*` would swallow the star
                        r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    tokens = tb.Table("t", ["token", "id"], [[tb.code("a"), tb.number("1")], [tb.number("2"), tb.number("3")]],
                      slug="t")
    assert r"\hfill 2 & 3 \\" in latex.latex_table(tokens, "t")  # a number in a text column: right


@pytest.mark.parametrize("name, label", [("head-1-3-spectrum", "head-1-3-spectrum"), ("Head_1.3", "head-1-3"),
                                         ("a/../b", "a-b"), ("--", "table"), ("é", "table")])
def test_latex_label_is_letters_digits_and_dashes(name, label):
    assert latex.latex_label(name) == label


def test_a_table_slug_is_always_a_safe_file_name():
    assert tb.Table("c", ["a"], slug="../../etc/passwd").slug == "etc-passwd"
    assert tb.Table("c", ["a"], slug="-rf").slug == "rf"
    assert tb.Table("c", ["a"], slug="con").slug == "_con"
    with pytest.raises(TypeError):
        tb.Table("c", ["a"])  # every table has a slug


def test_two_tables_with_one_slug_are_refused(tmp_path):
    with pytest.raises(ValueError, match="slug"):
        latex.write_tables([tb.Table("a", ["x"], slug="same"), tb.Table("b", ["x"], slug="same")], tmp_path)
    with pytest.raises(ValueError, match="slug"):  # different files, one label
        latex.write_tables([tb.Table("a", ["x"], slug="a.b"), tb.Table("b", ["x"], slug="a-b")], tmp_path)


def test_hostile_tokens_compile_with_pdflatex_and_print_literally(tmp_path):
    """Each token as a token cell (monospace) and as a text cell, and every character the report
    writes in a caption: one pdflatex run, then the PDF's text. A token never runs: ``\\input{secret}``
    prints itself, not the file."""
    (tmp_path / "secret.tex").write_text("LEAKED", encoding="ascii")
    rows = [[tb.number(str(i)), tb.token({"id": i, "token": t}), tb.text(visible(t))]
            for i, t in enumerate(LATEX_TOKENS)]
    caption = ("σ₁/σ₂, σ₁²/Σσᵢ², W_E W_QK W_Eᵀ, cos², u₁, 1.2×10⁻⁴, −0.5, p < 10⁻¹⁰, 0.1–0.2 — √(e_OV · e_QK), "
               "≤ ⊤ → … 50,257 × 64, 100% & #1 $x$ ~ ^ {x} [x] | \" é ␣ 中 😀 \\input{secret}")
    latex.write_tables([tb.Table(caption, ["#", "token", "as text"], rows, slug="hostile")], tmp_path)
    text = pdf_text(compile_latex(tmp_path, ["hostile"]))
    assert "LEAKED" not in text
    flat = re.sub(r"\s+", "", text)
    for token in LATEX_TOKENS:
        assert re.sub(r"\s+", "", pdflatex_view(visible(token))) in flat, token
    # text mode with pdflatex's default (OT1) fonts: ~ and ^ are accents, _ a rule (invisible to pdftotext)
    ot1 = re.sub(r"\s+", "", text.replace("\u02dc", "~").replace("\u02c6", "^").replace("\u201d", '"'))
    for token in LATEX_TOKENS:
        shown = pdflatex_view(visible(token)).replace("_", "").replace("\u2018", "`").replace("\u2019", "'")
        assert re.sub(r"\s+", "", shown) in ot1.replace("\u2018", "`").replace("\u2019", "'"), token
    for shown in ("σ1/σ2", "1.2×10", "−0.5", "0.1–0.2—", "≤⊤→", "<U+4E2D>", "\\input{secret}"):  # the caption
        assert shown in flat, shown
