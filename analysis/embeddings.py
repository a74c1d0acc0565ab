"""The effective embedding W_EE: what a token looks like to later layers, batched over the vocabulary.

For token t with embedding x = W_E[t] (positional embeddings excluded, as in the notebook), with a
one-token context so that every layer-0 head attends only to the token itself:

    a        = Σ_h ln1(x) · W_V[0, h] · W_O[0, h]  + Σ_h b_V[0, h] · W_O[0, h] + b_O[0]
    W_EE[t]  = mlp0(ln2(x + a))                             variant "mlp_after_attention" (notebook)
             = mlp0(ln2(x))                                 variant "mlp_only"
             = x + a + mlp0(ln2(x + a))                     variant "residual"

``ln1``/``ln2``/``mlp0`` are the model's own (processed) layer-0 modules, so LayerNorm/RMSNorm and
plain/gated MLPs all work. Σ_h W_V W_O is summed once into a d_model × d_model matrix, so each batch
costs one GEMM for attention and the MLP's GEMMs: no Python loop over tokens or heads. Peak extra
memory is a few batch × d_mlp activations.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .models import LoadedModel

VARIANTS = ("mlp_after_attention", "mlp_only", "residual")


def layer0_attention_ov(model: LoadedModel) -> tuple[Float[Tensor, "d_model d_model"], Float[Tensor, "d_model"]]:
    """Layer 0's summed OV map and bias for a token attending only to itself."""
    W_V, W_O = model.weight("W_V")[0], model.weight("W_O")[0]  # [kv_heads, d_model, d_head], [heads, d_head, d_model]
    kv = torch.tensor([model.kv_head(h) for h in range(model.n_heads)], device=W_V.device)
    W_V = W_V[kv]
    W_OV = torch.einsum("hde,hef->df", W_V, W_O)
    bias = torch.zeros(model.d_model, dtype=W_O.dtype, device=W_O.device)
    b_V, b_O = model.weight("b_V"), model.weight("b_O")
    if b_V is not None:
        bias = bias + torch.einsum("he,hef->f", b_V[0][kv], W_O)
    if b_O is not None:
        bias = bias + b_O[0]
    return W_OV, bias


@torch.no_grad()
def effective_embedding(
    model: LoadedModel,
    variant: str = "mlp_after_attention",
    batch_size: int = 1024,
    progress: bool = True,
) -> Float[Tensor, "d_vocab d_model"]:
    """W_EE for the whole vocabulary (see the module docstring for the three variants)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown effective-embedding variant {variant!r}; choose one of {VARIANTS}")
    block = model.bridge.blocks[0]
    W_E = model.weight("W_E")
    W_OV, bias = layer0_attention_ov(model)
    out = torch.empty_like(W_E)
    starts = range(0, W_E.shape[0], batch_size)
    for start in tqdm(starts, desc="effective embedding", unit="batch", disable=not progress, leave=False):
        x = W_E[start : start + batch_size]
        if variant == "mlp_only":
            out[start : start + batch_size] = block.mlp(block.ln2(x[:, None]))[:, 0]
            continue
        resid = x + block.ln1(x[:, None])[:, 0] @ W_OV + bias
        mlp_out = block.mlp(block.ln2(resid[:, None]))[:, 0]
        out[start : start + batch_size] = mlp_out + resid if variant == "residual" else mlp_out
    return out
