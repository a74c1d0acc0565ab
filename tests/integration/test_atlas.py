"""The head atlas on checkpoints with known answers (tests/checkpoints.make_atlas_checkpoint): each
planted signature is found, and each flip of a sign or of a Q/K side fails the rule that found it."""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib

import pytest
import torch
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import composition_scores

from headreport.analysis import atlas, circuits
from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig, config_from_dict
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from headreport.analysis.survey import run_survey
from headreport.report.context import ReportContext
from headreport.report.latex import write_tables
from headreport.report.pages import PAGE_BUILDERS
from headreport.report.pages.atlas import atlas_pages, head_atlas_part
from tests.checkpoints import ATLAS_PLANT, make_atlas_checkpoint
from tests.report_fixtures import compile_latex, pdf_text

SAMPLE = dict(mode="sampled", sample_size=300, seed=0)


def _load(folder):

    model = load_model(ModelConfig(name=str(folder), device="cpu"), ProcessingConfig())
    return model, effective_embedding(model, progress=False, rank_variant="residual")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    folder, plant = make_atlas_checkpoint(tmp_path_factory.mktemp("atlas_ckpt"))
    model, layer0 = _load(folder)
    result = atlas.atlas(model, layer0, copy_suppression={ATLAS_PLANT["copy_suppression"]: True}, **SAMPLE)
    return model, layer0, result


@pytest.fixture(scope="module")
def random_atlas(tiny_model):

    layer0 = effective_embedding(tiny_model, progress=False, rank_variant="residual")
    return atlas.atlas(tiny_model, layer0, copy_suppression={}, **SAMPLE)


def _types(record):
    return None if record["types"] is None else {t["type"] for t in record["types"]}


def _head(model, label):
    return circuits.head_weights(model, HeadRef.parse(label))


def test_copying_head_scores_plus_one_and_copy_suppression_minus_one(planted):
    _, _, result = planted
    copying, suppression = result["heads"][ATLAS_PLANT["copying"]], result["heads"][ATLAS_PLANT["copy_suppression"]]
    for key in ("full", "effective"):
        assert copying["copying"][key]["score"] == pytest.approx(1.0, abs=1e-4)
        assert suppression["copying"][key]["score"] == pytest.approx(-1.0, abs=1e-4)
        assert copying["copying"][key]["n_nonzero"] == 16  # d_head non-zero eigenvalues, as [re, im]
        assert all(len(z) == 2 for z in copying["copying"][key]["eigenvalues"])
    assert "copying" in _types(copying) and "copying" not in _types(suppression)
    # the flipped sign fails the copying rule: the suppression head meets every other condition's shape
    assert suppression["copying"]["effective"]["score"] < atlas.COPYING_MIN


def test_copying_score_follows_the_sign_of_the_eigenvalues():
    lam = torch.tensor([3.0 + 1.0j, 3.0 - 1.0j, -0.5 + 0.0j, 0.0 + 0.0j])
    expected = (3 + 3 - 0.5) / (2 * math.hypot(3, 1) + 0.5)
    assert atlas.copying_score(lam)["score"] == pytest.approx(expected)
    assert atlas.copying_score(-lam)["score"] == pytest.approx(-expected)  # a flipped sign flips the score
    assert atlas.copying_score(lam)["n_nonzero"] == 3  # the zero eigenvalue is left out
    assert atlas.copying_score(torch.zeros(4, dtype=torch.complex64))["score"] is None


def test_copying_eigenvalues_are_those_of_the_vocabulary_sized_circuit(planted):
    """W_O·(W_U·X)·W_V (d_head-sized) has the non-zero eigenvalues of X·W_V·W_O·W_U (vocab-sized)."""
    model, layer0, _ = planted
    w = _head(model, "2.2")  # a random head: eigenvalues of both signs and complex pairs
    W_U = circuits.unembedding(model).double()
    ours = atlas.head_copying(w, atlas.readouts(model, layer0))["full"]
    big = torch.linalg.eigvals(layer0.W_E.double() @ w.W_V.double() @ w.W_O_out.double() @ W_U)
    big = big[big.abs() > 1e-6 * big.abs().max()]
    assert ours["score"] == pytest.approx(float(big.real.sum() / big.abs().sum()), abs=1e-6)
    assert ours["n_nonzero"] == big.numel()


