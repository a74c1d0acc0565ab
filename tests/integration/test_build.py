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
from contextlib import contextmanager
from pathlib import Path

import pytest

from headreport.analysis.artifacts import MANIFEST, ArtifactError, load_artifacts, read_manifest
from headreport.analysis.config import config_to_toml
from headreport.build import stale_reason
from headreport.cli import main
from tests.helpers import artifacts_of, tiny_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def own_checkpoint(tiny_gpt2, tmp_path_factory) -> Path:
    """A copy of the tiny checkpoint that the tests may edit."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    shutil.copytree(tiny_gpt2, folder)
    return folder


@pytest.fixture(scope="module")
def analysed_set(own_checkpoint, tmp_path_factory):
    """Head 1.3 of the checkpoint copy with a names file and a prompt file of its own (both edited
    by the tests): (config, artifacts folder, names file)."""
    root = tmp_path_factory.mktemp("stale")
    names = root / "names.txt"
    names.write_text("Mary\nJohn\nJames\n", encoding="utf-8")
    (root / "prompts.txt").write_text("When Mary and John went out, John gave it to\n", encoding="utf-8")
    config = tiny_config(own_checkpoint, output_dir=str(root / "out"), heads=["1.3"], prompts=str(root / "prompts.txt"),
                         words={"names": str(names)},
                         analysis={"top_k": 5, "bootstrap_resamples": 200, "ov_sample_size": 200})
    return config, artifacts_of(config, root / "out" / "artifacts"), names


@contextmanager
def edited(path: Path, edit):
    """``path`` holds ``edit(its text)`` inside the block, and its own text again after it."""
    before = path.read_text(encoding="utf-8")
    try:
        path.write_text(edit(before), encoding="utf-8")
        yield
    finally:
        path.write_text(before, encoding="utf-8")


def copy_of(artifacts: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "artifacts"
    shutil.copytree(artifacts, dst)
    return dst


def test_fresh_artifacts_are_up_to_date(analysed_set):
    config, artifacts, _ = analysed_set
    assert stale_reason(config, artifacts) is None
    manifest = read_manifest(artifacts)
    assert set(manifest["files"]) == {"model.json", "head_1.3.json", "prompts.json"}
    assert ({"config", "analysis_code", "words.names", "words.generic", "prompts", "checkpoint"}
            <= set(manifest["inputs"]))


def test_checking_that_nothing_changed_imports_no_torch(analysed_set, tmp_path):
    """An unchanged build must finish in well under 2 s: the staleness check (config, word lists,
    prompt file, checkpoint files, code) reads and hashes files and imports nothing heavy."""
    config, artifacts, _ = analysed_set
    toml = tmp_path / "c.toml"
    toml.write_text(config_to_toml(config.to_dict()), encoding="utf-8")
    code = ("import sys\nfrom headreport.analysis.config import load_config\n"
            "from headreport.build import stale_reason\n"
            f"c = load_config({str(toml)!r}).replace(output_dir={config.output_dir!r})\n"
            "from pathlib import Path\n"
            f"assert stale_reason(c, Path({str(artifacts)!r})) is None, stale_reason(c, Path({str(artifacts)!r}))\n"
            "heavy = {'torch', 'transformers', 'transformer_lens'} & set(sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_an_edited_prompt_file_is_stale(analysed_set):
    config, artifacts, names = analysed_set
    with edited(names.parent / "prompts.txt", lambda text: text + "One more prompt\n"):
        assert stale_reason(config, artifacts) == "the prompts changed"
    assert stale_reason(config, artifacts) is None


def test_an_edited_word_list_is_stale(analysed_set, tmp_path):
    config, artifacts, names = analysed_set
    with edited(names, lambda text: text + "Anna\n"):
        assert stale_reason(config, artifacts) == "the word list words.names changed"
    assert stale_reason(config, artifacts) is None


def test_an_edited_checkpoint_config_is_stale(analysed_set, own_checkpoint):
    """A changed layer_norm_epsilon changes every number: config.json is part of the key."""
    config, artifacts, _ = analysed_set
    with edited(own_checkpoint / "config.json",
                lambda text: json.dumps({**json.loads(text), "layer_norm_epsilon": 1e-3})):
        assert stale_reason(config, artifacts) == "the model's files changed (weights, config.json or tokenizer)"
    assert stale_reason(config, artifacts) is None


def test_a_changed_config_or_missing_head_is_stale(analysed_set, tmp_path):
    config, artifacts, _ = analysed_set
    changed = config.replace(analysis=config.analysis.__class__(**{**config.analysis.__dict__, "top_k": 6}))
    assert stale_reason(changed, artifacts) == "the config changed"
    arts = copy_of(artifacts, tmp_path)
    (arts / "head_1.3.json").unlink()
    assert "incomplete" in stale_reason(config, arts)
    assert stale_reason(config, tmp_path / "nothing") == "no artifacts yet"


def test_sigkill_between_renames_is_detected_and_cleaned(analysed_set, tmp_path):
    """The process dies (os._exit, as under SIGKILL) after the first of its renames: a new model.json
    beside the old head file and a leftover temp file. The new manifest (written before the renames)
    does not match the files, so the next build re-analyses and render refuses the set; every file is
    still listed, so still ours; the next write removes the dead process's temp files."""
    config, artifacts, _ = analysed_set
    arts = copy_of(artifacts, tmp_path)
    changed = config.replace(analysis=config.analysis.__class__(**{**config.analysis.__dict__, "top_k": 6}))
    script = f"""
import os, sys
sys.path.insert(0, {str(ROOT)!r})
from headreport.analysis.config import config_from_dict
import json, pathlib
from headreport.analysis.pipeline import run_analysis
real, calls = os.replace, []
def dying_replace(a, b):
    calls.append(b)
    real(a, b)
    if len(calls) == 1:
        os._exit(137)
os.replace = dying_replace
config = config_from_dict(json.loads({json.dumps(changed.to_dict())!r}))
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
    artifacts_of(changed, arts)
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
    out = tmp_path / "out"
    dead = out / ".headreport-render-999999999-abcd"  # no such process
    (dead / "site").mkdir(parents=True)
    (dead / "site" / "x.html").write_text("x", encoding="utf-8")
    tmp = out / ".report.json.headreport-999999999-abcd.tmp"
    tmp.write_text("{}", encoding="utf-8")
    # a user's look-alikes: not names this tool makes, so never removed
    users = [out / ".render-999999999-abc", out / ".notes.999999999.abc.tmp",
             out / ".x.json.headreport-999999999-abcd.tmp"]
    users[0].mkdir()
    for p in users[1:]:
        p.write_text("mine", encoding="utf-8")
    assert main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"]) == 0
    assert not dead.exists() and not tmp.exists()
    assert all(p.exists() for p in users)
