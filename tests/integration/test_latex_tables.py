"""Every table of a rendered report as LaTeX (``tables/<slug>.tex`` + ``tables/headreport.sty``):
one file per table the pages show, each with its caption and a unique label, all compiling with
pdflatex (one run per report), hostile tokens printed literally, and the reproducibility page
listing them."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path

from headreport.report.escaping import visible
from headreport.report.latex import STYLE_FILE
from tests.report_fixtures import HOSTILE_TOKENS, compile_latex, pdf_text, pdflatex_view


def exported_tables(out: Path) -> dict[str, Path]:
    """The manifest's tables (slug → path), checked against the files in ``tables/`` and ``site/tables/``."""
    manifest = json.loads((out / "report.json").read_text(encoding="utf-8"))
    tables = {name: Path(path) for name, path in manifest["tables"].items()}
    files = sorted(p.name for p in (out / "tables").iterdir())
    assert files == sorted([STYLE_FILE] + [f"{name}.tex" for name in tables])
    assert {f"tables/{name}" for name in files} <= set(manifest["files"])  # owned through the manifest
    for name in files:
        assert (out / "site" / "tables" / name).read_bytes() == (out / "tables" / name).read_bytes()
    return tables


def compile_all(out: Path, tmp_path: Path) -> str:
    """Every table of the report in one pdflatex run; the PDF's text."""
    folder = tmp_path / "paper"
    shutil.copytree(out / "tables", folder)
    return pdf_text(compile_latex(folder, sorted(p.stem for p in folder.glob("*.tex"))))


def test_every_table_of_the_report_is_a_latex_file_that_compiles(report_build, tmp_path):
    out = report_build
    tables = exported_tables(out)
    shown = sum(page.read_text(encoding="utf-8").count('class="tab-number"') for page in (out / "site").glob("*.html"))
    assert len(tables) == shown  # one file per table the pages show
    for label in ("1-3", "0-1"):
        for name in ("spectrum", "directions-effective-qk", "squared-cosine", "subspace", "ov-self-suppression",
                     "qk-self-attention"):
            assert f"head-{label}-{name}" in tables
    assert {"model", "provenance", "versions", "timings"} <= set(tables)
    labels = []
    for name, path in tables.items():
        text = path.read_text(encoding="ascii")  # pure ASCII
        assert re.search(r"^\\caption\{.+\}$", text, re.MULTILINE), name
        assert text.count("\\toprule") == text.count("\\midrule") == text.count("\\bottomrule") == 1, name
        labels += re.findall(r"\\label\{(tab:[a-z0-9-]+)\}", text)
    assert sorted(labels) == sorted(f"tab:{name}" for name in tables)  # one each, unique
    text = compile_all(out, tmp_path)
    for n in range(1, len(tables) + 1):
        assert f"Table {n}:" in text, n


def test_hostile_tokens_are_literal_in_the_latex_tables(hostile_build, tmp_path):
    out, _ = hostile_build
    exported_tables(out)
    flat = re.sub(r"\s+", "", compile_all(out, tmp_path))
    for token in HOSTILE_TOKENS:
        assert re.sub(r"\s+", "", pdflatex_view(visible(token))) in flat, token
    assert "\\xe2\\x80" in flat  # the half-UTF-8 token, as hex bytes


def test_the_reproducibility_page_lists_every_latex_table(report_build):
    """Each file, linked, with the number and caption its table has on its own page."""
    site = report_build / "site"
    page = (site / "reproducibility.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "\\usepackage{headreport}" in text and "\\input{tables/<slug>.tex}" in text
    assert f'href="tables/{STYLE_FILE}"' in page
    listed = re.findall(r'<li><a href="tables/([^"]+)\.tex" download>.*?</a>: Table (\d+)\. (.*?)</li>',
                        page, re.DOTALL)
    assert sorted(name for name, _, _ in listed) == sorted(exported_tables(report_build))
    shown = {}
    for html_page in site.glob("*.html"):
        for number, caption in re.findall(r'<caption><span class="tab-number">Table (\d+)\.</span> (.*?)</caption>',
                                          html_page.read_text(encoding="utf-8")):
            shown[int(number)] = html.unescape(caption)
    assert {int(number): html.unescape(caption) for _, number, caption in listed} == shown
