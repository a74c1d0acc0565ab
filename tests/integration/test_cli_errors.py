"""Bad input through the command line: exit code 2, one clear message naming the problem, no
traceback, no artifact (nor temp file) written; failures midway leave nothing behind."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import headreport.analysis.artifacts
import headreport.analysis.diagonal
import headreport.analysis.pipeline
import headreport.analysis.spectra
from headreport.cli import main
from tests.helpers import FAST_ANALYSIS

ROOT = Path(__file__).resolve().parents[2]
HEADREPORT = Path(sys.executable).parent / "headreport"


def write_config(folder: Path, body: str, model: Path | None = None) -> Path:
    path = folder / "c.toml"
    head = f'[model]\nname = "{model}"\ndevice = "cpu"\n' if model else ""
    path.write_text(body + "\n" + head, encoding="utf-8")  # top-level keys before any table
    return path


@pytest.fixture
def cached_tiny_model(tiny_gpt2, tiny_model, monkeypatch):
    """Full runs reuse the session's loaded tiny model (loading is tested in test_models.py; the
    CLI path is otherwise unchanged). Other model names still go through the real loader."""
    real = headreport.analysis.pipeline.load_model

    def load(model_cfg, processing):
        if model_cfg.name == str(tiny_gpt2) and processing == type(processing)():
            return tiny_model
        return real(model_cfg, processing)

    monkeypatch.setattr(headreport.analysis.pipeline, "load_model", load)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main(["analyze", "--no-progress", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def assert_clean_failure(rc: int, err: str, out_dir: Path, *needles: str, code: int = 2) -> None:
    assert rc == code, err
    assert "Traceback" not in err
    assert err.startswith("headreport: error:") or code != 2, err
    for n in needles:
        assert n in err, (n, err)
    assert files_under(out_dir) == [], files_under(out_dir)


@pytest.mark.parametrize("body, needles", [
    ("[analysis]\ntopk = 3\n", ["analysis.topk", "unknown key", "top_k"]),
    ("[analysis]\ntop_k = \"20\"\n", ["analysis.top_k", "integer"]),
    ("[analysis]\nov_mode = \"fast\"\n", ["analysis.ov_mode", "exact", "sampled"]),
    ("[effective_embedding]\nvariant = \"nope\"\n", ["effective_embedding.variant", "mlp_after_attention"]),
    ("heads = [\"10-7\"]\n", ["heads", "'10-7'", "L.H"]),
    ("[words]\nnames = \"missing.txt\"\n", ["words.names", "missing.txt", "does not exist"]),
])
def test_bad_config(tmp_path, capsys, tiny_gpt2, body, needles):
    cfg = write_config(tmp_path, body, model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--out", str(tmp_path / "out"))
    assert_clean_failure(rc, err, tmp_path / "out", *needles)
    assert err.count("error:") == 1


def test_malformed_head_flag(tmp_path, capsys, tiny_gpt2):
    cfg = write_config(tmp_path, "", model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "10-7", "--out", str(tmp_path / "out"))
    assert_clean_failure(rc, err, tmp_path / "out", "--head", "'10-7'", "L.H")


def test_head_out_of_range_checked_after_load(tmp_path, capsys, tiny_gpt2, cached_tiny_model):
    cfg = write_config(tmp_path, FAST_ANALYSIS, model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--head", "5.0", "--out", str(tmp_path / "out"))
    assert_clean_failure(rc, err, tmp_path / "out", "heads", "5.0", "layers 0..1", "heads 0..3")


def test_missing_model_folder(tmp_path, capsys):
    cfg = write_config(tmp_path, FAST_ANALYSIS)
    missing = tmp_path / "no_such_checkpoint"
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--model", str(missing), "--out", str(tmp_path / "out"))
    assert_clean_failure(rc, err, tmp_path / "out", "model.name", str(missing), "does not exist")


def test_empty_words_file(tmp_path, capsys, tiny_gpt2, monkeypatch):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the word lists were checked")

    monkeypatch.setattr(headreport.analysis.pipeline, "load_model", no_load)  # fail fast: before the model load
    (tmp_path / "empty.txt").write_text("# only a comment\n\n   \n")
    cfg = write_config(tmp_path, '[words]\nnames = "empty.txt"\n' + FAST_ANALYSIS, model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--out", str(tmp_path / "out"))
    assert_clean_failure(rc, err, tmp_path / "out", "words", "empty.txt", "empty")


def test_multi_token_word_is_skipped_with_a_reason(tmp_path, capsys, tiny_gpt2, cached_tiny_model):
    (tmp_path / "names.txt").write_text("Mary\nJohn\nXyzzyqwertz\nJames\n")
    cfg = write_config(tmp_path, '[words]\nnames = "names.txt"\n' + FAST_ANALYSIS, model=tiny_gpt2)
    out = tmp_path / "out"
    rc, stdout, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--out", str(out))
    assert rc == 0, err
    assert "Xyzzyqwertz" in err  # logged
    doc = json.loads((out / "artifacts" / "head_1.3.json").read_text())
    names = doc["results"]["subspace_alignment"]["groups"]["names"]
    assert [w["word"] for w in names["words"]] == ["Mary", "John", "James"]
    assert len(names["skipped"]) == 1
    skipped = names["skipped"][0]
    assert skipped["word"] == "Xyzzyqwertz" and "not a single token" in skipped["reason"]
    assert doc["results"]["subspace_alignment"]["comparison"]["available"]
    assert str(out / "artifacts" / "model.json") in stdout


def test_offline_hub_name_not_cached_subprocess(tmp_path):
    """The real console script, offline, empty HF cache: exit 2 fast, one message saying how to fix it."""
    home = tmp_path / "hf_home"
    home.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    env.pop("TRANSFORMERS_CACHE", None)
    t0, cpu0 = time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [str(HEADREPORT), "analyze", "--model", "gpt2-small", "--head", "10.7", "--out", str(tmp_path / "out")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    elapsed = time.monotonic() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    assert proc.returncode == 2, proc.stderr
    # fast: ~4 s (imports) on an idle 2-core machine. CPU time < 10 s is the budget; wall time gets
    # slack for a machine shared with other jobs, but a network retry loop (~25 s of waiting) fails it.
    assert cpu < 10, cpu
    assert elapsed < 20, elapsed
    err = proc.stderr
    assert "Traceback" not in err
    assert err.count("headreport: error:") == 1
    assert "gpt2-small" in err and "not in the local Hugging Face cache" in err
    assert "local checkpoint folder" in err and "connect to the internet" in err  # how to fix
    assert files_under(tmp_path / "out") == []
    assert proc.stdout == ""


def test_internal_error_midway_leaves_nothing(tmp_path, capsys, tiny_gpt2, monkeypatch, cached_tiny_model):
    calls = []

    def boom(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # the second head's OV pass fails (each head has an OV and a QK pass):
            raise RuntimeError("simulated failure")  # the first head's results must not be written
        return real(*a, **k)

    real = headreport.analysis.diagonal.rank_pass
    monkeypatch.setattr(headreport.analysis.diagonal, "rank_pass", boom)
    cfg = write_config(tmp_path, FAST_ANALYSIS, model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--head", "0.1", "--out", str(tmp_path / "out"))
    assert len(calls) == 3
    assert rc == 1
    assert "simulated failure" in err and "internal error" in err
    assert files_under(tmp_path / "out") == []


def test_interrupt_while_writing_leaves_nothing(tmp_path, capsys, tiny_gpt2, monkeypatch, cached_tiny_model):
    """Ctrl-C while the artifact files are being written: no temp file, no partial set of artifacts."""
    real_fsync = os.fsync
    calls = []

    def interrupted_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fsync(fd)

    monkeypatch.setattr(headreport.analysis.artifacts.os, "fsync", interrupted_fsync)
    cfg = write_config(tmp_path, FAST_ANALYSIS, model=tiny_gpt2)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--out", str(tmp_path / "out"))
    assert len(calls) == 2
    assert_clean_failure(rc, err, tmp_path / "out", "interrupted", code=130)


def test_interrupt_during_analysis_keeps_previous_artifacts(tmp_path, capsys, tiny_gpt2, monkeypatch,
                                                            cached_tiny_model):
    """A previous run's artifacts survive an interrupted rerun untouched."""
    cfg = write_config(tmp_path, FAST_ANALYSIS, model=tiny_gpt2)
    out = tmp_path / "out"
    assert run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--out", str(out))[0] == 0
    before = {p: p.read_bytes() for p in files_under(out)}

    def interrupt(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(headreport.analysis.spectra, "singular_directions", interrupt)
    rc, _, err = run_cli(capsys, "--config", str(cfg), "--head", "1.3", "--out", str(out))
    assert rc == 130 and "Traceback" not in err
    assert {p: p.read_bytes() for p in files_under(out)} == before