def largest_partner(result, reader: str, mode: str) -> tuple[str, float]:
    """The earlier head composing most with ``reader`` in ``mode`` and the score's ratio to baseline."""
    top = result["heads"][reader]["composition"][mode]["top"][0]
    return top["label"], top["ratio"]


def composes(result, writer: str, reader: str, mode: str) -> bool:
    """The rule the tests check: the planted writer is the reader's largest partner in ``mode``,
    at least :data:`analysis.atlas.COMPOSITION_MIN_RATIO` times the baseline."""
    label, ratio = largest_partner(result, reader, mode)
    return label == writer and ratio >= atlas.COMPOSITION_MIN_RATIO


def test_planted_q_composition_partner_is_the_largest(planted):
    _, _, result = planted
    writer, reader = ATLAS_PLANT["writer"], ATLAS_PLANT["q_reader"]
    assert composes(result, writer, reader, "Q")
    assert not composes(result, writer, reader, "K")  # the other side of the QK circuit
    assert not composes(result, writer, reader, "V")


def test_planted_k_composition_and_the_induction_candidate(planted):
    _, _, result = planted
    prev, reader = ATLAS_PLANT["previous_token"], ATLAS_PLANT["induction"]
    assert composes(result, prev, reader, "K")
    assert not composes(result, prev, reader, "Q")  # the flipped side
    assert _types(result["heads"][reader]) == {"copying", "induction"}
    assert result["heads"][reader]["composition"]["K"]["previous_token"][0]["label"] == prev
    edges = {(e["source"], e["target"], e["mode"]) for e in result["edges"][:2]}
    assert edges == {(ATLAS_PLANT["writer"], ATLAS_PLANT["q_reader"], "Q"), (prev, reader, "K")}


def test_layer_composition_is_the_strongest_pair_of_each_layer_pair(planted):
    """Each cell (writer layer i, reader layer j > i) holds the strongest ratio of its head pairs: the
    planted Q pair's, where it lies, and never less than any head's recorded partner there."""
    model, _, result = planted
    grid = result["layer_composition"]
    n = model.n_layers
    assert all(grid[m][i][j] is None for m in "QKV" for i in range(n) for j in range(i + 1))
    writer, reader = HeadRef.parse(ATLAS_PLANT["writer"]), HeadRef.parse(ATLAS_PLANT["q_reader"])
    assert grid["Q"][writer.layer][reader.layer] == pytest.approx(largest_partner(result, reader.label, "Q")[1])
    for label, record in result["heads"].items():
        for mode in "QKV":
            for p in record["composition"][mode]["top"]:
                cell = grid[mode][HeadRef.parse(p["label"]).layer][HeadRef.parse(label).layer]
                assert cell is not None and cell >= p["ratio"] - 1e-9


def test_composition_scores_are_transformerlens_own(planted):
    """The atlas's Q score of a pair is TransformerLens' composition_scores of OV·(W_Q W_Kᵀ)."""

    model, _, result = planted
    a, b = _head(model, ATLAS_PLANT["writer"]), _head(model, ATLAS_PLANT["q_reader"])
    ref = composition_scores(FactoredMatrix(a.W_V, a.W_O_out), FactoredMatrix(b.W_Q, b.W_K.T))
    assert result["heads"][b.head.label]["composition"]["Q"]["top"][0]["score"] == pytest.approx(float(ref), rel=1e-5)


