"""Factored circuits against dense matrices on a small vocabulary (the first 300 tokens of the tiny
model's processed W_E / W_U / W_EE): spectra, singular vectors, diagonal ranks, top tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import FactoredMatrix

from headreport.analysis import circuits, diagonal, spectra
from headreport.analysis.config import Config, HeadRef
from headreport.analysis.head import weight_results
from headreport.analysis.pipeline import load_words, tokenize_word_lists
from headreport.analysis.timings import Timer
from tests.oracles import effective_ov_circuit, ov_self_suppression, qk_self_attention

N = 300
HEAD = HeadRef(1, 3)


@pytest.fixture(scope="module")
def small(tiny_model, tiny_W_EE):
    w = circuits.head_weights(tiny_model, HEAD)
    W_E, W_U, W_EE = tiny_model.weight("W_E")[:N], tiny_model.weight("W_U")[:, :N], tiny_W_EE[:N]
    d = lambda t: t.double()
    W_QK = d(w.W_Q) @ d(w.W_K).T
    W_OV = d(w.W_V) @ d(w.W_O)
    return {
        "w": w,
        "factored": {
            "qk": circuits.qk_circuit(w),
            "full": circuits.full_qk_circuit(w, W_E),
            "effective": circuits.effective_qk_circuit(w, W_U, W_EE),
            "effective_norm": circuits.effective_qk_circuit(w, W_U, W_EE, sides="sqrt_d_model"),
            "ov": circuits.ov_circuit(w),
            "effective_ov": effective_ov_circuit(w, W_EE, W_U),
        },
        "dense": {
            "qk": W_QK,
            "full": d(W_E) @ W_QK @ d(W_E).T,
            "effective": d(W_U).T @ W_QK @ d(W_EE).T,
            "effective_norm": sqrt_d_model(d(W_U).T) @ W_QK @ sqrt_d_model(d(W_EE)).T,
            "ov": W_OV,
            "effective_ov": d(W_EE) @ W_OV @ d(W_U),
        },
        "svd": {},
    }


def dense_svd(small, name):
    """SVD of the dense circuit (float64), computed once per circuit. numpy's LAPACK driver: torch's
    is pathologically slow on these rank-16 matrices (seconds instead of ~0.1 s)."""
    if name not in small["svd"]:
        U, S, Vh = np.linalg.svd(small["dense"][name].numpy())
        small["svd"][name] = (torch.from_numpy(U), torch.from_numpy(S), torch.from_numpy(Vh))
    return small["svd"][name]


CIRCUITS = ["qk", "full", "effective", "effective_norm", "ov", "effective_ov"]


def sqrt_d_model(x: torch.Tensor) -> torch.Tensor:
    """Each row scaled to norm √d_model (``qk_normalization = "sqrt_d_model"``)."""
    return x * (x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True))


def test_head_weights_pick_the_head(tiny_model):
    w = circuits.head_weights(tiny_model, HEAD)
    assert torch.equal(w.W_Q, tiny_model.weight("W_Q")[1, 3])
    assert torch.equal(w.W_O, tiny_model.weight("W_O")[1, 3])
    assert w.kv_head == 3


@pytest.mark.parametrize("name", CIRCUITS)
def test_factored_shapes_and_product(small, name):
    f, dense = small["factored"][name], small["dense"][name]
    assert tuple(f.shape) == tuple(dense.shape)
    assert f.mdim == 16  # the d_head-wide inner dimension is kept
    torch.testing.assert_close(f.AB.double(), dense, atol=1e-5 * dense.abs().max().item(), rtol=1e-4)


@pytest.mark.parametrize("name", CIRCUITS)
def test_spectrum_equals_dense_svdvals(small, name):
    got = torch.tensor(spectra.singular_spectrum(small["factored"][name]), dtype=torch.float64)
    dense = dense_svd(small, name)[1]
    assert got.shape == (16,)
    assert torch.all(got[:-1] >= got[1:])
    torch.testing.assert_close(got, dense[:16], atol=1e-5 * dense[0].item(), rtol=1e-4)
    assert dense[16:].max() < 1e-5 * dense[0]  # rank d_head: nothing beyond the reported values


@pytest.mark.parametrize("name", ["qk", "full", "effective", "effective_ov"])
def test_canonical_svd_matches_dense_up_to_sign(small, name):
    U, S, V = spectra.canonical_svd(small["factored"][name])
    Ud, Sd, Vhd = dense_svd(small, name)
    U, V = U.double(), V.double()
    assert U.shape == V.shape == (small["dense"][name].shape[0], 16)
    # sign convention: the largest-|.| entry of each U column is positive
    idx = U.abs().argmax(dim=0)
    assert torch.all(U[idx, torch.arange(16)] > 0)
    for i in range(16):
        gap = min([abs(Sd[i] - Sd[j]) for j in range(17) if j != i]) / Sd[0]
        if gap < 1e-3:  # (nearly) degenerate pair: vectors not unique
            continue
        sign = torch.sign(U[:, i] @ Ud[:, i])
        torch.testing.assert_close(U[:, i], sign * Ud[:, i], atol=2e-4 / gap.item() * 1e-2 + 1e-4, rtol=0)
        torch.testing.assert_close(V[:, i], sign * Vhd[i], atol=2e-4 / gap.item() * 1e-2 + 1e-4, rtol=0)
    # U diag(S) Vᵀ is the circuit
    dense = small["dense"][name]
    torch.testing.assert_close(U @ torch.diag(S.double()) @ V.T, dense, atol=1e-5 * dense.abs().max().item(), rtol=1e-4)


def test_canonical_svd_sign_is_deterministic(small):
    f = small["factored"]["full"]
    flipped = FactoredMatrix(-f.A, -f.B)  # the same matrix, factored differently
    U1, _, V1 = spectra.canonical_svd(f)
    U2, _, V2 = spectra.canonical_svd(flipped)
    torch.testing.assert_close(U1, U2, atol=1e-5, rtol=0)
    torch.testing.assert_close(V1, V2, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["full", "effective"])
def test_singular_directions_top_tokens_match_dense(small, name, tiny_model):
    k, n_dir = 10, 3
    out = spectra.singular_directions(small["factored"][name], n_dir, k, tiny_model.tokenizer)
    assert [d["index"] for d in out] == [0, 1, 2]
    Ud, Sd, Vhd = dense_svd(small, name)
    for i, d in enumerate(out):
        assert d["sigma"] == pytest.approx(Sd[i].item(), rel=1e-4)
        for side, vec in (("query", Ud[:, i]), ("key", Vhd[i])):
            expected = vec.abs().argsort(descending=True)[:k].tolist()
            assert [t["id"] for t in d[side]] == expected, (i, side)
            sign = 1.0 if d["query"][0]["value"] * Ud[d["query"][0]["id"], i].item() > 0 else -1.0
            for t in d[side]:
                assert t["value"] == pytest.approx(sign * vec[t["id"]].item(), abs=1e-4)
                assert t["token"] == tiny_model.tokenizer.decode([t["id"]])
        # the top query token carries the largest |U| entry and it is positive (sign convention)
        assert d["query"][0]["value"] > 0


def dense_ranks(M: torch.Tensor, rows: torch.Tensor, descending: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Number of entries at least as extreme as the diagonal one (itself included: ties count
    against the token); and whether the row has a near-tie."""
    block = M[rows]
    own = block.gather(1, rows[:, None])
    beyond = (block >= own) if descending else (block <= own)
    near = ((block - own).abs() < 1e-6 * block.abs().max()).sum(1) > 1
    return beyond.sum(1), near


