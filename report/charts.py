"""One function per chart: artifact data in, ``alt.Chart`` out. No tensors, no files.

Each chart has two halves:

* a ``*_rows`` function that flattens one head artifact's ``results`` into tidy rows (plain dicts).
  The same rows are the chart's inline data *and* the figure's CSV, so what is plotted is exactly
  what a reader downloads. Token strings enter rows only in their visible form
  (:func:`report.escaping.visible_token`), so axis labels, tooltips and CSV cells show ``␣`` and
  ``\\n`` instead of invisible or markup characters; Vega draws them as SVG text, never as HTML.
* a ``*_chart`` function that turns those rows into an Altair chart.

:func:`themed` gives every chart the same look: Okabe–Ito colours (distinguishable with the common
colour-vision deficiencies), 12–14 px labels, no chart border.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import altair as alt

from .escaping import visible_token

# Okabe & Ito (2008), "Color Universal Design": safe for protan-, deutan- and tritanopia.
OKABE_ITO = {
    "blue": "#0072B2", "orange": "#E69F00", "green": "#009E73", "vermillion": "#D55E00",
    "purple": "#CC79A7", "sky": "#56B4E9", "yellow": "#F0E442", "black": "#000000",
}
POSITIVE, NEGATIVE = OKABE_ITO["blue"], OKABE_ITO["vermillion"]
FONT = "DejaVu Sans, Liberation Sans, Helvetica, Arial, sans-serif"

#: The QK circuits whose spectra are charted, in the paper's notation (artifact key → label).
CIRCUITS = {
    "w_qk": "W_QK = W_Q W_Kᵀ",
    "full_qk": "full: W_E W_QK W_Eᵀ",
    "effective_qk": "effective: W_Uᵀ W_QK W_EEᵀ",
}
CIRCUIT_COLOURS = [OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["green"]]
#: Token sets ranked by squared cosine with W_QK's first singular vectors (artifact key → label).
COSINE_SETS = {
    "w_u": "W_U (unembedding) · left vector u₁",
    "w_ee": "W_EE (effective embedding) · right vector v₁",
    "w_e": "W_E (raw embedding) · right vector v₁",
}
GROUP_LABELS = {"names": "names", "generic": "generic words"}
GROUP_COLOURS = [OKABE_ITO["vermillion"], OKABE_ITO["blue"]]

WIDTH = 560


def themed(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    """The report's single theme, applied at the top level of a chart."""
    return (
        chart.configure(font=FONT, padding=8)
        .configure_view(stroke=None)
        .configure_title(fontSize=14, fontWeight="bold", anchor="start", subtitleFontSize=12,
                         subtitleColor="#444444", offset=10)
        .configure_axis(labelFontSize=11, titleFontSize=12, titleFontWeight="normal",
                        gridColor="#e6e6e6", domainColor="#888888", tickColor="#888888")
        .configure_legend(labelFontSize=11, titleFontSize=12, orient="bottom", labelLimit=360)
        .configure_header(labelFontSize=12, titleFontSize=12, labelFontWeight="bold")
        .configure_range(category=list(OKABE_ITO.values()))
    )


def _data(rows: list[dict[str, Any]]) -> alt.Data:
    return alt.Data(values=rows)


# --- spectra -----------------------------------------------------------------------------------

def spectrum_rows(spectra: Mapping[str, list[float]]) -> list[dict[str, Any]]:
    """One row per singular value of the three QK circuits: σ_i and σ_i / σ_1."""
    rows = []
    for key, label in CIRCUITS.items():
        values = spectra[key]
        top = values[0] if values and values[0] else None
        for i, s in enumerate(values, start=1):
            rows.append({"circuit": label, "index": i, "sigma": s,
                         "sigma_normalised": (s / top) if top else None})
    return rows


