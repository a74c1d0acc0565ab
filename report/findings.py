"""Interpretation sentences generated from the numbers, hedged by the statistics behind them.

Every sentence is Markdown (tokens through :func:`report.escaping.markdown_token`, every number
through :mod:`report.formatting`) and follows one rule: a claim is made only when its evidence
clears :data:`ALPHA` *and* the effect's 95% interval excludes "no effect"; otherwise the sentence
says that the numbers do not show it. A random model must read as a random model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from scipy import stats

from . import formatting as fmt
from .escaping import Safe, markdown_text, markdown_token

ALPHA = 0.05
#: σ₁/σ₂ at or above which a spectrum is described as dominated by its first direction.
DOMINANCE_RATIO = 2.0
#: tokens named in a sentence that lists top tokens
TOKENS_IN_SENTENCE = 3


@dataclass(frozen=True)
class SpectrumSummary:
    """Shape statistics of a singular-value spectrum σ₁ ≥ σ₂ ≥ … ≥ 0."""

    sigma1: float
    ratio12: float | None  # σ₁/σ₂ (None when σ₂ = 0 or there is one value)
    energy1: float | None  # σ₁² / Σσᵢ²: share of the squared Frobenius norm in direction 1
    effective_rank: float | None  # exp(entropy of σᵢ²/Σσⱼ²), between 1 and len(σ)
    n: int


def spectrum_summary(values: list[float]) -> SpectrumSummary:
    total = sum(s * s for s in values)
    ratio = values[0] / values[1] if len(values) > 1 and values[1] > 0 else None
    if total > 0:
        p = [s * s / total for s in values if s > 0]
        eff = math.exp(-sum(q * math.log(q) for q in p))
        energy = values[0] ** 2 / total
    else:
        eff = energy = None
    return SpectrumSummary(values[0], ratio, energy, eff, len(values))


def spectrum_sentence(label_md: str, values: list[float]) -> str:
    """Whether one direction dominates a circuit, with σ₁/σ₂, σ₁'s share and the effective rank."""
    s = spectrum_summary(values)
    numbers = (f"σ₁/σ₂ = {fmt.num(s.ratio12)}; σ₁ carries {fmt.percent(s.energy1, 4)} of the squared "
               f"Frobenius norm; effective rank {fmt.num(s.effective_rank)} of {s.n}")
    if s.ratio12 is not None and s.ratio12 >= DOMINANCE_RATIO:
        return Safe(f"The {label_md} is dominated by its first singular direction ({numbers}). A dominant "
                f"direction can also come from a component that all tokens share (such as a mean "
                f"embedding direction): its top tokens show which.")
    return Safe(f"No single direction dominates the {label_md} ({numbers}).")


def subspace_sentence(subspace: Mapping[str, Any]) -> str:
    """Names vs generic words: the median ratio with its CI and Mann-Whitney p, hedged."""
    comp = subspace["comparison"]
    groups = subspace["groups"]
    baseline = subspace["random_baseline"]
    if not comp.get("available"):
        return Safe(f"The names-vs-generic comparison is not available: "
                    f"{markdown_text(str(comp.get('reason', 'too few words in a list')))}.")
    r, (lo, hi), p = comp.get("median_ratio"), comp["median_ratio_ci95"], comp["mann_whitney_p"]
    names_med = groups["names"]["summary"].get("median")
    generic_med = groups["generic"]["summary"].get("median")
    stats_text = (f"median ratio; 95% CI {fmt.ci([lo, hi])}; Mann-Whitney {fmt.p_value(p)}; "
                  f"AUC {fmt.num(comp.get('auc'), 2)}")
    medians = (f"Median scores: names {fmt.num(names_med)}, generic words {fmt.num(generic_med)}; "
               f"a random direction scores {fmt.num(baseline)}.")
    if r is None:
        return Safe(f"The generic words' median score is 0, so no ratio can be formed ({stats_text}). {medians}")
    significant = p < ALPHA
    above = lo is not None and lo > 1
    below = hi is not None and hi < 1
    if significant and above:
        return Safe(f"**Names score {fmt.num(r)}× the generic words** ({stats_text}): names' unembeddings "
                f"lie further inside the head's query-side QK subspace than generic words do. {medians}")
    if significant and below:
        return Safe(f"**Names score lower than generic words**, {fmt.num(r)}× ({stats_text}): this head's "
                f"query-side QK subspace does not prefer names. {medians}")
    if above or below or significant:
        return Safe(f"The evidence for a names-vs-generic difference is weak: names score {fmt.num(r)}× "
                f"the generic words ({stats_text}), and the interval and the test do not agree at the "
                f"{fmt.num(ALPHA, 1)} level. {medians}")
    return Safe(f"No reliable difference between names and generic words: names score {fmt.num(r)}× "
            f"the generic words, but the 95% CI {fmt.ci([lo, hi])} includes 1 and the Mann-Whitney "
            f"test is not significant ({fmt.p_value(p)}). {medians}")


