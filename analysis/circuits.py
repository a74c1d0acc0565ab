"""Per-head QK and OV circuits as ``FactoredMatrix`` objects — never a dense vocab × vocab matrix.

For head (L, H) with processed weights W_Q, W_K, W_V: ``Float[Tensor, "d_model d_head"]`` and
W_O: ``Float[Tensor, "d_head d_model"]`` (for grouped-query attention, query head H reads key/value
head ``H // (n_heads / n_kv_heads)``), and token-level inputs W_E (what the residual stream receives,
:mod:`analysis.embeddings`), W_EE and W_U:

* ``qk_circuit``           W_QK = W_Q · W_Kᵀ                                   d_model × d_model
* ``full_qk_circuit``      q(W_E) · k(W_E)ᵀ                                    d_vocab × d_vocab
* ``effective_qk_circuit`` q(W_Uᵀ) · k(W_EE)ᵀ  (query: unembedding, key: effective embedding)
* ``ov_circuit``           W_OV = W_V · W_O                                    d_model × d_model

with q(X) = X·W_Q and k(X) = X·W_K: no biases (weights only). For QK-norm families (Qwen3, Gemma 3,
OLMo 2) q and k also pass through the layer's own query/key norm modules, row by row: the factors
stay d_head wide (rank ≤ d_head), so the token-level circuits stay exact; W_QK alone leaves the norms
out. ``sides = "sqrt_d_model"`` first scales each side's rows to norm √d_model (the normalisation the
copy-suppression paper's appendix describes); ``"none"`` (the paper's code) leaves them raw.

Norm gains that the weight processing did not fold (:func:`norm_map`, read through the norm modules
themselves; with an unfolded LayerNorm's centring) are applied where the model applies them: the layer's
input-norm gain to the rows that enter W_Q, W_K and W_V (into the weights), a post-attention norm's gain
(Gemma 2/3, OLMo 2) to W_O's output in the token-level OV circuits, and the final norm's gain to W_U
(:func:`unembedding`). Where TransformerLens folded a norm its gain is 1 and nothing changes. A norm's
scale (one positive number per position) changes no rank within a row.

Each factored matrix keeps the d_head-wide inner dimension, so its SVD costs O(d_vocab · d_head²).

Definitions and sources: docs/methods.md#circuits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from .config import HeadRef
from .model.loader import LoadedModel


@dataclass(frozen=True)
class HeadWeights:
    """The processed weights of one attention head (detached, on the model's device), with the norm
    gains the processing did not fold applied (:func:`norm_map`), and the layer's own query/key
    norm modules that the token-level circuits apply (identity where the family has none).

    ``W_O_out``: W_O times the post-attention norm's gain (Gemma 2/3, OLMo 2; W_O elsewhere), what
    the token-level OV circuits write to the residual stream."""

    head: HeadRef
    kv_head: int
    W_Q: Float[Tensor, "d_model d_head"]
    W_K: Float[Tensor, "d_model d_head"]
    W_V: Float[Tensor, "d_model d_head"]
    W_O: Float[Tensor, "d_head d_model"]
    W_O_out: Float[Tensor, "d_head d_model"]
    queries: Callable[[Tensor], Tensor]  # rows [n, d_model] → this head's queries [n, d_head]
    keys: Callable[[Tensor], Tensor]  # rows [n, d_model] → this head's keys [n, d_head]


def _module(component):
    """The torch module behind a bridge component (the component itself when it is plain)."""
    return getattr(component, "original_component", None) or component


def _no_grad(fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The model's modules hold parameters that require grad: their outputs here never do."""
    def wrapped(rows: Tensor) -> Tensor:
        with torch.no_grad():
            return fn(rows).detach()
    return wrapped


#: the scale of the gain probe's input: the norm's epsilon then changes its output by ~eps / PROBE_SCALE²
PROBE_SCALE = 1e3
#: a probed gain within this of 1 everywhere is taken as folded (exactly 1: nothing to apply)
GAIN_TOLERANCE = 1e-6


def _probe_input(d_model: int, dtype: torch.dtype, device) -> Tensor:
    """v: centred, unit RMS, no zero entry."""
    v = torch.ones(d_model, dtype=torch.float64)
    v[1::2] = -1.0
    v = v - v.mean()
    return (v / v.square().mean().sqrt()).to(dtype=dtype, device=device)


@torch.no_grad()
def _probe_gain(module, d_model: int, dtype: torch.dtype, device) -> Tensor | None:
    """The per-dimension gain g of a norm module (LayerNorm or RMSNorm; Gemma's 1 + w included), read
    through the module itself: with v centred and of unit RMS, module(c·v) − module(−c·v) = 2·g ⊙ v
    (the bias cancels, the centring leaves v alone, the scale is 1 up to eps / c²). None when g = 1."""
    v = _probe_input(d_model, dtype, device)
    out = module(torch.stack([PROBE_SCALE * v, -PROBE_SCALE * v])[:, None])[:, 0]
    g = (out[0] - out[1]) / (2 * v)
    return None if bool(((g - 1).abs() <= GAIN_TOLERANCE).all()) else g.detach()


@torch.no_grad()
def _probe_centres(module, d_model: int, dtype: torch.dtype, device) -> bool:
    """Whether the norm subtracts its input's mean (LayerNorm): adding a constant changes nothing."""
    v = PROBE_SCALE * _probe_input(d_model, dtype, device)
    out = module(torch.stack([v, v + PROBE_SCALE / 2])[:, None])[:, 0]
    return bool(torch.allclose(out[0], out[1], rtol=1e-4, atol=1e-5 * float(out[0].abs().max())))


def norm_map(model: LoadedModel, layer: int | None, name: str) -> Callable[[Tensor], Tensor] | None:
    """The linear part of norm ``name`` (``"ln1"``, ``"ln1_post"`` of block ``layer``; ``"ln_final"``
    with layer None) that the weight processing left unfolded, as a map on the weights that read its
    output (rows: d_model): W ↦ P·diag(g)·W, with g its gain and P the centring of an unfolded
    LayerNorm (the identity for RMSNorm or when fold_ln folded it). None when there is nothing to apply
    (folded, or no such norm). Read through the norm module itself; cached on the model."""
    key = f"norm_map:{layer}:{name}"
    if key not in model._weights:
        owner = model.bridge if layer is None else model.bridge.blocks[layer]
        component = getattr(owner, name, None)
        fn = None
        if component is not None:
            module, W_E = _module(component), model.weight("W_E")
            g = _probe_gain(module, model.d_model, W_E.dtype, W_E.device)
            centre = (not model.provenance.get("processing", {}).get("fold_ln", True)
                      and _probe_centres(module, model.d_model, W_E.dtype, W_E.device))
            if g is not None or centre:
                def fn(W: Tensor, g=g, centre=centre) -> Tensor:
                    W = W if g is None else g.to(W.dtype)[:, None] * W
                    return W - W.mean(dim=-2, keepdim=True) if centre else W
        model._weights[key] = fn
    return model._weights[key]


def unembedding(model: LoadedModel) -> Float[Tensor, "d_model d_vocab"]:
    """W_U as the token-level circuits read it: through the final norm's unfolded gain (OLMo 2, or
    fold_ln = false), the processed W_U elsewhere."""
    W_U, f = model.weight("W_U"), norm_map(model, None, "ln_final")
    return W_U if f is None else f(W_U)


def gain_notes(model: LoadedModel) -> list[str]:
    """Sentences for the report on the norm gains the circuits apply themselves."""
    notes = []
    unfolded = [name for name, layer in (("the layers' input norms", 0), ("the final norm", None))
                if norm_map(model, layer, "ln1" if layer is not None else "ln_final") is not None]
    if unfolded:
        notes.append(f"Norm gains the weight processing did not fold ({' and '.join(unfolded)}) are applied by the "
                     "circuits themselves: to the rows that enter W_Q, W_K and W_V, and to W_U.")
    if getattr(model.bridge.blocks[0], "ln1_post", None) is not None:
        notes.append("Post-attention norm: each head's output passes through a norm before the residual stream; "
                     "the OV circuits apply that norm's per-dimension gain to W_O's output (its scale, one "
                     "positive number per position, changes no rank within a row).")
    return notes


def scale_rows(rows: Tensor) -> Tensor:
    """Each row scaled to norm √d_model (``qk_normalization = "sqrt_d_model"``); zero rows stay zero."""
    d = rows.shape[-1]
    return rows * (d**0.5 / rows.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(rows.dtype).tiny))


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
    f_in, f_post = norm_map(model, L, "ln1"), norm_map(model, L, "ln1_post")
    gained = f_in or (lambda W: W)  # on [.., d_model, d_head]
    W_Q, W_K = gained(model.weight("W_Q")[L]), gained(model.weight("W_K")[L])
    W_O = model.weight("W_O")[L, head.head]
    return HeadWeights(
        head=head,
        kv_head=kv,
        W_Q=W_Q[head.head],
        W_K=W_K[kv],
        W_V=gained(model.weight("W_V")[L, kv]),
        W_O=W_O,
        W_O_out=W_O if f_post is None else f_post(W_O.T).T,
        queries=_qk_norm(model, L, "q_norm", W_Q, head.head),
        keys=_qk_norm(model, L, "k_norm", W_K, kv),
    )


