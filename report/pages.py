"""Report pages: artifact data → figures, tables, sentences → Markdown (Quarto ``.qmd`` bodies).

A page is built by a *page builder*: a function ``(ReportContext) -> list[Page]``. The report's
pages are :data:`PAGE_BUILDERS`, in reading order (index, one page per head, then optional pages
such as the survey, then reproducibility). Each builder renders one Jinja template from
``templates/`` with a context of plain values; escaping is explicit, through the filters below
(Jinja's autoescape is off because the output is Markdown, not HTML):

* ``{{ x | md }}``     any text from the artifacts (paths, words, model names) as Markdown text;
* ``{{ t | tok }}``    a token record (or visible text) as a verbatim monospace token;
* ``{{ figure(f) }}``  an HTML chart block + a Typst figure block;
* ``{{ table(t) }}``   a :class:`report.tables.Table` as HTML + Typst blocks;
* ``{{ link(slug, text) }}`` a link to another page (an ``<a>`` in HTML, a section link in the PDF).

Headings in a page body start at level 2; the page title is level 1 (the HTML wrapper prints it,
the PDF makes it a numbered chapter with the label ``<page-SLUG>``).
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from analysis.config import config_to_toml

from . import charts, findings
from . import formatting as fmt
from . import tables as tb
from .escaping import (
    code_block,
    html_text,
    markdown_raw_inline,
    markdown_text,
    markdown_token,
    markdown_value,
    raw_block,
    typst_markup,
)
from .figures import Figure, html_figure, typst_figure

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@dataclass
class Page:
    """One page of the site, one chapter of the PDF."""

    slug: str  # file stem: index, head-10.7, reproducibility
    title: str
    nav_title: str
    markdown: str = ""
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ReportContext:
    """Everything a page builder may read: the artifacts and facts about this rendering."""

    artifacts: dict[str, Any]  # :func:`analysis.artifacts.load_artifacts` output
    engine: str  # "pandoc" or "quarto"
    tool_versions: dict[str, str]  # rendering tools and libraries → version
    figures_href: str = "figures"  # figure files, relative to the HTML pages
    typst_figures_path: str = "figures"  # figure files, relative to the Typst document
    figure_count: int = 0
    table_count: int = 0

    def number_figure(self, figure: Figure) -> Figure:
        self.figure_count += 1
        figure.number = self.figure_count
        return figure

    def number_table(self, table: tb.Table) -> tb.Table:
        self.table_count += 1
        table.number = self.table_count
        return table

    @property
    def model(self) -> dict[str, Any]:
        return self.artifacts["model"]

    @property
    def heads(self) -> list[dict[str, Any]]:
        return self.artifacts["heads"]


def head_slug(label: str) -> str:
    return f"head-{label}"


def anchor(slug: str) -> str:
    """A label/id for a page: ``page-`` + slug with anything but letters, digits and ``-`` → ``-``."""
    return "page-" + re.sub(r"[^A-Za-z0-9-]", "-", slug)


# --- Jinja ----------------------------------------------------------------------------------------

def page_link(slug: str, text: str) -> str:
    """A link to another page: ``slug.html`` on the site, the chapter's label in the PDF."""
    return markdown_raw_inline(
        f'<a href="{html_text(slug)}.html">{html_text(text)}</a>',
        f"#link(<{anchor(slug)}>)[{typst_markup(text)}];",
    )