@pytest.mark.parametrize("name", ["effective_ov", "effective", "effective_norm", "full"])
@pytest.mark.parametrize("descending", [False, True])
def test_diagonal_ranks_exact_equal_dense(small, name, descending):
    got = diagonal.diagonal_ranks(small["factored"][name], descending=descending)
    rows = torch.arange(N)
    expected, near = dense_ranks(small["dense"][name], rows, descending)
    assert got.shape == (N,) and got.dtype == torch.int64
    assert near.float().mean() < 0.05
    assert torch.equal(got[~near], expected[~near])
    assert (got - expected).abs().max() <= 2
    assert got.min() >= 1 and got.max() <= N
    assert len(set(got.tolist())) > 20  # a real spread of ranks, not a constant


@pytest.mark.parametrize("descending", [False, True])
def test_diagonal_ranks_on_given_rows_and_batches(small, descending):
    f = small["factored"]["effective_ov"]
    rows = torch.tensor([299, 0, 17, 17, 250, 3, 42, 201, 128, 77, 5])
    got = diagonal.diagonal_ranks(f, rows, descending=descending, batch_size=3)
    expected, near = dense_ranks(small["dense"]["effective_ov"], rows, descending)
    assert torch.equal(got[~near], expected[~near])
    full = diagonal.diagonal_ranks(f, descending=descending, batch_size=64)
    assert torch.equal(got, full[rows])


