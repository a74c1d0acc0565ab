"""compare_groups, wilson_interval, rank_histogram and the score helpers on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest

from headreport.analysis.alignment import compare_groups, squared_cosine, subspace_scores, summarize
from headreport.analysis.diagonal import rank_histogram, rank_summary, sample_rows, wilson_interval


def test_separated_groups_have_auc_one():
    rng = np.random.default_rng(0)
    a, b = 10 + rng.random(40), rng.random(50)
    out = compare_groups(a, b, n_resamples=500, seed=0)
    assert out["available"] and out["auc"] == 1.0
    assert out["mann_whitney_p"] < 1e-10
    assert out["median_difference"] == pytest.approx(np.median(a) - np.median(b))
    reversed_ = compare_groups(b, a, n_resamples=500, seed=0)
    assert reversed_["auc"] == 0.0


def test_identical_distributions_have_auc_about_half():
    rng = np.random.default_rng(1)
    a, b = rng.normal(5, 1, 2000), rng.normal(5, 1, 2000)
    out = compare_groups(a, b, n_resamples=500, seed=0)
    assert abs(out["auc"] - 0.5) < 0.03
    assert out["mann_whitney_p"] > 0.01
    lo, hi = out["median_ratio_ci95"]
    assert lo < 1 < hi


def test_ties_count_half_in_auc():
    out = compare_groups(np.array([1.0, 2.0]), np.array([1.0, 2.0]), n_resamples=100)
    assert out["auc"] == 0.5


def test_ci_contains_true_ratio():
    """Lognormal groups with medians 3 and 1.5 (true ratio 2): the 95% CI covers 2 in most seeds."""
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        a = 3.0 * np.exp(rng.normal(0, 0.5, 150))
        b = 1.5 * np.exp(rng.normal(0, 0.5, 150))
        out = compare_groups(a, b, n_resamples=1000, seed=seed)
        lo, hi = out["median_ratio_ci95"]
        assert lo < out["median_ratio"] < hi
        covered += lo <= 2.0 <= hi
        dlo, dhi = out["median_difference_ci95"]
        assert dlo < out["median_difference"] < dhi
    assert covered >= 16


def test_seeded_bootstrap_is_deterministic():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    assert compare_groups(a, b, 1000, seed=7) == compare_groups(a, b, 1000, seed=7)
    assert (compare_groups(a, b, 1000, seed=7)["median_ratio_ci95"]
            != compare_groups(a, b, 1000, seed=8)["median_ratio_ci95"])
    out = compare_groups(a, b, 1000, seed=7)
    assert out["bootstrap"] == {"n_resamples": 1000, "seed": 7, "method": "percentile"}


def test_too_small_groups_are_reported_not_raised():
    out = compare_groups(np.array([1.0]), np.array([1.0, 2.0]))
    assert out["available"] is False and "at least 2" in out["reason"]


Z = 1.959963984540054


@pytest.mark.parametrize("n", [1, 10, 263, 2000])
def test_wilson_interval_closed_forms(n):
    # 0 successes: [0, z²/(n+z²)]; n successes: [n/(n+z²), 1]; half: symmetric about 1/2
    assert wilson_interval(0, n) == pytest.approx([0.0, Z * Z / (n + Z * Z)], abs=1e-12)
    assert wilson_interval(n, n) == pytest.approx([n / (n + Z * Z), 1.0], abs=1e-12)
    if n % 2 == 0:
        lo, hi = wilson_interval(n // 2, n)
        assert lo + hi == pytest.approx(1.0)


@pytest.mark.parametrize("k, n", [(5, 10), (1, 20), (81, 263), (1999, 2000)])
def test_wilson_interval_matches_scipy(k, n):
    ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx([ci.low, ci.high], abs=1e-9)


def test_wilson_interval_textbook_value():
    # 5/10: 0.5 ± z·sqrt(0.025 + z²/400)/(1 + z²/10) = [0.2366, 0.7634] (Wilson 1927; Newcombe 1998)
    assert wilson_interval(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)


def test_wilson_interval_empty_sample():
    assert wilson_interval(0, 0) == [0.0, 1.0]


@pytest.mark.parametrize("d_vocab", [3, 10, 500, 50257])
def test_rank_histogram_counts_sum_to_n(d_vocab):
    rng = np.random.default_rng(d_vocab)
    ranks = np.concatenate([[1, 1, d_vocab], rng.integers(1, d_vocab + 1, 997)])
    h = rank_histogram(ranks, d_vocab)
    assert sum(h["counts"]) == ranks.size
    assert len(h["counts"]) == len(h["labels"]) == len(h["edges"]) - 1
    assert h["edges"][0] == 1 and h["edges"][-1] == d_vocab + 1
    assert all(lo < hi for lo, hi in zip(h["edges"], h["edges"][1:]))
    assert h["labels"][0] == "1" and h["counts"][0] == int((ranks == 1).sum())


def test_rank_summary():
    ranks = np.array([1, 1, 2, 5, 11, 100])
    s = rank_summary(ranks, 200, "sampled", 6, 3)
    assert s["fraction_rank1"] == pytest.approx(2 / 6)
    assert s["fraction_top10"] == pytest.approx(4 / 6)
    assert s["median_rank"] == 3.5 and s["mean_rank"] == pytest.approx(20.0)
    assert s["fraction_rank1_ci95"] == wilson_interval(2, 6)
    assert rank_summary(ranks, 200, "exact", None, None)["fraction_rank1_ci95"] is None


def test_sample_rows_seeded_sorted_unique():
    r = sample_rows(1000, 100, seed=3)
    assert np.array_equal(r, sample_rows(1000, 100, seed=3))
    assert len(set(r.tolist())) == 100 and np.all(np.diff(r) > 0)
    assert len(sample_rows(50, 100, seed=0)) == 50


def test_summarize():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert s == {"n": 5, "mean": 3.0, "median": 3.0, "q1": 2.0, "q3": 4.0, "min": 1.0, "max": 5.0}
    assert summarize(np.zeros(0)) == {"n": 0}


def test_subspace_score_random_direction_about_one():
    g = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(64, 16, generator=g, dtype=torch.float64))
    v = torch.randn(5000, 64, generator=g, dtype=torch.float64)
    scores = subspace_scores(basis, v)
    assert scores.mean().item() == pytest.approx(1.0, abs=0.03)
    inside = basis.T[:3] * torch.tensor([[2.0], [5.0], [0.1]], dtype=torch.float64)  # vectors in the span
    torch.testing.assert_close(subspace_scores(basis, inside), torch.full((3,), 4.0, dtype=torch.float64))


def test_squared_cosine_normalises_and_does_not_modify():
    d = torch.tensor([3.0, 0.0])
    vecs = torch.tensor([[10.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, -2.0]])
    before = vecs.clone()
    torch.testing.assert_close(squared_cosine(d, vecs), torch.tensor([1.0, 0.5, 0.0, 0.0]))
    assert torch.equal(vecs, before)
