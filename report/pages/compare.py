"""One page per pair of ``compare = [["A", "B"], ...]``: the two heads side by side — spectra on
shared axes, the rank metrics in one table, the overlap of their most-suppressed tokens (Jaccard
index and lists) and, with prompts, their behaviour prompt by prompt."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts
from .. import formatting as fmt
from .. import tables as tb
from ..context import Page, ReportContext
from ..escaping import Safe, markdown_text
from ..figures import Figure
from ..outputs import slug
from .prompts import cut, head_records, share_text

#: rows of the most-suppressed overlap table
OVERLAP_ROWS = 20


def compare_slug(a: str, b: str) -> str:
    return slug(f"compare-{a}-{b}")


def _rank_value(s: Mapping[str, Any], key: str) -> str:
    if not s.get("defined", True):
        return "undefined"
    v = s.get(key)
    return fmt.percent(v, 4) if key.startswith("fraction") else fmt.num(v, 5)


def metrics_table(a: Mapping[str, Any], b: Mapping[str, Any], slug_: str) -> tb.Table:
    la, lb = a["head"]["label"], b["head"]["label"]
    rows = []
    for metric, name in (("ov_self_suppression", "OV self-suppression"), ("qk_self_attention", "QK self-attention")):
        for key, text in (("fraction_rank1", "own entry ranked 1"), ("fraction_top10", "own entry in the top 10"),
                          ("fraction_top5pct", "own entry in the top 5%"), ("median_rank", "median rank")):
            rows.append([tb.text(f"{name}: {text}"), tb.number(_rank_value(a[metric], key)),
                         tb.number(_rank_value(b[metric], key))])
        rows.append([tb.text(f"{name}: effect supported"),
                     *(tb.text("yes" if h[metric].get("evidence", {}).get("supported") else "no") for h in (a, b))])
    for key, name in (("w_qk", "W_QK"), ("w_ov", "W_OV")):
        sa, sb = a["spectra"]["statistics"][key], b["spectra"]["statistics"][key]
        rows.append([tb.text(f"{name}: σ₁"), tb.number(fmt.num(sa["sigma1"], 4)), tb.number(fmt.num(sb["sigma1"], 4))])
        rows.append([tb.text(f"{name}: effective rank"), tb.number(f"{fmt.num(sa['effective_rank'])} / {sa['n']}"),
                     tb.number(f"{fmt.num(sb['effective_rank'])} / {sb['n']}")])
    return tb.Table(f"Heads {la} and {lb}: the rank metrics (the copy-suppression paper's) and the shape of "
                    f"their spectra.", ["statistic", f"head {la}", f"head {lb}"], rows, slug=f"{slug_}-metrics")


def overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any] | None:
    """Jaccard index of the two heads' most-suppressed token sets and the lists (None when a head's
    OV circuit is degenerate)."""
    ta, tb_ = a.get("top_suppressed"), b.get("top_suppressed")
    if not ta or not tb_:
        return None
    ids_a, ids_b = [t["id"] for t in ta["tokens"]], [t["id"] for t in tb_["tokens"]]
    both = set(ids_a) & set(ids_b)
    union = set(ids_a) | set(ids_b)
    return {"k": ta["k"], "jaccard": len(both) / len(union) if union else None, "n_shared": len(both),
            "shared": [t for t in ta["tokens"] if t["id"] in both],
            "only_a": [t for t in ta["tokens"] if t["id"] not in both],
            "only_b": [t for t in tb_["tokens"] if t["id"] not in both]}


def overlap_table(o: Mapping[str, Any], la: str, lb: str, slug_: str) -> tb.Table:
    cols = [o["shared"], o["only_a"], o["only_b"]]
    n = min(OVERLAP_ROWS, max(len(c) for c in cols))
    rows = [[tb.token(c[i]) if i < len(c) else tb.text("") for c in cols] for i in range(n)]
    return tb.Table(
        f"Heads {la} and {lb}: their {o['k']} most-suppressed tokens each (own OV entry lowest relative to its "
        f"row), {o['n_shared']} shared; Jaccard index {fmt.num(o['jaccard'])}. Each column in the order of "
        f"suppression (the shared ones in head {la}'s order), at most {OVERLAP_ROWS} rows.",
        ["both heads", f"only head {la}", f"only head {lb}"], rows, css_class="tokens", slug=f"{slug_}-overlap")


def prompt_table(ctx: ReportContext, la: str, lb: str, slug_: str) -> tb.Table | None:
    fa, fb = head_records(ctx, la), head_records(ctx, lb)
    if fa is None or fb is None:
        return None
    results = fa[0]
    rows = []
    for i, (p, ra, rb) in enumerate(zip(results["prompts"], fa[1]["records"], fb[1]["records"]), start=1):
        xa, xb = ra["largest"], rb["largest"]
        rows.append([tb.number(str(i)), tb.text(cut(p["text"], 50)),
                     tb.token(p["tokens"][xa["pos"]]), tb.number(fmt.num(xa["effect"])),
                     tb.token(p["tokens"][xb["pos"]]), tb.number(fmt.num(xb["effect"]))])
    return tb.Table(
        f"Heads {la} and {lb} on the same prompts: at the final position, each head's most-attended source token "
        f"and the direct effect of its output on that token's logit.",
        ["#", "prompt", f"{la}: token", f"{la}: effect", f"{lb}: token", f"{lb}: effect"], rows,
        css_class="tokens", slug=f"{slug_}-prompts")


def compare_page(ctx: ReportContext, la: str, lb: str) -> Page | None:
    heads = {h["results"]["head"]["label"]: h["results"] for h in ctx.heads}
    if la not in heads or lb not in heads:
        return None
    a, b = heads[la], heads[lb]
    page_slug = compare_slug(la, lb)
    rows = charts.compare_spectrum_rows([a, b])
    fig = Figure(
        f"{page_slug}-spectra", f"Heads {la} and {lb}: spectra",
        f"Singular values of heads {la} (vermillion, solid) and {lb} (blue, dashed), one panel per circuit; "
        f"in each panel the two heads share the axes.",
        charts.compare_spectra_chart(rows, [la, b["head"]["label"]]), rows)
    o = overlap(a, b)
    tables = {"metrics": metrics_table(a, b, page_slug),
              "overlap": overlap_table(o, la, lb, page_slug) if o else None,
              "prompts": prompt_table(ctx, la, lb, page_slug)}
    fa, fb = head_records(ctx, la), head_records(ctx, lb)
    prompt_sentence = None
    if fa is not None and fb is not None:
        prompt_sentence = Safe(markdown_text(f"Head {la}: {share_text(fa[1]['summary'])}; head {lb}: "
                                             f"{share_text(fb[1]['summary'])}."))
    return ctx.page(page_slug, f"Heads {la} and {lb} compared", f"{la} vs {lb}", "compare.qmd.j2",
                    a=a, b=b, la=la, lb=lb, figure_spectra=fig, tables=tables, overlap=o,
                    prompt_sentence=prompt_sentence)


def compare_pages(ctx: ReportContext) -> list[Page]:
    pairs = ctx.model["config"].get("compare") or []
    return [p for p in (compare_page(ctx, a, b) for a, b in pairs) if p is not None]
