"""How token directions line up with a head's QK singular directions.

* :func:`squared_cosine_topk` — tokens whose (normalised) unembedding / embedding lies along one
  singular vector of W_QK (the notebook's cosine-similarity ranking, without its bugs: every token
  vector is normalised, and nothing is modified in place).
* :func:`subspace_alignment` — the fraction of a word's normalised unembedding inside the span of
  W_QK's top-r left (query-side) singular vectors, scaled by d_model / r so that a random direction
  scores about 1.
* :func:`compare_groups` — names versus generic words: medians, bootstrap CIs, Mann-Whitney U, AUC.

Definitions and sources: docs/methods.md#squared-cosine-rankings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from scipy import stats
from torch import Tensor

from .tokens import token_records

EPS = 1e-12


def squared_cosine(
    direction: Float[Tensor, "d_model"], vectors: Float[Tensor, "n d_model"]
) -> Float[Tensor, "n"]:
    """cos²(direction, vectors[i]) for every row; zero-norm rows score 0."""
    d = direction / direction.norm().clamp_min(EPS)
    dots = vectors @ d
    norms_sq = (vectors * vectors).sum(-1)
    return torch.where(norms_sq > EPS, dots * dots / norms_sq.clamp_min(EPS), torch.zeros_like(dots))


def squared_cosine_topk(
    direction: Float[Tensor, "d_model"], vectors: Float[Tensor, "n d_model"], k: int, tokenizer
) -> list[dict[str, Any]]:
    """The ``k`` rows (token ids) most aligned with ``direction``, with cos² and the signed cosine."""
    cos2 = squared_cosine(direction, vectors)
    k = min(k, cos2.shape[0])
    top = cos2.topk(k)
    idx = top.indices
    d = direction / direction.norm().clamp_min(EPS)
    signed = (vectors[idx] @ d) / vectors[idx].norm(dim=-1).clamp_min(EPS)
    return token_records(
        tokenizer, idx.tolist(),
        value=[float(v) for v in top.values.double().cpu()],
        cosine=[float(v) for v in signed.double().cpu()],
    )


def subspace_scores(
    basis: Float[Tensor, "d_model r"], vectors: Float[Tensor, "n d_model"]
) -> Float[Tensor, "n"]:
    """‖basisᵀ v̂‖² · d_model / r for each row v (``basis`` has orthonormal columns)."""
    d_model, r = basis.shape
    v = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(EPS)
    proj = v @ basis
    return (proj * proj).sum(-1) * (d_model / r)


def summarize(values: np.ndarray) -> dict[str, float | int]:
    if values.size == 0:
        return {"n": 0}
    q1, med, q3 = np.quantile(values, [0.25, 0.5, 0.75])
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "median": float(med),
        "q1": float(q1),
        "q3": float(q3),
        "min": float(values.min()),
        "max": float(values.max()),
    }


#: names are said to score higher (lower) than generic words only when the whole 95% CI of the median
#: ratio lies above MIN_RATIO (below 1 / MIN_RATIO) and the Mann-Whitney p-value is below ALPHA: a
#: difference must be large, not only significant
MIN_RATIO = 1.2
ALPHA = 0.05
RATIO_RULE = (f"names differ from generic words only when the whole 95% CI of the median ratio lies above "
              f"{MIN_RATIO:g}× (or below 1/{MIN_RATIO:g}×) and the Mann-Whitney p-value is below {ALPHA:g}")


def ratio_evidence(comparison: dict[str, Any]) -> dict[str, Any]:
    """The effect-size verdict on a :func:`compare_groups` result with CIs: ``direction`` "higher",
    "lower" or None (no claim), the ``rule``, and ``reason`` when no claim is made."""
    lo, hi = comparison.get("median_ratio_ci95") or [None, None]
    p = comparison["mann_whitney_p"]
    direction, reason = None, None
    if lo is None or hi is None:
        reason = "the median ratio has no interval"
    elif p >= ALPHA:
        reason = f"the Mann-Whitney test is not significant (p = {p:.3g})"
    elif lo > MIN_RATIO:
        direction = "higher"
    elif hi < 1 / MIN_RATIO:
        direction = "lower"
    else:
        reason = (f"the 95% CI of the median ratio ({lo:.3g} to {hi:.3g}) is not entirely above {MIN_RATIO:g} "
                  f"or below {1 / MIN_RATIO:.3g}")
    return {"direction": direction, "rule": RATIO_RULE, **({"reason": reason} if reason else {})}


def compare_groups(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 10000, seed: int = 0, chunk: int = 1000
) -> dict[str, Any]:
    """Group ``a`` (names) against group ``b`` (generic words).

    ratio and difference of medians; two-sided Mann-Whitney U p-value; AUC = P(score_a > score_b) +
    ½ P(tie) = U_a / (n_a n_b); with ``n_resamples > 0``, percentile-bootstrap 95% CIs of the ratio
    and the difference (each group resampled with replacement, numpy ``default_rng(seed)``). The
    survey calls it with ``n_resamples = 0`` (no CIs): one definition for both.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        return {"available": False, "reason": f"need at least 2 words in each list (got {a.size} and {b.size})"}
    med_a, med_b = float(np.median(a)), float(np.median(b))
    u = stats.mannwhitneyu(a, b, alternative="two-sided")
    out: dict[str, Any] = {
        "available": True,
        "median_names": med_a,
        "median_generic": med_b,
        "median_ratio": med_a / med_b if med_b != 0 else None,
        "median_difference": med_a - med_b,
        "mann_whitney_u": float(u.statistic),
        "mann_whitney_p": float(u.pvalue),
        "auc": float(u.statistic) / (a.size * b.size),
    }
    if n_resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    ratios, diffs = [], []
    for start in range(0, n_resamples, chunk):
        m = min(chunk, n_resamples - start)
        ma = np.median(a[rng.integers(0, a.size, size=(m, a.size))], axis=1)
        mb = np.median(b[rng.integers(0, b.size, size=(m, b.size))], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios.append(ma / np.where(mb == 0, np.nan, mb))
        diffs.append(ma - mb)
    ratios_arr, diffs_arr = np.concatenate(ratios), np.concatenate(diffs)
    finite = ratios_arr[np.isfinite(ratios_arr)]
    out.update({
        "median_ratio_ci95": ([float(np.quantile(finite, 0.025)), float(np.quantile(finite, 0.975))]
                              if finite.size else [None, None]),
        "median_difference_ci95": [float(np.quantile(diffs_arr, 0.025)), float(np.quantile(diffs_arr, 0.975))],
        "bootstrap": {"n_resamples": n_resamples, "seed": seed, "method": "percentile"},
    })
    out["evidence"] = ratio_evidence(out)
    return out
