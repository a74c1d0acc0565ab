"""One page per analysed head (``head_L.H.json``): method, spectra, singular directions, token
alignment, names vs generic words, OV self-suppression and QK self-attention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts, findings, references
from .. import explorer as explorer_block
from .. import formatting as fmt
from .. import tables as tb
from ..context import LOADER_JS, Page, ReportContext
from ..figures import Figure
from ..outputs import head_slug
from .atlas import head_atlas_part
from .prompts import prompt_context, prompt_figures, prompt_scripts, prompt_table

#: how the rank metrics are drawn and named: key → (title, x-axis title, colour, circuit text)
RANK_METRICS = {
    "ov_self_suppression": ("OV self-suppression", "rank of the token's own logit (1 = most suppressed)",
                            charts.OKABE_ITO["vermillion"], "the effective OV circuit W_EE W_OV W_U"),
    "qk_self_attention": ("QK self-attention", "rank of the token's own key (1 = most attended)",
                          charts.OKABE_ITO["blue"], "the effective QK circuit (query W_U, key W_EE)"),
}


def spectra_figures(r: Mapping[str, Any]) -> dict[str, Figure]:
    """The singular-value spectra of the head's QK circuits, raw and normalised by σ₁."""
    label = r["head"]["label"]
    rows = charts.spectrum_rows(r["spectra"])
    return {
        "spectra": Figure(
            head_slug(label, "spectra"), f"Head {label}: singular-value spectra",
            f"Head {label}: singular values of the three QK circuits — W_QK (d_model × d_model), the "
            f"full circuit through the embeddings, and the effective circuit from unembeddings "
            f"(query) to effective embeddings (key). Each circuit has rank at most d_head = {r['model']['d_head']}.",
            charts.spectra_chart(rows), rows),
        "spectra_normalised": Figure(
            head_slug(label, "spectra-normalised"), f"Head {label}: normalised spectra",
            f"Head {label}: the same spectra divided by their largest singular value, on a linear "
            f"(left) and a logarithmic (right) axis; a fast drop means a low-rank circuit.",
            charts.normalised_spectra_chart(rows), rows),
    }


def direction_figures(r: Mapping[str, Any]) -> dict[str, Figure]:
    """The top tokens of the top singular directions (u query side, v key side) of the full and the
    effective QK circuits."""
    label = r["head"]["label"]
    figs = {}
    for circuit, name in (("full_qk", "full QK circuit W_E W_QK W_Eᵀ"),
                          ("effective_qk", "effective QK circuit W_Uᵀ W_QK W_EEᵀ")):
        rows = charts.direction_rows(r["singular_directions"][circuit])
        n_dir = len(r["singular_directions"][circuit])
        k = len(r["singular_directions"][circuit][0]["query"]) if n_dir else 0
        figs[f"directions_{circuit}"] = Figure(
            head_slug(label, f"directions-{circuit.replace('_', '-')}"), f"Head {label}: top tokens of the {name}",
            f"Head {label}: the {k} tokens with the largest |entry| in each of the top {n_dir} singular "
            f"directions of the {name}; left the query side (u), right the key side (v); bars are "
            f"signed. Hover for the token, its id and its value.",
            charts.singular_direction_chart(rows, f"Top tokens of the {name}"), rows)
    return figs


def alignment_figures(r: Mapping[str, Any]) -> dict[str, Figure]:
    """The tokens most aligned (cos²) with W_QK's first singular vectors, and the subspace scores
    s(w) = (d_model / r) ‖U_rᵀ û_w‖² of the names and the generic words."""
    label = r["head"]["label"]
    m = r["model"]
    sa = r["subspace_alignment"]
    cos_rows = charts.cosine_rows(r["squared_cosine"])
    sub_rows = charts.subspace_rows(sa)
    return {
        "squared_cosine": Figure(
            head_slug(label, "squared-cosine"), f"Head {label}: token alignment",
            f"Head {label}: tokens whose unembedding (W_U), effective embedding (W_EE) or embedding "
            f"(W_E) is most aligned (squared cosine) with W_QK's first left (u₁) or right (v₁) singular "
            f"vector; the dashed line is 1/d_model = {fmt.num(1 / m['d_model'])}.",
            charts.squared_cosine_chart(cos_rows, m["d_model"]), cos_rows),
        "subspace": Figure(
            head_slug(label, "names-vs-generic"), f"Head {label}: names vs generic words",
            f"Head {label}: subspace score of {sa['groups']['names']['summary']['n']} names and "
            f"{sa['groups']['generic']['summary']['n']} generic words — the share of a word's normalised "
            f"unembedding inside the span of W_QK's top {sa['rank']} left singular vectors, times "
            f"d_model / {sa['rank']} = {fmt.num(sa['scale'])}, so that a random direction scores "
            f"{fmt.num(sa['random_baseline'])} (dashed line).",
            charts.subspace_chart(sub_rows, sa["random_baseline"], sa["rank"]), sub_rows),
    }