def make_environment(ctx: ReportContext) -> jinja2.Environment:
    if not TEMPLATES_DIR.is_dir():
        raise FileNotFoundError(f"report templates not found at {TEMPLATES_DIR}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # Markdown output, not HTML: ``finalize`` escapes instead
        finalize=markdown_value,  # every value not marked Safe is escaped as Markdown text
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update({
        "md": lambda v: markdown_text(str(v)),
        "tok": markdown_token,
        "num": lambda v, d=3: markdown_text(fmt.num(v, d)),
        "int": lambda v: markdown_text(fmt.integer(v)),
        "pct": lambda v, d=2: markdown_text(fmt.percent(v, d)),
        "ci": lambda v: markdown_text(fmt.ci(v)),
        "p": lambda v: markdown_text(fmt.p_value(v)),
    })
    env.globals.update({
        "figure": lambda f: raw_block(html_figure(f, ctx.figures_href), typst_figure(f, ctx.typst_figures_path)),
        "table": lambda t: tb.markdown_table(t),
        "code_block": code_block,
        "link": page_link,
        "head_slug": head_slug,
    })
    return env


def render_template(ctx: ReportContext, name: str, **values: Any) -> str:
    return make_environment(ctx).get_template(name).render(**values)


# --- head pages -----------------------------------------------------------------------------------

def head_figures(ctx: ReportContext, r: Mapping[str, Any]) -> dict[str, Figure]:
    """The figures of one head, in reading order, numbered."""
    label = r["head"]["label"]
    key = label.replace(".", "-")
    m = r["model"]
    spectra_rows = charts.spectrum_rows(r["spectra"])
    sa = r["subspace_alignment"]
    ov = r["ov_self_suppression"]
    figs = {
        "spectra": Figure(
            f"head-{key}-spectra", f"Head {label}: singular-value spectra",
            f"Head {label}: singular values of the three QK circuits — W_QK (d_model × d_model), the "
            f"full circuit through the raw embeddings, and the effective circuit from unembeddings "
            f"(query) to effective embeddings (key). Each circuit has rank at most d_head = {m['d_head']}.",
            charts.spectra_chart(spectra_rows), spectra_rows),
        "spectra_normalised": Figure(
            f"head-{key}-spectra-normalised", f"Head {label}: normalised spectra",
            f"Head {label}: the same spectra divided by their largest singular value, on a linear "
            f"(left) and a logarithmic (right) axis; a fast drop means a low-rank circuit.",
            charts.normalised_spectra_chart(spectra_rows), spectra_rows),
    }
    for circuit, name in (("full_qk", "full QK circuit W_E W_QK W_Eᵀ"),
                          ("effective_qk", "effective QK circuit W_Uᵀ W_QK W_EEᵀ")):
        rows = charts.direction_rows(r["singular_directions"][circuit])
        n_dir = len(r["singular_directions"][circuit])
        k = len(r["singular_directions"][circuit][0]["query"]) if n_dir else 0
        figs[f"directions_{circuit}"] = Figure(
            f"head-{key}-directions-{circuit.replace('_', '-')}", f"Head {label}: top tokens of the {name}",
            f"Head {label}: the {k} tokens with the largest |entry| in each of the top {n_dir} singular "
            f"directions of the {name}; left the query side (u), right the key side (v); bars are "
            f"signed. Hover for the token, its id and its value.",
            charts.singular_direction_chart(rows, f"Top tokens of the {name}"), rows)
    cos_rows = charts.cosine_rows(r["squared_cosine"])
    figs["squared_cosine"] = Figure(
        f"head-{key}-squared-cosine", f"Head {label}: token alignment",
        f"Head {label}: tokens whose unembedding (W_U), effective embedding (W_EE) or raw embedding "
        f"(W_E) is most aligned (squared cosine) with W_QK's first left (u₁) or right (v₁) singular "
        f"vector; the dashed line is 1/d_model = {fmt.num(1 / m['d_model'])}.",
        charts.squared_cosine_chart(cos_rows, m["d_model"]), cos_rows)
    sub_rows = charts.subspace_rows(sa)
    figs["subspace"] = Figure(
        f"head-{key}-names-vs-generic", f"Head {label}: names vs generic words",
        f"Head {label}: subspace score of {sa['groups']['names']['summary']['n']} names and "
        f"{sa['groups']['generic']['summary']['n']} generic words — the share of a word's normalised "
        f"unembedding inside the span of W_QK's top {sa['rank']} left singular vectors, times "
        f"d_model / {sa['rank']} = {fmt.num(sa['scale'])}, so that a random direction scores "
        f"{fmt.num(sa['random_baseline'])} (dashed line).",
        charts.subspace_chart(sub_rows, sa["random_baseline"], sa["rank"]), sub_rows)
    rank_rows = charts.rank_rows(ov)
    scope = "every token" if ov["mode"] == "exact" else f"a seeded random sample of {fmt.integer(ov['n_ranked'])} tokens"
    figs["self_suppression"] = Figure(
        f"head-{key}-ov-self-suppression", f"Head {label}: OV self-suppression",
        f"Head {label}: for {scope}, the rank of the token's own logit in its row of the effective "
        f"OV circuit W_EE W_OV W_U (rank 1 = the most negative of {fmt.integer(ov['n_tokens'])} logits).",
        charts.self_suppression_chart(rank_rows, ov["n_ranked"], ov["n_tokens"]), rank_rows)
    for f in figs.values():
        ctx.number_figure(f)
    return figs


def spectrum_table(r: Mapping[str, Any]) -> tb.Table:
    rows = []
    for key, label in (("w_qk", "W_QK"), ("full_qk", "full W_E W_QK W_Eᵀ"),
                       ("effective_qk", "effective W_Uᵀ W_QK W_EEᵀ"), ("w_ov", "W_OV")):
        s = findings.spectrum_summary(r["spectra"][key])
        rows.append([tb.text(label), tb.number(fmt.num(s.sigma1, 4)), tb.number(fmt.num(s.ratio12)),
                     tb.number(fmt.percent(s.energy1, 4)), tb.number(f"{fmt.num(s.effective_rank)} / {s.n}")])
    return tb.Table(f"Head {r['head']['label']}: shape of each circuit's spectrum.",
                    ["circuit", "σ₁", "σ₁/σ₂", "σ₁²/Σσᵢ²", "effective rank"], rows)


def direction_table(r: Mapping[str, Any], circuit: str, name: str) -> tb.Table:
    d = r["singular_directions"][circuit][0]
    rows = []
    for i, (q, k) in enumerate(zip(d["query"], d["key"]), start=1):
        rows.append([tb.number(str(i)), tb.token(q), tb.number(str(q["id"])), tb.number(fmt.num(q["value"])),
                     tb.token(k), tb.number(str(k["id"])), tb.number(fmt.num(k["value"]))])
    return tb.Table(
        f"Head {r['head']['label']}: top tokens of the first singular direction of the {name} "
        f"(σ₁ = {fmt.num(d['sigma'], 4)}).",
        ["#", "query token", "id", "u₁", "key token", "id", "v₁"], rows, css_class="tokens")


def cosine_table(r: Mapping[str, Any]) -> tb.Table:
    sc = r["squared_cosine"]
    rows = []
    for i, (u, ee, e) in enumerate(zip(sc["w_u"], sc["w_ee"], sc["w_e"]), start=1):
        rows.append([tb.number(str(i)), tb.token(u), tb.number(fmt.num(u["value"])),
                     tb.token(ee), tb.number(fmt.num(ee["value"])), tb.token(e), tb.number(fmt.num(e["value"]))])
    return tb.Table(f"Head {r['head']['label']}: tokens ranked by squared cosine with W_QK's first "
                    f"singular vectors (σ₁ = {fmt.num(sc['sigma'], 4)}).",
                    ["#", "W_U token", "cos²", "W_EE token", "cos²", "W_E token", "cos²"], rows, css_class="tokens")


def subspace_table(r: Mapping[str, Any]) -> tb.Table:
    sa = r["subspace_alignment"]
    rows = []
    for key, label in charts.GROUP_LABELS.items():
        s = sa["groups"][key]["summary"]
        rows.append([tb.text(label), tb.number(fmt.integer(s["n"])), tb.number(fmt.num(s.get("median"))),
                     tb.number(f"{fmt.num(s.get('q1'))}–{fmt.num(s.get('q3'))}"), tb.number(fmt.num(s.get("mean"))),
                     tb.number(str(len(sa["groups"][key]["skipped"])))])
    return tb.Table(f"Head {r['head']['label']}: subspace scores by word list (random baseline "
                    f"{fmt.num(sa['random_baseline'])}).",
                    ["words", "n", "median", "IQR", "mean", "skipped"], rows)


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
                    ["statistic", "value", "95% CI / p"], rows)


