"""The two data-safety defects of the adversarial run (issue 18), each as it was found:

* a rebuild on another model with the explorer and the prompts off showed the first model's explorer
  and prompts as current: the artifact set is now exactly what its manifest lists, a run removes the
  files of the previous set it did not write again (its own only), and ``render`` reads nothing else;
* a render deleted a user's files through a link that replaced ``site/assets/explorer``: deletion
  never follows a link in any path component.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import vl_convert

from headreport.analysis.artifacts import (
    MANIFEST,
    ArtifactError,
    foreign_artifacts,
    load_artifacts,
    read_manifest,
)
from headreport.cli import main
from headreport.report.figures import _export, entry_is_valid
from headreport.report.render import render
from tests.families import make_family_checkpoint
from tests.helpers import analysed

VOCAB = 4096


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_models")
    return (make_family_checkpoint("gpt2", root / "a", vocab_size=VOCAB),
            make_family_checkpoint("llama", root / "b", vocab_size=VOCAB))


def build(model: Path, out: Path, tmp: Path, *, explorer: bool, prompts: str, capsys) -> str:
    config = tmp / f"config-{model.name}.toml"
    config.write_text(f'heads = ["1.1"]\nprompts = "{prompts}"\n[model]\nname = "{model}"\ndevice = "cpu"\n'
                      f'[analysis]\nbootstrap_resamples = 200\nexplorer = {str(explorer).lower()}\n', encoding="utf-8")
    code = main(["build", "--config", str(config), "--out", str(out), "--engine", "pandoc", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0, err
    return err


def test_a_rebuild_on_another_model_shows_none_of_the_first_runs_results(two_models, tmp_path, capsys):
    a, b = two_models
    out = tmp_path / "out"
    build(a, out, tmp_path, explorer=True, prompts="builtin:ioi", capsys=capsys)
    arts = out / "artifacts"
    assert {"explorer_1.1.json", "vocabulary.json", "prompts.json"} <= {p.name for p in arts.iterdir()}
    assert (out / "site" / "assets" / "explorer").is_dir()
    build(b, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    names = {p.name for p in arts.iterdir()}
    assert not {"explorer_1.1.json", "vocabulary.json", "prompts.json"} & names  # removed: they were ours
    assert set(read_manifest(arts)["files"]) == {"model.json", "head_1.1.json"}
    assert "replacing" not in read_manifest(arts)  # the write finished
    loaded = load_artifacts(arts)
    assert loaded["explorers"] == {} and loaded["prompts"] is None and loaded["vocabulary"] is None
    assert loaded["model"]["results"]["model"]["architecture"] == "LlamaForCausalLM"
    html = (out / "site" / "head-1.1.html").read_text(encoding="utf-8")
    assert "hr-explorer" not in html and not (out / "site" / "assets" / "explorer").exists()
    assert not list((out / "site").glob("prompts*.html"))


def test_render_reads_only_what_the_manifest_lists(tiny_artifacts, tmp_path):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    listed = set(read_manifest(arts)["files"])
    # a file another run left (not listed) is not read, whatever it holds
    (arts / "prompts.json").write_text("{not even json", encoding="utf-8")
    assert "prompts.json" not in listed and load_artifacts(arts)["prompts"] is None
    # a listed file changed since it was written is refused, naming it
    head = arts / "head_1.3.json"
    doc = json.loads(head.read_text(encoding="utf-8"))
    doc["results"]["ov_self_suppression"]["median_rank"] = 1.0
    head.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(ArtifactError, match=r"head_1\.3\.json: missing or changed since it was written"):
        load_artifacts(arts)
    (arts / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="manifest.json: is missing"):
        load_artifacts(arts)


def test_a_run_never_removes_a_file_it_did_not_write(two_models, tmp_path, capsys):
    """A file of the previous set that someone changed, or replaced by a link, is no longer ours: the
    next run stops before any work, naming them, and leaves them (and the link's target) alone."""
    a, b = two_models
    out = tmp_path / "out"
    build(a, out, tmp_path, explorer=True, prompts="off", capsys=capsys)
    arts = out / "artifacts"
    changed = (arts / "vocabulary.json").read_text(encoding="utf-8") + " "
    (arts / "vocabulary.json").write_text(changed, encoding="utf-8")  # changed by the user
    mine = tmp_path / "mine.json"
    mine.write_text("my data", encoding="utf-8")
    (arts / "explorer_1.1.json").unlink()
    (arts / "explorer_1.1.json").symlink_to(mine)
    config = tmp_path / "b.toml"
    config.write_text(f'heads = ["1.1"]\nprompts = "off"\n[model]\nname = "{b}"\ndevice = "cpu"\n', encoding="utf-8")
    code = main(["build", "--config", str(config), "--out", str(out), "--engine", "pandoc", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "explorer_1.1.json" in err and "vocabulary.json" in err, err
    assert ((arts / "vocabulary.json").read_text(encoding="utf-8") == changed
            and (arts / "explorer_1.1.json").is_symlink())
    assert mine.read_text(encoding="utf-8") == "my data"
    assert read_manifest(arts)["inputs"]  # the first set's manifest, untouched
    with pytest.raises(ArtifactError, match=r"explorer_1\.1\.json: missing or changed"):
        load_artifacts(arts)  # and render shows none of it


def test_render_never_deletes_through_a_linked_folder(two_models, tmp_path, capsys):
    a, _ = two_models
    out = tmp_path / "out"
    build(a, out, tmp_path, explorer=True, prompts="off", capsys=capsys)
    explorer_dir = out / "site" / "assets" / "explorer"
    ours = sorted(str(p.relative_to(explorer_dir)) for p in explorer_dir.rglob("*") if p.is_file())
    assert ours and any("/" in n for n in ours)  # the shards are in a folder of their own
    user = tmp_path / "users-folder"
    for name in ours + ["notes.txt"]:  # same names as the files the previous render wrote
        (user / name).parent.mkdir(parents=True, exist_ok=True)
        (user / name).write_text(f"user's {name}", encoding="utf-8")
    shutil.rmtree(explorer_dir)
    explorer_dir.symlink_to(user, target_is_directory=True)
    build(a, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    assert sorted(str(p.relative_to(user)) for p in user.rglob("*") if p.is_file()) == sorted(ours + ["notes.txt"])
    assert all((user / n).read_text(encoding="utf-8") == f"user's {n}" for n in ours + ["notes.txt"])
    assert explorer_dir.is_symlink()


@pytest.mark.parametrize("name", ["model.json", "manifest.json", "timings.json", "head_1.1.json"])
@pytest.mark.parametrize("as_link", [False, True])
def test_a_users_file_in_artifacts_stops_the_run_before_any_work(name, as_link, two_models, tmp_path, capsys):
    """A file of one of the names headreport writes, that it did not write (no manifest lists it), or
    a link of that name: exit 2 at once, naming it, and nothing changed (the link's target neither)."""
    a, _ = two_models
    arts = tmp_path / "out" / "artifacts"
    arts.mkdir(parents=True)
    mine = tmp_path / "mine.txt"
    mine.write_text("my numbers", encoding="utf-8")
    if as_link:
        (arts / name).symlink_to(mine)
    else:
        (arts / name).write_text("my numbers", encoding="utf-8")
    (arts / "notes.txt").write_text("other names are never touched", encoding="utf-8")
    t0 = time.perf_counter()
    code = main(["analyze", "--model", str(a), "--head", "1.1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - t0 < 10, err
    assert name in err and "not headreport's" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in arts.iterdir()) == sorted([name, "notes.txt"])
    assert ((arts / name).read_text(encoding="utf-8") == "my numbers"
            and mine.read_text(encoding="utf-8") == "my numbers")


def test_files_of_other_names_in_artifacts_are_left_alone(two_models, tmp_path, capsys):
    a, b = two_models
    out = tmp_path / "out"
    arts = out / "artifacts"
    arts.mkdir(parents=True)
    (arts / "notes.txt").write_text("mine", encoding="utf-8")
    (arts / ".notes.123.abc.tmp").write_text("mine too", encoding="utf-8")  # looks like a temp file, is not ours
    build(a, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    build(b, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    assert (arts / "notes.txt").read_text(encoding="utf-8") == "mine"
    assert (arts / ".notes.123.abc.tmp").read_text(encoding="utf-8") == "mine too"


def test_a_poisoned_figure_cache_is_never_published(tiny_artifacts, tmp_path):
    """Cache entries with active SVG content or a formula CSV, even with a matching entry.json, and
    entries edited after export, are exported again: what reaches figures/ and site/figures/ is the
    tool's own export."""
    first = tmp_path / "first"
    render(tiny_artifacts, first, engine="pandoc")
    entries = [e for e in (first / ".headreport-cache").rglob("entry.json")]
    assert entries
    second = tmp_path / "second"
    second.mkdir()
    shutil.copytree(first / ".headreport-cache", second / ".headreport-cache")
    poisoned = [p.parent for p in (second / ".headreport-cache").rglob("entry.json")]
    for i, entry in enumerate(poisoned):
        svg, csv = entry / "figure.svg", entry / "figure.csv"
        if i % 3 == 0:
            svg.write_text(svg.read_text(encoding="utf-8").replace("</svg>", "<script>alert(1)</script></svg>"),
                           encoding="utf-8")
        elif i % 3 == 1:
            csv.write_text('=cmd|"/c calc"!A1\n' + csv.read_text(encoding="utf-8"), encoding="utf-8")
        else:
            (entry / "figure.png").write_bytes(b"not a png")
        if i % 2 == 0:  # a careful attacker also rewrites the recorded hashes
            meta = {"sha256": {f: hashlib.sha256((entry / f"figure.{f}").read_bytes()).hexdigest()
                               for f in ("svg", "png", "pdf", "csv")}}
            (entry / "entry.json").write_text(json.dumps(meta), encoding="utf-8")
    render(tiny_artifacts, second, engine="pandoc")
    for folder in (second / "figures", second / "site" / "figures"):
        for path in folder.glob("*.svg"):
            assert "<script" not in path.read_text(encoding="utf-8"), path
        for path in folder.glob("*.csv"):
            assert not path.read_text(encoding="utf-8").startswith("="), path
        for path in folder.glob("*.png"):
            assert path.read_bytes().startswith(b"\x89PNG"), path
    for path in (second / "figures").iterdir():
        if path.suffix != ".pdf":  # (vl-convert's PDF embeds a creation id)
            assert path.read_bytes() == (first / "figures" / path.name).read_bytes(), path.name
    assert all(entry_is_valid(e, (e / "figure.csv").read_text(encoding="utf-8")) for e in poisoned if e.exists())


def test_a_second_command_on_the_same_out_is_refused_while_the_first_runs(tiny_artifacts, tmp_path, capsys):
    """No silent replacement by a concurrent build: the second stops at once, naming the first's pid."""
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(out / '.headreport-lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, b'4242\\n'); print('locked', flush=True); time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        code = main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"])
        err = capsys.readouterr().err
        assert code == 2 and "another headreport (pid 4242)" in err and time.perf_counter() - t0 < 5, err
        assert not (out / "site").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"]) == 0


def test_the_in_the_way_message_names_what_is_in_the_way(tiny_artifacts, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"]) == 0
    shutil.rmtree(out / "site" / "assets")
    (out / "site" / "assets").write_text("a user's file where the report's folder goes", encoding="utf-8")
    (out / "report.json").write_text((out / "report.json").read_text(encoding="utf-8").replace('"figures', '"figurex'),
                                     encoding="utf-8")  # force a re-render
    code = main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"])
    err = capsys.readouterr().err
    assert code == 2 and f"{str(out / 'site' / 'assets')!r} is in the way of" in err, err
    assert (out / "site" / "assets").read_text(encoding="utf-8").startswith("a user's file")


def test_a_full_disk_during_a_figure_export_leaves_no_temp_folder_in_the_cache(tmp_path, monkeypatch):
    """The export writes into a temp folder of the cache and renames it into place; when the disk
    fills up half-way the temp folder goes, and no half entry is ever used."""
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vl_convert, "svg_to_pdf", full)
    spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json", "data": {"values": [{"x": 1}]},
            "mark": "point", "encoding": {"x": {"field": "x", "type": "quantitative"}}}
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(OSError, match="No space left"):
        _export((spec, "x\n1\n", str(cache / "entry")))
    assert list(cache.iterdir()) == []
    assert not entry_is_valid(cache / "entry", "x\n1\n")


def test_an_earlier_versions_artifact_folder_is_still_ours(tiny_artifacts, tiny_gpt2, tmp_path):
    """A folder an earlier headreport wrote: its manifest is of an earlier schema version, and beside
    it lies a survey.json that version kept on disk without listing it. The new run neither refuses
    the folder nor leaves the old files: the listed ones are replaced or removed as ours, the unlisted
    artifact of the kind its name says is adopted and removed, a file of another name is untouched."""
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    manifest = json.loads((arts / MANIFEST).read_text(encoding="utf-8"))
    manifest["schema_version"] = "3.0"
    (arts / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
    (arts / "survey.json").write_text(json.dumps({"schema_version": "3.0", "kind": "survey"}), encoding="utf-8")
    (arts / "explorer_9.9.json").write_text(json.dumps({"kind": "model"}), encoding="utf-8")  # not what it says
    assert foreign_artifacts(arts) == ["explorer_9.9.json"]
    (arts / "explorer_9.9.json").unlink()
    (arts / "notes.json").write_text("mine", encoding="utf-8")
    analysed(tmp_path, tiny_gpt2, heads=["1.3"])  # into arts, over the earlier version's files
    assert sorted(p.name for p in arts.iterdir()) == ["head_1.3.json", "manifest.json", "model.json", "notes.json",
                                                     "timings.json"]
    assert foreign_artifacts(arts) == [] and load_artifacts(arts)["survey"] is None
