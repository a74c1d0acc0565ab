"""The all-heads survey: same numbers as the per-head analysis, deterministic, ranked, timings merged."""

from __future__ import annotations

import dataclasses
import html
import json
import math
import shutil

import numpy as np
import pytest
import torch

from headreport.analysis import circuits, survey
from headreport.analysis.artifacts import SCHEMA_VERSION, load_artifacts, read_artifact
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from headreport.analysis.spectra import effective_rank, sigma1_share
from headreport.analysis.survey import run_survey
from headreport.cli import main
from headreport.report.context import ReportContext
from headreport.report.findings import head_findings
from headreport.report.latex import latex_label, write_tables
from headreport.report.outputs import slug
from headreport.report.pages import PAGE_BUILDERS, build_pages
from headreport.report.pages.survey import survey_pages
from headreport.report.render import render
from tests.families import make_family_checkpoint
from tests.helpers import config_of
from tests.oracles import qk_self_attention
from tests.report_fixtures import compile_latex, everywhere_config, pdf_text, reseal

SURVEY_SECTION = "\n[survey]\nmode = \"sampled\"\nsample_size = 500\nanalyze_top = 2\n"


@pytest.fixture(scope="module")
def survey_run(tmp_path_factory, tiny_config_text):
    """Survey of the tiny GPT-2 checkpoint (all 8 heads), then the full analysis of its top 2."""
    out = tmp_path_factory.mktemp("survey") / "artifacts"
    out.mkdir()
    (out / "timings.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "timings",
                                                  "seconds": {"earlier/step": 1.5}}))
    # an earlier run's set (of other inputs): its manifest lists the timings, so they are headreport's
    (out / "manifest.json").write_text(json.dumps({
        "schema_version": SCHEMA_VERSION, "kind": "manifest", "files": {},
        "inputs": {k: "0" * 64 for k in ("config", "analysis_code", "words.names", "words.generic", "checkpoint")}}))
    reseal(out, add=("timings.json",))
    config = config_of(tiny_config_text + SURVEY_SECTION)
    run_survey(config, out, progress=False, log=lambda m: None)
    return config, out


def test_effective_rank_and_share_definitions():
    assert effective_rank([2.0, 2.0, 2.0, 2.0]) == pytest.approx(4.0)
    assert effective_rank([3.0, 0.0, 0.0]) == pytest.approx(1.0)
    p = np.array([3.0, 1.0]) / 4
    assert effective_rank([3.0, 1.0]) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert sigma1_share([3.0, 1.0]) == pytest.approx(0.75)
    assert effective_rank([0.0, 0.0]) == 0.0 and sigma1_share([0.0, 0.0]) == 0.0


def test_survey_equals_per_head_analysis(survey_run, tiny_artifacts, tiny_model, tiny_W_EE_rank):
    """For the heads the per-head analysis covers (same seed, same sample size), the survey's numbers
    are the analysis's: OV ranks exactly, spectra statistics and the names/generic median ratio."""
    _, out = survey_run
    survey = read_artifact(out / "survey.json", kind="survey")["results"]
    by_label = {r["label"]: r for r in survey["heads"]}
    assert len(by_label) == 8
    heads = load_artifacts(tiny_artifacts)["heads"]
    assert heads, "the per-head analysis fixture has heads"
    for doc in heads:
        res = doc["results"]
        row = by_label[res["head"]["label"]]
        for metric in ("ov_self_suppression", "qk_self_attention"):
            for key in ("fraction_rank1", "fraction_top10", "fraction_top5pct", "median_rank", "mean_rank",
                        "evidence"):
                assert row[metric][key] == res[metric][key], (metric, key)
        for name in ("w_qk", "effective_qk"):
            s = res["spectra"][name]
            assert row[name]["sigma1_share"] == pytest.approx(sigma1_share(s), rel=1e-4)
            assert row[name]["effective_rank"] == pytest.approx(effective_rank(s), rel=1e-4)
            assert row[name]["sigma1"] == pytest.approx(s[0], rel=1e-4)
            # one formula: the head page's statistics are the survey's
            for key in ("sigma1_share", "effective_rank", "ratio12", "energy1"):
                assert row[name][key] == pytest.approx(res["spectra"]["statistics"][name][key], rel=1e-4), key
        assert row["subspace"]["median_ratio"] == pytest.approx(
            res["subspace_alignment"]["comparison"]["median_ratio"], rel=1e-5)
        # QK self-attention: the diagonal function on the same effective circuit (the paper's: residual
        # W_EE, raw sides), same seed
        w = circuits.head_weights(tiny_model, HeadRef(row["layer"], row["head"]))
        eff = circuits.effective_qk_circuit(w, tiny_model.weight("W_U"), tiny_W_EE_rank, sides="none")
        qk = qk_self_attention(eff, "sampled", 500, 0)
        assert row["qk_self_attention"]["fraction_top10"] == pytest.approx(qk["fraction_top10"], abs=0)
        assert row["qk_self_attention"]["median_rank"] == pytest.approx(qk["median_rank"], abs=0)


