"""W_E and W_EE equal the model's own forward pass (the Hugging Face model, positional embeddings
zeroed, each token as a one-token sequence), for every variant and both attention-bias settings;
the factored fast path equals the forward pass; batching does not change the result; the notebook's
own loop gives the default's numbers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import transformers

from headreport.analysis.embeddings import attention_bias_constant, effective_embedding

IDS = torch.cat([torch.tensor([0, 1, 198, 220, 50255, 50256]),
                 torch.randperm(50257, generator=torch.Generator().manual_seed(0))[:294]])


@pytest.fixture(scope="module")
def hf_reference(tiny_gpt2):
    """HF forward on single tokens with wpe zeroed: block 0's embedding, attention out, MLP out, and
    the same with layer 0's attention biases (c_attn's value bias, c_proj's bias) and ln_1's bias
    through the value projection dropped — the bias-free attention the notebook sums."""
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
        x = hf.transformer.wte.weight[IDS]
        mlp_only = h0.mlp(h0.ln_2(x))
        # bias-free attention by hand, from the HF weights: normalise x (no gain, no bias), apply
        # ln_1's gain, then the value and output projections without any bias
        d = x.shape[-1]
        normed = torch.nn.functional.layer_norm(x, (d,), eps=h0.ln_1.eps) * h0.ln_1.weight
        W_v = h0.attn.c_attn.weight[:, 2 * d:]
        attn_nb = normed @ W_v @ h0.attn.c_proj.weight
        mlp_nb = h0.mlp(h0.ln_2(x + attn_nb))
    attn, mlp = cap["attn"][:, 0], cap["mlp"][:, 0]
    assert attn.shape == mlp.shape == x.shape == (len(IDS), 64)
    return {"x": x, "attn": attn, "mlp": mlp, "mlp_only": mlp_only, "attn_nb": attn_nb, "mlp_nb": mlp_nb}


def centered(t: torch.Tensor) -> torch.Tensor:
    return t - t.mean(-1, keepdim=True)


def test_default_is_the_notebooks_bias_free_attention(tiny_W_EE, tiny_layer0, hf_reference):
    assert tiny_W_EE.shape == (50257, 64)
    assert tiny_layer0.attention_bias is False
    ref = centered(hf_reference["mlp_nb"])  # center_writing_weights centres W_out
    torch.testing.assert_close(tiny_W_EE[IDS], ref, atol=2e-6, rtol=1e-4)
    assert ref.abs().max() > 0.05  # the comparison is not between two near-zero tensors
    # and it is not what the model computes with its biases
    assert (centered(hf_reference["mlp"]) - ref).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["forward", "auto"])
def test_with_attention_bias_equals_the_models_own_mlp_output(tiny_model, hf_reference, method):
    layer0 = effective_embedding(tiny_model, progress=False, attention_bias=True, method=method)
    torch.testing.assert_close(layer0.W_EE[IDS], centered(hf_reference["mlp"]), atol=2e-6, rtol=1e-4)
    torch.testing.assert_close(layer0.W_E[IDS], centered(hf_reference["x"]), atol=2e-6, rtol=1e-4)
    assert layer0.method == ("forward" if method == "forward" else "factored")


@pytest.mark.parametrize("variant", ["residual", "mlp_only"])
def test_variants_equal_hf(tiny_model, hf_reference, variant):
    layer0 = effective_embedding(tiny_model, variant, progress=False, attention_bias=True)
    r = hf_reference
    ref = r["x"] + r["attn"] + r["mlp"] if variant == "residual" else r["mlp_only"]
    torch.testing.assert_close(layer0.W_EE[IDS], centered(ref), atol=2e-6, rtol=1e-4)


@pytest.mark.parametrize("variant", ["mlp_after_attention", "residual", "mlp_only"])
def test_forward_and_factored_paths_agree(tiny_model, variant):
    for bias in (False, True):
        fwd = effective_embedding(tiny_model, variant, progress=False, attention_bias=bias, method="forward")
        fast = effective_embedding(tiny_model, variant, progress=False, attention_bias=bias, method="factored")
        torch.testing.assert_close(fast.W_EE, fwd.W_EE, atol=2e-6, rtol=1e-4)
        torch.testing.assert_close(fast.W_E, fwd.W_E, atol=0, rtol=0)
        assert fast.check["max_relative_error"] < 1e-5


@pytest.mark.parametrize("variant", ["mlp_after_attention", "residual", "mlp_only"])
def test_unprocessed_model_gives_uncentered_hf_values(tiny_model_unprocessed, hf_reference, variant):
    """Without weight processing nothing is folded or centred: W_EE is HF's output itself."""
    r = hf_reference
    ref = {"mlp_after_attention": r["mlp"], "residual": r["x"] + r["attn"] + r["mlp"],
           "mlp_only": r["mlp_only"]}[variant]
    layer0 = effective_embedding(tiny_model_unprocessed, variant, progress=False, attention_bias=True)
    torch.testing.assert_close(layer0.W_EE[IDS], ref, atol=2e-6, rtol=1e-4)
    assert ref.mean(-1).abs().max() > 1e-3  # really uncentred


def test_attention_bias_constant_is_the_models(tiny_model, hf_reference):
    """c = Σ_h b_V W_O + b_O: the attention output of a zero normalised input, processed basis."""
    c = attention_bias_constant(tiny_model)
    r = hf_reference
    torch.testing.assert_close(centered(r["attn"] - r["attn_nb"]), c.expand_as(r["attn"]), atol=2e-6, rtol=1e-4)


def test_variants_differ(tiny_model, tiny_W_EE):
    mlp_only = effective_embedding(tiny_model, "mlp_only", progress=False).W_EE
    assert (mlp_only - tiny_W_EE).abs().max() > 1e-3


def test_batch_size_does_not_change_the_result(tiny_model, tiny_W_EE):
    """batch 7 on a 300-token slice of the vocabulary equals the whole-vocabulary batch-4096 result."""
    n = 300
    sliced = dataclasses.replace(tiny_model, _weights={**tiny_model._weights, "W_E": tiny_model.weight("W_E")[:n]})
    for method in ("forward", "factored"):
        small = effective_embedding(sliced, "mlp_after_attention", batch_size=7, progress=False, method=method).W_EE
        assert small.shape == (n, 64)
        torch.testing.assert_close(small, tiny_W_EE[:n], atol=1e-6, rtol=1e-5)
        # the last, partial batch (300 = 42·7 + 6) is filled too
        assert small[-6:].abs().sum(-1).min() > 0


def test_unknown_variant_rejected(tiny_model):
    with pytest.raises(ValueError, match="variant"):
        effective_embedding(tiny_model, "bogus", progress=False)
