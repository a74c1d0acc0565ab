"""The two data-safety defects of the adversarial run (issue 18), each as it was found:

* a rebuild on another model with the explorer and the prompts off showed the first model's explorer
  and prompts as current: the artifact set is now exactly what its manifest lists, a run removes the
  files of the previous set it did not write again (its own only), and ``render`` reads nothing else;
* a render deleted a user's files through a link that replaced ``site/assets/explorer``: deletion
  never follows a link in any path component.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.artifacts import MANIFEST, ArtifactError, load_artifacts, read_manifest
from headreport.cli import main
from tests.families import make_family_checkpoint

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
    loaded = load_artifacts(arts)
    assert loaded["explorers"] == {} and loaded["prompts"] is None and loaded["vocabulary"] is None
    assert loaded["model"]["results"]["model"]["architecture"] == "LlamaForCausalLM"
    html = (out / "site" / "head-1.1.html").read_text(encoding="utf-8")
    assert "hr-explorer" not in html and not (out / "site" / "assets" / "explorer").exists()
    assert not list((out / "site").glob("prompts*.html"))


def test_render_reads_only_what_the_manifest_lists(tiny_artifacts, tmp_path):
    arts = tmp_path / "artifacts"
    import shutil

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
    """A file of the previous set that someone changed, or replaced by a link, is left alone (and not
    read); the link's target is untouched."""
    a, b = two_models
    out = tmp_path / "out"
    build(a, out, tmp_path, explorer=True, prompts="off", capsys=capsys)
    arts = out / "artifacts"
    (arts / "vocabulary.json").write_text((arts / "vocabulary.json").read_text(encoding="utf-8") + " ",
                                          encoding="utf-8")  # changed by the user
    mine = tmp_path / "mine.json"
    mine.write_text("my data", encoding="utf-8")
    (arts / "explorer_1.1.json").unlink()
    (arts / "explorer_1.1.json").symlink_to(mine)
    build(b, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    assert (arts / "vocabulary.json").is_file() and (arts / "explorer_1.1.json").is_symlink()
    assert mine.read_text(encoding="utf-8") == "my data"
    assert load_artifacts(arts)["explorers"] == {}


def test_render_never_deletes_through_a_linked_folder(two_models, tmp_path, capsys):
    a, _ = two_models
    out = tmp_path / "out"
    build(a, out, tmp_path, explorer=True, prompts="off", capsys=capsys)
    explorer_dir = out / "site" / "assets" / "explorer"
    ours = sorted(p.name for p in explorer_dir.iterdir())
    assert ours
    user = tmp_path / "users-folder"
    user.mkdir()
    for name in ours + ["notes.txt"]:  # same names as the files the previous render wrote
        (user / name).write_text(f"user's {name}", encoding="utf-8")
    for p in explorer_dir.iterdir():
        p.unlink()
    explorer_dir.rmdir()
    explorer_dir.symlink_to(user, target_is_directory=True)
    build(a, out, tmp_path, explorer=False, prompts="off", capsys=capsys)
    assert sorted(p.name for p in user.iterdir()) == sorted(ours + ["notes.txt"])
    assert all((user / n).read_text(encoding="utf-8") == f"user's {n}" for n in ours + ["notes.txt"])
    assert explorer_dir.is_symlink()