def test_ranking_and_no_head_beats_chance_on_random_weights(survey_run):
    """Random weights: every score is at chance, no head beats chance, and analyze_top analyses none."""
    _, out = survey_run
    survey = read_artifact(out / "survey.json", kind="survey")["results"]
    order = survey["ranking"]["order"]
    rows = {r["label"]: r for r in survey["heads"]}
    assert sorted(order) == sorted(rows) and [rows[label]["rank"] for label in order] == list(range(1, 9))
    scores = [rows[label]["copy_suppression_score"] for label in order]
    assert scores == sorted(scores, reverse=True)
    for r in rows.values():
        chance = r["ov_self_suppression"]["chance"]["fraction_top10"]
        e = [max(0.0, (r[m]["fraction_top10"] - chance) / (1 - chance))
             for m in ("ov_self_suppression", "qk_self_attention")]
        assert r["copy_suppression_score"] == pytest.approx(math.sqrt(e[0] * e[1]), rel=1e-5, abs=1e-9)
        assert r["copy_suppression_score"] < 0.01 and not r["beats_chance"]
    assert survey["ranking"]["beats_chance"] == []
    assert not (out / "model.json").exists()  # analyze_top = 2, but no head beats chance


def test_timings_merged_not_clobbered(survey_run):
    _, out = survey_run
    seconds = json.loads((out / "timings.json").read_text())["seconds"]
    assert seconds["earlier/step"] == 1.5
    assert {"survey/total_heads", "survey/load_model", "survey/effective_embedding"} <= set(seconds)


def test_survey_is_deterministic(survey_run, tmp_path):
    config, out = survey_run
    again = config.replace(survey=dataclasses.replace(config.survey, analyze_top=0))
    run_survey(again, tmp_path, progress=False, log=lambda m: None)
    first = json.loads((out / "survey.json").read_text())
    second = json.loads((tmp_path / "survey.json").read_text())
    # only the survey section of the config differs (analyze_top); the results are byte-identical
    assert json.dumps(first["results"], sort_keys=True) == json.dumps(second["results"], sort_keys=True)
    assert "timings" not in json.dumps(first["results"])


def test_cli_survey_bad_flag_value(tiny_gpt2, tmp_path, capsys):
    code = main(["survey", "--model", str(tiny_gpt2), "--sample-size", "0", "--out", str(tmp_path)])
    assert code == 2
    assert "survey.sample_size" in capsys.readouterr().err
    assert not (tmp_path / "artifacts").exists()
    torch.manual_seed(0)


def test_survey_page(survey_run, tiny_artifacts, tmp_path):
    """The report's survey page: one heatmap per statistic (exact values in the tooltip), the ranked
    table, links to the heads that have a page; no page without survey.json."""
    _, out = survey_run
    shutil.copytree(tiny_artifacts, tmp_path / "a")
    shutil.copy(out / "survey.json", tmp_path / "a" / "survey.json")
    reseal(tmp_path / "a", add=("survey.json",))
    arts = load_artifacts(tmp_path / "a")
    ctx = ReportContext(artifacts=arts, engine="pandoc", tool_versions={})
    [page] = survey_pages(ctx)
    stats = arts["survey"]["results"]["statistics"]
    assert page.slug == "survey" and len(page.figures) == len(stats)
    spec = page.figures[0].spec()
    assert "value" in json.dumps(spec) and len(page.figures[0].rows) == 8
    for label in arts["model"]["results"]["heads"]:
        assert f'href="head-{label}.html"' in page.markdown
    assert "No head beats chance" in page.markdown
    assert any(getattr(b, "__name__", "") == "survey_pages" for b in PAGE_BUILDERS)
    assert survey_pages(ReportContext(artifacts={**arts, "survey": None}, engine="pandoc", tool_versions={})) == []