def self_suppression_table(r: Mapping[str, Any]) -> tb.Table:
    ov = r["ov_self_suppression"]
    t = findings.self_suppression_test(ov)
    rows = [
        [tb.text("tokens ranked"), tb.number(f"{fmt.integer(ov['n_ranked'])} of {fmt.integer(ov['n_tokens'])} ({ov['mode']})")],
        [tb.text("own logit ranked 1 (most negative)"), tb.number(
            fmt.percent(ov["fraction_rank1"], 3) + (f" (95% CI {fmt.ci(ov['fraction_rank1_ci95'], fmt=fmt.percent)})"
                                                    if ov.get("fraction_rank1_ci95") else ""))],
        [tb.text("chance rate 1/d_vocab; binomial test"), tb.number(f"{fmt.percent(t['chance'], 3)}; {fmt.p_value(t['p'])}")],
    ]
    if "fraction_top10" in ov:
        rows.append([tb.text("own logit in the 10 most negative"), tb.number(fmt.percent(ov["fraction_top10"], 3))])
    rows.append([tb.text("median rank (random logit)"),
                 tb.number(f"{fmt.integer(round(ov['median_rank']))} ({fmt.integer(round(t['chance_median']))})")])
    if "mean_rank" in ov:
        rows.append([tb.text("mean rank"), tb.number(fmt.integer(round(ov["mean_rank"])))])
    return tb.Table(f"Head {r['head']['label']}: OV self-suppression.", ["statistic", "value"], rows)


