"""Interpretation sentences, formatted from the numbers and verdicts in the artifacts.

No statistic is computed here: every number and every "supported / not supported" verdict comes from
the analysis (:mod:`analysis.diagonal`'s evidence rule, :mod:`analysis.alignment`'s comparison,
:mod:`analysis.spectra`'s statistics). A sentence claims an effect only when the artifact's verdict
supports it; otherwise it says that the numbers do not show it. A random model must read as a
random model, and a degenerate head as undefined.

Every sentence is Markdown (:class:`report.escaping.Safe`): tokens through
:func:`report.escaping.markdown_token`, artifact text through :func:`report.escaping.markdown_text`,
numbers through :mod:`report.formatting`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import formatting as fmt
from .escaping import Safe, markdown_text, markdown_token

#: σ₁/σ₂ at or above which a spectrum is described as dominated by its first direction.
DOMINANCE_RATIO = 2.0
#: tokens named in a sentence that lists top tokens
TOKENS_IN_SENTENCE = 3


def spectrum_sentence(label_md: str, stats: Mapping[str, Any]) -> Safe:
    """Whether one direction dominates a circuit, with σ₁/σ₂, σ₁'s energy share and the effective rank."""
    numbers = (f"σ₁/σ₂ = {fmt.num(stats['ratio12'])}; σ₁ carries {fmt.percent(stats['energy1'], 4)} of the "
               f"squared Frobenius norm; effective rank {fmt.num(stats['effective_rank'])} of {stats['n']}")
    if stats["ratio12"] is not None and stats["ratio12"] >= DOMINANCE_RATIO:
        return Safe(f"The {label_md} is dominated by its first singular direction ({numbers}). A dominant "
                    f"direction can also come from a component that all tokens share (such as a mean "
                    f"embedding direction): its top tokens show which.")
    return Safe(f"No single direction dominates the {label_md} ({numbers}).")


def subspace_sentence(subspace: Mapping[str, Any]) -> Safe:
    """Names vs generic words: the median ratio with its CI and Mann-Whitney p, hedged."""
    comp = subspace["comparison"]
    groups = subspace["groups"]
    baseline = subspace["random_baseline"]
    if not comp.get("available"):
        return Safe(f"The names-vs-generic comparison is not available: "
                    f"{markdown_text(str(comp.get('reason', 'too few words in a list')))}.")
    r, p = comp.get("median_ratio"), comp["mann_whitney_p"]
    lo, hi = comp.get("median_ratio_ci95") or [None, None]
    names_med = groups["names"]["summary"].get("median")
    generic_med = groups["generic"]["summary"].get("median")
    stats_text = (f"median ratio; 95% CI {fmt.ci([lo, hi])}; Mann-Whitney {fmt.p_value(p)}; "
                  f"AUC {fmt.num(comp.get('auc'), 2)}")
    medians = (f"Median scores: names {fmt.num(names_med)}, generic words {fmt.num(generic_med)}; "
               f"a random direction scores {fmt.num(baseline)}.")
    if r is None:
        return Safe(f"The generic words' median score is 0, so no ratio can be formed ({stats_text}). {medians}")
    evidence = comp.get("evidence") or {}
    rule = f" The rule for a claim: {markdown_text(evidence['rule'])}." if evidence.get("rule") else ""
    if evidence.get("direction") == "higher":
        return Safe(f"**Names score {fmt.num(r)}× the generic words** ({stats_text}): names' unembeddings "
                    f"lie further inside the head's query-side QK subspace than generic words do. {medians}{rule}")
    if evidence.get("direction") == "lower":
        return Safe(f"**Names score lower than generic words**, {fmt.num(r)}× ({stats_text}): this head's "
                    f"query-side QK subspace does not prefer names. {medians}{rule}")
    why = markdown_text(evidence.get("reason", "no effect-size verdict in the artifact"))
    return Safe(f"No claim of a names-vs-generic difference: names score {fmt.num(r)}× the generic words "
                f"({stats_text}), but {why}. {medians}{rule}")