def rank_figures(r: Mapping[str, Any]) -> dict[str, Figure]:
    """The histograms of each token's own rank (:data:`RANK_METRICS`); none for a metric that is
    undefined (a degenerate circuit: the table says why)."""
    label = r["head"]["label"]
    figs = {}
    for metric, (title, x_title, colour, circuit) in RANK_METRICS.items():
        summary = r[metric]
        rows = charts.rank_rows(summary)
        if not rows:
            continue
        scope = ("every token" if summary["mode"] == "exact"
                 else f"a seeded random sample of {fmt.integer(summary['n_ranked'])} tokens")
        figs[metric] = Figure(
            head_slug(label, metric.replace("_", "-")), f"Head {label}: {title}",
            f"Head {label}: for {scope}, the rank of the token's own entry in its row of {circuit} "
            f"(rank 1 = the best of {fmt.integer(summary['n_tokens'])}; ties count against the token).",
            charts.rank_histogram_chart(rows, summary["n_ranked"], summary["n_tokens"],
                                        title=f"{title}: rank of each token's own entry", x_title=x_title,
                                        colour=colour), rows)
    return figs


def head_figures(r: Mapping[str, Any]) -> dict[str, Figure]:
    """The figures of one head by name (numbered where ``head.qmd.j2`` places them)."""
    return spectra_figures(r) | direction_figures(r) | alignment_figures(r) | rank_figures(r)


def table_slug(r: Mapping[str, Any], name: str) -> str:
    """The slug of one of a head's tables: ``head-L-H-<name>``, like its figures'."""
    return head_slug(r["head"]["label"], name)


def spectrum_table(r: Mapping[str, Any]) -> tb.Table:
    rows = []
    for key, label in (("w_qk", "W_QK"), ("full_qk", "full W_E W_QK W_Eᵀ"),
                       ("effective_qk", "effective W_Uᵀ W_QK W_EEᵀ"), ("w_ov", "W_OV")):
        s = r["spectra"]["statistics"][key]
        rows.append([tb.text(label), tb.number(fmt.num(s["sigma1"], 4)), tb.number(fmt.num(s["ratio12"])),
                     tb.number(fmt.percent(s["energy1"], 4)), tb.number(fmt.percent(s["sigma1_share"], 3)),
                     tb.number(f"{fmt.num(s['effective_rank'])} / {s['n']}")])
    return tb.Table(f"Head {r['head']['label']}: shape of each circuit's spectrum (effective rank: "
                    f"exp of the entropy of σᵢ/Σσⱼ, Roy & Vetterli 2007).",
                    ["circuit", "σ₁", "σ₁/σ₂", "σ₁²/Σσᵢ²", "σ₁/Σσᵢ", "effective rank"], rows,
                    slug=table_slug(r, "spectrum"))


def direction_table(r: Mapping[str, Any], circuit: str, name: str) -> tb.Table:
    d = r["singular_directions"][circuit][0]
    rows = []
    for i, (q, k) in enumerate(zip(d["query"], d["key"]), start=1):
        rows.append([tb.number(str(i)), tb.token(q), tb.number(str(q["id"])), tb.number(fmt.num(q["value"])),
                     tb.token(k), tb.number(str(k["id"])), tb.number(fmt.num(k["value"]))])
    return tb.Table(
        f"Head {r['head']['label']}: top tokens of the first singular direction of the {name} "
        f"(σ₁ = {fmt.num(d['sigma'], 4)}).",
        ["#", "query token", "id", "u₁", "key token", "id", "v₁"], rows, css_class="tokens",
        slug=table_slug(r, f"directions-{circuit.replace('_', '-')}"))


