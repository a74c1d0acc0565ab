"""Never lose a user's file, never let a string become markup: the output folders are owned through
the manifest, and every value from a config, a path or an artifact is escaped on every page."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import pytest

from headreport.cli import main
from tests.report_fixtures import pdf_text, reseal

#: an --out path with a newline, a backtick fence, a live script and Typst code in it
HOSTILE_OUT = "evil\n```\n<script>alert(7)</script>\n#panic(\"typst ran\")\n"


def render(artifacts: Path, out: Path, *extra: str) -> int:
    return main(["render", "--artifacts", str(artifacts), "--out", str(out), "--engine", "pandoc", *extra])


def test_a_users_file_in_an_output_folder_is_never_deleted(tiny_artifacts, tmp_path, capsys):
    home = tmp_path / "home"
    (home / "source").mkdir(parents=True)
    thesis = home / "source" / "thesis.tex"
    thesis.write_text("t", encoding="utf-8")
    assert render(tiny_artifacts, home) == 2
    err = capsys.readouterr().err
    assert "source" in err and "--force" in err and "Traceback" not in err
    assert thesis.read_text(encoding="utf-8") == "t"
    assert sorted(p.name for p in home.iterdir()) == ["source"]  # nothing written, no staging left
    assert list((home / "source").iterdir()) == [thesis]

    assert render(tiny_artifacts, home, "--force") == 0
    assert thesis.read_text(encoding="utf-8") == "t"
    manifest = json.loads((home / "report.json").read_text(encoding="utf-8"))
    assert "source/thesis.tex" not in manifest["files"]
    assert "site/index.html" in manifest["files"]


@pytest.fixture(scope="module")
def rendered(tiny_artifacts, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("owned") / "out"
    assert render(tiny_artifacts, out) == 0
    return out


def changed_artifacts(tiny_artifacts: Path, tmp_path: Path) -> Path:
    """A copy of the artifacts with one more timing: a new render key, so the next render runs."""
    arts = tmp_path / "changed-artifacts"
    shutil.copytree(tiny_artifacts, arts)
    doc = json.loads((arts / "timings.json").read_text(encoding="utf-8"))
    doc["seconds"]["extra/step"] = 1.0
    (arts / "timings.json").write_text(json.dumps(doc), encoding="utf-8")
    return arts


def test_a_rebuild_replaces_only_its_own_files(tiny_artifacts, rendered, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(rendered, out)  # the manifest holds relative paths: a copy is still owned
    tiny_artifacts = changed_artifacts(tiny_artifacts, tmp_path)
    notes = out / "site" / "my-notes.html"  # added by the user after the first render
    notes.write_text("mine", encoding="utf-8")
    # a file the previous render wrote and the next one does not: its manifest entry makes it ours
    stale = out / "figures" / "old-figure.svg"
    stale.write_text("<svg/>", encoding="utf-8")
    manifest = json.loads((out / "report.json").read_text(encoding="utf-8"))
    manifest["files"].append("figures/old-figure.svg")
    (out / "report.json").write_text(json.dumps(manifest), encoding="utf-8")
    index_before = (out / "site" / "index.html").stat().st_mtime_ns

    assert render(tiny_artifacts, out) == 0
    assert notes.read_text(encoding="utf-8") == "mine"
    assert not stale.exists()
    assert (out / "site" / "index.html").stat().st_mtime_ns >= index_before
    assert "site/my-notes.html" not in json.loads((out / "report.json").read_text(encoding="utf-8"))["files"]


def test_a_file_the_report_would_overwrite_is_refused(tiny_artifacts, rendered, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(rendered, out)
    tiny_artifacts = changed_artifacts(tiny_artifacts, tmp_path)
    manifest = json.loads((out / "report.json").read_text(encoding="utf-8"))
    manifest["files"].remove("site/index.html")  # as if the user had written their own index.html
    (out / "report.json").write_text(json.dumps(manifest), encoding="utf-8")
    (out / "site" / "index.html").write_text("my index", encoding="utf-8")
    assert render(tiny_artifacts, out) == 2
    assert "index.html" in capsys.readouterr().err
    assert (out / "site" / "index.html").read_text(encoding="utf-8") == "my index"


def test_out_that_is_a_file_is_refused(tiny_artifacts, tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    assert render(tiny_artifacts, target) == 2
    assert "not a folder" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == "x"


def hostile_config_copy(src: Path, dst: Path) -> Path:
    """Artifacts whose config and free-text fields carry markup in every target's syntax."""
    shutil.copytree(src, dst)
    for path in dst.glob("*.json"):
        doc = json.loads(path.read_text(encoding="utf-8"))
        if "config" in doc:
            doc["config"]["output_dir"] = HOSTILE_OUT
            doc["config"]["words"]["names"] = "/tmp/<b>names</b>\n```\n*x*.txt"
        if doc.get("kind") == "head":
            doc["results"]["subspace_alignment"]["comparison"] = {
                "available": False, "reason": "<script>alert(8)</script> #panic(\"typst ran\") *x*"}
        if doc.get("kind") in ("head", "model"):
            doc["results"]["model"]["notes"].append("<script>alert(9)</script> ```")
        path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    reseal(dst)
    return dst


def test_config_paths_and_artifact_text_never_become_markup(tiny_artifacts, tmp_path):
    out = tmp_path / HOSTILE_OUT  # a real folder whose name holds the injection
    arts = hostile_config_copy(tiny_artifacts, out / "artifacts")
    assert render(arts, out) == 0  # the PDF compiled: no Typst code ran (a #panic would stop it)
    site = out / "site"
    for page in site.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        for n in (7, 8, 9):
            assert f"<script>alert({n})" not in text, page.name
        assert "<b>names</b>" not in text
    repro = (site / "reproducibility.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(7)&lt;/script&gt;" in repro
    # the rebuild command and the config are shown verbatim, whole: the fence did not close
    command = html.unescape(repro.split('<pre class="code sh"><code>', 1)[1].split("</code></pre>", 1)[0])
    assert command == "headreport build --config report.toml --out '" + HOSTILE_OUT + "'"
    head = next(site.glob("head-*.html")).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(8)&lt;/script&gt;" in head
    text = pdf_text(out / "pdf" / "report.pdf")
    assert "typst ran" in text and "alert(7)" in text


@pytest.mark.parametrize("variant", ["<script>alert(1)</script>", "mlp_after_attention`{=html}"])
def test_an_unknown_variant_is_rejected_by_the_schema(tiny_artifacts, tmp_path, variant, capsys):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    path = next(arts.glob("head_*.json"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["results"]["effective_embedding"]["variant"] = variant
    path.write_text(json.dumps(doc), encoding="utf-8")
    reseal(arts)
    assert render(arts, tmp_path / "out") == 2
    assert "variant" in capsys.readouterr().err
    assert not (tmp_path / "out" / "site").exists()


def test_nothing_changed_renders_nothing(tiny_artifacts, rendered, tmp_path):
    """Same artifacts, code and engine: the second render touches no file (mtimes unchanged)."""
    out = tmp_path / "out"
    shutil.copytree(rendered, out, copy_function=shutil.copy2)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert render(tiny_artifacts, out) == 0
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before
    # one changed artifact: a new render, whose figures come from the cache (their bytes unchanged)
    figure = out / "figures" / "head-1-3-spectra.svg"
    content = figure.read_bytes()
    assert render(changed_artifacts(tiny_artifacts, tmp_path), out) == 0
    assert figure.read_bytes() == content
    assert json.loads((out / "report.json").read_text())["seconds"]["figures"] < 3.0
