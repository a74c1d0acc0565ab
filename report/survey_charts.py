"""The survey page: layer × head heatmaps of every survey statistic and the ranked table.

Reads only ``survey.json`` (:mod:`analysis.survey` defines every statistic; the artifact lists them
under ``results.statistics`` with a title and a description, which is what is charted here). Hooked
into the report through :data:`report.pages.PAGE_BUILDERS` (see :mod:`report.render`): the builder
:func:`survey_pages` returns no page when the artifacts folder has no ``survey.json``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import altair as alt

from . import formatting as fmt
from . import tables as tb
from .charts import WIDTH, _data
from .figures import Figure

#: How many heads the ranked table lists.
TABLE_LENGTH = 15
#: Statistics drawn on a log colour scale (ranks span 1 … d_vocab).
LOG_SCALE = ("median_rank",)


def lookup(record: Mapping[str, Any], key: str) -> Any:
    """``record["a"]["b"]`` for ``key = "a.b"`` (None if absent)."""
    value: Any = record
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def heatmap_rows(survey: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """One row per head: its position, the statistic's exact value, its rank and copy-suppression score."""
    rows = []
    for r in survey["heads"]:
        value = lookup(r, key)
        rows.append({
            "label": r["label"], "layer": r["layer"], "head": r["head"], "kv_head": r["kv_head"],
            "value": value if isinstance(value, (int, float)) and math.isfinite(value) else None,
            "rank": r["rank"], "copy_suppression_score": r["copy_suppression_score"],
        })
    return rows


def heatmap_chart(rows: list[dict[str, Any]], title: str, description: str, log: bool,
                  n_layers: int, n_heads: int) -> alt.TopLevelMixin:
    """Layers down, heads across; colour = the statistic; the tooltip shows the exact value."""
    cell = max(12, min(34, WIDTH // max(n_heads, 1)))
    scale = alt.Scale(scheme="viridis", type="log") if log else alt.Scale(scheme="viridis")
    base = alt.Chart(_data(rows)).encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
    )
    rect = base.mark_rect(stroke="white", strokeWidth=0.5).encode(
        color=alt.Color("value:Q", title=None, scale=scale, legend=alt.Legend(orient="right", gradientLength=160)),
        tooltip=[alt.Tooltip("label:N", title="head"), alt.Tooltip("value:Q", title=title),
                 alt.Tooltip("rank:Q", title="copy-suppression rank"),
                 alt.Tooltip("copy_suppression_score:Q", title="copy-suppression score"),
                 alt.Tooltip("kv_head:Q", title="key/value head")],
    )
    missing = base.mark_rect(color="#dddddd").encode(
        tooltip=[alt.Tooltip("label:N", title="head")]).transform_filter("datum.value === null")
    return (missing + rect).properties(
        width=cell * n_heads, height=max(12, min(22, 480 // max(n_layers, 1))) * n_layers,
        title=alt.Title(title, subtitle=description))


def ranked_table(survey: Mapping[str, Any], with_pages: set[str], n: int = TABLE_LENGTH) -> tb.Table:
    rows_by_label = {r["label"]: r for r in survey["heads"]}
    rows = []
    for label in survey["ranking"]["order"][:n]:
        r = rows_by_label[label]
        ov, qk = r["ov_self_suppression"], r["qk_self_attention"]
        rows.append([
            tb.number(str(r["rank"])), tb.code(label), tb.number(fmt.num(r["copy_suppression_score"])),
            tb.number(fmt.percent(ov["fraction_rank1"], 3)), tb.number(fmt.percent(qk["fraction_rank1"], 3)),
            tb.number(fmt.num(ov["median_rank"])), tb.number(fmt.num(qk["median_rank"])),
            tb.number(fmt.num(r["subspace"]["median_ratio"])),
            tb.text("yes" if label in with_pages else "—"),
        ])
    return tb.Table(
        f"The {len(rows)} most copy-suppression-like heads (score = √(OV rank-1 fraction × QK rank-1 fraction)).",
        ["rank", "head", "score", "OV rank 1", "QK rank 1", "OV median rank", "QK median rank",
         "names/generic", "own page"], rows)


def survey_figures(ctx, survey: Mapping[str, Any]) -> list[Figure]:
    m = survey["model"]
    figs = []
    for stat in survey["statistics"]:
        key = stat["key"]
        rows = heatmap_rows(survey, key)
        log = key.endswith(LOG_SCALE)
        figs.append(ctx.number_figure(Figure(
            "survey-" + key.replace(".", "-").replace("_", "-"), f"Survey: {stat['title']}",
            f"{stat['title']} of every head ({m['n_layers']} layers × {m['n_heads']} heads): "
            f"{stat['description']}." + (" Log colour scale." if log else "")
            + " Hover a cell for the exact value.",
            heatmap_chart(rows, stat["title"], stat["description"], log, m["n_layers"], m["n_heads"]), rows)))
    return figs


def survey_pages(ctx) -> list:
    """The survey page, or none when there is no ``survey.json``."""
    from .pages import Page, render_template

    artifact = ctx.artifacts.get("survey")
    if artifact is None:
        return []
    survey = artifact["results"]
    with_pages = {h["results"]["head"]["label"] for h in ctx.heads}
    table = ctx.number_table(ranked_table(survey, with_pages))
    figs = survey_figures(ctx, survey)
    order = survey["ranking"]["order"]
    linked = [label for label in order if label in with_pages]
    markdown = render_template(
        ctx, "survey.qmd.j2", survey=survey, model=survey["model"], settings=survey["settings"],
        ranking_table=table, figures=figs, linked=linked, top=order[:5],
        rows={r["label"]: r for r in survey["heads"]}, provenance=artifact["provenance"],
    )
    return [Page("survey", "Survey of all heads", "Survey", markdown, figs)]