def self_suppression_test(ov: Mapping[str, Any]) -> dict[str, float]:
    """One-sided binomial test of the rank-1 count against chance (each of ``n_tokens`` logits is
    equally likely to be the most negative: rate 1/n_tokens)."""
    n, n_tokens = ov["n_ranked"], ov["n_tokens"]
    k = round(ov["fraction_rank1"] * n)
    chance = 1 / n_tokens
    p = float(stats.binom.sf(k - 1, n, chance)) if k > 0 else 1.0
    return {"k": k, "n": n, "chance": chance, "p": p, "chance_median": (n_tokens + 1) / 2}


def self_suppression_sentence(ov: Mapping[str, Any]) -> str:
    """How often a token's own logit is the one the head suppresses most, against chance."""
    t = self_suppression_test(ov)
    scope = (f"the {fmt.integer(ov['n_tokens'])} tokens" if ov["mode"] == "exact"
             else f"{fmt.integer(ov['n_ranked'])} tokens sampled from {fmt.integer(ov['n_tokens'])}")
    ci = ov.get("fraction_rank1_ci95")
    ci_text = f", 95% CI {fmt.ci(ci, fmt=fmt.percent)}" if ci else ""
    rate = (f"{fmt.integer(t['k'])} of {scope} ({fmt.percent(ov['fraction_rank1'])}{ci_text}; chance: "
            f"{fmt.percent(t['chance'])}; one-sided binomial {fmt.p_value(t['p'])})")
    median = (f"The median rank of a token's own logit is {fmt.integer(round(ov['median_rank']))} of "
              f"{fmt.integer(ov['n_tokens'])} (a random logit: {fmt.integer(round(t['chance_median']))}).")
    if t["p"] < ALPHA:
        return Safe(f"**The head suppresses the token it attends to**: its own logit is the most negative "
                f"one for {rate}. {median}")
    return Safe(f"No sign of self-suppression: a token's own logit is the most negative one for {rate}. "
            f"{median}")


def cosine_sentence(squared_cosine: Mapping[str, Any], d_model: int, d_vocab: int) -> str:
    """The unembeddings best aligned with W_QK's first left singular vector, with a chance reference."""
    top = squared_cosine["w_u"][:TOKENS_IN_SENTENCE]
    if not top:
        return Safe("No token alignment was computed.")
    listed = ", ".join(f"{markdown_token(t)} ({fmt.num(t['value'])})" for t in top)
    return Safe(f"Unembeddings best aligned with W~QK~'s first left singular vector (cos²): {listed}. A "
            f"random direction has mean cos² 1/d~model~ = {fmt.num(1 / d_model)}; the largest of "
            f"{fmt.integer(d_vocab)} tokens is far above that by chance "
            f"alone, so compare these values across heads rather than against that mean.")


def head_findings(results: Mapping[str, Any]) -> dict[str, str]:
    """The key sentences of one head, keyed by section."""
    return {
        "subspace": subspace_sentence(results["subspace_alignment"]),
        "self_suppression": self_suppression_sentence(results["ov_self_suppression"]),
        "spectrum": spectrum_sentence("effective QK circuit W~U~^⊤^ W~QK~ W~EE~^⊤^",
                                      results["spectra"]["effective_qk"]),
    }
