"""Per-head QK and OV circuits as ``FactoredMatrix`` objects — never a dense vocab × vocab matrix.

For head (L, H) with processed weights W_Q, W_K, W_V: ``Float[Tensor, "d_model d_head"]`` and
W_O: ``Float[Tensor, "d_head d_model"]`` (for grouped-query attention, query head H reads key/value
head ``H // (n_heads / n_kv_heads)``):

* ``qk_circuit``           W_QK = W_Q · W_Kᵀ                         d_model × d_model
* ``full_qk_circuit``      W_E · W_QK · W_Eᵀ                         d_vocab × d_vocab
* ``effective_qk_circuit`` W_Uᵀ · W_QK · W_EEᵀ  (query: unembedding, key: effective embedding)
* ``ov_circuit``           W_OV = W_V · W_O                          d_model × d_model
* ``effective_ov_circuit`` W_EE · W_OV · W_U                          d_vocab × d_vocab

Each factored matrix keeps the d_head-wide inner dimension, so its SVD costs O(d_vocab · d_head²).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from .config import HeadRef
from .models import LoadedModel


@dataclass(frozen=True)
class HeadWeights:
    """The processed weights of one attention head (detached, on the model's device)."""

    head: HeadRef
    kv_head: int
    W_Q: Float[Tensor, "d_model d_head"]
    W_K: Float[Tensor, "d_model d_head"]
    W_V: Float[Tensor, "d_model d_head"]
    W_O: Float[Tensor, "d_head d_model"]


def head_weights(model: LoadedModel, head: HeadRef) -> HeadWeights:
    kv = model.kv_head(head.head)
    return HeadWeights(
        head=head,
        kv_head=kv,
        W_Q=model.weight("W_Q")[head.layer, head.head],
        W_K=model.weight("W_K")[head.layer, kv],
        W_V=model.weight("W_V")[head.layer, kv],
        W_O=model.weight("W_O")[head.layer, head.head],
    )


def qk_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_QK = W_Q W_Kᵀ: ``[d_model, d_model]``; bilinear form query-residual × key-residual."""
    return FactoredMatrix(w.W_Q, w.W_K.T)


def full_qk_circuit(w: HeadWeights, W_E: Float[Tensor, "d_vocab d_model"]) -> FactoredMatrix:
    """W_E W_QK W_Eᵀ: ``[d_vocab, d_vocab]``, query token × key token, through raw embeddings."""
    # one pass over W_E for both factors (a d_model × 2·d_head right-hand side: ~1.5× the GEMM rate
    # of two d_head-wide products); B = (W_E W_K)ᵀ is a transposed view
    d_head = w.W_Q.shape[1]
    both = W_E @ torch.cat([w.W_Q, w.W_K], dim=1)
    return FactoredMatrix(both[:, :d_head], both[:, d_head:].T)


def effective_qk_circuit(
    w: HeadWeights, W_U: Float[Tensor, "d_model d_vocab"], W_EE: Float[Tensor, "d_vocab d_model"]
) -> FactoredMatrix:
    """W_Uᵀ W_QK W_EEᵀ: ``[d_vocab, d_vocab]``; query = a predicted token's unembedding,
    key = a token's effective embedding (the copy-suppression paper's QK circuit)."""
    return FactoredMatrix(W_U.T @ w.W_Q, (W_EE @ w.W_K).T)  # vocab-tall products: faster than W_Kᵀ·W_EEᵀ


def ov_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_OV = W_V W_O: ``[d_model, d_model]``."""
    return FactoredMatrix(w.W_V, w.W_O)


def effective_ov_circuit(
    w: HeadWeights, W_EE: Float[Tensor, "d_vocab d_model"], W_U: Float[Tensor, "d_model d_vocab"]
) -> FactoredMatrix:
    """W_EE W_OV W_U: ``[d_vocab, d_vocab]``; row = source token attended to, column = logit."""
    return FactoredMatrix(W_EE @ w.W_V, w.W_O @ W_U)
