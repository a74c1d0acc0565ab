"""Loading: the fixture checkpoint goes through ``load_model`` like any model; processing keeps the
model's log-probs; provenance records what was loaded and how."""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil

import huggingface_hub.constants
import pytest
import torch
import transformers

from headreport.analysis.config import ModelConfig, ProcessingConfig
from headreport.analysis.errors import ModelUnavailableError
from headreport.analysis.model.loader import load_model

SEQUENCES = [
    [50256, 464, 3290, 318, 257, 1332, 13],
    [15496, 11, 995, 0, 314, 1101, 257, 1110, 1110, 286],
    [0, 50256, 198, 628, 220, 12],
]


@pytest.fixture(scope="module")
def hf_model(tiny_gpt2):
    return transformers.GPT2LMHeadModel.from_pretrained(str(tiny_gpt2), attn_implementation="eager").eval()


@pytest.mark.parametrize("which", ["tiny_model", "tiny_model_unprocessed"])
def test_log_probs_equal_hf_model(which, request, hf_model):
    model = request.getfixturevalue(which)
    for seq in SEQUENCES:
        toks = torch.tensor([seq])
        with torch.no_grad():
            expected = hf_model(toks).logits.log_softmax(-1)
            got = model.bridge(toks).log_softmax(-1)
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


def test_processing_really_changed_the_weights(tiny_model, tiny_model_unprocessed):
    """The four flags are applied (otherwise the log-prob test would prove nothing about them)."""
    W_E = tiny_model.weight("W_E")
    assert W_E.mean(-1).abs().max() < 1e-5  # center_writing_weights
    assert tiny_model_unprocessed.weight("W_E").mean(-1).abs().max() > 1e-3
    assert tiny_model.weight("W_U").mean(-1).abs().max() < 1e-5  # center_unembed
    assert not torch.allclose(tiny_model.weight("W_Q"), tiny_model_unprocessed.weight("W_Q"))
    # refactor/fold keep the QK product up to LN folding: the processed one reads centred inputs
    assert tiny_model.weight("W_Q").mean(-2).abs().max() < 1e-5  # fold_ln centres reading weights


def test_dimensions(tiny_model):
    assert (tiny_model.n_layers, tiny_model.n_heads, tiny_model.n_kv_heads) == (2, 4, 4)
    assert (tiny_model.d_model, tiny_model.d_head, tiny_model.d_vocab) == (64, 16, 50257)
    assert tiny_model.normalization == "LN" and tiny_model.positional == "standard"
    assert tiny_model.weight("W_Q").shape == (2, 4, 64, 16)
    assert tiny_model.tokenizer.decode([50256]) == "<|endoftext|>"


def test_provenance(tiny_gpt2, tiny_model):
    p = tiny_model.provenance
    digest = hashlib.sha256((tiny_gpt2 / "model.safetensors").read_bytes()).hexdigest()
    assert p["weights_sha256"] == {"model.safetensors": digest}
    assert p["source"] == "local_folder" and p["path"] == str(tiny_gpt2.resolve())
    assert p["processing"] == {
        "fold_ln": True, "center_writing_weights": True, "center_unembed": True, "fold_value_biases": True,
        "refactor_factored_attn_matrices": True,  # "auto" on a model without rotary: applied
    }
    assert p["processing_requested"]["refactor_factored_attn_matrices"] == "auto"
    assert p["device"] == "cpu" and p["dtype"] == "float32"
    for lib in ("torch", "transformer-lens", "transformers"):
        assert p["libraries"][lib] == importlib.metadata.version(lib)
    assert p["architecture"] == "GPT2LMHeadModel"


def test_provenance_flags_follow_config(tiny_model_unprocessed):
    p = tiny_model_unprocessed.provenance["processing"]
    assert {k: v for k, v in p.items() if k != "fold_value_biases"} == dict.fromkeys(
        ("fold_ln", "center_writing_weights", "center_unembed", "refactor_factored_attn_matrices"), False)


def test_hub_name_loads_from_local_cache_offline(tiny_gpt2, tmp_path, monkeypatch):
    """A hub name whose snapshot is in the HF cache loads offline, with repo id and revision."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo_dir = tmp_path / "hub" / "models--tiny-org--tiny-gpt2"
    shutil.copytree(tiny_gpt2, repo_dir / "snapshots" / rev)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = load_model(ModelConfig(name="tiny-org/tiny-gpt2", device="cpu"), ProcessingConfig())
    assert model.provenance["source"] == "hub"
    assert model.provenance["repo_id"] == "tiny-org/tiny-gpt2"
    assert model.provenance["revision"] == rev
    assert list(model.provenance["weights_sha256"]) == ["model.safetensors"]


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        load_model(ModelConfig(name=str(tmp_path / "nope"), device="cpu"), ProcessingConfig())


def test_folder_without_config_json_is_a_clear_error(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelUnavailableError, match="config.json"):
        load_model(ModelConfig(name=str(tmp_path), device="cpu"), ProcessingConfig())