def qk_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_QK = W_Q W_Kᵀ: ``[d_model, d_model]``; bilinear form query-residual × key-residual (weights
    only: no QK-norm, no positions)."""
    return FactoredMatrix(w.W_Q, w.W_K.T)


def token_qk_circuit(
    w: HeadWeights, query_rows: Float[Tensor, "n_q d_model"], key_rows: Float[Tensor, "n_k d_model"],
    sides: str = "none",
) -> FactoredMatrix:
    """q(query_rows) · k(key_rows)ᵀ: ``[n_q, n_k]``; ``sides="sqrt_d_model"`` scales both sides'
    rows to norm √d_model first."""
    if sides == "sqrt_d_model":
        query_rows, key_rows = scale_rows(query_rows), scale_rows(key_rows)
    elif sides != "none":
        raise ValueError(f"sides must be 'none' or 'sqrt_d_model', got {sides!r}")
    return FactoredMatrix(w.queries(query_rows), w.keys(key_rows).T)  # vocab-tall products


def full_qk_circuit(w: HeadWeights, W_E: Float[Tensor, "d_vocab d_model"]) -> FactoredMatrix:
    """q(W_E) k(W_E)ᵀ: ``[d_vocab, d_vocab]``, query token × key token, through the embeddings as
    the residual stream receives them."""
    return token_qk_circuit(w, W_E, W_E)


def effective_qk_circuit(
    w: HeadWeights, W_U: Float[Tensor, "d_model d_vocab"], W_EE: Float[Tensor, "d_vocab d_model"],
    sides: str = "none",
) -> FactoredMatrix:
    """q(W_Uᵀ) k(W_EE)ᵀ: ``[d_vocab, d_vocab]``; query = a predicted token's unembedding, key = a
    token's effective embedding (the copy-suppression paper's QK circuit)."""
    return token_qk_circuit(w, W_U.T, W_EE, sides)


def ov_circuit(w: HeadWeights) -> FactoredMatrix:
    """W_OV = W_V W_O: ``[d_model, d_model]``."""
    return FactoredMatrix(w.W_V, w.W_O)


@dataclass(frozen=True)
class HeadCircuits:
    """The four factored circuits of one head that the per-head analysis reads, each built once
    (:func:`qk_circuit`, :func:`full_qk_circuit`, :func:`effective_qk_circuit`, :func:`ov_circuit`):
    a ``FactoredMatrix`` caches its SVD, so every spectrum, singular direction and cos² ranking of a
    circuit shares one decomposition."""

    weights: HeadWeights
    qk: FactoredMatrix  # W_QK: [d_model, d_model]
    full_qk: FactoredMatrix  # q(W_E) k(W_E)ᵀ: [d_vocab, d_vocab]
    effective_qk: FactoredMatrix  # q(W_Uᵀ) k(W_EE)ᵀ: [d_vocab, d_vocab]
    ov: FactoredMatrix  # W_OV: [d_model, d_model]

    @classmethod
    def of(cls, w: HeadWeights, W_U: Float[Tensor, "d_model d_vocab"], W_E: Float[Tensor, "d_vocab d_model"],
           W_EE: Float[Tensor, "d_vocab d_model"]) -> HeadCircuits:
        return cls(weights=w, qk=qk_circuit(w), full_qk=full_qk_circuit(w, W_E),
                   effective_qk=effective_qk_circuit(w, W_U, W_EE), ov=ov_circuit(w))


@dataclass(frozen=True)
class TokenCircuit:
    """A vocab × vocab circuit ``A @ B`` given as its column factor ``B`` (``[k, n_cols]``) and a
    function that returns the row factor of any rows (``[len(rows), k]``): sampled mode computes
    the row factor of the sampled rows only."""

    rows_of: Callable[[Tensor], Tensor]
    B: Tensor
    n_rows: int

    @classmethod
    def of(cls, circuit: FactoredMatrix | TokenCircuit) -> TokenCircuit:
        if isinstance(circuit, TokenCircuit):
            return circuit
        A = circuit.A
        return cls(lambda rows: A[rows.to(A.device)], circuit.B, A.shape[0])


class RankCircuits:
    """The two circuits the rank metrics read, for every head of one layer (docs/methods.md):

    * OV self-suppression: W_EE · W_V · W_O · W_U (row = source token, column = logit);
    * QK self-attention: q(n(W_Uᵀ)) · k(n(W_EE))ᵀ (row = a query predicting the token, column = key),
      ``n`` the identity (``qk_normalization = "none"``, the paper's code) or rows scaled to norm
      √d_model (``"sqrt_d_model"``);

    with ``W_EE`` the rank embedding (the paper's block-0 residual by default), W_U the
    :func:`unembedding` and the gains of :func:`head_weights`. The vocabulary-wide column factors of
    all the layer's heads come from one wide GEMM each (W_O of every head times W_U; the keys of
    every key/value head), computed once; each head's row factor is computed only for the rows a
    metric ranks (:class:`TokenCircuit`). The per-head analysis and the survey read
    the same objects, so their numbers agree exactly."""

    def __init__(self, model: LoadedModel, layer: int, W_EE: Tensor, qk_normalization: str):
        if qk_normalization not in ("none", "sqrt_d_model"):
            raise ValueError(f"qk_normalization must be 'none' or 'sqrt_d_model', got {qk_normalization!r}")
        self.model, self.layer, self.W_EE = model, layer, W_EE
        heads = [head_weights(model, HeadRef(layer, h)) for h in range(model.n_heads)]
        self.heads = heads
        W_U = unembedding(model)
        norm = scale_rows if qk_normalization == "sqrt_d_model" else (lambda rows: rows)
        with torch.no_grad():
            self.query_inputs = norm(W_U.T)  # [d_vocab, d_model], once for the layer
            key_inputs = norm(W_EE)
            W_O_all = torch.stack([w.W_O_out for w in heads])  # [n_heads, d_head, d_model]
            # (W_Uᵀ · W_O_allᵀ): vocab-tall, so the GEMM streams W_U once; each head's [d_head, d_vocab]
            # column factor is a transposed slice of it
            self._ov = W_U.T @ W_O_all.reshape(-1, W_O_all.shape[-1]).T  # [d_vocab, n_heads·d_head]
            # the keys of every key/value head, once each (grouped-query heads share them): one wide
            # GEMM, or the model's own k norms per key/value head
            if model.family.qk_norm:
                readers = {w.kv_head: w for w in heads}  # one query head reading each key/value head
                kv_keys = {kv: w.keys(key_inputs).T.contiguous() for kv, w in readers.items()}
            else:
                kv_keys = {}
                for w in heads:
                    kv_keys.setdefault(w.kv_head, w.W_K)
                W_K_all = torch.cat(list(kv_keys.values()), dim=1)  # [d_model, n_kv·d_head]
                keys = key_inputs @ W_K_all
                d = model.d_head
                kv_keys = {kv: keys[:, i * d:(i + 1) * d].T for i, kv in enumerate(kv_keys)}
            self.qk_columns = kv_keys  # kv head → [d_head, d_vocab]

    def ov(self, head: int) -> TokenCircuit:
        """Head ``head``'s OV self-suppression circuit W_EE · W_V · W_O · W_U."""
        w, W_EE, d = self.heads[head], self.W_EE, self.model.d_head
        return TokenCircuit(lambda rows: W_EE[rows.to(W_EE.device)] @ w.W_V, self._ov[:, head * d:(head + 1) * d].T,
                            W_EE.shape[0])

    def qk(self, head: int) -> TokenCircuit:
        """Head ``head``'s QK self-attention circuit q(n(W_Uᵀ)) · k(n(W_EE))ᵀ."""
        w, inputs = self.heads[head], self.query_inputs
        return TokenCircuit(lambda rows: w.queries(inputs[rows.to(inputs.device)]), self.qk_columns[w.kv_head],
                            inputs.shape[0])
