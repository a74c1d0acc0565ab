"""Published figures shown beside the measured ones — quoted, never computed, always labelled.

For GPT-2 small head 10.7, the copy-suppression paper (McDougall et al. 2023, arXiv:2310.04625)
publishes three figures, and the authors' notebook that printed them
(``transformer_lens/rs/callum2/ov_qk_circuits/section_41_42.ipynb``, commit 5e54b9d of
callummcdougall/SERI-MATS-2023-Streamlit-pages) prints the rest of each row's statistics. Both
compute, with W_EE = W_E + layer-0 attention on the token itself (b_V, b_O dropped) + MLP0's output
(the block-0 residual) and strict comparisons on 0-based ranks:

* OV (cell 6): rows of (W_EE·W_V)(W_O·W_U); a token's own logit among the 10 most negative of its
  row for 84.70% (paper), beyond the top 5% for 571 tokens, so 98.86% within (paper); rank 0 for
  57.26%, mean 0-based rank 116.82, median 0 (notebook);
* QK (cell 29): rows of (W_Uᵀ·W_Q)(W_Kᵀ·W_EEᵀ), raw queries and keys; a token's own key among the
  10 highest of its query row for 95.72% (paper: a top-10 share, not rank 1); rank 0 for 71.24%,
  mean 31.35, median 0 (notebook).

This report's ranks are 1-based, so the notebook's mean and median are quoted plus one. The figures
are shown only where the report's definitions are the paper's (:func:`definition_mismatch`).
``tests/integration/test_paper.py`` transcribes those cells and checks that our ranks equal theirs.

Definitions and sources: docs/methods.md#ov-self-suppression-and-qk-self-attention-the-rank-metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER = "McDougall et al. 2023 (arXiv:2310.04625)"
NOTEBOOK = "the authors' notebook (section_41_42.ipynb, commit 5e54b9d)"
#: the two sources, as the table columns name them
SOURCES = {"paper": f"paper ({PAPER})", "notebook": "authors' notebook (section_41_42, 5e54b9d)"}
#: names under which GPT-2 small is loaded (TransformerLens alias, hub ids)
GPT2_SMALL_NAMES = {"gpt2", "gpt2-small", "openai-community/gpt2"}
GPT2_SMALL_SHAPE = {"n_layers": 12, "n_heads": 12, "d_model": 768, "d_vocab": 50257}
#: (metric, statistic) → (source, the value as published), for GPT-2 small head 10.7; ranks 1-based
GPT2_SMALL_10_7: dict[tuple[str, str], tuple[str, str]] = {
    ("ov_self_suppression", "fraction_top10"): ("paper", "84.70%"),
    ("ov_self_suppression", "fraction_top5pct"): ("paper", "98.86%"),
    ("ov_self_suppression", "fraction_rank1"): ("notebook", "57.26%"),
    ("ov_self_suppression", "mean_rank"): ("notebook", "117.82"),
    ("ov_self_suppression", "median_rank"): ("notebook", "1"),
    ("qk_self_attention", "fraction_top10"): ("paper", "95.72%"),
    ("qk_self_attention", "fraction_rank1"): ("notebook", "71.24%"),
    ("qk_self_attention", "mean_rank"): ("notebook", "32.35"),
    ("qk_self_attention", "median_rank"): ("notebook", "1"),
}
#: the settings under which the published figures were computed (config path → value)
PAPER_SETTINGS = {
    ("analysis", "rank_embedding"): "residual",
    ("effective_embedding", "attention_bias"): False,
    ("analysis", "qk_normalization"): "none",
    ("processing", "fold_ln"): True,
    ("processing", "center_writing_weights"): True,
    ("processing", "center_unembed"): True,
}


def is_gpt2_small_10_7(model: Mapping[str, Any], provenance: Mapping[str, Any], label: str) -> bool:
    names = {str(model.get("name", "")).lower(), str(provenance.get("requested_name", "")).lower(),
             str(provenance.get("repo_id", "")).lower()}
    shape_ok = all(model.get(k) == v for k, v in GPT2_SMALL_SHAPE.items())
    return label == "10.7" and shape_ok and bool(names & GPT2_SMALL_NAMES)


def definition_mismatch(config: Mapping[str, Any]) -> str | None:
    """Why this report's rank metrics are not the published quantity (a setting that differs), or None."""
    for (section, key), value in PAPER_SETTINGS.items():
        got = config.get(section, {}).get(key)
        if got != value:
            shown = str(got).lower() if isinstance(got, bool) else got
            want = str(value).lower() if isinstance(value, bool) else value
            return f"{section}.{key} is {shown!r} here and {want!r} in the paper's code"
    return None


def paper_values(model: Mapping[str, Any], provenance: Mapping[str, Any], label: str,
                 config: Mapping[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    """The published figures for this head ({} unless it is GPT-2 small head 10.7 analysed with the
    paper's definitions)."""
    if is_gpt2_small_10_7(model, provenance, label) and definition_mismatch(config) is None:
        return dict(GPT2_SMALL_10_7)
    return {}
