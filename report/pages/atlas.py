"""The atlas page (``survey.json``'s ``atlas`` parts, :mod:`analysis.atlas`): a layer × head grid
coloured by each head's weights-only candidate type, every signature in its tooltip and a link to
the head's page; a table of every head's signatures (sortable on the site, exported as LaTeX; the
grid's CSV export holds the same rows); the strongest composition edges; the rules and, per type,
the heads found with their evidence. No page without a survey (or one from before the atlas).

Every number is the artifact's; this module formats and arranges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import charts
from .. import formatting as fmt
from .. import tables as tb
from ..context import Page, ReportContext
from ..escaping import raw_block
from ..figures import Figure
from ..outputs import head_slug

#: how many composition edges the edge table lists
EDGE_TABLE_LENGTH = 20

#: sorts a ``table.sortable`` by the clicked column (numbers numerically, the head column by layer
#: then head, text after numbers); no data, nothing loaded
SORT_SCRIPT = r"""<script>
(function () {
  function key(text, first) {
    var s = text.trim().replace(/\u2212/g, "-"), m = /^(\d+)\.(\d+)$/.exec(s);
    if (first && m) return [0, Number(m[1]) * 1e6 + Number(m[2])];
    var e = /^(.*)×10([⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)$/.exec(s), x;
    if (e) {  // report.formatting's scientific form: mantissa×10 and a superscript exponent
      var p = e[2].replace(/[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]/g, function (c) { return "-0123456789"["⁻⁰¹²³⁴⁵⁶⁷⁸⁹".indexOf(c)]; });
      x = Number(e[1]) * Math.pow(10, Number(p));
    } else {
      x = Number(s);
    }
    return isNaN(x) || s === "" ? [1, s] : [0, x];
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, i) {
      th.style.cursor = "pointer";
      th.title = "sort by this column";
      th.addEventListener("click", function () {
        var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
        var up = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", up ? "ascending" : "descending");
        rows.sort(function (a, b) {
          var x = key(a.cells[i].textContent, i === 0), y = key(b.cells[i].textContent, i === 0);
          if (x[0] !== y[0]) return x[0] - y[0];
          var r = x[0] === 0 ? x[1] - y[1] : String(x[1]).localeCompare(String(y[1]));
          return up ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
})();
</script>"""


def _num(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else fmt.num(x, digits)


def _partner(top: list[Mapping[str, Any]]) -> str:
    return f"{top[0]['label']} ({fmt.num(top[0]['ratio'], 3)}×)" if top else "—"


def atlas_table(survey: Mapping[str, Any], with_pages: set[str]) -> tb.Table:
    """Every head's signatures, in layer and head order (the site sorts it by any column)."""
    rows = []
    for r in survey["heads"]:
        a = r["atlas"]
        types = ("undefined (dead head)" if a["types"] is None
                 else ", ".join(t["type"].replace("_", " ") for t in a["types"]) or "none")
        rows.append([
            tb.code(r["label"]), tb.text(types),
            tb.number(_num(a["copying"]["full"]["score"])), tb.number(_num(a["copying"]["effective"]["score"])),
            tb.number(_num(a["positional"]["previous_token"])), tb.number(_num(a["positional"]["first_token"])),
            *[tb.text(_partner(a["composition"][m]["top"])) for m in ("Q", "K", "V")],
            tb.number(_num(r["copy_suppression_score"])),
            tb.text("yes" if r["label"] in with_pages else "—"),
        ])
    baseline = survey["atlas"]["composition_baseline"]["mean"]
    return tb.Table(
        f"Every head's weights-only signatures. Copying: Σ Re λ / Σ |λ| of the OV circuit's eigenvalues; "
        f"previous/first token: mean attention of the positional pattern; partners: the earlier head that "
        f"composes most, with its score over the random baseline {fmt.num(baseline, 3)}.",
        ["head", "types", "copying (W_E)", "copying (W_EE)", "previous token", "first token", "top Q partner",
         "top K partner", "top V partner", "copy-suppression score", "own page"],
        rows, css_class="sortable", slug="atlas-signatures")


def edge_table(survey: Mapping[str, Any], n: int = EDGE_TABLE_LENGTH) -> tb.Table:
    """The strongest composition edges, highest score first."""
    edges = survey["atlas"]["edges"][:n]
    rows = [[tb.code(e["source"]), tb.code(e["target"]), tb.text(e["mode"]), tb.number(fmt.num(e["score"])),
             tb.number(fmt.num(e["excess"])), tb.number(fmt.num(e["ratio"]))] for e in edges]
    return tb.Table(f"The {len(rows)} strongest composition edges (writer → reader, any mode).",
                    ["writer", "reader", "mode", "score", "excess over baseline", "× baseline"], rows,
                    slug="atlas-edges")


def found_by_type(survey: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per rule (in the artifact's order): its title, rule and the heads found, each with its evidence."""
    out = []
    for rule in survey["atlas"]["rules"]:
        heads = [{"label": r["label"], "evidence": t["evidence"]} for r in survey["heads"]
                 for t in (r["atlas"]["types"] or []) if t["type"] == rule["type"]]
        out.append({**rule, "heads": heads})
    return out


def atlas_pages(ctx: ReportContext) -> list[Page]:
    """The atlas page, or none when the survey (or its atlas) is absent."""
    artifact = ctx.survey
    if artifact is None or "atlas" not in artifact["results"]:
        return []
    survey = artifact["results"]
    m = survey["model"]
    with_pages = {h["results"]["head"]["label"] for h in ctx.heads}
    rows = charts.atlas_rows(survey, with_pages, lambda label: head_slug(label) + ".html")
    grid = Figure(
        "atlas-grid", "Head atlas",
        f"Every head of the model ({m['n_layers']} layers × {m['n_heads']} heads), coloured by its weights-only "
        "candidate type (the first that applies: copy suppression, induction, copying, previous token); grey: a "
        "dead head (undefined). Hover a cell for every signature; click it to open the head's page where it has "
        "one. The CSV export holds every signature of every head.",
        charts.atlas_grid_chart(rows, m["n_layers"], m["n_heads"]), rows)
    layer_rows = charts.layer_composition_rows(survey["atlas"]["layer_composition"])
    layers = Figure(
        "atlas-layer-composition", "Composition between layers",
        f"For each pair of layers (writer i down, later reader j across) and each mode, the strongest Q-, K- or "
        f"V-composition score between a head of layer i and a head of layer j, as a ratio to the random baseline "
        f"{_num(survey['atlas']['composition_baseline']['mean'])} (1/√d_model): over every pair of live heads, "
        "not only the strongest edges listed below. The CSV export holds every cell.",
        charts.layer_composition_chart(layer_rows, m["n_layers"]), layer_rows) if layer_rows else None
    signatures = atlas_table(survey, with_pages)
    edges = edge_table(survey)
    dead = [r["label"] for r in survey["heads"] if r["atlas"]["dead"]]
    sort_script = raw_block(SORT_SCRIPT, "// the site's copy of the table sorts by any column")
    return [ctx.page(
        "atlas", "Head atlas", "Atlas", "atlas.qmd.j2", survey=survey, model=m, atlas=survey["atlas"], grid=grid,
        layers=layers,
        signatures=signatures, edges=edges, found=found_by_type(survey), dead=dead, with_pages=with_pages,
        sort_script=sort_script,
    )]


def head_atlas_part(ctx: ReportContext, label: str) -> dict[str, Any] | None:
    """The head page's atlas section (when the survey has an atlas): the OV eigenvalues in the complex
    plane and the upstream heads that compose most with it in each mode (numbered where the head
    page's template places them)."""
    survey = ctx.survey
    if survey is None or "atlas" not in survey["results"]:
        return None
    record = next((r for r in survey["results"]["heads"] if r["label"] == label), None)
    if record is None:
        return None
    a = record["atlas"]
    rows = charts.eigenvalue_rows(a["copying"])
    figure = None
    if rows:
        figure = Figure(
            head_slug(label, "ov-eigenvalues"), f"Head {label}: OV eigenvalues",
            f"Head {label}: the non-zero eigenvalues of the full OV circuit W_E·W_OV·W_U (copying score "
            f"{_num(a['copying']['full']['score'])}) and of the effective one W_EE·W_OV·W_U (copying score "
            f"{_num(a['copying']['effective']['score'])}) in the complex plane. Right of the dashed line the "
            "head copies what it attends to, left it suppresses it.",
            charts.eigenvalue_chart(rows), rows)
    baseline = survey["results"]["atlas"]["composition_baseline"]["mean"]
    table_rows = [[tb.text(mode), tb.code(p["label"]), tb.number(fmt.num(p["score"])), tb.number(fmt.num(p["excess"])),
                   tb.number(fmt.num(p["ratio"]))] for mode in ("Q", "K", "V") for p in a["composition"][mode]["top"]]
    table = tb.Table(
        f"Head {label}: the earlier heads that compose most with it, per mode (random baseline "
        f"{fmt.num(baseline)}).", ["mode", "upstream head", "score", "excess over baseline", "× baseline"],
        table_rows, slug=head_slug(label, "composition")) if table_rows else None
    return {"record": a, "figure": figure, "table": table,
            "types": None if a["types"] is None else [t["type"].replace("_", " ") for t in a["types"]],
            "candidate_label": survey["results"]["atlas"]["candidate_label"]}
