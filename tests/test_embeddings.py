"""W_EE equals the model's own forward pass (the Hugging Face model, positional embeddings zeroed,
each token as a one-token sequence), for every variant; batching does not change it."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from analysis.embeddings import effective_embedding

IDS = torch.cat([torch.tensor([0, 1, 198, 220, 50255, 50256]),
                 torch.randperm(50257, generator=torch.Generator().manual_seed(0))[:294]])


@pytest.fixture(scope="module")
def hf_reference(tiny_gpt2):
    """HF forward on single tokens with wpe zeroed: block 0's embedding, attention out, MLP out."""
    import transformers

    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tiny_gpt2), attn_implementation="eager").eval()
    with torch.no_grad():
        hf.transformer.wpe.weight.zero_()
    h0 = hf.transformer.h[0]
    cap = {}
    hooks = [
        h0.attn.register_forward_hook(lambda m, i, o: cap.__setitem__("attn", o[0])),
        h0.mlp.register_forward_hook(lambda m, i, o: cap.__setitem__("mlp", o)),
    ]
    with torch.no_grad():
        hf.transformer(IDS[:, None])
    for h in hooks:
        h.remove()
    with torch.no_grad():
        x = hf.transformer.wte.weight[IDS]
        mlp_only = h0.mlp(h0.ln_2(x))
    attn, mlp = cap["attn"][:, 0], cap["mlp"][:, 0]
    assert attn.shape == mlp.shape == x.shape == (len(IDS), 64)
    return {"x": x, "attn": attn, "mlp": mlp, "mlp_only": mlp_only}


def centered(t: torch.Tensor) -> torch.Tensor:
    return t - t.mean(-1, keepdim=True)


def test_notebook_variant_equals_hf_mlp_output(tiny_W_EE, hf_reference):
    assert tiny_W_EE.shape == (50257, 64)
    ref = centered(hf_reference["mlp"])  # center_writing_weights centres W_out
    torch.testing.assert_close(tiny_W_EE[IDS], ref, atol=2e-6, rtol=1e-4)
    assert ref.abs().max() > 0.05  # the comparison is not between two near-zero tensors


@pytest.mark.parametrize("variant", ["residual", "mlp_only"])
def test_variants_equal_hf(tiny_model, hf_reference, variant):
    W_EE = effective_embedding(tiny_model, variant, progress=False)
    r = hf_reference
    ref = r["x"] + r["attn"] + r["mlp"] if variant == "residual" else r["mlp_only"]
    torch.testing.assert_close(W_EE[IDS], centered(ref), atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("variant", ["mlp_after_attention", "residual", "mlp_only"])
def test_unprocessed_model_gives_uncentered_hf_values(tiny_model_unprocessed, hf_reference, variant):
    """Without weight processing nothing is folded or centred: W_EE is HF's output itself."""
    r = hf_reference
    ref = {"mlp_after_attention": r["mlp"], "residual": r["x"] + r["attn"] + r["mlp"], "mlp_only": r["mlp_only"]}[variant]
    W_EE = effective_embedding(tiny_model_unprocessed, variant, progress=False)
    torch.testing.assert_close(W_EE[IDS], ref, atol=2e-6, rtol=1e-4)
    assert ref.mean(-1).abs().max() > 1e-3  # really uncentred


def test_variants_differ(tiny_model, tiny_W_EE):
    mlp_only = effective_embedding(tiny_model, "mlp_only", progress=False)
    assert (mlp_only - tiny_W_EE).abs().max() > 1e-3


def test_batch_size_does_not_change_the_result(tiny_model, tiny_W_EE):
    """batch 7 on a 300-token slice of the vocabulary equals the whole-vocabulary batch-4096 result."""
    n = 300
    sliced = dataclasses.replace(tiny_model, _weights={**tiny_model._weights, "W_E": tiny_model.weight("W_E")[:n]})
    small = effective_embedding(sliced, "mlp_after_attention", batch_size=7, progress=False)
    assert small.shape == (n, 64)
    torch.testing.assert_close(small, tiny_W_EE[:n], atol=1e-6, rtol=1e-5)
    # the last, partial batch (300 = 42·7 + 6) is filled too
    assert small[-6:].abs().sum(-1).min() > 0


def test_unknown_variant_rejected(tiny_model):
    with pytest.raises(ValueError, match="variant"):
        effective_embedding(tiny_model, "bogus", progress=False)
