"""The reproducibility page: the command that rebuilds the report, the configuration, provenance,
software versions, timings, and the list of every table's LaTeX export. It is the last page built,
so the tables of every page are numbered (``ctx.tables``) by the time it lists them; its own three
are numbered as its template places them, before the list (which the template asks for there)."""

from __future__ import annotations

import shlex

from headreport.analysis.config import config_to_toml

from .. import formatting as fmt
from .. import tables as tb
from ..context import Page, ReportContext
from ..escaping import Safe, html_text, markdown_raw_inline, typst_raw
from ..latex import STYLE_FILE, TABLES_DIR


def provenance_table(ctx: ReportContext) -> tb.Table:
    prov = ctx.model["provenance"]
    rows = [
        [tb.text("requested model"), tb.code(prov["requested_name"])],
        [tb.text("source"), tb.text(prov.get("source", "n/a"))],
    ]
    for key in ("repo_id", "revision", "path", "architecture"):
        if prov.get(key):
            rows.append([tb.text(key.replace("_", " ")), tb.code(str(prov[key]))])
    for name, digest in sorted(prov.get("weights_sha256", {}).items()):
        rows.append([tb.text(f"sha256 of {name}"), tb.code(digest)])
    if prov.get("checkpoint_sha256"):
        rows.append([tb.text("sha256 of every checkpoint file"), tb.code(prov["checkpoint_sha256"])])
    rows += [
        [tb.text("analysis code sha256"), tb.code(prov["analysis_code_sha256"])],
        [tb.text("weight processing applied"),
         tb.code(", ".join(f"{k}={str(v).lower()}" for k, v in sorted(prov["processing"].items())))],
    ]
    for note in prov.get("processing_notes", []):
        rows.append([tb.text("processing note"), tb.text(note)])
    rows += [
        [tb.text("device / dtype"), tb.text(f"{prov['device']} / {prov['dtype']}")],
        [tb.text("seed"), tb.number(str(prov["seed"]))],
    ]
    return tb.Table("Provenance of the artifacts.", ["item", "value"], rows, slug="provenance")


def export_link(name: str) -> Safe:
    """A file of the LaTeX export, ``tables/<name>``: a download link on the site, the path in the PDF."""
    path = f"{TABLES_DIR}/{name}"
    return markdown_raw_inline(f'<a href="{html_text(path)}" download><code class="tok">{html_text(path)}</code></a>',
                               typst_raw(path))


#: steps that time a span holding other steps: ``survey/total_heads`` holds every ``survey/…`` step of
#: the per-head loop (not the model load nor W_EE, which come before it)
SPANS = {"survey/total_heads": ("survey/", ("survey/load_model", "survey/effective_embedding"))}


def total_seconds(timings: dict[str, float]) -> float:
    """The run's wall-clock total: every step once, the steps a span holds (:data:`SPANS`) left out
    when that span is recorded."""
    inside = {k for span, (prefix, outside) in SPANS.items() if span in timings
              for k in timings if k.startswith(prefix) and k != span and k not in outside}
    return sum(v for k, v in timings.items() if k not in inside)


def reproducibility_page(ctx: ReportContext) -> list[Page]:
    model = ctx.model
    prov = model["provenance"]
    provenance = provenance_table(ctx)
    versions = {**{f"{k} (analysis)": v for k, v in sorted(prov.get("libraries", {}).items())},
                **{f"{k} (report)": v for k, v in sorted(ctx.tool_versions.items())}}
    versions_table = tb.Table(
        "Software versions: the analysis (recorded in the artifacts) and this rendering.",
        ["package", "version"], [[tb.text(k), tb.code(v)] for k, v in versions.items()], slug="versions")
    timings = (ctx.artifacts.get("timings") or {}).get("seconds", {})
    timings_table = None
    if timings:
        timings_table = tb.Table(
            f"Wall-clock time of each analysis step ({fmt.num(total_seconds(timings))} s in all; "
            f"device {(ctx.artifacts.get('timings') or {}).get('device') or 'n/a'}).",
            ["step", "seconds"], [[tb.code(k), tb.number(fmt.num(v))] for k, v in timings.items()],
            slug="timings")
    out_dir = shlex.quote(str(model["config"].get("output_dir", "build")))
    render_cmd = f"headreport render --artifacts {out_dir}/artifacts --out {out_dir}"
    if ctx.artifacts.get("survey") is not None:  # the artifacts were made by a survey: its command
        commands = {"build": f"headreport survey --config report.toml --out {out_dir}\n{render_cmd}",
                    "make": None, "render": render_cmd, "survey": True}
    else:
        commands = {"build": f"headreport build --config report.toml --out {out_dir}",
                    "make": f"make report CONFIG=report.toml OUT={out_dir}", "render": render_cmd, "survey": False}
    return [ctx.page(
        "reproducibility", "Reproducibility", "Reproducibility", "reproducibility.qmd.j2",
        config_toml=config_to_toml(model["config"]),
        provenance_table=provenance, versions_table=versions_table, timings_table=timings_table,
        commands=commands, engine=ctx.engine, schema_version=model["schema_version"],
        heads=model["results"]["heads"], style_file=export_link(STYLE_FILE),
        exported_tables=lambda: [{"file": export_link(f"{t.slug}.tex"), "number": t.number, "caption": t.caption}
                                 for t in ctx.tables],  # called where the list goes: every table numbered
    )]