def spectra_chart(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    """The three singular-value spectra, one panel each (their scales differ by orders of magnitude)."""
    base = alt.Chart(_data(rows)).mark_line(point=alt.OverlayMarkDef(size=28), strokeWidth=2).encode(
        x=alt.X("index:Q", title="index i", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("sigma:Q", title="singular value σᵢ"),
        color=alt.Color("circuit:N", scale=alt.Scale(domain=list(CIRCUITS.values()), range=CIRCUIT_COLOURS),
                        legend=None),
        tooltip=[alt.Tooltip("circuit:N"), alt.Tooltip("index:Q", title="i"),
                 alt.Tooltip("sigma:Q", title="σᵢ", format=".4g"),
                 alt.Tooltip("sigma_normalised:Q", title="σᵢ/σ₁", format=".3f")],
    ).properties(width=WIDTH // 3 - 20, height=180)
    return base.facet(
        column=alt.Column("circuit:N", sort=list(CIRCUITS.values()), title=None),
    ).resolve_scale(y="independent").properties(title="Singular-value spectra of the QK circuits")


def normalised_spectra_chart(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    """The three spectra divided by their σ₁ on one axis, shown twice: linear and log y."""
    def view(log: bool) -> alt.Chart:
        return alt.Chart(_data(rows)).mark_line(point=alt.OverlayMarkDef(size=28), strokeWidth=2).encode(
            x=alt.X("index:Q", title="index i", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("sigma_normalised:Q", title="σᵢ / σ₁" + (" (log scale)" if log else ""),
                    scale=alt.Scale(type="log") if log else alt.Scale(domain=[0, 1])),
            color=alt.Color("circuit:N", title="circuit",
                            scale=alt.Scale(domain=list(CIRCUITS.values()), range=CIRCUIT_COLOURS)),
            strokeDash=alt.StrokeDash("circuit:N", sort=list(CIRCUITS.values()), legend=None),
            tooltip=[alt.Tooltip("circuit:N"), alt.Tooltip("index:Q", title="i"),
                     alt.Tooltip("sigma:Q", title="σᵢ", format=".4g"),
                     alt.Tooltip("sigma_normalised:Q", title="σᵢ/σ₁", format=".3g")],
        ).properties(width=WIDTH // 2 - 20, height=200, title="log y" if log else "linear y")
    # a log scale cannot show zeros: drop exact zeros there (they are listed in the CSV)
    return alt.hconcat(view(False), view(True).transform_filter("datum.sigma_normalised > 0")).properties(
        title="Spectra normalised to σ₁: how fast each circuit's singular values decay")


# --- singular directions -----------------------------------------------------------------------

def direction_rows(directions: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (direction, side, token): the signed entry of that token in u_i or v_i."""
    rows = []
    for d in directions:
        for side in ("query", "key"):
            for rank, tok in enumerate(d[side], start=1):
                rows.append({
                    "direction": f"direction {d['index'] + 1} (σ = {d['sigma']:.4g})",
                    "direction_index": d["index"] + 1, "sigma": d["sigma"],
                    "side": f"{side} side ({'u' if side == 'query' else 'v'}{d['index'] + 1})",
                    "rank": rank, "token": visible_token(tok), "token_id": tok["id"],
                    "value": tok["value"], "sign": "positive" if tok["value"] >= 0 else "negative",
                    "label": f"{visible_token(tok)}  #{tok['id']}",
                })
    return rows


def singular_direction_chart(rows: list[dict[str, Any]], title: str) -> alt.TopLevelMixin:
    """Top tokens of each singular direction as signed horizontal bars: one row per direction, the
    query side (u_i) left and the key side (v_i) right.

    The y field is ``label`` (visible token + id), unique within a panel, so two tokens never merge."""
    reach = max((abs(r["value"]) for r in rows), default=1.0) or 1.0
    x_scale = alt.Scale(domain=[-reach, reach], nice=True)  # symmetric: same zero line in every panel
    panels = []
    for index in sorted({r["direction_index"] for r in rows}):
        pair = []
        for side in ("query", "key"):
            panel_rows = [r for r in rows if r["direction_index"] == index and r["side"].startswith(side)]
            if not panel_rows:
                continue
            pair.append(alt.Chart(_data(panel_rows)).mark_bar().encode(
                x=alt.X("value:Q", title="entry in the singular vector", scale=x_scale),
                y=alt.Y("label:N", sort=alt.EncodingSortField("rank", order="ascending"), title=None,
                        axis=alt.Axis(labelFont="DejaVu Sans Mono, monospace", labelLimit=220)),
                color=alt.Color("sign:N", title="sign of the entry",
                                scale=alt.Scale(domain=["positive", "negative"], range=[POSITIVE, NEGATIVE])),
                tooltip=[alt.Tooltip("token:N", title="token"), alt.Tooltip("token_id:Q", title="id"),
                         alt.Tooltip("value:Q", title="value", format=".4g"), alt.Tooltip("direction:N"),
                         alt.Tooltip("side:N")],
            ).properties(width=WIDTH // 2 - 110, height=alt.Step(14), title=alt.Title(
                f"{panel_rows[0]['side']}", subtitle=panel_rows[0]["direction"], fontSize=12)))
        panels.append(alt.hconcat(*pair, spacing=24))
    return alt.vconcat(*panels, spacing=18).properties(title=title)


# --- squared cosine ----------------------------------------------------------------------------

def cosine_rows(squared_cosine: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (token set, token): cos² with W_QK's first singular vector and the signed cosine."""
    rows = []
    for key, label in COSINE_SETS.items():
        for rank, tok in enumerate(squared_cosine[key], start=1):
            rows.append({"set": label, "set_key": key, "rank": rank, "token": visible_token(tok),
                         "token_id": tok["id"], "cos2": tok["value"], "cosine": tok.get("cosine"),
                         "label": f"{visible_token(tok)}  #{tok['id']}"})
    return rows


def squared_cosine_chart(rows: list[dict[str, Any]], d_model: int) -> alt.TopLevelMixin:
    """Top-k tokens by cos² for W_U, W_EE and W_E, one panel each; a rule marks 1/d_model, the mean
    cos² of a random direction."""
    bars = alt.Chart().mark_bar(color=OKABE_ITO["blue"]).encode(
        x=alt.X("cos2:Q", title="cos² with the singular vector", scale=alt.Scale(zero=True)),
        y=alt.Y("label:N", sort=alt.EncodingSortField("rank", order="ascending"), title=None,
                axis=alt.Axis(labelFont="DejaVu Sans Mono, monospace", labelLimit=220)),
        tooltip=[alt.Tooltip("token:N", title="token"), alt.Tooltip("token_id:Q", title="id"),
                 alt.Tooltip("cos2:Q", title="cos²", format=".4f"),
                 alt.Tooltip("cosine:Q", title="cosine (signed)", format=".4f"), alt.Tooltip("set:N")],
    )
    chance = alt.Chart().mark_rule(color=OKABE_ITO["black"], strokeDash=[4, 3]).encode(
        x=alt.datum(1 / d_model),
        tooltip=alt.value(f"random direction: mean cos² = 1/d_model = {1 / d_model:.4g}"),
    )
    return alt.layer(bars, chance, data=_data(rows)).properties(
        width=WIDTH - 260, height=alt.Step(14),
    ).facet(
        row=alt.Row("set:N", sort=list(COSINE_SETS.values()), title=None,
                    header=alt.Header(labelAngle=0, labelAlign="left", labelAnchor="start", labelOrient="top")),
    ).resolve_scale(y="independent").properties(
        title=alt.Title("Tokens most aligned with W_QK's first singular vectors",
                        subtitle="dashed line: 1/d_model, the mean cos² of a random direction"))


# --- names vs generic words --------------------------------------------------------------------

def subspace_rows(subspace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per word: its group, the word, its token (visible) and its subspace score."""
    rows = []
    for key, label in GROUP_LABELS.items():
        for w in subspace["groups"][key]["words"]:
            rows.append({"group": label, "word": w["word"], "token": visible_token(w),
                         "token_id": w["id"], "score": w["score"]})
    return rows


def subspace_chart(rows: list[dict[str, Any]], baseline: float, rank: int) -> alt.TopLevelMixin:
    """Names vs generic words: overlaid histograms of the subspace score above a strip + box view on
    the same x scale; the random baseline is a labelled rule in both; each word is in its tooltip."""
    scores = [r["score"] for r in rows] or [baseline]
    hi = max(max(scores), baseline)
    step = _nice_step(hi / 30)
    extent = [0.0, step * (int(hi / step) + 1)]
    title = f"subspace score (rank-{rank} query subspace of W_QK; a random direction scores {baseline:g})"
    x_scale = alt.Scale(domain=extent, nice=False)
    colour = alt.Color("group:N", title=None,
                       scale=alt.Scale(domain=list(GROUP_LABELS.values()), range=GROUP_COLOURS))
    hist = alt.Chart().transform_bin(
        ["bin_start", "bin_end"], "score", bin=alt.Bin(extent=extent, step=step),
    ).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("bin_start:Q", bin="binned", title=None, scale=x_scale,
                axis=alt.Axis(labels=False, ticks=False)),
        x2="bin_end:Q",
        y=alt.Y("count():Q", title="words", stack=None),
        color=colour,
        tooltip=[alt.Tooltip("group:N"), alt.Tooltip("count():Q", title="words"),
                 alt.Tooltip("bin_start:Q", title="score from", format=".3g"),
                 alt.Tooltip("bin_end:Q", title="score to", format=".3g")],
    ).properties(width=WIDTH - 60, height=150)
    rule = alt.Chart().mark_rule(color=OKABE_ITO["black"], strokeDash=[5, 3], size=1.5).encode(
        x=alt.datum(baseline, scale=x_scale), tooltip=alt.value(f"random baseline = {baseline:g}"))
    rule_label = alt.Chart().mark_text(align="left", dx=4, dy=2, fontSize=11, baseline="top").encode(
        x=alt.datum(baseline), y=alt.value(0), text=alt.value(f"random baseline {baseline:g}"))
    strip = alt.Chart().mark_tick(thickness=1.5, size=16, opacity=0.8).encode(
        x=alt.X("score:Q", title=title, scale=x_scale),
        y=alt.Y("group:N", title=None, sort=list(GROUP_LABELS.values())), color=colour,
        tooltip=[alt.Tooltip("word:N"), alt.Tooltip("token:N", title="token"),
                 alt.Tooltip("token_id:Q", title="id"), alt.Tooltip("group:N"),
                 alt.Tooltip("score:Q", format=".4f")],
    )
    box = alt.Chart().mark_boxplot(extent=1.5, size=26, opacity=0.35, outliers=False).encode(
        x=alt.X("score:Q", title=title, scale=x_scale),
        y=alt.Y("group:N", sort=list(GROUP_LABELS.values()), title=None), color=colour)
    top = alt.layer(hist, rule, rule_label, data=_data(rows))
    bottom = alt.layer(box, strip, rule, data=_data(rows)).properties(width=WIDTH - 60, height=alt.Step(40))
    return alt.vconcat(top, bottom, spacing=4).properties(
        title=alt.Title("Names vs generic words: how much of each unembedding lies in the QK subspace",
                        subtitle="top: histograms overlaid; bottom: one tick per word over a box plot "
                                 "(hover for the word)"))


def _nice_step(raw: float) -> float:
    """The smallest 1, 2 or 5 × 10^k at least ``raw`` (histogram bin width)."""
    if raw <= 0:
        return 0.1
    exponent = math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * 10 ** exponent >= raw:
            return m * 10 ** exponent
    return 10 ** (exponent + 1)


# --- rank histograms (OV self-suppression, QK self-attention) ----------------------------------

def rank_rows(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per rank bin of a rank summary's histogram, with the fraction of tokens."""
    h = summary["histogram"]
    if not h:
        return []
    total = sum(h["counts"]) or 1
    return [{"bin": label, "order": i, "rank_from": h["edges"][i], "rank_to": h["edges"][i + 1] - 1,
             "tokens": count, "fraction": count / total}
            for i, (label, count) in enumerate(zip(h["labels"], h["counts"]))]


def rank_histogram_chart(rows: list[dict[str, Any]], n_ranked: int, n_tokens: int, *, title: str,
                         x_title: str, colour: str) -> alt.TopLevelMixin:
    """Where each token's own entry ranks in its row (rank 1 = best); bins widen to the right."""
    order = [r["bin"] for r in sorted(rows, key=lambda r: r["order"])]
    return alt.Chart(_data(rows)).mark_bar(color=colour).encode(
        x=alt.X("bin:O", sort=order, title=x_title, axis=alt.Axis(labelAngle=-40)),
        y=alt.Y("tokens:Q", title="tokens"),
        tooltip=[alt.Tooltip("bin:O", title="rank"), alt.Tooltip("tokens:Q"),
                 alt.Tooltip("fraction:Q", format=".2%")],
    ).properties(width=WIDTH, height=220, title=alt.Title(
        title, subtitle=f"{n_ranked:,} of {n_tokens:,} tokens ranked; rank bins widen to the right"))


# --- survey heatmaps ----------------------------------------------------------------------------

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
            "value": value if isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) else None,
            "rank": r["rank"], "copy_suppression_score": r["copy_suppression_score"],
            "beats_chance": "yes" if r["beats_chance"] else "no",
        })
    return rows


def heatmap_chart(rows: list[dict[str, Any]], title: str, description: str, log: bool,
                  n_layers: int, n_heads: int) -> alt.TopLevelMixin:
    """Layers down, heads across; colour = the statistic; the tooltip shows the exact value; heads
    with no value (a degenerate circuit) are grey."""
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
                 alt.Tooltip("beats_chance:N", title="beats chance"),
                 alt.Tooltip("kv_head:Q", title="key/value head")],
    ).transform_filter("datum.value !== null")
    missing = base.mark_rect(color="#dddddd").encode(
        tooltip=[alt.Tooltip("label:N", title="head")]).transform_filter("datum.value === null")
    return (missing + rect).properties(
        width=cell * n_heads, height=max(12, min(22, 480 // max(n_layers, 1))) * n_layers,
        title=alt.Title(title, subtitle=description))


# --- the head on prompts -------------------------------------------------------------------------
#
# The attention heatmap and the final-position chart show one prompt at a time. Their specs hold
# the first prompt's rows as named inline data (so the static exports draw it); on the site,
# ``report/prompts.js`` replaces that data set (``view.data(name, rows)``) with the rows of the
# prompt chosen from the menu, built from the prompt's data script exactly as the rows below.

#: the inline data sets that ``report/prompts.js`` replaces when another prompt is chosen
ATTENTION_DATA, FINAL_DATA = "prompt_attention", "prompt_final"
#: above this many prompts the summary is one point per prompt on two axes, not one labelled row each
SUMMARY_ROWS_MAX = 40


def _prompt_data(rows: list[dict[str, Any]], name: str) -> alt.InlineData:
    """Rows as a named inline data set, held as one JSON string (Vega-Lite parses it): Altair's
    validation then checks one string, not every row of a 256-token prompt's 32,896."""
    return alt.InlineData(values=json.dumps(rows, ensure_ascii=False, sort_keys=True, separators=(",", ":")),
                          format=alt.DataFormat(type="json"), name=name)


def prompt_label(index: int, text: str, width: int = 60) -> str:
    """``"3: When Mary and John went…"``: the prompt's number and its start (a menu entry)."""
    short = text if len(text) <= width else text[: width - 1].rstrip() + "…"
    return f"{index + 1}: {short}"


def position_label(pos: int, token: Mapping[str, Any]) -> str:
    """``"  3 ␣cat"``: a position and its token's visible form (an axis label)."""
    return f"{pos:>3} {visible_token(token)}"


def prompt_step(longest: int, budget: int, largest: int) -> int:
    """Pixels per position for prompts of up to ``longest`` tokens: ``largest``, or less where the
    longest prompt would make the chart wider than ``budget`` (at least 4)."""
    return max(4, min(largest, budget // max(longest, 1)))


def attention_rows(index: int, prompt: Mapping[str, Any], pattern: list[list[float]]) -> list[dict[str, Any]]:
    """One row per (query position, source position ≤ query) of prompt ``index`` (0-based): the
    attention weight (``pattern``: the artifact's pattern decoded into rows)."""
    labels = [position_label(j, t) for j, t in enumerate(prompt["tokens"])]
    return [{"prompt": index + 1, "query_pos": q, "source_pos": s, "query": labels[q], "source": labels[s],
             "weight": w} for q, weights in enumerate(pattern) for s, w in enumerate(weights)]


def _position_axis(step: int, **kwargs: Any) -> alt.Axis:
    """A positions axis: monospace labels, smaller (and thinned where they would overlap) when the
    step is small."""
    return alt.Axis(labelFont="DejaVu Sans Mono, monospace", labelLimit=140, labelOverlap=step < 12,
                    labelFontSize=11 if step >= 12 else max(6, step + 2), **kwargs)


def attention_heatmap_chart(rows: list[dict[str, Any]], label: str, step: int = 15) -> alt.TopLevelMixin:
    """The head's attention pattern on one prompt: queries down, sources across."""
    return alt.Chart(_prompt_data(rows, ATTENTION_DATA)).mark_rect().encode(
        x=alt.X("source:O", sort=alt.SortField("source_pos"), title="source position (key)",
                axis=_position_axis(step, labelAngle=-60)),
        y=alt.Y("query:O", sort=alt.SortField("query_pos"), title="query position", axis=_position_axis(step)),
        color=alt.Color("weight:Q", title="attention", scale=alt.Scale(scheme="blues", domain=[0, 1])),
        tooltip=[alt.Tooltip("query:N"), alt.Tooltip("source:N"), alt.Tooltip("weight:Q", format=".3f")],
    ).properties(
        width=alt.Step(step), height=alt.Step(step),
        title=alt.Title(f"Head {label}: attention pattern", subtitle="one prompt (the HTML report has a menu)"))


def final_position_rows(index: int, prompt: Mapping[str, Any], record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per source position of prompt ``index`` at the final query position: attention weight
    and the direct effect of the head's output on the logit of that source's token."""
    rows = []
    for src in record["sources"]:
        tok = prompt["tokens"][src["pos"]]
        rows.append({"prompt": index + 1, "pos": src["pos"], "source": position_label(src["pos"], tok),
                     "token": visible_token(tok), "weight": src["weight"], "effect": src["effect"],
                     "via_source": src["via_source"]})
    return rows


def final_position_chart(rows: list[dict[str, Any]], label: str, step: int = 14) -> alt.TopLevelMixin:
    """At the final position of one prompt: each source by attention weight (left) and the head's
    direct effect on that source token's logit (right; negative = suppression)."""
    y = alt.Y("source:O", sort=alt.SortField("pos"), title="source position", axis=_position_axis(step))
    tooltip = [alt.Tooltip("source:N"), alt.Tooltip("weight:Q", title="attention", format=".3f"),
               alt.Tooltip("effect:Q", title="direct effect on its logit", format=".3f"),
               alt.Tooltip("via_source:Q", title="of which via this position", format=".3f")]
    weight = alt.Chart().mark_bar(color=OKABE_ITO["sky"]).encode(
        y=y, x=alt.X("weight:Q", title="attention weight", scale=alt.Scale(domain=[0, 1])), tooltip=tooltip,
    ).properties(width=220, height=alt.Step(step), title="attention from the final position")
    effect = alt.Chart().mark_bar().encode(
        y=alt.Y("source:O", sort=alt.SortField("pos"), axis=None),
        x=alt.X("effect:Q", title="direct effect on the source token's logit"),
        color=alt.condition("datum.effect < 0", alt.value(NEGATIVE), alt.value(POSITIVE)), tooltip=tooltip,
    ).properties(width=260, height=alt.Step(step), title="head's effect on that token's logit")
    rule = alt.Chart().mark_rule(color="#888888").encode(x=alt.datum(0))
    return alt.hconcat(weight, effect + rule, spacing=6, data=_prompt_data(rows, FINAL_DATA)).properties(
        title=alt.Title(f"Head {label} at the final position", subtitle="negative effect = the head pushes that "
                        "token's logit down; one prompt (the HTML report has a menu)"))


def prompt_summary_rows(prompts: list[Mapping[str, Any]], records: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per prompt: its largest-attention source (BOS excluded) and the head's direct effect
    on that token's logit."""
    rows = []
    for i, (p, rec) in enumerate(zip(prompts, records)):
        src = rec["largest"]
        rows.append({"prompt": i + 1, "label": prompt_label(i, p["text"], 48),
                     "token": visible_token(p["tokens"][src["pos"]]), "weight": src["weight"],
                     "effect": src["effect"], "suppressed": "yes" if src["effect"] < 0 else "no"})
    return rows


def prompt_summary_chart(rows: list[dict[str, Any]], label: str, share: str) -> alt.TopLevelMixin:
    """Per prompt, the direct effect on the logit of the source token the head attends to most: one
    labelled row per prompt, or (more than :data:`SUMMARY_ROWS_MAX` prompts) one point per prompt
    against that token's attention weight."""
    color = alt.Color("suppressed:N", title="pushed down", scale=alt.Scale(domain=["yes", "no"],
                                                                            range=[NEGATIVE, POSITIVE]))
    tooltip = [alt.Tooltip("label:N", title="prompt"), alt.Tooltip("token:N", title="most-attended token"),
               alt.Tooltip("weight:Q", title="attention", format=".3f"),
               alt.Tooltip("effect:Q", title="direct effect", format=".3f")]
    title = alt.Title(f"Head {label} across the prompts", subtitle=share)
    effect = "direct effect on the logit of the most-attended source token"
    if len(rows) > SUMMARY_ROWS_MAX:
        points = alt.Chart(_data(rows)).mark_point(filled=True, size=40, opacity=0.7).encode(
            x=alt.X("weight:Q", title="attention weight of the most-attended source token",
                    scale=alt.Scale(domain=[0, 1])),
            y=alt.Y("effect:Q", title=effect), color=color, tooltip=tooltip)
        rule = alt.Chart(_data([{"y": 0}])).mark_rule(color="#888888").encode(y="y:Q")
        return (rule + points).properties(width=WIDTH - 160, height=320, title=title)
    points = alt.Chart(_data(rows)).mark_point(filled=True, size=70).encode(
        y=alt.Y("label:N", sort=alt.SortField("prompt"), title=None, axis=alt.Axis(labelLimit=320)),
        x=alt.X("effect:Q", title=effect), color=color, tooltip=tooltip)
    rule = alt.Chart(_data([{"x": 0}])).mark_rule(color="#888888").encode(x="x:Q")
    return (rule + points).properties(width=WIDTH - 200, height=alt.Step(16), title=title)


# --- comparison ------------------------------------------------------------------------------------

def compare_spectrum_rows(heads: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The heads' spectra (the three QK circuits and W_OV) in one table, one column naming the head."""
    rows = []
    circuits = {**CIRCUITS, "w_ov": "W_OV = W_V W_O"}
    for r in heads:
        for key, name in circuits.items():
            for i, s in enumerate(r["spectra"][key], start=1):
                rows.append({"head": f"head {r['head']['label']}", "circuit": name, "index": i, "sigma": s})
    return rows


def compare_spectra_chart(rows: list[dict[str, Any]], labels: list[str]) -> alt.TopLevelMixin:
    """Both heads in every panel, one panel per circuit: the heads share each panel's axes."""
    heads = [f"head {label}" for label in labels]
    circuits = list(dict.fromkeys(r["circuit"] for r in rows))
    return alt.Chart(_data(rows)).mark_line(point=alt.OverlayMarkDef(size=24), strokeWidth=2).encode(
        x=alt.X("index:Q", title="index i", axis=alt.Axis(tickMinStep=1, format="d")),
        y=alt.Y("sigma:Q", title="singular value σᵢ"),
        color=alt.Color("head:N", title=None, scale=alt.Scale(domain=heads, range=[OKABE_ITO["vermillion"],
                                                                                   OKABE_ITO["blue"]])),
        strokeDash=alt.StrokeDash("head:N", sort=heads, legend=None),
        tooltip=[alt.Tooltip("head:N"), alt.Tooltip("circuit:N"), alt.Tooltip("index:Q", title="i"),
                 alt.Tooltip("sigma:Q", title="σᵢ", format=".4g")],
    ).properties(width=WIDTH // 4 - 10, height=180).facet(
        column=alt.Column("circuit:N", sort=circuits, title=None),
    ).resolve_scale(y="independent").properties(title=f"Spectra of heads {labels[0]} and {labels[1]}")


# --- the head atlas ------------------------------------------------------------------------------

#: the atlas grid's colour per head type (first listed type of a head wins), in the legend's order
ATLAS_TYPES = {"copy suppression": OKABE_ITO["vermillion"], "induction": OKABE_ITO["green"],
               "copying": OKABE_ITO["blue"], "previous token": OKABE_ITO["orange"],
               "no type": "#eeeeee", "dead (undefined)": "#999999"}


def atlas_type_name(types: list[Mapping[str, Any]] | None) -> str:
    """The grid's category of a head: its first type by :data:`ATLAS_TYPES` order, "no type", or
    "dead (undefined)"."""
    if types is None:
        return "dead (undefined)"
    names = {t["type"].replace("_", " ") for t in types}
    return next((name for name in ATLAS_TYPES if name in names), "no type")


def atlas_rows(survey: Mapping[str, Any], with_pages: set[str], head_href) -> list[dict[str, Any]]:
    """One row per head: position, category, every signature (the tooltip and the CSV export), and
    the link to the head's page when it has one (``head_href(label)``)."""
    rows = []
    for r in survey["heads"]:
        a = r["atlas"]
        comp = {m: (a["composition"][m]["top"] or [None])[0] for m in ("Q", "K", "V")}
        rows.append({
            "label": r["label"], "layer": r["layer"], "head": r["head"],
            "type": atlas_type_name(a["types"]),
            "types": "undefined (dead head)" if a["types"] is None
            else ", ".join(t["type"].replace("_", " ") for t in a["types"]) or "none",
            "copying_full": a["copying"]["full"]["score"], "copying_effective": a["copying"]["effective"]["score"],
            "previous_token": a["positional"]["previous_token"], "first_token": a["positional"]["first_token"],
            **{f"{m.lower()}_partner": p["label"] if p else None for m, p in comp.items()},
            **{f"{m.lower()}_ratio": p["ratio"] if p else None for m, p in comp.items()},
            "copy_suppression_score": r["copy_suppression_score"],
            "href": head_href(r["label"]) if r["label"] in with_pages else None,
        })
    return rows


def atlas_grid_chart(rows: list[dict[str, Any]], n_layers: int, n_heads: int) -> alt.TopLevelMixin:
    """Layers down, heads across, colour = the head's type (a weights-only candidate); every
    signature in the tooltip; a click opens the head's page where it has one."""
    cell = max(12, min(34, WIDTH // max(n_heads, 1)))
    present = [name for name in ATLAS_TYPES if any(r["type"] == name for r in rows)]
    colour = alt.Color("type:N", title="type", scale=alt.Scale(domain=present, range=[ATLAS_TYPES[n] for n in present]),
                       legend=alt.Legend(orient="right"))
    tooltip = [alt.Tooltip("label:N", title="head"), alt.Tooltip("types:N", title="types"),
               alt.Tooltip("copying_full:Q", title="copying (W_E·W_OV·W_U)", format=".3f"),
               alt.Tooltip("copying_effective:Q", title="copying (W_EE·W_OV·W_U)", format=".3f"),
               alt.Tooltip("previous_token:Q", title="previous-token score", format=".3f"),
               alt.Tooltip("first_token:Q", title="first-token score", format=".3f"),
               alt.Tooltip("q_partner:N", title="top Q partner"),
               alt.Tooltip("q_ratio:Q", title="Q / baseline", format=".2f"),
               alt.Tooltip("k_partner:N", title="top K partner"),
               alt.Tooltip("k_ratio:Q", title="K / baseline", format=".2f"),
               alt.Tooltip("v_partner:N", title="top V partner"),
               alt.Tooltip("v_ratio:Q", title="V / baseline", format=".2f"),
               alt.Tooltip("copy_suppression_score:Q", title="copy-suppression score", format=".3f")]
    return alt.Chart(_data(rows)).mark_rect(stroke="white", strokeWidth=0.5).encode(
        x=alt.X("head:O", title="head", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("layer:O", title="layer"),
        color=colour, tooltip=tooltip, href=alt.Href("href:N"),
    ).properties(width=cell * n_heads, height=max(12, min(22, 480 // max(n_layers, 1))) * n_layers,
                 title=alt.Title("Head atlas", subtitle="weights-only candidate types; hover for every signature"))


def eigenvalue_rows(copying: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per non-zero OV eigenvalue of each circuit (``full``, ``effective``)."""
    names = {"full": "W_E·W_OV·W_U", "effective": "W_EE·W_OV·W_U"}
    return [{"circuit": names[key], "re": z[0], "im": z[1], "abs": math.hypot(z[0], z[1])}
            for key in ("full", "effective") for z in copying[key]["eigenvalues"]]


def eigenvalue_chart(rows: list[dict[str, Any]]) -> alt.TopLevelMixin:
    """The OV circuits' non-zero eigenvalues in the complex plane (colour = circuit): right of the
    dashed imaginary axis the head copies, left it suppresses."""
    points = alt.Chart(_data(rows)).mark_point(filled=True, size=40, opacity=0.8).encode(
        x=alt.X("re:Q", title="Re λ"), y=alt.Y("im:Q", title="Im λ"),
        color=alt.Color("circuit:N", title=None, scale=alt.Scale(range=CIRCUIT_COLOURS[:2]),
                        legend=alt.Legend(orient="bottom")),
        shape=alt.Shape("circuit:N", legend=None),
        tooltip=[alt.Tooltip("circuit:N"), alt.Tooltip("re:Q", title="Re λ", format=".4g"),
                 alt.Tooltip("im:Q", title="Im λ", format=".4g"), alt.Tooltip("abs:Q", title="|λ|", format=".4g")])
    axis = alt.Chart(_data([{"x": 0.0}])).mark_rule(color="#888888", strokeDash=[3, 3]).encode(x="x:Q")
    return (axis + points).properties(width=WIDTH - 160, height=260)


def layer_composition_rows(layer_composition: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per (mode, writer layer, later reader layer) with a live pair: the strongest ratio."""
    return [{"mode": mode, "writer": i, "reader": j, "ratio": value}
            for mode in ("Q", "K", "V") for i, row in enumerate(layer_composition[mode])
            for j, value in enumerate(row) if value is not None]


def layer_composition_chart(rows: list[dict[str, Any]], n_layers: int) -> alt.TopLevelMixin:
    """Writer layer down, reader layer across, one panel per mode (Q, K, V): colour = the strongest
    composition between their heads as a ratio to the random baseline."""
    cell = max(6, min(18, (WIDTH // 3 - 40) // max(n_layers, 1)))
    return alt.Chart(_data(rows)).mark_rect().encode(
        x=alt.X("reader:O", title="reader layer", axis=alt.Axis(labelAngle=0, labelOverlap=True)),
        y=alt.Y("writer:O", title="writer layer", axis=alt.Axis(labelOverlap=True)),
        color=alt.Color("ratio:Q", title="× baseline", scale=alt.Scale(scheme="viridis"),
                        legend=alt.Legend(orient="right", gradientLength=140)),
        tooltip=[alt.Tooltip("mode:N", title="mode"), alt.Tooltip("writer:O", title="writer layer"),
                 alt.Tooltip("reader:O", title="reader layer"),
                 alt.Tooltip("ratio:Q", title="strongest score / baseline", format=".2f")],
    ).properties(width=cell * n_layers, height=cell * n_layers).facet(
        column=alt.Column("mode:N", title=None, sort=["Q", "K", "V"]), spacing=24,
    ).properties(title=alt.Title("Composition between layers",
                                 subtitle="strongest head pair, as a ratio to the random baseline"))