#: how each rank metric is described: (what is ranked, rank 1 means, the claim when supported)
RANK_WORDING = {
    "ov": ("a token's own logit in the head's direct effect when it attends to that token",
           "the most suppressed", "The head suppresses the token it attends to"),
    "qk": ("a token's own key for a query that predicts it",
           "the most attended", "The head attends to the token being predicted"),
}


def fraction_text(summary: Mapping[str, Any], key: str) -> str:
    """``84.7%`` (with ``95% CI …`` in sampled mode) and its chance level."""
    ci = summary.get(f"{key}_ci95")
    ci_text = f", 95% CI {fmt.ci(ci, fmt=fmt.percent)}" if ci else ""
    return f"{fmt.percent(summary[key], 3)}{ci_text}; chance {fmt.percent(summary['chance'][key], 2)}"


def rank_text(rank: float) -> str:
    """A rank as it is, never rounded: ``23,506``, or ``23,506.5`` for the median of an even count."""
    return fmt.integer(int(rank)) if float(rank).is_integer() else f"{rank:,.1f}"


def rank_sentence(summary: Mapping[str, Any], kind: str) -> Safe:
    """The rank metric's headline: rank 1 / top 10 / top 5% fractions against chance, the median
    rank, and the claim only when the artifact's evidence supports it."""
    what, best, claim = RANK_WORDING[kind]
    if not summary.get("defined", True):
        return Safe(f"Undefined for this head: {markdown_text(str(summary.get('reason', 'degenerate circuit')))}. "
                    "No claim is made about it.")
    n = summary["n_tokens"]
    scope = (f"all {fmt.integer(n)} tokens" if summary["mode"] == "exact"
             else f"{fmt.integer(summary['n_ranked'])} tokens sampled from {fmt.integer(n)}")
    numbers = (f"over {scope}, {what} is ranked 1 ({best}) for {fraction_text(summary, 'fraction_rank1')}, in "
               f"the top 10 for {fraction_text(summary, 'fraction_top10')}, and in the top 5% for "
               f"{fraction_text(summary, 'fraction_top5pct')}; median rank {rank_text(summary['median_rank'])} "
               f"of {fmt.integer(n)} (chance {rank_text(summary['chance']['median_rank'])})")
    evidence = summary["evidence"]
    if evidence["supported"]:
        return Safe(f"**{claim}**: {numbers}.")
    return Safe(f"The numbers do not show that {claim[0].lower() + claim[1:]}: {numbers}. "
                f"({markdown_text(evidence['reason'])}.)")


def cosine_sentence(squared_cosine: Mapping[str, Any], d_model: int, d_vocab: int) -> Safe:
    """The unembeddings best aligned with W_QK's first left singular vector, with a chance reference."""
    top = squared_cosine["w_u"][:TOKENS_IN_SENTENCE]
    if not top:
        return Safe("No token alignment was computed.")
    listed = ", ".join(f"{markdown_token(t)} ({fmt.num(t['value'])})" for t in top)
    return Safe(f"Unembeddings best aligned with W~QK~'s first left singular vector (cos²): {listed}. A "
                f"random direction has mean cos² 1/d~model~ = {fmt.num(1 / d_model)}; the largest of "
                f"{fmt.integer(d_vocab)} tokens is far above that by chance "
                f"alone, so compare these values across heads rather than against that mean.")


def head_findings(results: Mapping[str, Any]) -> dict[str, Safe]:
    """The key sentences of one head, keyed by section."""
    stats = results["spectra"]["statistics"]
    return {
        "subspace": subspace_sentence(results["subspace_alignment"]),
        "self_suppression": rank_sentence(results["ov_self_suppression"], "ov"),
        "self_attention": rank_sentence(results["qk_self_attention"], "qk"),
        "spectrum": spectrum_sentence("effective QK circuit W~U~^⊤^ W~QK~ W~EE~^⊤^", stats["effective_qk"]),
        "full_spectrum": spectrum_sentence("full QK circuit W~E~ W~QK~ W~E~^⊤^", stats["full_qk"]),
    }
