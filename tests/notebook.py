"""The original notebook's computations, transcribed: the reference that the default run must
reproduce exactly (tests) and the speed baseline (``make bench``).

The notebook computes W_EE with a Python loop over batches of 1000 tokens and, per batch, one
einsum over the layer-0 heads (the attention of a token to itself, no biases: the copy-suppression
paper's code sums the same), then the layer-0 MLP through the model's own modules::

    for each batch x of W_E (1000 rows):
        a      = einsum("b d, h d e, h e f -> b f", ln1(x), W_V[0], W_O[0])   # Σ_h ln1(x) W_V[h] W_O[h]
        W_EE_b = mlp0(ln2(x + a))
    W_EE = cat(W_EE_b)

and the head's circuits as ``FactoredMatrix`` objects: W_QK = W_Q W_Kᵀ, the full W_E W_QK W_Eᵀ and
the effective W_Uᵀ W_QK W_EEᵀ. One deliberate difference from a literal copy, in the baseline's
favour: the stacked weights are read once, outside the loop (the bridge assembles ``W_V`` on every
attribute access).

FLOPs (multiply-adds count 2), per token, d = d_model, D = n_heads·d_head, m = d_mlp:
the einsum contracts pairwise, (b d)·(h d e) → (b h e) then (b h e)·(h e f) → (b f):
2·d·D + 2·D·d; the MLP: 2·d·m + 2·m·d. Total ``V · (4·d·D + 4·d·m)``.
"""

from __future__ import annotations

import torch
from einops import einsum
from transformer_lens import FactoredMatrix


@torch.no_grad()
def notebook_effective_embedding(model, batch_size: int = 1000) -> torch.Tensor:
    """``model``: an :class:`headreport.analysis.model.loader.LoadedModel`. Returns W_EE ``[d_vocab, d_model]``."""
    bridge = model.bridge
    block = bridge.blocks[0]
    W_E = model.weight("W_E")
    W_V, W_O = model.weight("W_V")[0], model.weight("W_O")[0]
    kv = [model.kv_head(h) for h in range(model.n_heads)]
    W_V = W_V[kv]
    outs = []
    for start in range(0, W_E.shape[0], batch_size):
        embeds = W_E[start : start + batch_size].unsqueeze(1)  # [b, pos=1, d_model]
        pre_attention = block.ln1(embeds)[:, 0]
        post_attention = einsum(pre_attention, W_V, W_O, "b d, h d e, h e f -> b f")
        resid_mid = embeds[:, 0] + post_attention
        mlp_out = block.mlp(block.ln2(resid_mid.unsqueeze(1)))[:, 0]
        outs.append(mlp_out)
    return torch.cat(outs)


@torch.no_grad()
def notebook_circuits(model, layer: int, head: int, W_EE: torch.Tensor):
    """The notebook's three QK circuits of head (layer, head): W_QK, full and effective."""
    W_Q, W_K = model.weight("W_Q")[layer, head], model.weight("W_K")[layer, model.kv_head(head)]
    W_E, W_U = model.weight("W_E"), model.weight("W_U")
    W_QK = FactoredMatrix(W_Q, W_K.T)
    return {
        "w_qk": W_QK,
        "full_qk": W_E @ W_QK @ W_E.T,
        "effective_qk": W_U.T @ W_QK @ W_EE.T,
    }


def notebook_flops(d_vocab: int, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> int:
    D = n_heads * d_head
    return d_vocab * (4 * d_model * D + 4 * d_model * d_mlp)


def project_flops(d_vocab: int, d_model: int, n_heads: int, d_head: int, d_mlp: int) -> int:
    """analysis.embeddings: Σ_h W_V[h] W_O[h] summed once (2·H·d·d_head·d), then per token one
    d×d product (2·d²) and the MLP (4·d·m)."""
    return 2 * n_heads * d_model * d_head * d_model + d_vocab * (2 * d_model * d_model + 4 * d_model * d_mlp)
