"""The head on real prompts (``prompts.json``): a section of each head page — the attention heatmap
and the final position's sources with their direct effects (one prompt at a time, chosen from a
menu in the HTML report, each prompt's data loaded when chosen: :mod:`report.prompt_data`; the
first prompt in the PDF), the effect on the most-attended token across prompts, and a table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts, prompt_data
from .. import formatting as fmt
from .. import tables as tb
from ..context import ReportContext
from ..escaping import Safe, markdown_text, markdown_token
from ..figures import Figure
from ..outputs import head_slug

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


def figure_slugs(label: str) -> dict[str, str]:
    return {name: head_slug(label, f"prompt-{name}") for name in ("summary", "attention", "final")}


def prompt_figures(ctx: ReportContext, label: str) -> dict[str, Figure]:
    """The summary across prompts and, for the first prompt only, the heatmap and the final position
    (the site loads the other prompts' data when they are chosen: :mod:`report.prompt_data`)."""
    found = head_records(ctx, label)
    if found is None:
        return {}
    results, h = found
    prompts, records = results["prompts"], h["records"]
    slugs = figure_slugs(label)
    first = charts.prompt_label(0, prompts[0]["text"])
    pattern = prompt_data.pattern_rows(results, records[0], len(prompts[0]["tokens"]))
    heat_rows = charts.attention_rows(0, prompts[0], pattern)
    final_rows = charts.final_position_rows(0, prompts[0], records[0])
    summary_rows = charts.prompt_summary_rows(prompts, records)
    longest = max(len(p["tokens"]) for p in prompts)
    n = len(prompts)
    shown = (f"The HTML report has a menu of all {n} prompts and loads each one's data when it is chosen; the "
             f"static exports and the CSV show prompt {first}")
    per_prompt = ("one labelled row per prompt" if n <= charts.SUMMARY_ROWS_MAX
                  else "one point per prompt, against the attention weight of that token")
    figs = {
        "summary": Figure(
            slugs["summary"], f"Head {label}: the most-attended token across prompts",
            f"Head {label}: for each prompt, the direct effect of the head's output at the final position on the "
            f"logit of the source token it attends to most (the beginning-of-sequence token excluded), "
            f"{per_prompt}; {share_text(h['summary'])}.",
            charts.prompt_summary_chart(summary_rows, label, share_text(h["summary"])), summary_rows),
        "attention": Figure(
            slugs["attention"], f"Head {label}: attention pattern on a prompt",
            f"Head {label}: attention weights on one prompt, query positions down, source positions across "
            f"(each position labelled with its token). {shown}.",
            charts.attention_heatmap_chart(heat_rows, label, charts.prompt_step(longest, 640, 15)), heat_rows),
        "final": Figure(
            slugs["final"], f"Head {label}: the final position on a prompt",
            f"Head {label}: at the final position of one prompt, the attention weight of every source position "
            f"(left) and the direct effect of the head's output on that position's token's logit (right; "
            f"negative: the head pushes the token down). {shown}.",
            charts.final_position_chart(final_rows, label, charts.prompt_step(longest, 900, 14)), final_rows),
    }
    return figs


def prompt_scripts(ctx: ReportContext, label: str) -> list[str]:
    """The site scripts the head page runs for its prompt menu (none without prompt records)."""
    return [prompt_data.PROMPTS_JS] if head_records(ctx, label) is not None else []


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
        rows, css_class="tokens", slug=head_slug(label, "prompts"))


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
    slugs = figure_slugs(label)
    return {
        "unavailable": None,
        "menu": prompt_data.menu_block(label, results["prompts"], f"fig-{slugs['attention']}", f"fig-{slugs['final']}"),
        "n": len(results["prompts"]),
        "source": results["source"],
        "share": Safe(markdown_text(share_text(s)[0].upper() + share_text(s)[1:])),
        "examples": Safe(", ".join(tokens)) if tokens else None,
        "exact": checks["direct_effects_exact"],
        "attn_error": fmt.num(checks["attn_out_max_relative_error"], 2),
        "logits_error": fmt.num(checks["logits_max_relative_error"], 2),
        "note": results["note"],
    }
