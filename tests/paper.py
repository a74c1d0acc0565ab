"""The copy-suppression paper's rank metrics, transcribed from the authors' code: the reference that
the default rank metrics must reproduce token for token (``tests/integration/test_paper.py``).

Source: ``transformer_lens/rs/callum2/ov_qk_circuits/section_41_42.ipynb`` at commit 5e54b9d
(2023-08-25) of callummcdougall/SERI-MATS-2023-Streamlit-pages, the notebook that prints the
published 84.70% / 98.86% / 95.72% for GPT-2 small head 10.7, and the function it calls,
``get_effective_embedding`` in ``transformer_lens/rs/callum2/utils.py`` at the same commit. The model
there is a ``HookedTransformer`` loaded with fold_ln, center_writing_weights and center_unembed
(refactoring commented out); here ``model`` is an :class:`headreport.analysis.model.loader.LoadedModel` whose bridge,
after ``enable_compatibility_mode``, has the same attributes (``W_E``, ``W_V``, ``blocks[0].ln1``...).
The code is the cells' own, with only ``model`` → ``bridge`` and the head made a parameter.
"""

from __future__ import annotations

import einops
import torch
from transformer_lens import FactoredMatrix


@torch.no_grad()
def get_effective_embedding(model) -> dict[str, torch.Tensor]:
    """utils.py at 5e54b9d; cell 3 takes ``["W_E (including MLPs)"]``."""
    bridge = model.bridge
    W_E = bridge.W_E.clone()
    W_U = bridge.W_U.clone()
    resid_pre = W_E.unsqueeze(0)
    pre_attention = bridge.blocks[0].ln1(resid_pre)
    attn_out = einops.einsum(
        pre_attention,
        bridge.W_V[0],
        bridge.W_O[0],
        "b s d_model, num_heads d_model d_head, num_heads d_head d_model_out -> b s d_model_out",
    )
    resid_mid = attn_out + resid_pre
    normalized_resid_mid = bridge.blocks[0].ln2(resid_mid)
    mlp_out = bridge.blocks[0].mlp(normalized_resid_mid)
    W_EE = mlp_out.squeeze()
    W_EE_full = resid_mid.squeeze() + mlp_out.squeeze()
    return {"W_E (no MLPs)": W_E, "W_U": W_U.T, "W_E (including MLPs)": W_EE_full, "W_E (only MLPs)": W_EE}


@torch.no_grad()
def ov_ranks(model, layer: int, head: int, W_EE: torch.Tensor) -> torch.Tensor:
    """Cell 6: 0-based rank of each source token's own logit, 0 when it is the most negative."""
    bridge = model.bridge
    W_U = bridge.W_U
    W_V = bridge.W_V[layer, head]
    W_O = bridge.W_O[layer, head]
    full_OV_circuit = FactoredMatrix(W_EE @ W_V, W_O @ W_U)
    diag_elem_negative_ranks = []
    for i in range(bridge.cfg.d_vocab):
        col = full_OV_circuit.A[i, :] @ full_OV_circuit.B
        diag_elem = col[i]
        diag_elem_negative_rank = (diag_elem > col).sum().item()  # This is zero when diag elem is minimal
        diag_elem_negative_ranks.append(diag_elem_negative_rank)
    return torch.tensor(diag_elem_negative_ranks)


@torch.no_grad()
def qk_ranks(model, layer: int, head: int, W_EE: torch.Tensor) -> torch.Tensor:
    """Cell 29: 0-based rank of each query token's own key, 0 when it is the most attended."""
    bridge = model.bridge
    W_U = bridge.W_U
    W_Q = bridge.W_Q[layer, head]
    W_K = bridge.W_K[layer, head]
    full_QK_circuit = FactoredMatrix(W_U.T @ W_Q, W_K.T @ W_EE.T)
    diag_elem_positive_ranks = []
    for i in range(bridge.cfg.d_vocab):
        row = full_QK_circuit[i, :].AB.squeeze()
        diag_elem = row[i]
        diag_elem_positive_rank = (diag_elem < row).sum().item()  # This is zero when diag elem is maximal
        diag_elem_positive_ranks.append(diag_elem_positive_rank)
    return torch.tensor(diag_elem_positive_ranks)


def printed(ranks: torch.Tensor, d_vocab: int) -> dict[str, float]:
    """What cells 6 and 29 print of the ranks."""
    return {
        "mean": ranks.float().mean().item(),
        "median": ranks.float().median().item(),
        "rank_zero": (ranks == 0).float().mean().item(),
        "rank_below_10": (ranks < 10).float().mean().item(),
        "beyond_10pct": int((ranks > 0.1 * d_vocab).sum()),
        "beyond_5pct": int((ranks > 0.05 * d_vocab).sum()),
    }


@torch.no_grad()
def tied_rows(model, layer: int, head: int, W_EE: torch.Tensor, circuit: str) -> int:
    """How many rows of the transcribed circuit have another entry exactly equal to their own."""
    bridge = model.bridge
    W_U = bridge.W_U
    if circuit == "ov":
        dense = (W_EE @ bridge.W_V[layer, head]) @ (bridge.W_O[layer, head] @ W_U)
    else:
        dense = (W_U.T @ bridge.W_Q[layer, head]) @ (bridge.W_K[layer, head].T @ W_EE.T)
    return int(((dense == dense.diagonal()[:, None]).sum(dim=1) > 1).sum())
