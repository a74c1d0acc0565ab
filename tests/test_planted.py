"""A checkpoint with planted structure (see ``checkpoints.make_planted_gpt2_checkpoint``): head 1.2's
W_QK ≈ s·u uᵀ with u the shared unembedding direction of the built-in names, and W_OV ≈ -c·S Sᵀ with
every name's embedding carrying its own direction in S. Planted in the HF weights before saving, so
the structure goes through loading and weight processing like any model. The analyses must find it;
head 1.0 (random) is the control."""

from __future__ import annotations

import tomllib

import pytest
import torch
from checkpoints import make_planted_gpt2_checkpoint
from transformer_lens import FactoredMatrix

from analysis import circuits, diagonal, spectra
from analysis.artifacts import load_artifacts
from analysis.config import HeadRef, ModelConfig, ProcessingConfig, config_from_dict
from analysis.embeddings import effective_embedding
from analysis.models import load_model
from analysis.pipeline import run_analysis

PLANTED, CONTROL = "1.2", "1.0"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_planted_gpt2_checkpoint(tmp_path_factory.mktemp("planted_gpt2"), layer=1, head=2)


@pytest.fixture(scope="module")
def planted_artifacts(planted, tmp_path_factory):
    folder, _ = planted
    out = tmp_path_factory.mktemp("planted_build")
    config = config_from_dict(tomllib.loads(f"""
heads = ["{PLANTED}", "{CONTROL}"]
output_dir = "{out}"
[model]
name = "{folder}"
device = "cpu"
[effective_embedding]
variant = "residual"
[analysis]
top_k = 20
bootstrap_resamples = 2000
ov_mode = "sampled"
ov_sample_size = 300
"""))
    run_analysis(config, out / "artifacts", progress=False, log=lambda m: None)
    arts = load_artifacts(out / "artifacts")
    return {h["results"]["head"]["label"]: h["results"] for h in arts["heads"]}


@pytest.fixture(scope="module")
def planted_model(planted):
    folder, _ = planted
    return load_model(ModelConfig(name=str(folder), device="cpu"), ProcessingConfig())


def test_processed_w_qk_keeps_the_planted_direction(planted, planted_model):
    _, plant = planted
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    U, S, V = spectra.canonical_svd(circuits.qk_circuit(w))
    u = plant["u"].float()
    assert float(U[:, 0] @ u) ** 2 > 0.999
    assert float(V[:, 0] @ u) ** 2 > 0.999
    assert float(S[0]) > 100 * float(S[1])


def test_w_u_squared_cosine_ranks_planted_tokens_first(planted, planted_artifacts):
    ids = set(planted[1]["ids"])
    top = planted_artifacts[PLANTED]["squared_cosine"]["w_u"]
    assert len(top) == 20
    assert {t["id"] for t in top} <= ids
    # W_EE (residual variant) is the embedding here, tied with the unembedding: same answer
    assert {t["id"] for t in planted_artifacts[PLANTED]["squared_cosine"]["w_ee"]} <= ids
    assert {t["id"] for t in planted_artifacts[PLANTED]["squared_cosine"]["w_e"]} <= ids
    # control head: not the names
    control = {t["id"] for t in planted_artifacts[CONTROL]["squared_cosine"]["w_u"]}
    assert len(control & ids) <= 2


def test_top_singular_direction_tokens_are_planted(planted, planted_artifacts):
    ids = set(planted[1]["ids"])
    dirs = planted_artifacts[PLANTED]["singular_directions"]
    for circuit in ("full_qk", "effective_qk"):
        first = dirs[circuit][0]
        assert {t["id"] for t in first["query"]} <= ids, circuit
        assert {t["id"] for t in first["key"]} <= ids, circuit
    for circuit in ("full_qk", "effective_qk"):  # control head: not the names
        control = planted_artifacts[CONTROL]["singular_directions"][circuit][0]
        assert len({t["id"] for t in control["query"]} & ids) <= 3, circuit


