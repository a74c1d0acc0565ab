"""Never reuse stale results, never leave half-written files: the staleness key (word lists,
every checkpoint file, the artifact set's completeness), SIGKILL between two renames, SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from headreport.analysis.artifacts import MANIFEST, ArtifactError, load_artifacts, read_manifest
from headreport.analysis.config import config_from_dict
from headreport.analysis.pipeline import run_analysis
from headreport.build import stale_reason

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_checkpoint(tiny_gpt2, tmp_path_factory) -> Path:
    """A copy of the tiny checkpoint that the tests may edit."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    shutil.copytree(tiny_gpt2, folder)
    return folder


def config_text(folder: Path, names: Path) -> str:
    return f"""
heads = ["1.3"]
prompts = "{names.parent / 'prompts.txt'}"
[model]
name = "{folder}"
device = "cpu"
[words]
names = "{names}"
[analysis]
top_k = 5
bootstrap_resamples = 200
ov_mode = "sampled"
ov_sample_size = 200
"""


@pytest.fixture(scope="module")
def analysed(own_checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("stale")
    names = root / "names.txt"
    names.write_text("Mary\nJohn\nJames\n", encoding="utf-8")
    (root / "prompts.txt").write_text("When Mary and John went out, John gave it to\n", encoding="utf-8")
    config = config_from_dict(tomllib.loads(config_text(own_checkpoint, names))).replace(output_dir=str(root / "out"))
    run_analysis(config, root / "out" / "artifacts", progress=False, log=lambda m: None)
    return config, root / "out" / "artifacts", names


def copy_of(artifacts: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifacts"
    shutil.copytree(artifacts, dst)
    return dst


def test_fresh_artifacts_are_up_to_date(analysed):
    config, artifacts, _ = analysed
    assert stale_reason(config, artifacts) is None
    manifest = read_manifest(artifacts)
    assert set(manifest["files"]) == {"model.json", "head_1.3.json", "prompts.json"}
    assert {"config", "analysis_code", "words.names", "words.generic", "prompts", "checkpoint"} <= set(manifest["inputs"])


def test_checking_that_nothing_changed_imports_no_torch(analysed, own_checkpoint, tmp_path):
    """An unchanged build must finish in well under 2 s: the staleness check (config, word lists,
    prompt file, checkpoint files, code) reads and hashes files and imports nothing heavy."""
    config, artifacts, _ = analysed
    names = Path(config.words.names)
    toml = tmp_path / "c.toml"
    toml.write_text(config_text(own_checkpoint, names), encoding="utf-8")
    code = ("import sys\nfrom headreport.analysis.config import load_config\nfrom headreport.build import stale_reason\n"
            f"c = load_config({str(toml)!r}).replace(output_dir={config.output_dir!r})\n"
            f"from pathlib import Path\nassert stale_reason(c, Path({str(artifacts)!r})) is None, stale_reason(c, Path({str(artifacts)!r}))\n"
            "heavy = {'torch', 'transformers', 'transformer_lens'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_an_edited_prompt_file_is_stale(analysed):
    config, artifacts, names = analysed
    prompts = names.parent / "prompts.txt"
    before = prompts.read_text(encoding="utf-8")
    try:
        prompts.write_text(before + "One more prompt\n", encoding="utf-8")
        assert stale_reason(config, artifacts) == "the prompts changed"
    finally:
        prompts.write_text(before, encoding="utf-8")
    assert stale_reason(config, artifacts) is None


def test_an_edited_word_list_is_stale(analysed, tmp_path):
    config, artifacts, names = analysed
    before = names.read_text(encoding="utf-8")
    try:
        names.write_text(before + "Anna\n", encoding="utf-8")
        assert stale_reason(config, artifacts) == "the word list words.names changed"
    finally:
        names.write_text(before, encoding="utf-8")
    assert stale_reason(config, artifacts) is None


def test_an_edited_checkpoint_config_is_stale(analysed, own_checkpoint):
    """A changed layer_norm_epsilon changes every number: config.json is part of the key."""
    config, artifacts, _ = analysed
    path = own_checkpoint / "config.json"
    before = path.read_text(encoding="utf-8")
    try:
        doc = json.loads(before)
        doc["layer_norm_epsilon"] = 1e-3
        path.write_text(json.dumps(doc), encoding="utf-8")
        assert stale_reason(config, artifacts) == "the model's files changed (weights, config.json or tokenizer)"
    finally:
        path.write_text(before, encoding="utf-8")
    assert stale_reason(config, artifacts) is None


def test_a_changed_config_or_missing_head_is_stale(analysed, tmp_path):
    config, artifacts, _ = analysed
    changed = config.replace(analysis=config.analysis.__class__(**{**config.analysis.__dict__, "top_k": 6}))
    assert stale_reason(changed, artifacts) == "the config changed"
    arts = copy_of(artifacts, tmp_path)
    (arts / "head_1.3.json").unlink()
    assert "incomplete" in stale_reason(config, arts)
    assert stale_reason(config, tmp_path / "nothing") == "no artifacts yet"


def test_sigkill_between_renames_is_detected_and_cleaned(analysed, tmp_path):
    """The process dies (os._exit, as under SIGKILL) after the first of its renames: a new model.json
    beside the old head file and a leftover temp file. The new manifest (written before the renames)
    does not match the files, so the next build re-analyses and render refuses the set; every file is
    still listed, so still ours; the next write removes the dead process's temp files."""
    config, artifacts, _ = analysed
    arts = copy_of(artifacts, tmp_path)
    changed = config.replace(analysis=config.analysis.__class__(**{**config.analysis.__dict__, "top_k": 6}))
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from headreport.analysis.config import config_from_dict
import tomllib, pathlib
from headreport.analysis.pipeline import run_analysis
real, calls = os.replace, []
def dying_replace(a, b):
    calls.append(b)
    real(a, b)
    if len(calls) == 1:
        os._exit(137)
os.replace = dying_replace
config = config_from_dict(tomllib.loads({config_text(Path(config.model.name), Path(config.words.names))!r}))
config = config.replace(analysis=config.analysis.__class__(**{{**config.analysis.__dict__, "top_k": 6}}))
run_analysis(config, pathlib.Path({str(arts)!r}), progress=False, log=lambda m: None)
"""
    proc = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode == 137
    assert (arts / MANIFEST).exists()
    leftovers = [p for p in arts.iterdir() if p.name.endswith(".tmp")]
    assert leftovers, "the dead process left its temp files"
    assert "incomplete or changed" in stale_reason(changed, arts)
    assert "incomplete or changed" in stale_reason(config, arts)
    with pytest.raises(ArtifactError, match="changed since it was written"):
        load_artifacts(arts)
    run_analysis(changed, arts, progress=False, log=lambda m: None)
    assert stale_reason(changed, arts) is None
    assert not [p for p in arts.iterdir() if p.name.endswith(".tmp")]


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_during_render_leaves_nothing(tiny_artifacts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "headreport", "render", "--artifacts", str(tiny_artifacts),
                             "--out", str(out), "--engine", "pandoc"], cwd=ROOT, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert wait_for(lambda: any(p.name.startswith(".headreport-render-") for p in out.iterdir()))
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "Traceback" not in err
    assert list(out.iterdir()) == []  # no staging folder, no half of a site, no lock


def test_stale_staging_of_a_killed_render_is_removed_at_the_next_start(tiny_artifacts, tmp_path):
    from headreport.cli import main

    out = tmp_path / "out"
    dead = out / ".headreport-render-999999999-abcd"  # no such process
    (dead / "site").mkdir(parents=True)
    (dead / "site" / "x.html").write_text("x", encoding="utf-8")
    tmp = out / ".report.json.headreport-999999999-abcd.tmp"
    tmp.write_text("{}", encoding="utf-8")
    # a user's look-alikes: not names this tool makes, so never removed
    users = [out / ".render-999999999-abc", out / ".notes.999999999.abc.tmp", out / ".x.json.headreport-999999999-abcd.tmp"]
    users[0].mkdir()
    for p in users[1:]:
        p.write_text("mine", encoding="utf-8")
    assert main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"]) == 0
    assert not dead.exists() and not tmp.exists()
    assert all(p.exists() for p in users)
