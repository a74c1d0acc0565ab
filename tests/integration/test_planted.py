"""Planted structure with a known answer (``tests.checkpoints.make_planted_gpt2_checkpoint``): an
**asymmetric** head 1.2 (query-side directions p, key-side directions k, untied W_U), a dead head
1.3 (W_Q = 0, W_O = 0) and a random control head 1.0. Planted in the HF weights before saving, so the
structure goes through loading and weight processing like any model.

Each test below fails if the analysis confuses the sides: flipping the QK rank order, swapping U and
V in the cos² rankings, or building the subspace score from V instead of U.
"""

from __future__ import annotations

import pytest
import torch
from transformer_lens import FactoredMatrix

from headreport.analysis import alignment, circuits, diagonal, spectra
from headreport.analysis.artifacts import load_artifacts
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from headreport.report.findings import head_findings
from tests.checkpoints import make_planted_gpt2_checkpoint
from tests.helpers import analysed
from tests.oracles import effective_ov_circuit, ov_self_suppression

PLANTED, DEAD, CONTROL = "1.2", "1.3", "1.0"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_gpt2_checkpoint(tmp_path_factory.mktemp("planted_gpt2"))


@pytest.fixture(scope="module")
def planted_artifacts(planted, tmp_path_factory):
    """The planted, control and dead heads at the residual W_EE, on the IOI prompts, 20 top tokens."""
    return analysed(tmp_path_factory.mktemp("planted_build"), planted[0], heads=[PLANTED, CONTROL, DEAD],
                    prompts="builtin:ioi", effective_embedding={"variant": "residual"},
                    words={"names": "builtin:census_names", "form": "space_prefixed"},
                    analysis={"top_k": 20, "bootstrap_resamples": 2000, "ov_sample_size": 300})


@pytest.fixture(scope="module")
def results(planted_artifacts):
    arts = load_artifacts(planted_artifacts)
    return {h["results"]["head"]["label"]: h["results"] for h in arts["heads"]}


@pytest.fixture(scope="module")
def planted_model(planted):
    folder, _ = planted
    return load_model(ModelConfig(name=str(folder), device="cpu"), ProcessingConfig())


@pytest.fixture(scope="module")
def planted_layer0(planted_model):
    return effective_embedding(planted_model, "residual", progress=False)


def test_processed_w_qk_keeps_the_planted_sides(planted, planted_model):
    """The left (query) singular vector is p₀ and the right (key) one is k₀: different directions."""
    _, plant = planted
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    U, S, V = spectra.canonical_svd(circuits.qk_circuit(w))
    p0, k0 = plant["p"][:, 0].float(), plant["k"][:, 0].float()
    assert float(U[:, 0] @ p0) ** 2 > 0.999 and float(V[:, 0] @ k0) ** 2 > 0.999
    assert float(U[:, 0] @ k0) ** 2 < 1e-3  # asymmetric: the sides differ
    assert float(S[0]) > 1.9 * float(S[1])


def test_w_u_ranking_reads_the_query_side_and_w_e_the_key_side(planted, results):
    """cos² with u₁ ranks W_U (names first); cos² with v₁ ranks W_E and W_EE (key tokens first).
    With U and V swapped, neither would hold."""
    plant = planted[1]
    names, keys = set(plant["ids"]), set(plant["key_ids"])
    sc = results[PLANTED]["squared_cosine"]
    assert len(sc["w_u"]) == 20
    assert {t["id"] for t in sc["w_u"]} <= names
    assert {t["id"] for t in sc["w_e"]} <= keys
    assert {t["id"] for t in sc["w_ee"]} <= keys  # residual variant: W_EE is W_E here
    control = {t["id"] for t in results[CONTROL]["squared_cosine"]["w_u"]}
    assert len(control & names) <= 2


def test_swapping_u_and_v_would_lose_the_plant(planted, planted_model):
    """The same ranking with the wrong singular vector finds none of the planted tokens."""
    plant = planted[1]
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    U, _, V = spectra.canonical_svd(circuits.qk_circuit(w))
    W_U = planted_model.weight("W_U")
    wrong = alignment.squared_cosine_topk(V[:, 0], W_U.T, 20, planted_model.tokenizer)
    assert not {t["id"] for t in wrong} & set(plant["ids"])


def test_top_singular_direction_tokens_are_planted(planted, results):
    plant = planted[1]
    names, keys = set(plant["ids"]), set(plant["key_ids"])
    first = results[PLANTED]["singular_directions"]["effective_qk"][0]
    assert {t["id"] for t in first["query"]} <= names
    assert {t["id"] for t in first["key"]} <= keys
    control = results[CONTROL]["singular_directions"]["effective_qk"][0]
    assert len({t["id"] for t in control["query"]} & names) <= 3


def test_names_lie_in_the_query_side_subspace(results):
    sub = results[PLANTED]["subspace_alignment"]
    names, generic = sub["groups"]["names"], sub["groups"]["generic"]
    assert sub["word_form"] == "space_prefixed"
    assert names["summary"]["n"] >= 100 and generic["summary"]["n"] >= 80
    cmp = sub["comparison"]
    assert cmp["available"] and cmp["median_ratio"] > 1.5 and cmp["median_ratio_ci95"][0] > 1.0
    assert cmp["median_difference_ci95"][0] > 0 and cmp["mann_whitney_p"] < 0.01 and cmp["auc"] > 0.9
    assert 0.5 < generic["summary"]["median"] < 2.0  # generic words score like a random direction
    control = results[CONTROL]["subspace_alignment"]["comparison"]
    assert control["median_ratio"] < cmp["median_ratio"] / 1.5