def test_planted_names_score_above_generic_words(planted_artifacts):
    sub = planted_artifacts[PLANTED]["subspace_alignment"]
    names, generic = sub["groups"]["names"], sub["groups"]["generic"]
    assert names["summary"]["n"] >= 100 and generic["summary"]["n"] >= 80
    cmp = sub["comparison"]
    assert cmp["available"]
    assert cmp["median_ratio"] > 1.5
    assert cmp["median_ratio_ci95"][0] > 1.0
    assert cmp["median_difference_ci95"][0] > 0
    assert cmp["mann_whitney_p"] < 0.01
    assert cmp["auc"] > 0.9
    # generic words score like a random direction (≈ 1)
    assert 0.5 < generic["summary"]["median"] < 2.0


def test_control_head_has_no_planted_separation(planted_artifacts):
    cmp = planted_artifacts[CONTROL]["subspace_alignment"]["comparison"]
    assert cmp["median_ratio"] < planted_artifacts[PLANTED]["subspace_alignment"]["comparison"]["median_ratio"] / 1.5


@pytest.fixture(scope="module")
def planted_ov(planted, planted_model):
    W_EE = effective_embedding(planted_model, "residual", progress=False)
    w = circuits.head_weights(planted_model, HeadRef(1, 2))
    w_control = circuits.head_weights(planted_model, HeadRef(1, 0))
    W_U = planted_model.weight("W_U")
    return (circuits.effective_ov_circuit(w, W_EE, W_U), circuits.effective_ov_circuit(w_control, W_EE, W_U))


def test_ov_self_suppression_on_planted_tokens(planted, planted_model, planted_ov):
    ov, ov_control = planted_ov
    ov_ids = torch.tensor(planted[1]["ov_ids"])
    assert (diagonal.diagonal_ranks(ov, ov_ids) == 1).float().mean() > 0.9
    # W_OV = -c·S Sᵀ makes every token lean towards self-suppression, but random rows much less so
    others = torch.from_numpy(diagonal.sample_rows(planted_model.d_vocab, 300, seed=3))
    others = others[~torch.isin(others, ov_ids)]
    assert (diagonal.diagonal_ranks(ov, others) == 1).float().mean() < 0.5
    # nor do the planted rows in the control head
    assert (diagonal.diagonal_ranks(ov_control, ov_ids) == 1).float().mean() < 0.2


def test_ov_self_suppression_sampled_mode_finds_planted_rows(planted, planted_ov):
    """Sampled mode on a sub-vocabulary (the planted rows plus 96 others; ranks among all 50257 logits
    are checked above): every planted row is found, sampled-with-all-rows equals exact mode, and the
    Wilson CI holds the estimate."""
    ov, _ = planted_ov
    ov_ids = planted[1]["ov_ids"]
    rest = [i for i in diagonal.sample_rows(ov.A.shape[0], 200, seed=5).tolist() if i not in set(ov_ids)][:96]
    rows = torch.tensor(sorted(ov_ids + rest))
    sub = FactoredMatrix(ov.A[rows], ov.B[:, rows])  # the circuit restricted to these tokens
    out = diagonal.ov_self_suppression(sub, mode="sampled", sample_size=len(rows), seed=0)
    assert out["n_ranked"] == len(rows) and out["mode"] == "sampled"
    in_sub = torch.searchsorted(rows, torch.tensor(ov_ids))
    assert (diagonal.diagonal_ranks(sub, in_sub) == 1).all()
    assert out["fraction_rank1"] >= len(ov_ids) / len(rows)
    lo, hi = out["fraction_rank1_ci95"]
    assert lo < out["fraction_rank1"] < hi
    exact = diagonal.ov_self_suppression(sub, mode="exact")
    assert exact["fraction_rank1"] == pytest.approx(out["fraction_rank1"])
    assert sum(exact["histogram"]["counts"]) == len(rows)
