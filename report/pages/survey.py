"""The survey page (``survey.json``): the ranked table, which heads beat chance, and a layer × head
heatmap of every survey statistic.

Reads only ``survey.json``: :mod:`analysis.survey` defines every statistic (the artifact lists them
under ``results.statistics`` with a title and a description, which is what is charted here). No page
when the artifacts folder has no ``survey.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts
from .. import formatting as fmt
from .. import tables as tb
from ..context import Page, ReportContext
from ..figures import Figure
from ..outputs import slug

#: How many heads the ranked table lists.
TABLE_LENGTH = 15
#: Statistics drawn on a log colour scale (ranks span 1 … d_vocab).
LOG_SCALE = ("median_rank",)


def _pct(summary: Mapping[str, Any], key: str) -> str:
    return fmt.percent(summary.get(key), 3) if summary.get("defined", True) else "undefined"


def ranked_table(survey: Mapping[str, Any], with_pages: set[str], n: int = TABLE_LENGTH) -> tb.Table:
    rows_by_label = {r["label"]: r for r in survey["heads"]}
    rows = []
    for label in survey["ranking"]["order"][:n]:
        r = rows_by_label[label]
        ov, qk = r["ov_self_suppression"], r["qk_self_attention"]
        rows.append([
            tb.number(str(r["rank"])), tb.code(label), tb.number(fmt.num(r["copy_suppression_score"])),
            tb.text("yes" if r["beats_chance"] else "no"),
            tb.number(_pct(ov, "fraction_top10")), tb.number(_pct(qk, "fraction_top10")),
            tb.number(fmt.num(ov.get("median_rank"))), tb.number(fmt.num(qk.get("median_rank"))),
            tb.number(fmt.num(r["subspace"]["median_ratio"])),
            tb.text("yes" if label in with_pages else "—"),
        ])
    chance = survey["heads"][0]["ov_self_suppression"]["chance"]["fraction_top10"]
    return tb.Table(
        f"The {len(rows)} highest-scoring heads (score = √(e_OV · e_QK), the chance-normalised top-10 excesses; "
        f"chance top-10 share {fmt.percent(chance, 2)}).",
        ["rank", "head", "score", "beats chance", "OV top 10", "QK top 10", "OV median rank", "QK median rank",
         "names/generic", "own page"], rows, slug="survey-ranking")


def survey_figures(survey: Mapping[str, Any]) -> list[Figure]:
    """One layer × head heatmap per survey statistic, in the order of ``results.statistics``."""
    m = survey["model"]
    figs = []
    for stat in survey["statistics"]:
        key = stat["key"]
        rows = charts.heatmap_rows(survey, key)
        log = key.endswith(LOG_SCALE)
        figs.append(Figure(
            "survey-" + slug(key.replace(".", "-").replace("_", "-")), f"Survey: {stat['title']}",
            f"{stat['title']} of every head ({m['n_layers']} layers × {m['n_heads']} heads): "
            f"{stat['description']}." + (" Log colour scale." if log else "")
            + " Grey: undefined (a degenerate circuit). Hover a cell for the exact value.",
            charts.heatmap_chart(rows, stat["title"], stat["description"], log, m["n_layers"], m["n_heads"]), rows))
    return figs


def survey_pages(ctx: ReportContext) -> list[Page]:
    """The survey page, or none when there is no ``survey.json``."""
    artifact = ctx.survey
    if artifact is None:
        return []
    survey = artifact["results"]
    with_pages = {h["results"]["head"]["label"] for h in ctx.heads}
    table = ranked_table(survey, with_pages)
    figs = survey_figures(survey)
    order = survey["ranking"]["order"]
    beating = survey["ranking"]["beats_chance"]
    linked = [label for label in order if label in with_pages]
    undefined = [r["label"] for r in survey["heads"] if r["rank"] is None]
    return [ctx.page(
        "survey", "Survey of all heads", "Survey", "survey.qmd.j2",
        survey=survey, model=survey["model"], settings=survey["settings"],
        ranking_table=table, figures=figs, linked=linked, beating=beating, undefined=undefined,
        rows={r["label"]: r for r in survey["heads"]}, provenance=artifact["provenance"],
    )]
