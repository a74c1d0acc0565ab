"""Per-head QK and OV circuits as ``FactoredMatrix`` objects — never a dense vocab × vocab matrix.

For head (L, H) with processed weights W_Q, W_K, W_V: ``Float[Tensor, "d_model d_head"]`` and
W_O: ``Float[Tensor, "d_head d_model"]`` (for grouped-query attention, query head H reads key/value
head ``H // (n_heads / n_kv_heads)``), and token-level inputs W_E (what the residual stream receives,
:mod:`analysis.embeddings`), W_EE and W_U:

* ``qk_circuit``           W_QK = W_Q · W_Kᵀ                                   d_model × d_model
* ``full_qk_circuit``      q(W_E) · k(W_E)ᵀ                                    d_vocab × d_vocab
* ``effective_qk_circuit`` q(W_Uᵀ) · k(W_EE)ᵀ  (query: unembedding, key: effective embedding)
* ``ov_circuit``           W_OV = W_V · W_O                                    d_model × d_model
* ``effective_ov_circuit`` W_EE · W_OV · W_U                                   d_vocab × d_vocab

with q(X) = X·W_Q and k(X) = X·W_K: no biases (weights only). For QK-norm families (Qwen3, Gemma 3,
OLMo 2) q and k also pass through the layer's own query/key norm modules, row by row: the factors
stay d_head wide (rank ≤ d_head), so the token-level circuits stay exact; W_QK alone leaves the norms
out. ``sides = "layer_norm"`` first passes each side's rows through the layer's own input norm
(ln1), which scales them to norm √d_model as the model would: the copy-suppression paper's QK
self-attention metric.

Each factored matrix keeps the d_head-wide inner dimension, so its SVD costs O(d_vocab · d_head²).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from .config import HeadRef
from .models import LoadedModel


@dataclass(frozen=True)
class HeadWeights:
    """The processed weights of one attention head (detached, on the model's device), and the
    layer's own modules that the token-level circuits apply (identity where the family has none)."""

    head: HeadRef
    kv_head: int
    W_Q: Float[Tensor, "d_model d_head"]
    W_K: Float[Tensor, "d_model d_head"]
    W_V: Float[Tensor, "d_model d_head"]
    W_O: Float[Tensor, "d_head d_model"]
    queries: Callable[[Tensor], Tensor]  # rows [n, d_model] → this head's queries [n, d_head]
    keys: Callable[[Tensor], Tensor]  # rows [n, d_model] → this head's keys [n, d_head]
    input_norm: Callable[[Tensor], Tensor]  # the layer's ln1 on rows [n, d_model] (identity if none)


def _module(component):
    """The torch module behind a bridge component (the component itself when it is plain)."""
    return getattr(component, "original_component", None) or component


def _no_grad(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The model's modules hold parameters that require grad: their outputs here never do."""
    def wrapped(rows: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(rows).detach()
    return wrapped


def _rows_norm(component) -> Callable[[Tensor], Tensor]:
    module = _module(component)
    return _no_grad(lambda rows: module(rows[:, None])[:, 0])


def _qk_norm(model: LoadedModel, layer: int, name: str, W_all: Tensor, index: int) -> Callable[[Tensor], Tensor]:
    """rows → the (normed) projection of one query/key head. ``W_all``: the layer's stacked
    ``[heads, d_model, d_head]`` weights. A per-head norm (weight of size d_head) applies to that
    head's projection; a whole-projection norm (OLMo 2: size heads·d_head) needs every head's."""
    attn = getattr(model.bridge.blocks[layer], "attn", None)
    component = getattr(attn, name, None) if attn is not None else None
    W = W_all[index]
    if component is None:
        return lambda rows: rows @ W
    module = _module(component)
    size = getattr(module, "weight", torch.empty(0)).numel()
    n, d_head = W_all.shape[0], W_all.shape[2]
    if size in (0, d_head):
        return _no_grad(lambda rows: module(rows @ W))
    if size == n * d_head:
        flat = W_all.permute(1, 0, 2).reshape(W_all.shape[1], n * d_head)
        return _no_grad(lambda rows: module(rows @ flat).reshape(rows.shape[0], n, d_head)[:, index])
    raise ValueError(f"layer {layer}'s {name} has {size} weights; expected {d_head} or {n * d_head}")


def head_weights(model: LoadedModel, head: HeadRef) -> HeadWeights:
    kv = model.kv_head(head.head)
    L = head.layer
    W_Q, W_K = model.weight("W_Q")[L], model.weight("W_K")[L]
    block = model.bridge.blocks[L]
    ln1 = getattr(block, "ln1", None)
    return HeadWeights(
        head=head,
        kv_head=kv,
        W_Q=W_Q[head.head],
        W_K=W_K[kv],
        W_V=model.weight("W_V")[L, kv],
        W_O=model.weight("W_O")[L, head.head],
        queries=_qk_norm(model, L, "q_norm", W_Q, head.head),
        keys=_qk_norm(model, L, "k_norm", W_K, kv),
        input_norm=_rows_norm(ln1) if ln1 is not None else (lambda rows: rows),
    )


def qk_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_QK = W_Q W_Kᵀ: ``[d_model, d_model]``; bilinear form query-residual × key-residual (weights
    only: no QK-norm, no positions)."""
    return FactoredMatrix(w.W_Q, w.W_K.T)


def token_qk_circuit(
    w: HeadWeights, query_rows: Float[Tensor, "n_q d_model"], key_rows: Float[Tensor, "n_k d_model"],
    sides: str = "raw",
) -> FactoredMatrix:
    """q(query_rows) · k(key_rows)ᵀ: ``[n_q, n_k]``; ``sides="layer_norm"`` passes both sides'
    rows through the layer's input norm first."""
    if sides == "layer_norm":
        query_rows, key_rows = w.input_norm(query_rows), w.input_norm(key_rows)
    elif sides != "raw":
        raise ValueError(f"sides must be 'raw' or 'layer_norm', got {sides!r}")
    return FactoredMatrix(w.queries(query_rows), w.keys(key_rows).T)  # vocab-tall products


def full_qk_circuit(w: HeadWeights, W_E: Float[Tensor, "d_vocab d_model"]) -> FactoredMatrix:
    """q(W_E) k(W_E)ᵀ: ``[d_vocab, d_vocab]``, query token × key token, through the embeddings as
    the residual stream receives them."""
    return token_qk_circuit(w, W_E, W_E)


def effective_qk_circuit(
    w: HeadWeights, W_U: Float[Tensor, "d_model d_vocab"], W_EE: Float[Tensor, "d_vocab d_model"],
    sides: str = "raw",
) -> FactoredMatrix:
    """q(W_Uᵀ) k(W_EE)ᵀ: ``[d_vocab, d_vocab]``; query = a predicted token's unembedding, key = a
    token's effective embedding (the copy-suppression paper's QK circuit)."""
    return token_qk_circuit(w, W_U.T, W_EE, sides)


def ov_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_OV = W_V W_O: ``[d_model, d_model]``."""
    return FactoredMatrix(w.W_V, w.W_O)


def effective_ov_circuit(
    w: HeadWeights, W_EE: Float[Tensor, "d_vocab d_model"], W_U: Float[Tensor, "d_model d_vocab"]
) -> FactoredMatrix:
    """W_EE W_OV W_U: ``[d_vocab, d_vocab]``; row = source token attended to, column = logit."""
    return FactoredMatrix(W_EE @ w.W_V, w.W_O @ W_U)


class RankCircuits:
    """The two circuits the rank metrics read, for every head of one layer:

    * OV self-suppression: W_EE · W_OV · W_U (row = source token, column = logit);
    * QK self-attention: q(norm(W_Uᵀ)) · k(norm(W_EE))ᵀ (row = a query predicting the token, column
      = key), ``norm`` the layer's own input norm (``qk_normalization = "layer_norm"``) or none.

    The vocabulary-wide column factors of all the layer's heads come from one wide GEMM each
    (W_O of every head times W_U; the keys of every key/value head), computed once; each head's row
    factor is computed only for the rows a metric ranks (:class:`analysis.diagonal.TokenCircuit`).
    The per-head analysis and the survey read the same objects, so their numbers agree exactly."""

    def __init__(self, model: LoadedModel, layer: int, W_EE: Tensor, qk_normalization: str):
        self.model, self.layer, self.W_EE = model, layer, W_EE
        heads = [head_weights(model, HeadRef(layer, h)) for h in range(model.n_heads)]
        self.heads = heads
        W_U = model.weight("W_U")
        norm = heads[0].input_norm if qk_normalization == "layer_norm" else (lambda rows: rows)
        with torch.no_grad():
            self.query_inputs = norm(W_U.T)  # [d_vocab, d_model], normed once for the layer
            key_inputs = norm(W_EE)
            W_O_all = model.weight("W_O")[layer]  # [n_heads, d_head, d_model]
            # (W_Uᵀ · W_O_allᵀ): vocab-tall, so the GEMM streams W_U once; each head's [d_head, d_vocab]
            # column factor is a transposed slice of it
            self._ov = W_U.T @ W_O_all.reshape(-1, W_O_all.shape[-1]).T  # [d_vocab, n_heads·d_head]
            # the keys of every key/value head: one wide GEMM, or the model's own k norms per head
            if model.family.get("qk_norm"):
                kv_keys = {w.kv_head: w.keys(key_inputs).T.contiguous() for w in heads}
            else:
                W_K_all = model.weight("W_K")[layer]  # [n_kv, d_model, d_head]
                keys = key_inputs @ W_K_all.permute(1, 0, 2).reshape(W_K_all.shape[1], -1)
                d = model.d_head
                kv_keys = {kv: keys[:, kv * d:(kv + 1) * d].T for kv in range(W_K_all.shape[0])}
            self.qk_columns = kv_keys  # kv head → [d_head, d_vocab]

    def ov(self, head: int):
        from .diagonal import TokenCircuit

        w, W_EE, d = self.heads[head], self.W_EE, self.model.d_head
        return TokenCircuit(lambda rows: W_EE[rows.to(W_EE.device)] @ w.W_V, self._ov[:, head * d:(head + 1) * d].T,
                            W_EE.shape[0])

    def qk(self, head: int):
        from .diagonal import TokenCircuit

        w, inputs = self.heads[head], self.query_inputs
        return TokenCircuit(lambda rows: w.queries(inputs[rows.to(inputs.device)]), self.qk_columns[w.kv_head],
                            inputs.shape[0])