def cosine_table(r: Mapping[str, Any]) -> tb.Table:
    sc = r["squared_cosine"]
    rows = []
    for i, (u, ee, e) in enumerate(zip(sc["w_u"], sc["w_ee"], sc["w_e"]), start=1):
        rows.append([tb.number(str(i)), tb.token(u), tb.number(fmt.num(u["value"])),
                     tb.token(ee), tb.number(fmt.num(ee["value"])), tb.token(e), tb.number(fmt.num(e["value"]))])
    return tb.Table(f"Head {r['head']['label']}: tokens ranked by squared cosine with W_QK's first "
                    f"singular vectors (σ₁ = {fmt.num(sc['sigma'], 4)}).",
                    ["#", "W_U token", "cos²", "W_EE token", "cos²", "W_E token", "cos²"], rows, css_class="tokens",
                    slug=table_slug(r, "squared-cosine"))


def subspace_table(r: Mapping[str, Any]) -> tb.Table:
    sa = r["subspace_alignment"]
    rows = []
    for key, label in charts.GROUP_LABELS.items():
        s = sa["groups"][key]["summary"]
        rows.append([tb.text(label), tb.number(fmt.integer(s["n"])), tb.number(fmt.num(s.get("median"))),
                     tb.number(f"{fmt.num(s.get('q1'))}–{fmt.num(s.get('q3'))}"), tb.number(fmt.num(s.get("mean"))),
                     tb.number(str(len(sa["groups"][key]["skipped"])))])
    form = "bare words" if sa["word_form"] == "bare" else "words with a leading space"
    return tb.Table(f"Head {r['head']['label']}: subspace scores by word list, scored as {form} (random "
                    f"baseline {fmt.num(sa['random_baseline'])}).",
                    ["words", "n", "median", "IQR", "mean", "skipped"], rows, slug=table_slug(r, "subspace"))


def comparison_table(r: Mapping[str, Any]) -> tb.Table | None:
    c = r["subspace_alignment"]["comparison"]
    if not c.get("available"):
        return None
    b = c.get("bootstrap", {})
    rows = [
        [tb.text("median ratio (names / generic)"), tb.number(fmt.num(c.get("median_ratio"))),
         tb.number(fmt.ci(c.get("median_ratio_ci95")))],
        [tb.text("median difference"), tb.number(fmt.num(c.get("median_difference"))),
         tb.number(fmt.ci(c.get("median_difference_ci95")))],
        [tb.text("Mann-Whitney U (two-sided)"), tb.number(fmt.num(c.get("mann_whitney_u"), 6)),
         tb.number(fmt.p_value(c.get("mann_whitney_p")))],
        [tb.text("AUC = P(name > generic word)"), tb.number(fmt.num(c.get("auc"))), tb.number("")],
    ]
    boot = (f"{fmt.integer(b['n_resamples'])} {b.get('method', '')} bootstrap resamples, seed {b.get('seed')}"
            if b.get("n_resamples") else "bootstrap")
    return tb.Table(f"Head {r['head']['label']}: names vs generic words (95% intervals: {boot}).",
                    ["statistic", "value", "95% CI / p"], rows, slug=table_slug(r, "subspace-comparison"))


def rank_table(r: Mapping[str, Any], metric: str,
               paper: Mapping[tuple[str, str], tuple[str, str]]) -> tb.Table:
    """The paper's metrics with chance, the CIs in sampled mode, the rows with exact ties and, for
    GPT-2 small 10.7 under the paper's definitions, each published value beside its own statistic."""
    s = r[metric]
    title = RANK_METRICS[metric][0]
    label = r["head"]["label"]
    sources = [src for src in references.SOURCES
               if any(m == metric and source == src for (m, _), (source, _) in paper.items())]
    columns = ["statistic", "this report", "chance"] + [references.SOURCES[src] for src in sources]
    pad = [tb.text("")] * len(sources)
    name = table_slug(r, metric.replace("_", "-"))
    if not s.get("defined", True):
        row = [tb.text("undefined"), tb.text(s.get("reason", "degenerate circuit")), tb.text("")]
        return tb.Table(f"Head {label}: {title} — undefined.", columns, [row + pad], slug=name)
    rows: list[tuple[str | None, list]] = [(None, [
        tb.text("tokens ranked"), tb.number(f"{fmt.integer(s['n_ranked'])} of {fmt.integer(s['n_tokens'])} "
                                            f"({s['mode']})"), tb.number("")])]
    names = {"fraction_rank1": "own entry ranked 1", "fraction_top10": "own entry in the top 10",
             "fraction_top5pct": f"own entry in the top 5% (rank ≤ {fmt.integer(s['top5pct_cutoff'])})"}
    for key, text in names.items():
        ci = s.get(f"{key}_ci95")
        value = fmt.percent(s[key], 4) + (f" ({fmt.ci(ci, fmt=fmt.percent)})" if ci else "")
        rows.append((key, [tb.text(text), tb.number(value), tb.number(fmt.percent(s["chance"][key], 2))]))
    rows.append(("median_rank", [tb.text("median rank"), tb.number(fmt.num(s["median_rank"], 5)),
                                 tb.number(fmt.num(s["chance"]["median_rank"], 5))]))
    rows.append(("mean_rank", [tb.text("mean rank"), tb.number(fmt.num(s["mean_rank"], 5)), tb.number("")]))
    if s.get("tied_rows") is not None:
        rows.append((None, [tb.text("rows where the own entry ties another exactly"),
                            tb.number(fmt.integer(s["tied_rows"])), tb.number("")]))
    rows.append((None, [tb.text("effect supported"), tb.text("yes" if s["evidence"]["supported"] else "no"),
                        tb.text("")]))
    out = []
    for key, row in rows:
        for src in sources:
            source, printed = paper.get((metric, key), (None, "")) if key else (None, "")
            row.append(tb.number(printed if source == src else ""))
        out.append(row)
    extra = (" Raw queries (W_U) and raw keys (W_EE), as the paper's code." if s.get("normalization") == "none"
             else " Every query and key row scaled to norm √d_model." if s.get("normalization") == "sqrt_d_model"
             else "")
    return tb.Table(f"Head {label}: {title}; 95% Wilson intervals in sampled mode.{extra}", columns, out, slug=name)