def test_composition_baseline_matches_its_simulation():
    for d_model, d_head in ((64, 16), (256, 32)):
        mean, std = atlas.simulated_baseline(d_model, d_head)
        assert atlas.composition_baseline(d_model)["mean"] == pytest.approx(mean, rel=0.03)
        assert std < 0.1 * mean


def test_previous_token_head_gets_the_type(planted):
    model, _, result = planted
    label = ATLAS_PLANT["previous_token"]
    record = result["heads"][label]
    assert record["positional"]["previous_token"] > 0.9
    assert "previous_token" in _types(record)
    others = [r for lab, r in result["heads"].items() if lab != label and not r["dead"]]
    assert all(r["positional"]["previous_token"] < atlas.PREVIOUS_TOKEN_MIN for r in others)
    # the flipped Q/K side (queries read as keys) attends to the next position, which the mask hides
    w = _head(model, label)
    flipped = dataclasses.replace(w, queries=w.keys, keys=w.queries)
    sig = atlas.positional_signature(flipped, atlas.positional_inputs(model), atlas.attention_scale(model), "standard")
    assert sig["previous_token"] < atlas.PREVIOUS_TOKEN_MIN


def test_rotary_positions_have_a_reason_and_no_number(planted):
    model, _, _ = planted
    sig = atlas.positional_signature(_head(model, "1.2"), None, 1.0, "rotary")
    assert sig == {"defined": False, "reason": atlas.ROTARY_REASON, "previous_token": None, "first_token": None,
                   "n_positions": None}


def test_dead_head_is_undefined(planted):
    _, _, result = planted
    record = result["heads"][ATLAS_PLANT["dead"]]
    assert record["dead"] and record["types"] is None and "dead head" in record["reason"]
    assert record["copying"]["effective"]["score"] is None and record["positional"]["previous_token"] is None
    assert all(p["label"] != ATLAS_PLANT["dead"] for r in result["heads"].values()
               for m in atlas.MODES for p in r["composition"][m]["top"])


def test_copy_suppression_type_follows_the_survey_rule(planted):
    _, _, result = planted
    assert _types(result["heads"][ATLAS_PLANT["copy_suppression"]]) == {"copy_suppression"}
    typed = {lab for lab, r in result["heads"].items() if r["types"]}
    assert typed == {ATLAS_PLANT[k] for k in ("copying", "copy_suppression", "previous_token", "induction")}


def test_random_checkpoint_gets_no_types(random_atlas):
    records = random_atlas["heads"].values()
    assert all(r["types"] == [] for r in records)  # defined (no dead head), and no type
    assert all(abs(r["copying"]["effective"]["score"]) < atlas.COPYING_MIN for r in records)


@pytest.fixture(scope="module")
def atlas_survey(tmp_path_factory):
    """The survey (survey.json, schema-checked on write) of the atlas checkpoint."""


    base = tmp_path_factory.mktemp("atlas_survey")
    folder, _ = make_atlas_checkpoint(base / "ckpt")
    config = config_from_dict(tomllib.loads(f"""
prompts = "off"
[model]
name = "{folder}"
device = "cpu"
[survey]
mode = "sampled"
sample_size = 300
analyze_top = 0
"""))
    out = base / "artifacts"
    run_survey(config, out, progress=False, log=lambda m: None)
    return json.loads((out / "survey.json").read_text()), json.loads((out / "timings.json").read_text()), out


def test_survey_carries_the_atlas_and_finds_every_planted_type(atlas_survey):
    survey, timings, _ = atlas_survey
    results = survey["results"]
    by_label = {r["label"]: r for r in results["heads"]}
    found = {lab: {t["type"] for t in r["atlas"]["types"] or []} for lab, r in by_label.items()}
    assert {lab for lab, t in found.items() if t} == {ATLAS_PLANT[k] for k in
                                                       ("copying", "copy_suppression", "previous_token", "induction")}
    assert found[ATLAS_PLANT["copy_suppression"]] == {"copy_suppression"}  # by the survey's own rule
    assert by_label[ATLAS_PLANT["copy_suppression"]]["beats_chance"]
    assert by_label[ATLAS_PLANT["dead"]]["atlas"]["types"] is None
    assert [r["type"] for r in results["atlas"]["rules"]] == ["copy_suppression", "copying", "previous_token",
                                                              "induction"]
    assert results["atlas"]["composition_baseline"]["mean"] == pytest.approx(1 / 8)
    assert "survey/atlas" in timings["seconds"] and "survey/atlas/composition" in timings["seconds"]


