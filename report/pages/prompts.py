"""The head on real prompts (``prompts.json``): a section of each head page — the attention heatmap
and the final position's sources with their direct effects (one prompt at a time, chosen from a
menu in the HTML report), the effect on the most-attended token across prompts, and a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts
from .. import formatting as fmt
from .. import tables as tb
from ..context import ReportContext
from ..escaping import Safe, markdown_text, markdown_token
from ..figures import Figure
from ..outputs import slug

#: a prompt's text in a table cell is cut to this many characters
PROMPT_CELL = 70


def head_records(ctx: ReportContext, label: str) -> tuple[Mapping[str, Any], Mapping[str, Any]] | None:
    """(the prompts artifact's results, this head's entry), or None when there is none."""
    doc = ctx.artifacts.get("prompts")
    if doc is None or label not in doc["results"]["heads"]:
        return None
    return doc["results"], doc["results"]["heads"][label]


def share_text(summary: Mapping[str, Any]) -> str:
    n, k = summary["n_prompts"], summary["n_negative"]
    return (f"on {k} of {n} prompts ({fmt.percent(summary['share_negative'], 3)}) the head lowers the logit of "
            "the token it attends to most")


def prompt_figures(ctx: ReportContext, label: str) -> dict[str, Figure]:
    found = head_records(ctx, label)
    if found is None:
        return {}
    results, h = found
    prompts, records = results["prompts"], h["records"]
    key = slug(label.replace(".", "-"))
    first = charts.prompt_label(0, prompts[0]["text"])
    heat_rows = charts.attention_rows(prompts, records)
    final_rows = charts.final_position_rows(prompts, records)
    summary_rows = charts.prompt_summary_rows(prompts, records)
    param = f"prompt_{key.replace('-', '_')}"
    figs = {
        "summary": Figure(
            f"head-{key}-prompt-summary", f"Head {label}: the most-attended token across prompts",
            f"Head {label}: for each prompt, the direct effect of the head's output at the final position on the "
            f"logit of the source token it attends to most (the beginning-of-sequence token excluded); "
            f"{share_text(h['summary'])}.",
            charts.prompt_summary_chart(summary_rows, label, share_text(h["summary"])), summary_rows),
        "attention": Figure(
            f"head-{key}-prompt-attention", f"Head {label}: attention pattern on a prompt",
            f"Head {label}: attention weights on one prompt, query positions down, source positions across "
            f"(each position labelled with its token). The HTML report has a menu of all {len(prompts)} "
            f"prompts; the static exports show prompt {first}.",
            charts.attention_heatmap_chart(heat_rows, prompts, label, param + "_a"), heat_rows),
        "final": Figure(
            f"head-{key}-prompt-final", f"Head {label}: the final position on a prompt",
            f"Head {label}: at the final position of one prompt, the attention weight of every source position "
            f"(left) and the direct effect of the head's output on that position's token's logit (right; "
            f"negative: the head pushes the token down). The static exports show prompt {first}.",
            charts.final_position_chart(final_rows, prompts, label, param + "_f"), final_rows),
    }
    for f in figs.values():
        ctx.number_figure(f)
    return figs


def cut(text: str, width: int = PROMPT_CELL) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"


def prompt_table(ctx: ReportContext, label: str) -> tb.Table | None:
    found = head_records(ctx, label)
    if found is None:
        return None
    results, h = found
    rows = []
    for i, (p, rec) in enumerate(zip(results["prompts"], h["records"]), start=1):
        big, top = rec["largest"], rec["top_prediction"]
        rows.append([tb.number(str(i)), tb.text(cut(p["text"])), tb.token(p["tokens"][big["pos"]]),
                     tb.number(fmt.num(big["weight"])), tb.number(fmt.num(big["effect"])),
                     tb.token(top),
                     tb.number(fmt.num(top["effect"]))])
    return tb.Table(
        f"Head {label} on {len(rows)} prompts: at the final position, the most-attended source token (the "
        f"beginning-of-sequence token excluded), its attention weight and the direct effect of the head on its "
        f"logit; the model's top prediction and the head's direct effect on it.",
        ["#", "prompt", "most-attended token", "attention", "effect on its logit", "top prediction", "effect on it"],
        rows, css_class="tokens", slug=f"head-{label.replace('.', '-')}-prompts")


def prompt_context(ctx: ReportContext, label: str) -> dict[str, Any] | None:
    """The template's values for the prompts section (None: no prompts artifact)."""
    doc = ctx.artifacts.get("prompts")
    if doc is not None and not doc["results"]["heads"]:
        return {"unavailable": doc["results"]["note"], "source": doc["results"]["source"]}
    found = head_records(ctx, label)
    if found is None:
        return None
    results, h = found
    checks = results["checks"]
    s = h["summary"]
    tokens = [markdown_token(p["tokens"][rec["largest"]["pos"]])
              for p, rec in zip(results["prompts"], h["records"]) if rec["largest"]["effect"] < 0][:5]
    return {
        "unavailable": None,
        "n": len(results["prompts"]),
        "source": results["source"],
        "share": Safe(markdown_text(share_text(s)[0].upper() + share_text(s)[1:])),
        "examples": Safe(", ".join(tokens)) if tokens else None,
        "exact": checks["direct_effects_exact"],
        "attn_error": fmt.num(checks["attn_out_max_relative_error"], 2),
        "logits_error": fmt.num(checks["logits_max_relative_error"], 2),
        "note": results["note"],
    }
