"""Published figures shown beside the measured ones — quoted, never computed, always labelled.

The copy-suppression paper (McDougall et al. 2023, arXiv:2310.04625) reports for GPT-2 small head
10.7: the OV circuit W_EE·W_OV·W_U puts a token's own logit among the 10 most negative of its row
for 84.70% of tokens and in the bottom 5% for 98.86%; the QK circuit (query side W_U, key side W_EE,
biases dropped, each side normalised as the layer norm would) ranks a token's own key first for
95.72% of tokens. A GPT-2 small 10.7 report shows these beside its own numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PAPER = "McDougall et al. 2023 (arXiv:2310.04625)"
#: names under which GPT-2 small is loaded (TransformerLens alias, hub ids)
GPT2_SMALL_NAMES = {"gpt2", "gpt2-small", "openai-community/gpt2"}
GPT2_SMALL_SHAPE = {"n_layers": 12, "n_heads": 12, "d_model": 768, "d_vocab": 50257}
#: (metric, fraction key) → the paper's value for GPT-2 small 10.7
GPT2_SMALL_10_7 = {
    ("ov_self_suppression", "fraction_top10"): 0.8470,
    ("ov_self_suppression", "fraction_top5pct"): 0.9886,
    ("qk_self_attention", "fraction_rank1"): 0.9572,
}


def paper_values(model: Mapping[str, Any], provenance: Mapping[str, Any], label: str) -> dict[tuple[str, str], float]:
    """The paper's figures for this head, or {} unless it is GPT-2 small head 10.7."""
    names = {str(model.get("name", "")).lower(), str(provenance.get("requested_name", "")).lower(),
             str(provenance.get("repo_id", "")).lower()}
    shape_ok = all(model.get(k) == v for k, v in GPT2_SMALL_SHAPE.items())
    if label == "10.7" and shape_ok and names & GPT2_SMALL_NAMES:
        return dict(GPT2_SMALL_10_7)
    return {}