def test_the_key_side_subspace_would_not_hold_the_names(planted, planted_model, planted_layer0):
    """Built from V (the key side) instead of U, the subspace score of the names is a random
    direction's: the query side is the one that matters."""
    plant = planted[1]
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    U, _, V = spectra.canonical_svd(circuits.qk_circuit(w))
    W_U = planted_model.weight("W_U")
    names = W_U.T[torch.tensor(plant["ids"])]
    right = alignment.subspace_scores(U[:, :8], names).median()
    wrong = alignment.subspace_scores(V[:, :8], names).median()
    assert right > 4 and wrong < 1.5


@pytest.mark.parametrize("sides", ["none", "sqrt_d_model"])
def test_qk_self_attention_ranks_the_pair_tokens_first(planted, planted_model, planted_layer0, sides):
    """Each pair token's own key is the highest for its query (rank 1); read in ascending order (a
    flipped rank order) none would be."""
    plant = planted[1]
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    eff = circuits.effective_qk_circuit(w, planted_model.weight("W_U"), planted_layer0.W_EE, sides=sides)
    rows = torch.tensor(plant["pair_ids"])
    assert (diagonal.diagonal_ranks(eff, rows, descending=True) == 1).all()
    assert (diagonal.diagonal_ranks(eff, rows, descending=False) > 100).all()


def test_ov_self_suppression_on_planted_tokens(planted, planted_model, planted_layer0):
    plant = planted[1]
    W_U = planted_model.weight("W_U")
    ov = effective_ov_circuit(circuits.head_weights(planted_model, HeadRef(1, 2)), planted_layer0.W_EE, W_U)
    ov_ids = torch.tensor(plant["ov_ids"])
    assert (diagonal.diagonal_ranks(ov, ov_ids) == 1).float().mean() > 0.9
    others = torch.from_numpy(diagonal.sample_rows(planted_model.d_vocab, 300, seed=3))
    others = others[~torch.isin(others, ov_ids)]
    assert (diagonal.diagonal_ranks(ov, others) == 1).float().mean() < 0.5
    control = effective_ov_circuit(circuits.head_weights(planted_model, HeadRef(1, 0)), planted_layer0.W_EE, W_U)
    assert (diagonal.diagonal_ranks(control, ov_ids) == 1).float().mean() < 0.2


def test_paper_metrics_on_the_planted_sub_vocabulary(planted, planted_model, planted_layer0):
    """Restricted to the OV tokens and 96 others, the answer is known: every OV token's own logit
    is the most negative (rank 1, so also top 10 and top 5%); sampled with all rows equals exact."""
    plant = planted[1]
    W_U = planted_model.weight("W_U")
    ov = effective_ov_circuit(circuits.head_weights(planted_model, HeadRef(1, 2)), planted_layer0.W_EE, W_U)
    ov_ids = plant["ov_ids"]
    rest = [i for i in diagonal.sample_rows(ov.A.shape[0], 200, seed=5).tolist() if i not in set(ov_ids)][:96]
    rows = torch.tensor(sorted(ov_ids + rest))
    sub = FactoredMatrix(ov.A[rows], ov.B[:, rows])
    in_sub = torch.searchsorted(rows, torch.tensor(ov_ids))
    assert (diagonal.diagonal_ranks(sub, in_sub) == 1).all()
    exact = ov_self_suppression(sub, mode="exact")
    known = len(ov_ids) / len(rows)
    assert exact["fraction_rank1"] >= known and exact["fraction_top10"] >= known
    assert exact["fraction_top5pct"] >= known and exact["top5pct_cutoff"] == len(rows) // 20 + 1  # the paper's cut
    sampled = ov_self_suppression(sub, mode="sampled", sample_size=len(rows), seed=0)
    assert sampled["fraction_rank1"] == pytest.approx(exact["fraction_rank1"])
    lo, hi = sampled["fraction_rank1_ci95"]
    assert lo < sampled["fraction_rank1"] < hi
    assert sum(exact["histogram"]["counts"]) == len(rows)


def test_the_dead_head_is_undefined_never_copy_suppression(results):
    dead = results[DEAD]
    for key in ("ov_self_suppression", "qk_self_attention"):
        assert dead[key]["defined"] is False, key
        assert dead[key]["fraction_rank1"] is None and not dead[key]["evidence"]["supported"]
        assert "σ₁ = 0" in dead[key]["reason"]
    sentences = head_findings(dead)
    assert "Undefined" in sentences["self_suppression"] and "Undefined" in sentences["self_attention"]
    assert "suppresses" not in sentences["self_suppression"].replace("No claim", "")


def test_no_planted_head_is_claimed_as_copy_suppression(results):
    """On the whole vocabulary only 32 tokens are planted: the effect is far too small to claim."""
    for label in (PLANTED, CONTROL):
        assert not results[label]["ov_self_suppression"]["evidence"]["supported"]
