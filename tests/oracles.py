"""Test oracles: small wrappers and dense references that only the tests read (the production code
calls :func:`headreport.analysis.diagonal.rank_pass` and the factored circuits directly)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from headreport.analysis.circuits import HeadWeights, TokenCircuit
from headreport.analysis.config import Config, HeadRef, check_against_model
from headreport.analysis.diagonal import rank_pass
from headreport.analysis.explorer import K


def check_heads_against_model(heads: tuple[HeadRef, ...], n_layers: int, n_heads: int) -> None:
    """Raise a :class:`ConfigError` naming ``heads`` if a head lies outside the model."""
    check_against_model(Config(heads=heads), n_layers, n_heads, d_head=1 << 30)


def ov_self_suppression(circuit: FactoredMatrix | TokenCircuit, mode: str = "exact", sample_size: int = 2000,
                        seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Copy suppression on the effective OV circuit W_EE·W_OV·W_U: rank 1 = own logit most negative."""
    return rank_pass(circuit, mode, descending=False, sample_size=sample_size, seed=seed, progress=progress)[0]


def qk_self_attention(circuit: FactoredMatrix | TokenCircuit, mode: str = "sampled", sample_size: int = 2000,
                      seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Effective QK circuit: rank 1 = a token's own key scores highest for its query."""
    return rank_pass(circuit, mode, descending=True, sample_size=sample_size, seed=seed, progress=progress)[0]


def effective_ov_circuit(
    w: HeadWeights, W_EE: Float[Tensor, "d_vocab d_model"], W_U: Float[Tensor, "d_model d_vocab"]
) -> FactoredMatrix:
    """W_EE W_V W_O W_U: ``[d_vocab, d_vocab]``; row = source token attended to, column = logit
    (W_O with the post-attention norm's gain, :attr:`HeadWeights.W_O_out`)."""
    return FactoredMatrix(W_EE @ w.W_V, w.W_O_out @ W_U)


def dense_reference(M: torch.Tensor, k: int = K) -> dict[str, np.ndarray]:
    """The explorer's lists from a dense matrix: row largest, row smallest, column largest."""
    Md = M.double()
    out = {}
    for name, values in (("row_high", Md), ("row_low", -Md), ("col_high", Md.T)):
        n = values.shape[0]
        ids = torch.arange(values.shape[1]).expand(n, -1)
        order = np.lexsort((ids.numpy(), -values.numpy()), axis=1)
        out[name] = order[:, :k]
    return out