def head_page(ctx: ReportContext, head: Mapping[str, Any]) -> Page:
    r = head["results"]
    label = r["head"]["label"]
    figs = head_figures(ctx, r)
    tables = {
        "spectrum": spectrum_table(r),
        "directions": direction_table(r, "effective_qk", "effective QK circuit"),
        "cosine": cosine_table(r),
        "subspace": subspace_table(r),
        "comparison": comparison_table(r),
        "self_suppression": self_suppression_table(r),
    }
    for t in tables.values():
        if t is not None:
            ctx.number_table(t)
    m = r["model"]
    sentences = findings.head_findings(r)
    sentences["cosine"] = findings.cosine_sentence(r["squared_cosine"], m["d_model"], m["d_vocab"])
    sentences["full_spectrum"] = findings.spectrum_sentence("full QK circuit W~E~ W~QK~ W~E~^⊤^",
                                                            r["spectra"]["full_qk"])
    markdown = render_template(
        ctx, "head.qmd.j2", r=r, head=r["head"], model=m, figures=figs, tables=tables,
        findings=sentences, config=head["config"], provenance=head["provenance"],
        variant=r["effective_embedding"]["variant"],
        processing=", ".join(f"{k} = {str(v).lower()}" for k, v in sorted(head["provenance"]["processing"].items())),
    )
    return Page(head_slug(label), f"Head {label}", f"Head {label}", markdown, list(figs.values()))


def head_pages(ctx: ReportContext) -> list[Page]:
    return [head_page(ctx, h) for h in ctx.heads]


# --- index and reproducibility ---------------------------------------------------------------------

def model_table(ctx: ReportContext) -> tb.Table:
    m = ctx.model["results"]["model"]
    rows = [[tb.text(k), v] for k, v in (
        ("model", tb.code(m["name"])), ("architecture", tb.text(m.get("architecture") or "n/a")),
        ("layers × heads", tb.number(f"{m['n_layers']} × {m['n_heads']}")),
        ("key/value heads", tb.number(str(m["n_kv_heads"]))),
        ("d_model / d_head", tb.number(f"{m['d_model']} / {m['d_head']}")),
        ("vocabulary", tb.number(fmt.integer(m["d_vocab"]))),
        ("normalisation / positions", tb.text(f"{m['normalization']} / {m['positional']}")),
    )]
    return ctx.number_table(tb.Table("The model analysed.", ["property", "value"], rows))


def index_page(ctx: ReportContext) -> list[Page]:
    heads = []
    for h in ctx.heads:
        r = h["results"]
        heads.append({"label": r["head"]["label"], "findings": findings.head_findings(r),
                      "slug": head_slug(r["head"]["label"])})
    markdown = render_template(
        ctx, "index.qmd.j2", model=ctx.model["results"]["model"], heads=heads,
        model_table=model_table(ctx), provenance=ctx.model["provenance"], config=ctx.model["config"],
        has_survey=ctx.artifacts.get("survey") is not None,
    )
    return [Page("index", "Overview", "Overview", markdown)]