def test_atlas_page_names_every_type_with_its_evidence(atlas_survey, tmp_path):
    """The atlas page: the grid (every signature per cell, links to the heads with a page), the
    types found with their evidence, the sortable signatures table and the edges table, whose LaTeX
    exports compile; no page without the survey."""

    _, _, out = atlas_survey
    arts = load_artifacts(out)
    ctx = ReportContext(artifacts=arts, engine="pandoc", tool_versions={})
    [page] = atlas_pages(ctx)
    assert page.slug == "atlas" and atlas_pages in PAGE_BUILDERS
    [grid, layers] = page.figures
    assert {r["mode"] for r in layers.rows} == {"Q", "K", "V"} and all(r["reader"] > r["writer"] for r in layers.rows)
    by_label = {r["label"]: r for r in grid.rows}
    assert len(by_label) == 12
    assert by_label[ATLAS_PLANT["copying"]]["type"] == "copying"
    assert by_label[ATLAS_PLANT["copy_suppression"]]["type"] == "copy suppression"
    assert by_label[ATLAS_PLANT["induction"]]["type"] == "induction"
    assert by_label[ATLAS_PLANT["previous_token"]]["type"] == "previous token"
    assert by_label[ATLAS_PLANT["dead"]]["type"] == "dead (undefined)"
    assert all(r["href"] is None for r in grid.rows)  # survey only: no head has a page
    spec = json.dumps(grid.spec())
    assert '"href"' in spec and "previous-token score" in spec
    md = page.markdown
    assert r"weights\-only candidate" in md and 'class="sortable"' in md and "<script>" in md
    assert r"previous\-token score 1" in md and r"K\-composition with previous\-token head 1\.2" in md
    assert "Undefined (dead heads" in md
    [signatures, edges] = page.tables
    assert len(signatures.rows) == 12 and edges.rows[0][2].text in ("Q", "K")
    written = write_tables(page.tables, tmp_path / "tables")
    text = pdf_text(compile_latex(tmp_path / "tables", [p.stem for p in written.values()]))
    assert "strongest composition edges" in text
    assert atlas_pages(ReportContext(artifacts={**arts, "survey": None}, engine="pandoc", tool_versions={})) == []


def test_head_page_part_plots_the_eigenvalues_and_lists_upstream_partners(atlas_survey):

    _, _, out = atlas_survey
    ctx = ReportContext(artifacts=load_artifacts(out), engine="pandoc", tool_versions={})
    part = head_atlas_part(ctx, ATLAS_PLANT["induction"])
    assert part["types"] == ["copying", "induction"]
    assert len(part["figure"].rows) == 2 * 16 and {r["circuit"] for r in part["figure"].rows} == {
        "W_E·W_OV·W_U", "W_EE·W_OV·W_U"}
    assert all(r["re"] > 0 for r in part["figure"].rows)  # a copying head's eigenvalues: right half-plane
    k_rows = [row for row in part["table"].rows if row[0].text == "K"]
    assert k_rows[0][1].text == ATLAS_PLANT["previous_token"] and len(part["table"].rows) == 3 * atlas.TOP_PARTNERS
    dead = head_atlas_part(ctx, ATLAS_PLANT["dead"])
    assert dead["types"] is None and dead["figure"] is None
    assert head_atlas_part(ReportContext(artifacts={**ctx.artifacts, "survey": None}, engine="pandoc",
                                         tool_versions={}), "1.0") is None
