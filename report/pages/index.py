"""The overview page: the model, its notes, and each head's key findings."""

from __future__ import annotations

from .. import findings
from .. import formatting as fmt
from .. import tables as tb
from ..context import Page, ReportContext
from ..outputs import head_slug


def model_table(ctx: ReportContext) -> tb.Table:
    m = ctx.model["results"]["model"]
    rows = [[tb.text(k), v] for k, v in (
        ("model", tb.code(m["name"])), ("architecture", tb.text(m.get("architecture") or "n/a")),
        ("layers × heads", tb.number(f"{m['n_layers']} × {m['n_heads']}")),
        ("key/value heads", tb.number(str(m["n_kv_heads"]))),
        ("d_model / d_head", tb.number(f"{m['d_model']} / {m['d_head']}")),
        ("vocabulary", tb.number(fmt.integer(m["d_vocab"]))),
        ("normalisation / positions", tb.text(f"{m['normalization']} / {m['positional']}"
                                              + (" / QK-norm" if m.get("qk_norm") else ""))),
    )]
    return tb.Table("The model analysed.", ["property", "value"], rows, slug="model")


def index_page(ctx: ReportContext) -> list[Page]:
    table = model_table(ctx)
    heads = []
    for h in ctx.heads:
        r = h["results"]
        heads.append({"label": r["head"]["label"], "findings": findings.head_findings(r),
                      "slug": head_slug(r["head"]["label"])})
    return [ctx.page(
        "index", "Overview", "Overview", "index.qmd.j2", model=ctx.model["results"]["model"], heads=heads,
        model_table=table, provenance=ctx.model["provenance"], config=ctx.model["config"],
        has_survey=ctx.survey is not None,
    )]