def reproducibility_page(ctx: ReportContext) -> list[Page]:
    model = ctx.model
    prov = model["provenance"]
    prov_rows = [
        [tb.text("requested model"), tb.code(prov["requested_name"])],
        [tb.text("source"), tb.text(prov.get("source", "n/a"))],
    ]
    for key in ("repo_id", "revision", "path", "architecture"):
        if prov.get(key):
            prov_rows.append([tb.text(key.replace("_", " ")), tb.code(str(prov[key]))])
    for name, digest in sorted(prov.get("weights_sha256", {}).items()):
        prov_rows.append([tb.text(f"sha256 of {name}"), tb.code(digest)])
    prov_rows += [
        [tb.text("analysis code sha256"), tb.code(prov["analysis_code_sha256"])],
        [tb.text("weight processing"), tb.code(", ".join(f"{k}={str(v).lower()}" for k, v in sorted(prov["processing"].items())))],
        [tb.text("device / dtype"), tb.text(f"{prov['device']} / {prov['dtype']}")],
        [tb.text("seed"), tb.number(str(prov["seed"]))],
    ]
    provenance_table = ctx.number_table(tb.Table("Provenance of the artifacts.", ["item", "value"], prov_rows))
    versions = {**{f"{k} (analysis)": v for k, v in sorted(prov.get("libraries", {}).items())},
                **{f"{k} (report)": v for k, v in sorted(ctx.tool_versions.items())}}
    versions_table = ctx.number_table(tb.Table(
        "Software versions: the analysis (recorded in the artifacts) and this rendering.",
        ["package", "version"], [[tb.text(k), tb.code(v)] for k, v in versions.items()]))
    timings = (ctx.artifacts.get("timings") or {}).get("seconds", {})
    timings_table = None
    if timings:
        timings_table = ctx.number_table(tb.Table(
            f"Wall-clock time of each analysis step ({fmt.num(sum(timings.values()))} s in all; "
            f"device {(ctx.artifacts.get('timings') or {}).get('device', 'n/a')}).",
            ["step", "seconds"], [[tb.code(k), tb.number(fmt.num(v))] for k, v in timings.items()]))
    out_dir = shlex.quote(str(model["config"].get("output_dir", "build")))
    commands = {
        "build": f"headreport build --config report.toml --out {out_dir}",
        "make": f"make report CONFIG=report.toml OUT={out_dir}",
        "render": f"headreport render --artifacts {out_dir}/artifacts --out {out_dir}",
    }
    markdown = render_template(
        ctx, "reproducibility.qmd.j2", config_toml=config_to_toml(model["config"]),
        provenance_table=provenance_table, versions_table=versions_table, timings_table=timings_table,
        commands=commands, engine=ctx.engine, schema_version=model["schema_version"],
        heads=model["results"]["heads"],
    )
    return [Page("reproducibility", "Reproducibility", "Reproducibility", markdown)]


#: The report's pages in reading order. To add a page (e.g. the survey, from ``survey.json``), add a
#: builder here that returns ``[]`` when its artifact is absent; see :mod:`report.render`.
def survey_pages(ctx: ReportContext) -> list[Page]:
    """The survey page (:mod:`report.survey_charts`; none without ``survey.json``)."""
    from .survey_charts import survey_pages as build_survey_pages

    return build_survey_pages(ctx)


PAGE_BUILDERS: list[Callable[[ReportContext], list[Page]]] = [index_page, head_pages, survey_pages, reproducibility_page]


def build_pages(ctx: ReportContext, builders: list[Callable[[ReportContext], list[Page]]] | None = None) -> list[Page]:
    pages: list[Page] = []
    for builder in builders if builders is not None else PAGE_BUILDERS:
        pages.extend(builder(ctx))
    return pages


def tool_versions(engine_versions: Mapping[str, str]) -> dict[str, str]:
    """Versions of the report's libraries plus the engine's tools."""
    out = {}
    for dist in ("headreport", "altair", "vl-convert-python", "jinja2"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    out.update(engine_versions)
    return out
