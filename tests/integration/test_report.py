"""The report end to end: ``headreport build`` of the tiny checkpoint → site, PDF, figures; the PDF's
content; hostile tokens; the incremental build; sentences that hedge; engine selection."""

from __future__ import annotations

import csv
import html
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from headreport.analysis.alignment import ratio_evidence
from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.diagonal import rank_summary
from headreport.build import stale_reason
from headreport.cli import main
from headreport.report import engines as rnd
from headreport.report import findings
from headreport.report.context import ReportContext
from headreport.report.engines import quarto
from headreport.report.escaping import visible
from headreport.report.pages import build_pages
from tests.helpers import config_of
from tests.report_fixtures import HOSTILE_TOKENS, pdf_pages, pdf_text


def test_build_writes_site_pdf_figures_and_manifest(report_build):
    out = report_build
    manifest = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert manifest["engine"] == "pandoc"
    assert {"pandoc", "typst"} <= set(manifest["tools"])
    pages = sorted(p.name for p in (out / "site").glob("*.html"))
    assert pages == ["head-0.1.html", "head-1.3.html", "index.html", "reproducibility.html"]
    assert (out / "pdf" / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert (out / "site" / "report.pdf").exists() and (out / "site" / ".nojekyll").exists()
    assert len(manifest["figures"]) == 16  # 8 per head
    for files in manifest["figures"].values():
        assert set(files) == {"svg", "png", "pdf", "csv"}
        for path in files.values():
            data = Path(path).read_bytes()
            assert data, path
            assert (out / "site" / "figures" / Path(path).name).exists()
        assert Path(files["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert Path(files["svg"]).read_text(encoding="utf-8").lstrip().startswith("<svg")


def test_pages_load_one_shared_copy_of_the_scripts_and_nothing_from_elsewhere(report_build):
    site = report_build / "site"
    bundle = (site / "assets" / "vega.js").read_text(encoding="utf-8")
    assert "vegaEmbed" in bundle and "</script" not in bundle
    for page in site.glob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), page.name
        links = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html)
        assert set(links) <= {"assets/vega.js", "assets/charts.js", "assets/style.css"}, page.name
        charts = html.count('<div class="vega-chart"')
        assert ("assets/vega.js" in links) == bool(charts), page.name
        assert "window.vegaEmbed=" not in html  # never inlined again
        assert "<math" in html or page.stem in ("index", "reproducibility")
    head = (report_build / "site" / "head-1.3.html").read_text(encoding="utf-8")
    assert head.count('<div class="vega-chart"') == 8
    numbers = [int(n) for n in re.findall(r'class="fig-number">Figure (\d+)\.', head)]
    assert numbers == list(range(1, 9))  # global numbering, in reading order


def test_figure_csv_matches_the_artifact(report_build):
    arts = load_artifacts(report_build / "artifacts")
    head = arts["heads"][0]["results"]
    rows = list(csv.DictReader((report_build / "figures" / "head-1-3-spectra.csv").open(encoding="utf-8")))
    effective = [float(r["sigma"]) for r in rows if r["circuit"].startswith("effective")]
    assert effective == head["spectra"]["effective_qk"]
    cos = list(csv.DictReader((report_build / "figures" / "head-1-3-squared-cosine.csv").open(encoding="utf-8")))
    assert cos[0]["token_id"] == str(head["squared_cosine"]["w_u"][0]["id"])


def test_pdf_has_title_contents_sections_tokens_and_figures(report_build):
    pdf = report_build / "pdf" / "report.pdf"
    assert pdf_pages(pdf) > 1
    text = pdf_text(pdf)
    for title in ("Contents", "Overview", "Head 1.3", "Head 0.1", "Reproducibility",
                  "Singular-value spectra", "Names versus generic words", "OV self-suppression"):
        assert title in text, title
    head = load_artifacts(report_build / "artifacts")["heads"][0]["results"]
    for tok in head["singular_directions"]["effective_qk"][0]["query"][:3]:
        assert visible(tok["token"], tok.get("bytes_hex")) in text
    for n in range(1, 17):
        assert f"Figure {n}:" in text, n
    # each figure is embedded: one image XObject per figure PDF
    images = re.findall(rb"/Subtype\s*/Form", pdf.read_bytes())
    assert len(images) >= 16


def test_reproducibility_page_has_the_rebuild_command_and_config(report_build):
    page = (report_build / "site" / "reproducibility.html").read_text(encoding="utf-8")
    assert "headreport build --config report.toml --out" in page
    toml_block = html.unescape(re.search(r'<pre class="code toml"><code>(.*?)</code></pre>', page, re.DOTALL).group(1))

    config = load_artifacts(report_build / "artifacts")["model"]["config"]
    assert config_of(toml_block).to_dict() == config


def test_incremental_build_skips_unchanged_analysis(report_build, tiny_config_text, tmp_path):
    config = config_of(tiny_config_text, output_dir=str(report_build))
    assert stale_reason(config, report_build / "artifacts") is None
    changed = config.replace(analysis=config.analysis.__class__(**{**config.analysis.__dict__, "top_k": 5}))
    assert stale_reason(changed, report_build / "artifacts") == "the config changed"
    assert stale_reason(config, tmp_path / "nothing") == "no artifacts yet"


def test_hostile_tokens_are_literal_in_html_and_pdf(hostile_build, report_build):
    out, _ = hostile_build
    page = (out / "site" / "head-1.3.html").read_text(encoding="utf-8")
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    for token in HOSTILE_TOKENS:
        assert visible(token) in text, token
    assert "<script>alert(1)" not in page
    assert "\\xe2\\x80" in text  # the half-UTF-8 token, as hex bytes
    # the structure of the page is unchanged by the hostile tokens
    normal = (report_build / "site" / "head-1.3.html").read_text(encoding="utf-8")
    for tag in ("<script", "<div", "</div>", "<table", "<tr", "<h2", "<figure", "<code"):
        assert page.count(tag) == normal.count(tag), tag
    pdf = out / "pdf" / "report.pdf"
    pdf_txt = pdf_text(pdf)
    flat = re.sub(r"\s+", "", pdf_txt)
    for token in HOSTILE_TOKENS:
        assert re.sub(r"\s+", "", visible(token)) in flat, token
    # `#set page(width: 1pt)` did not run: every page is still A4, and there are about as many
    assert abs(pdf_pages(pdf) - pdf_pages(report_build / "pdf" / "report.pdf")) <= 2
    sizes = subprocess.run(["pdfinfo", "-f", "1", "-l", "1000", str(pdf)],
                           check=False, capture_output=True, text=True).stdout
    assert set(re.findall(r"Page\s+\d+ size:\s+(.*)", sizes)) == {"595.276 x 841.89 pts (A4)"}
    # CSV: quoted by the csv module, formulas guarded
    rows = list(csv.DictReader((out / "figures" / "head-1-3-squared-cosine.csv").open(encoding="utf-8")))
    tokens = [r["token"] for r in rows]
    assert "<script>alert(1)</script>" in tokens and "'@fig" in tokens and "\\n" in tokens


def test_sentences_hedge_when_the_evidence_is_weak():
    base = {"random_baseline": 1.0, "groups": {"names": {"summary": {"median": 1.2}},
                                               "generic": {"summary": {"median": 1.0}}}}

    def subspace(ratio, ci, p):
        comp = {"available": True, "median_ratio": ratio, "median_ratio_ci95": ci, "mann_whitney_p": p, "auc": 0.9}
        return {**base, "comparison": {**comp, "evidence": ratio_evidence(comp)}}

    strong = subspace(3.2, [2.5, 4.1], 1e-8)
    assert "**Names score 3.20× the generic words**" in findings.subspace_sentence(strong)
    assert "95% CI 2.50–4.10" in findings.subspace_sentence(strong)
    assert "above 1.2×" in findings.subspace_sentence(strong).replace("\\", "")  # the rule is stated
    s = findings.subspace_sentence(subspace(1.07, [0.96, 1.22], 0.07))
    assert s.startswith("No claim") and "p = 0.07" in s and "**" not in s
    # significant, CI above 1, but a small effect (the Gemma report's "1.03×"): no bold claim
    s = findings.subspace_sentence(subspace(1.03, [1.01, 1.05], 1e-6))
    assert s.startswith("No claim") and "not entirely above 1.2" in s.replace("\\", "") and "**" not in s
    s = findings.subspace_sentence(subspace(0.5, [0.4, 0.6], 1e-6))
    assert s.startswith("**Names score lower than generic words**")
    # 4 of 50,257 tokens at rank 1 with the median rank in the middle: no claim, whatever the p-value
    ranks = np.full(50257, 25000)
    ranks[:4] = 1
    weak_ov = rank_summary(ranks, 50257, "exact", None, None)
    s = findings.rank_sentence(weak_ov, "ov")
    assert s.startswith("The numbers do not show that the head suppresses") and "**" not in s
    # one number, one form: the median rank appears once, exactly, in the sentence and never elsewise
    assert s.count("median rank 25,000 of 50,257") == 1 and "25000" not in s and "2.5" not in s
    strong = np.full(50257, 3)
    strong[::10] = 40
    strong_ov = rank_summary(strong, 50257, "exact", None, None)
    assert findings.rank_sentence(strong_ov, "ov").startswith("**The head suppresses the token it attends to**")
    assert findings.rank_sentence(strong_ov, "qk").startswith("**The head attends to the token being predicted**")
    undefined = {"defined": False, "reason": "the circuit is zero (σ₁ = 0): the head writes or reads nothing"}
    assert findings.rank_sentence(undefined, "ov").startswith("Undefined for this head")


def test_engine_selection_and_quarto_project(report_build, monkeypatch, tmp_path):
    monkeypatch.setattr(rnd.shutil, "which", lambda name: None)
    assert rnd.select_engine("auto") == "pandoc"
    with pytest.raises(rnd.RenderError, match="quarto"):
        rnd.select_engine("quarto")
    monkeypatch.setattr(rnd.shutil, "which", lambda name: "/usr/bin/quarto" if name == "quarto" else None)
    assert rnd.select_engine("auto") == "quarto"
    ctx = ReportContext(load_artifacts(report_build / "artifacts"), "quarto", {"quarto": "test"})
    pages = build_pages(ctx)
    monkeypatch.setattr(quarto, "vega_bundle", lambda: "/* bundle */")
    project = quarto.write_project(ctx, pages, tmp_path / "q")
    cfg = yaml.safe_load((project / "_quarto.yml").read_text(encoding="utf-8"))
    assert cfg["project"]["type"] == "website"
    assert cfg["project"]["render"] == [f"{p.slug}.qmd" for p in pages]
    assert cfg["format"]["html"]["html-math-method"] == "mathml"
    for p in pages:
        front = (project / f"{p.slug}.qmd").read_text(encoding="utf-8").split("---")[1]
        assert yaml.safe_load(front)["title"] == p.title
    report_front = yaml.safe_load((project / "report.qmd").read_text(encoding="utf-8").split("---")[1])
    assert "typst" in report_front["format"]


def test_render_rejects_missing_artifacts(tmp_path):
    assert main(["render", "--artifacts", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2