def test_diagonal_ranks_on_sampled_rows_of_the_full_vocabulary(tiny_model, tiny_W_EE):
    w = circuits.head_weights(tiny_model, HEAD)
    W_U = tiny_model.weight("W_U")
    f = effective_ov_circuit(w, tiny_W_EE, W_U)
    rows = torch.from_numpy(diagonal.sample_rows(tiny_model.d_vocab, 64, seed=1))
    got = diagonal.diagonal_ranks(f, rows)
    dense_rows = tiny_W_EE[rows].double() @ w.W_V.double() @ w.W_O.double() @ W_U.double()  # [64, d_vocab]
    own = dense_rows.gather(1, rows[:, None])
    expected = (dense_rows <= own).sum(1)
    assert (got - expected).abs().max() <= 2
    assert (got == expected).float().mean() > 0.9


def test_diagonal_ranks_ties_count_against_the_token():
    A = torch.tensor([[1.0], [1.0], [2.0]])
    B = torch.tensor([[1.0, 1.0, 0.0]])  # rows: [1,1,0], [1,1,0], [2,2,0]
    f = FactoredMatrix(A, B)
    assert diagonal.diagonal_ranks(f, descending=False).tolist() == [3, 3, 1]
    assert diagonal.diagonal_ranks(f, descending=True).tolist() == [2, 2, 3]


@pytest.mark.parametrize("descending", [False, True])
def test_a_constant_row_ranks_every_token_last(descending):
    """A dead head (W_O = 0): every entry of every row is equal. Ties count against the token, so
    every token ranks last, never first."""
    A = torch.randn(50, 4)
    f = FactoredMatrix(A, torch.zeros(4, 50))
    assert diagonal.diagonal_ranks(f, descending=descending).tolist() == [50] * 50


def test_a_nan_own_entry_ranks_last_and_nan_elsewhere_never_wins():
    A = torch.tensor([[1.0], [1.0], [1.0]])
    B = torch.tensor([[float("nan"), 2.0, 3.0]])  # every row: [nan, 2, 3]
    f = FactoredMatrix(A, B)
    assert diagonal.diagonal_ranks(f, descending=False).tolist() == [3, 1, 2]
    assert diagonal.diagonal_ranks(f, descending=True).tolist() == [3, 2, 1]