def test_every_table_of_a_report_with_a_survey_has_its_own_slug_and_compiles(survey_run, tiny_artifacts, tmp_path):
    """All pages (overview, heads, survey, reproducibility): every numbered table is on its page, in
    reading order, with a slug (file name and label) no other table has; all compile in one pdflatex run."""
    _, out = survey_run
    shutil.copytree(tiny_artifacts, tmp_path / "a")
    shutil.copy(out / "survey.json", tmp_path / "a" / "survey.json")
    reseal(tmp_path / "a", add=("survey.json",))
    ctx = ReportContext(artifacts=load_artifacts(tmp_path / "a"), engine="pandoc", tool_versions={})
    tables = [t for page in build_pages(ctx) for t in page.tables]
    assert tables == ctx.tables and [t.number for t in tables] == list(range(1, len(tables) + 1))
    names = [t.slug for t in tables]
    assert "survey-ranking" in names and all(name == slug(name) for name in names)
    assert len(set(names)) == len(names) == len({latex_label(name) for name in names})
    written = write_tables(tables, tmp_path / "tables")
    text = pdf_text(compile_latex(tmp_path / "tables", [p.stem for p in written.values()]))
    assert "The 8 highest-scoring heads" in text


@pytest.fixture(scope="module")
def everywhere(tmp_path_factory, everywhere_checkpoint):
    """The survey (exact ranks, then the analysis of the top 3 heads that beat chance) of the
    small-vocabulary model whose head 1.2 is copy suppression for every token: the report build's
    config, without its comparison (the survey chooses the heads it analyses)."""
    out = tmp_path_factory.mktemp("everywhere_out") / "artifacts"
    config = config_of(everywhere_config(everywhere_checkpoint[0], '[survey]\nmode = "exact"\nanalyze_top = 3\n'),
                       compare=())
    logs: list[str] = []
    run_survey(config, out, progress=False, log=logs.append)
    return out, logs


def test_a_head_that_beats_chance_is_ranked_first_and_analysed(everywhere):
    out, logs = everywhere
    survey = read_artifact(out / "survey.json", kind="survey")["results"]
    assert survey["ranking"]["beats_chance"] == ["1.2"]  # that head, and only it
    top = next(r for r in survey["heads"] if r["label"] == "1.2")
    assert top["rank"] == 1 and top["copy_suppression_score"] > 0.9
    for key in ("ov_self_suppression", "qk_self_attention"):  # the rank order is right on both sides
        assert top[key]["fraction_rank1"] > 0.9 and top[key]["evidence"]["supported"], key
    arts = load_artifacts(out)  # analyze_top = 3, but only one head beats chance
    assert arts["model"]["results"]["heads"] == ["1.2"]
    head = arts["heads"][0]["results"]
    assert head["ov_self_suppression"]["mode"] == "exact" and head["ov_self_suppression"]["fraction_top10"] > 0.9
    sentences = head_findings(head)
    assert sentences["self_suppression"].startswith("**The head suppresses the token it attends to**")
    assert sentences["self_attention"].startswith("**The head attends to the token being predicted**")
    assert any("1.2" in line for line in logs)


def test_a_survey_reports_rebuild_command_is_the_survey(everywhere, tmp_path):
    """The reproducibility page shows the command that made the artifacts: a survey, not a build
    (which would analyse the configured heads instead)."""
    out, _ = everywhere
    render(out, tmp_path / "report", engine="pandoc")
    page = html.unescape((tmp_path / "report" / "site" / "reproducibility.html").read_text(encoding="utf-8"))
    assert "headreport survey --config report.toml" in page and "headreport build --config" not in page


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "olmo2"])
def test_qk_norm_spectra_from_gram_matrices_equal_the_dense_svd(family, tmp_path, monkeypatch):
    """QK-norm: the survey's effective-QK singular values (Gram matrices accumulated over vocabulary
    chunks, one d_head-sized SVD per head) equal the dense circuit's q(W_Uᵀ)·k(W_EE)ᵀ own SVD, and
    the factored circuit's (the per-head analysis's), to float32 tolerance; per-head norms (Qwen3,
    Gemma 3, grouped-query) and a whole-projection norm (OLMo 2)."""
    monkeypatch.setattr(survey, "GRAM_CHUNK", 128)  # several chunks, the last one partial
    model = load_model(ModelConfig(name=str(make_family_checkpoint(family, tmp_path / family, vocab_size=600)),
                                   device="cpu"), ProcessingConfig())
    assert model.family.qk_norm
    layer0 = effective_embedding(model, progress=False)
    W_U = circuits.unembedding(model)
    for layer in range(model.n_layers):
        got = survey.layer_spectra(model, layer, layer0, None).effective_qk
        assert got.shape == (model.n_heads, model.d_head) and got.dtype == torch.float64
        for h in range(model.n_heads):
            w = circuits.head_weights(model, HeadRef(layer, h))
            with torch.no_grad():
                dense = torch.linalg.svdvals((w.queries(W_U.T) @ w.keys(layer0.W_EE).T).double())[: model.d_head]
            factored = circuits.effective_qk_circuit(w, W_U, layer0.W_EE).S.double()
            for want in (dense, factored):
                assert (got[h] - want).abs().max() <= 2e-6 * want[0], (layer, h)
