"""Llama architecture (grouped-query attention, RMSNorm, rotary): the same analyses, checked against
dense computations from the Hugging Face weights and the Hugging Face forward pass."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers

from headreport.analysis import circuits
from headreport.analysis.config import (
    AnalysisConfig,
    Config,
    HeadRef,
    ModelConfig,
    ProcessingConfig,
    SurveyConfig,
)
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from headreport.analysis.pipeline import Timer, load_words, run_analysis, tokenize_word_lists
from headreport.analysis.survey import survey_documents
from headreport.cli import main
from tests.checkpoints import gpt2_tokenizer_files, randomize_norms_and_biases

N_LAYERS, N_HEADS, N_KV, D_MODEL = 2, 4, 2, 64
D_HEAD = D_MODEL // N_HEADS
NO_REFACTOR = ProcessingConfig()  # "auto": skipped for a rotary model


def make_llama_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Llama architecture, 2 layers, 4 query / 2 key-value heads, d_model 64, random weights and
    random RMSNorm gains, saved with the real GPT-2 tokenizer (vocabulary 50257)."""
    gpt2_tokenizer_files(folder)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=D_MODEL, intermediate_size=128, num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS, num_key_value_heads=N_KV, max_position_embeddings=64,
        tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    model = transformers.LlamaForCausalLM(config)
    randomize_norms_and_biases(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory) -> Path:
    return make_llama_checkpoint(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def llama(llama_folder):
    return load_model(ModelConfig(name=str(llama_folder), device="cpu"), NO_REFACTOR)


@pytest.fixture(scope="module")
def hf_llama(llama_folder):
    return transformers.LlamaForCausalLM.from_pretrained(str(llama_folder), attn_implementation="eager").eval()


def test_dimensions_and_kv_mapping(llama):
    assert (llama.n_layers, llama.n_heads, llama.n_kv_heads, llama.d_head) == (N_LAYERS, N_HEADS, N_KV, D_HEAD)
    assert llama.normalization == "RMS" and llama.positional == "rotary"
    assert [llama.kv_head(h) for h in range(N_HEADS)] == [0, 0, 1, 1]
    assert llama.weight("W_K").shape[1] == N_KV and llama.weight("W_Q").shape[1] == N_HEADS
    assert llama.weight("b_V") is None  # bias-free projections: no stacked bias, not an error


def test_gqa_qk_circuit_matches_dense_hf_weights(llama, hf_llama):
    """W_Q·W_Kᵀ of every query head equals the dense product from the HF projections, with the
    RMSNorm gain folded in (fold_ln) and the key head H // (n_heads / n_kv_heads)."""
    for layer in range(N_LAYERS):
        attn = hf_llama.model.layers[layer].self_attn
        gain = hf_llama.model.layers[layer].input_layernorm.weight.detach()
        Wq = attn.q_proj.weight.detach().T.reshape(D_MODEL, N_HEADS, D_HEAD)  # x @ Wq[:, h] = q_h
        Wk = attn.k_proj.weight.detach().T.reshape(D_MODEL, N_KV, D_HEAD)
        for h in range(N_HEADS):
            dense = (gain[:, None] * Wq[:, h]) @ (gain[:, None] * Wk[:, h // (N_HEADS // N_KV)]).T
            got = circuits.qk_circuit(circuits.head_weights(llama, HeadRef(layer, h))).AB
            torch.testing.assert_close(got, dense, rtol=1e-4, atol=1e-5)
            wrong = (gain[:, None] * Wq[:, h]) @ (gain[:, None] * Wk[:, h % N_KV]).T
            if h % N_KV != h // (N_HEADS // N_KV):  # a wrong mapping would be caught
                assert not torch.allclose(got, wrong, rtol=1e-3, atol=1e-4)


def test_effective_embedding_matches_hf_forward(llama, hf_llama):
    """W_EE with the model's own RMSNorm modules equals the HF forward pass on one-token inputs
    (rotary is the identity at position 0): the MLP-0 output, and the residual after block 0."""
    tokens = torch.tensor([0, 1, 13, 198, 464, 1169, 7454, 20000, 50256])
    captured = {}
    handle = hf_llama.model.layers[0].mlp.register_forward_hook(lambda m, i, o: captured.__setitem__("mlp", o))
    with torch.no_grad():
        out = hf_llama(tokens[:, None], output_hidden_states=True)
    handle.remove()
    W_EE = effective_embedding(llama, "mlp_after_attention", progress=False).W_EE
    torch.testing.assert_close(W_EE[tokens], captured["mlp"][:, 0], rtol=1e-4, atol=1e-5)
    resid = effective_embedding(llama, "residual", batch_size=1000, progress=False).W_EE
    torch.testing.assert_close(resid[tokens], out.hidden_states[1][:, 0], rtol=1e-4, atol=1e-5)


def test_rotary_refactor_is_a_config_error(llama_folder, tmp_path, capsys):
    cfg = tmp_path / "r.toml"
    cfg.write_text(f'heads = ["1.1"]\n[model]\nname = "{llama_folder}"\ndevice = "cpu"\n'
                   "[processing]\nrefactor_factored_attn_matrices = true\n")
    code = main(["analyze", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "processing.refactor_factored_attn_matrices" in err and "rotary" in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_llama_survey_and_analysis(llama, tmp_path):
    """The survey and the per-head analysis run on a GQA model and record the key/value head."""
    config = Config(
        heads=(HeadRef(1, 3),), model=ModelConfig(name="llama", device="cpu"), processing=NO_REFACTOR,
        analysis=AnalysisConfig(ov_mode="sampled", ov_sample_size=300, bootstrap_resamples=200),
        survey=SurveyConfig(sample_size=300),
    )
    layer0 = effective_embedding(llama, progress=False)
    word_lists = tokenize_word_lists(config, load_words(config), llama.tokenizer)
    doc = survey_documents(config, llama, layer0, word_lists, Timer(), progress=False)
    heads = doc["results"]["heads"]
    assert [(r["layer"], r["head"], r["kv_head"]) for r in heads] == [
        (layer, h, h // 2) for layer in range(N_LAYERS) for h in range(N_HEADS)
    ]
    assert any("rotary" in n.lower() for n in doc["results"]["model"]["notes"])
    written = run_analysis(config, tmp_path / "a", progress=False, log=lambda m: None, model=llama, layer0=layer0)
    assert {p.name for p in written} == {"model.json", "head_1.3.json", "timings.json", "prompts.json"}
    prompts = json.loads((tmp_path / "a" / "prompts.json").read_text())["results"]  # GQA: the head's kv head
    assert prompts["checks"]["direct_effects_exact"] and prompts["checks"]["attn_out_max_relative_error"] < 1e-5
    assert prompts["heads"]["1.3"]["summary"]["n_prompts"] == 25
    ov = next(r for r in heads if r["label"] == "1.3")["ov_self_suppression"]
    head = json.loads((tmp_path / "a" / "head_1.3.json").read_text())["results"]
    assert head["head"]["kv_head"] == 1
    assert head["ov_self_suppression"]["fraction_rank1"] == pytest.approx(ov["fraction_rank1"], abs=0)
    assert any("skipped" in n and "rotary" in n for n in doc["results"]["model"]["notes"])
    assert dataclasses.asdict(config.survey)["sample_size"] == 300


def test_rotary_model_runs_with_no_config(llama_folder, tmp_path):
    """refactor_factored_attn_matrices defaults to "auto": a Llama checkpoint needs no config."""
    out = tmp_path / "o"
    code = main(["analyze", "--model", str(llama_folder), "--head", "1.1", "--out", str(out), "--no-progress"])
    assert code == 0
    model = json.loads((out / "artifacts" / "model.json").read_text())
    assert model["provenance"]["processing"]["refactor_factored_attn_matrices"] is False
    assert model["provenance"]["processing"]["center_writing_weights"] is False  # RMSNorm: not applied
    assert model["provenance"]["processing_requested"]["center_writing_weights"] is True