def test_ov_modes(small):
    f = small["factored"]["effective_ov"]
    exact = ov_self_suppression(f, mode="exact")
    ranks = diagonal.diagonal_ranks(f)
    assert exact["n_ranked"] == N and exact["sample_size"] is None and exact["fraction_rank1_ci95"] is None
    assert exact["fraction_rank1"] == pytest.approx((ranks == 1).float().mean().item())
    assert exact["median_rank"] == pytest.approx(ranks.double().median().item(), abs=1)
    sampled = ov_self_suppression(f, mode="sampled", sample_size=100, seed=4)
    assert sampled["n_ranked"] == 100 and sampled["seed"] == 4
    again = ov_self_suppression(f, mode="sampled", sample_size=100, seed=4)
    assert sampled == again
    rows = torch.from_numpy(diagonal.sample_rows(N, 100, 4))
    assert sampled["fraction_rank1"] == pytest.approx((ranks[rows] == 1).float().mean().item())
    with pytest.raises(ValueError):
        ov_self_suppression(f, mode="bogus")


def test_degenerate_circuits_are_detected():
    A = torch.randn(30, 4)
    assert diagonal.circuit_degeneracy(FactoredMatrix(A, torch.randn(4, 30))) is None
    assert "zero" in diagonal.circuit_degeneracy(FactoredMatrix(A, torch.zeros(4, 30)))
    assert "zero" in diagonal.circuit_degeneracy(FactoredMatrix(torch.zeros(30, 4), torch.randn(4, 30)))
    B = torch.randn(4, 1).expand(4, 30).clone()  # every column equal: every row constant
    assert "constant" in diagonal.circuit_degeneracy(FactoredMatrix(A, B))
    B = torch.randn(4, 30)
    B[0, 0] = float("nan")
    assert "non-finite" in diagonal.circuit_degeneracy(FactoredMatrix(A, B))
    summary = ov_self_suppression(FactoredMatrix(A, torch.zeros(4, 30)), mode="exact")
    assert summary["defined"] is False and summary["fraction_rank1"] is None
    assert summary["evidence"]["supported"] is False and "undefined" in summary["evidence"]["reason"]


def test_paper_fractions_and_chance():
    """A circuit whose own entry is the most negative of its row for every token: every fraction is
    1 and the effect is supported; chance levels are k / n."""
    n = 200
    X = torch.nn.functional.normalize(torch.randn(n, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    f = FactoredMatrix(X, -X.T)  # row i: -cos(x_i, x_j); own entry -1 is the most negative
    s = ov_self_suppression(f, mode="exact")
    assert s["fraction_rank1"] == s["fraction_top10"] == s["fraction_top5pct"] == 1.0
    # the top 5% as the paper's code counts it: 0-based rank ≤ 0.05·n, so 1-based rank ≤ 11 of 200
    assert s["top5pct_cutoff"] == 11 and s["chance"]["fraction_top10"] == pytest.approx(10 / n)
    assert s["chance"]["fraction_top5pct"] == pytest.approx(11 / n)
    assert s["chance"]["median_rank"] == pytest.approx((n + 1) / 2)
    assert s["evidence"]["supported"] and s["evidence"]["excess"] == pytest.approx(1.0)
    flipped = qk_self_attention(f, mode="exact")  # read as "highest": every token ranks last
    assert flipped["fraction_top10"] == 0.0 and not flipped["evidence"]["supported"]


def test_each_circuit_of_a_head_is_decomposed_once(tiny_model, tiny_layer0, monkeypatch):
    """The per-head analysis builds W_QK, the full and the effective QK circuits and W_OV once
    (:class:`HeadCircuits`): its spectra, singular directions and cos² rankings share each circuit's
    cached SVD, three LAPACK SVDs per ``FactoredMatrix`` (A, B and the d_head × d_head middle)."""
    config = Config(heads=(HEAD,))
    word_lists = tokenize_word_lists(config, load_words(config), tiny_model.tokenizer)
    real, calls = torch.linalg.svd, []

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", counted)
    c = circuits.HeadCircuits.of(circuits.head_weights(tiny_model, HEAD), circuits.unembedding(tiny_model),
                                 tiny_layer0.W_E, tiny_layer0.W_EE)
    with torch.no_grad():
        weight_results(tiny_model, c, circuits.unembedding(tiny_model), tiny_layer0, config, word_lists, Timer(),
                       HEAD.label)
    assert len(calls) == 4 * 3