def with_loader(scripts: list[str]) -> list[str]:
    """A page's on-demand scripts, after the loader they share (none without any)."""
    return [LOADER_JS, *scripts] if scripts else []


def head_page(ctx: ReportContext, head: Mapping[str, Any]) -> Page:
    r = head["results"]
    label = r["head"]["label"]
    figs = head_figures(r)
    prompt_figs = prompt_figures(ctx, label)
    paper = references.paper_values(r["model"], head["provenance"], label, head["config"])
    mismatch = (references.definition_mismatch(head["config"])
                if references.is_gpt2_small_10_7(r["model"], head["provenance"], label) else None)
    tables = {
        "spectrum": spectrum_table(r),
        "directions": direction_table(r, "effective_qk", "effective QK circuit"),
        "cosine": cosine_table(r),
        "subspace": subspace_table(r),
        "comparison": comparison_table(r),
        "self_suppression": rank_table(r, "ov_self_suppression", paper),
        "self_attention": rank_table(r, "qk_self_attention", paper),
        "prompts": prompt_table(ctx, label),
    }
    m = r["model"]
    sentences = findings.head_findings(r)
    sentences["cosine"] = findings.cosine_sentence(r["squared_cosine"], m["d_model"], m["d_vocab"])
    has_explorer = label in (ctx.artifacts.get("explorers") or {})
    qk_note = ("every query and key row scaled to norm √d_model"
               if r["qk_self_attention"].get("normalization") == "sqrt_d_model" else "raw queries and keys")
    a = head["config"]["analysis"]
    explorer_note = (None if has_explorer
                     else "it is off in this configuration (analysis.explorer = false)" if not a.get("explorer", True)
                     else "its lists come from the exact pass over every token, and this analysis sampled rows "
                          "(analysis.ov_mode = \"sampled\")" if a["ov_mode"] != "exact"
                     else "this head's circuits are degenerate (see the rank tables above)")
    return ctx.page(
        head_slug(label), f"Head {label}", f"Head {label}", "head.qmd.j2",
        scripts=with_loader(([explorer_block.EXPLORER_JS] if has_explorer else []) + prompt_scripts(ctx, label)),
        explorer=explorer_block.block(label, qk_note) if has_explorer else None,
        explorer_note=explorer_note, prompts=prompt_context(ctx, label), prompt_figures=prompt_figs,
        r=r, head=r["head"], model=m, figures=figs, tables=tables, atlas=head_atlas_part(ctx, label),
        findings=sentences, config=head["config"], provenance=head["provenance"],
        embedding=r["effective_embedding"], paper=references.PAPER if paper else None, paper_mismatch=mismatch,
        notebook=references.NOTEBOOK,
        processing=", ".join(f"{k} = {str(v).lower()}" for k, v in sorted(head["provenance"]["processing"].items())),
    )


def head_pages(ctx: ReportContext) -> list[Page]:
    return [head_page(ctx, h) for h in ctx.heads]
