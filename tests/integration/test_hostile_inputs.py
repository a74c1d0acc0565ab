"""A table of hostile and careless inputs, through the command line: each ends in exit 2 with one
message that names the input (no traceback, no "internal error"), and nothing is left in ``--out``.

Checkpoint damage: truncated, empty and huge-header safetensors, weights that do not match
config.json, NaN weights, a 1 GB sparse file, a symlink loop, an encoder-only model. Output: ``--out``
an existing file, a read-only folder, under /proc. Artifacts: a hostile head label, NaN in a spectrum,
strings for timings, an empty spectrum. Config: not UTF-8, a folder, a word list with NUL bytes.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

import headreport.analysis.pipeline
import headreport.report.render
from headreport.cli import main
from tests.families import make_family_checkpoint
from tests.report_fixtures import reseal


def checkpoint_copy(tiny_gpt2: Path, tmp: Path) -> Path:
    folder = tmp / "ckpt"
    shutil.copytree(tiny_gpt2, folder)
    return folder


def truncate(folder: Path) -> str:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return "model.safetensors"


def empty(folder: Path) -> str:
    (folder / "model.safetensors").write_bytes(b"")
    return "model.safetensors"


def huge_header(folder: Path) -> str:
    path = folder / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 1 << 60) + data[8:])
    return "model.safetensors"


def sparse_1gb(folder: Path) -> str:
    path = folder / "model.safetensors"
    path.unlink()
    with path.open("wb") as fh:
        fh.truncate(1 << 30)  # a 1 GB file of zeros, sparse on disk
    return "model.safetensors"


def mismatched_config(folder: Path) -> str:
    path = folder / "config.json"
    doc = json.loads(path.read_text())
    doc["n_embd"] = 96
    path.write_text(json.dumps(doc))
    return "config"


def nan_weights(folder: Path) -> str:
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    name = next(n for n in tensors if n.endswith("attn.c_attn.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, str(path), metadata={"format": "pt"})
    assert not torch.isfinite(load_file(str(path))[name]).all()
    return "NaN"


def symlink_loop(folder: Path) -> str:
    os.symlink(folder / "loop.safetensors", folder / "loop.safetensors")
    return "loop.safetensors"


def encoder_only(folder: Path) -> str:
    transformers.BertConfig().to_json_file(str(folder / "config.json"))
    return "encoder-only"


CHECKPOINT_CASES: dict[str, Callable[[Path], str]] = {
    "truncated safetensors": truncate,
    "zero-byte safetensors": empty,
    "header too large": huge_header,
    "1 GB sparse safetensors": sparse_1gb,
    "config.json shapes differ from the weights": mismatched_config,
    "NaN in the weights": nan_weights,
    "symlink loop in the checkpoint folder": symlink_loop,
    "encoder-only model": encoder_only,
}


def assert_clean_refusal(code: int, err: str, names: str, out: Path) -> None:
    assert code == 2, err
    assert "Traceback" not in err and "internal error" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("headreport: error:")]
    assert len(lines) == 1, err
    assert names in lines[0], err
    assert not out.exists() or not any(out.rglob("*")), list(out.rglob("*"))


@pytest.mark.parametrize("case", CHECKPOINT_CASES)
def test_a_damaged_checkpoint_is_refused_before_loading(case, tiny_gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = checkpoint_copy(tiny_gpt2, tmp_path)
    names = CHECKPOINT_CASES[case](folder)
    out = tmp_path / "out"
    code = main(["analyze", "--model", str(folder), "--head", "1.1", "--out", str(out), "--no-progress"])
    assert_clean_refusal(code, capsys.readouterr().err, names, out)


def refused_before_torch(args: list[str], cwd: Path) -> str:
    """``headreport ARGS`` in a fresh interpreter: asserts exit 2 with torch, transformers and
    TransformerLens never imported; returns what it printed on stderr."""
    code = ("import sys\nfrom headreport.cli import main\n"
            f"rc = main({args!r})\n"
            "heavy = {'torch', 'transformers', 'transformer_lens'} & set(sys.modules)\n"
            "assert rc == 2 and not heavy, (rc, heavy)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr
    return run.stderr


@pytest.mark.parametrize("command", ["analyze", "survey", "build"])
def test_a_damaged_checkpoint_is_refused_before_torch_is_imported(command, tiny_gpt2, tmp_path):
    """The refusal takes a second or two, not the ten of importing torch: the checkpoint checks run first."""
    folder = checkpoint_copy(tiny_gpt2, tmp_path)
    truncate(folder)
    args = [command, "--model", str(folder), "--head", "1.1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert "is truncated" in refused_before_torch(args, tmp_path)


@pytest.mark.parametrize("what", ["prompts", "words"])
def test_a_bad_prompt_or_word_file_is_refused_before_torch_is_imported(what, tiny_gpt2, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\nbad\x00line\n")
    config = tmp_path / "c.toml"
    config.write_text(f'prompts = "{bad}"\n' if what == "prompts" else f'[words]\nnames = "{bad}"\n')
    args = ["analyze", "--config", str(config), "--model", str(tiny_gpt2), "--head", "1.1",
            "--out", str(tmp_path / "out"), "--no-progress"]
    assert str(bad) in refused_before_torch(args, tmp_path)


def test_out_that_is_a_file_is_refused_before_the_analysis(tiny_gpt2, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "file"
    target.write_text("x")
    code = main(["analyze", "--model", str(tiny_gpt2), "--head", "1.1", "--out", str(target), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "is not a folder" in err and str(target) in err
    assert target.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_out_in_a_read_only_folder_is_refused(tiny_gpt2, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code = main(["analyze", "--model", str(tiny_gpt2), "--head", "1.1", "--out", str(ro / "x"), "--no-progress"])
        assert code == 2 and "cannot write" in capsys.readouterr().err
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("command", ["analyze", "render"])
def test_out_under_proc_is_refused(command, tiny_gpt2, tiny_artifacts, capsys):
    args = (["--model", str(tiny_gpt2), "--head", "1.1", "--no-progress"] if command == "analyze"
            else ["--artifacts", str(tiny_artifacts)])
    code = main([command, *args, "--out", "/proc/headreport-out"])
    err = capsys.readouterr().err
    assert code == 2 and "/proc" in err and "Traceback" not in err


def tamper(doc: dict, case: str) -> None:
    r = doc["results"]
    if case == "label":
        r["head"]["label"] = "</script><script>alert(1)</script>"
    elif case == "path label":
        r["head"]["label"] = "../../../../tmp/x"
    elif case == "empty spectrum":
        r["spectra"]["w_qk"] = []


ARTIFACT_CASES = {
    "label": "/results/head/label",
    "path label": "/results/head/label",
    "empty spectrum": "/results/spectra/w_qk",
}


@pytest.mark.parametrize("case", ARTIFACT_CASES)
def test_a_tampered_artifact_names_the_file_the_path_and_the_rule(case, tiny_artifacts, tmp_path, capsys):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    path = next(arts.glob("head_*.json"))
    doc = json.loads(path.read_text())
    tamper(doc, case)
    path.write_text(json.dumps(doc))
    reseal(arts)  # behind the manifest's check (a changed file): the schema's, with the rule named
    out = tmp_path / "out"
    code = main(["render", "--artifacts", str(arts), "--out", str(out)])
    err = capsys.readouterr().err
    assert_clean_refusal(code, err, path.name, out)
    assert ARTIFACT_CASES[case] in err and "(rule: " in err


def test_nan_in_an_artifact_is_refused(tiny_artifacts, tmp_path, capsys):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    path = next(arts.glob("head_*.json"))
    text = path.read_text()
    doc = json.loads(text)
    first = doc["results"]["spectra"]["w_qk"][0]
    path.write_text(text.replace(json.dumps(first), "NaN", 1))
    out = tmp_path / "out"
    code = main(["render", "--artifacts", str(arts), "--out", str(out)])
    assert_clean_refusal(code, capsys.readouterr().err, path.name, out)


@pytest.mark.parametrize("seconds", [{"x": "fast"}, ["1", 2], {"x": -1.0}])
def test_bad_timings_are_refused(seconds, tiny_artifacts, tmp_path, capsys):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    doc = json.loads((arts / "timings.json").read_text())
    doc["seconds"] = seconds
    (arts / "timings.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    code = main(["render", "--artifacts", str(arts), "--out", str(out)])
    assert_clean_refusal(code, capsys.readouterr().err, "timings.json", out)


def test_a_non_utf8_config_and_a_config_folder(tmp_path, capsys):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'output_dir = "caf\xe9"\n')
    out = tmp_path / "out"
    assert main(["analyze", "--config", str(bad), "--out", str(out)]) == 2
    assert_clean_refusal(2, capsys.readouterr().err, "latin1.toml", out)
    assert main(["analyze", "--config", str(tmp_path), "--out", str(out)]) == 2
    assert_clean_refusal(2, capsys.readouterr().err, "is a folder", out)


def test_a_word_list_with_nul_bytes(tiny_gpt2, tmp_path, capsys):
    words = tmp_path / "names.txt"
    words.write_bytes(b"Mary\nJo\x00hn\n")
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "{tiny_gpt2}"\n[words]\nnames = "{words}"\n')
    out = tmp_path / "out"
    code = main(["analyze", "--config", str(config), "--head", "1.1", "--out", str(out)])
    err = capsys.readouterr().err
    assert_clean_refusal(code, err, "words.names", out)
    assert "NUL" in err


def _tampered_render(tiny_artifacts, tmp_path, capsys, edit, name_of=None):
    arts = tmp_path / "artifacts"
    shutil.copytree(tiny_artifacts, arts)
    edit(arts)
    reseal(arts, add=tuple(name_of(arts)) if name_of else ())
    out = tmp_path / "out"
    code = main(["render", "--artifacts", str(arts), "--out", str(out)])
    return code, capsys.readouterr().err, out


def _edit_head(arts: Path, change) -> None:
    path = arts / "head_1.3.json"
    doc = json.loads(path.read_text())
    change(doc["results"]["head"])
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("change, words", [
    (lambda h: h.update(layer=7, head=3, label="7.3"), "holds head 7.3"),
    (lambda h: h.update(label="0.1", layer=0, head=1), "not head 1.3"),
    (lambda h: h.update(kv_head=9), "outside the model"),
])
def test_a_head_file_that_is_not_its_head_or_outside_the_model_is_refused(change, words, tiny_artifacts, tmp_path,
                                                                          capsys):
    code, err, out = _tampered_render(tiny_artifacts, tmp_path, capsys, lambda a: _edit_head(a, change))
    assert code == 2 and words in err and "head_1.3.json" in err and "Traceback" not in err, err
    assert not (out / "site").exists()


def test_a_head_outside_the_model_in_model_json_is_refused(tiny_artifacts, tmp_path, capsys):
    def edit(arts):
        doc = json.loads((arts / "model.json").read_text())
        doc["results"]["heads"] = ["1.3", "5.0"]
        (arts / "model.json").write_text(json.dumps(doc))
        shutil.copy(arts / "head_1.3.json", arts / "head_5.0.json")
        _edit_head(arts, lambda h: None)
        path = arts / "head_5.0.json"
        d = json.loads(path.read_text())
        d["results"]["head"].update(label="5.0", layer=5, head=0)
        path.write_text(json.dumps(d))

    code, err, out = _tampered_render(tiny_artifacts, tmp_path, capsys, edit, lambda a: ["head_5.0.json"])
    assert code == 2 and "outside the model" in err and "head_5.0.json" in err, err


@pytest.mark.parametrize("args, key", [
    (["--out", "x" * 300], "--out"),
    (["--out", "a/" * 2100], "--out"),
    (["--model", "m" * 256], "model.name"),
    (["--out", "bad\x00dir"], "--out"),
])
def test_paths_the_system_cannot_take_are_refused_at_once(args, key, tmp_path, monkeypatch, capsys):
    """A name over 255 bytes, a path over the system's limit, a NUL: one line naming the key, exit 2,
    before any model is looked for (no traceback, nothing created)."""
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code = main(["analyze", "--head", "0.0", "--no-progress",
                 *(["--model", str(tmp_path / "none")] if "--model" not in args else []), *args])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - t0 < 5, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err and len(err) < 600, err
    assert list(tmp_path.iterdir()) == []


def test_a_nul_in_output_dir_and_a_deeply_nested_config_are_refused(tmp_path, capsys):
    (tmp_path / "nul.toml").write_text('output_dir = "bu\\u0000ild"\n', encoding="utf-8")
    (tmp_path / "deep.toml").write_text("x = " + "[" * 1000 + "]" * 1000 + "\n", encoding="utf-8")
    for name, words in (("nul.toml", "output_dir"), ("deep.toml", "nests")):
        code = main(["analyze", "--config", str(tmp_path / name), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_a_full_disk_while_rendering_is_one_clear_line(tiny_artifacts, tmp_path, monkeypatch, capsys):
    """ENOSPC while the figures are exported: exit 2, the cause, the file and what to do; no site, no
    staging folder, no temp folder in the figure cache."""
    def full(figures, out_dir, cache, workers=2):  # the disk fills up while the first export is written
        (out_dir / "partial.svg").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "partial.svg").write_text("<svg", encoding="utf-8")
        raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "figure.svg"))

    monkeypatch.setattr(headreport.report.render, "export_figures", full)
    out = tmp_path / "out"
    code = main(["render", "--artifacts", str(tiny_artifacts), "--out", str(out), "--engine", "pandoc"])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "free some space" in err and "figure.svg" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (out / "site").exists()
    assert not out.exists() or not [p for p in out.iterdir() if p.name.startswith(".headreport-render")]
    cache = out / ".headreport-cache"
    assert not cache.exists() or not [p for p in cache.rglob(".tmp-*")]


def test_limits_are_never_silent_caps(tmp_path, capsys):
    """A sample larger than the vocabulary is refused, naming the key (it was capped silently), and a
    word list longer than an artifact can record is refused before the model is looked for."""
    folder = make_family_checkpoint("gpt2", tmp_path / "ckpt", vocab_size=4096)
    config = tmp_path / "c.toml"
    config.write_text(f'prompts = "off"\n[model]\nname = "{folder}"\ndevice = "cpu"\n'
                      '[analysis]\nov_mode = "sampled"\nov_sample_size = 60000\n', encoding="utf-8")
    code = main(["analyze", "--config", str(config), "--head", "1.1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "analysis.ov_sample_size: 60,000 is more than the model's 4,096 tokens" in err, err
    words = tmp_path / "names.txt"
    words.write_text("\n".join(f"w{i}" for i in range(100_001)), encoding="utf-8")
    config.write_text(f'prompts = "off"\n[model]\nname = "{tmp_path / "absent"}"\n[words]\nnames = "{words}"\n',
                      encoding="utf-8")
    code = main(["analyze", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "words.names" in err and "100,001 words" in err and "at most 100,000" in err, err


def test_an_over_long_prompt_is_refused_before_any_heavy_work(tiny_gpt2, tmp_path, monkeypatch, capsys):
    """It was refused only after 127 s of analysis: now right after the model is loaded, before W_EE."""
    def heavy(*args, **kwargs):
        raise AssertionError("the effective embedding was computed before the prompts were checked")

    monkeypatch.setattr(headreport.analysis.pipeline, "effective_embedding", heavy)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("A short one.\n" + " word" * 300 + "\n", encoding="utf-8")
    config = tmp_path / "c.toml"
    config.write_text(f'prompts = "{prompts}"\n[model]\nname = "{tiny_gpt2}"\ndevice = "cpu"\n', encoding="utf-8")
    code = main(["analyze", "--config", str(config), "--head", "1.1", "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert (code == 2 and "prompts:" in err
            and "301 tokens; a prompt is at most 64 (the model's context is 64 tokens)" in err), err
    assert not (tmp_path / "out" / "artifacts" / "model.json").exists()
