"""Singular spectra of factored circuits and the tokens on their top singular directions."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from .tokens import token_records


def singular_spectrum(circuit: FactoredMatrix) -> list[float]:
    """All singular values of ``circuit`` (d_head of them for a per-head circuit), descending."""
    return [float(s) for s in circuit.S.double().cpu()]


def canonical_svd(circuit: FactoredMatrix) -> tuple[Tensor, Tensor, Tensor]:
    """``(U, S, V)`` with a fixed sign per direction: the largest-|.| entry of each U column is
    positive (V flipped with it, so U diag(S) Vᵀ is unchanged). Makes results reproducible."""
    U, S, V = circuit.svd()
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U.gather(0, idx[None, :]))[0]
    signs[signs == 0] = 1
    return U * signs, S, V * signs


def top_tokens(
    vector: Float[Tensor, "d_vocab"], k: int, tokenizer
) -> list[dict[str, Any]]:
    """The ``k`` tokens with the largest |vector| entries, with their signed values."""
    k = min(k, vector.shape[0])
    idx = vector.abs().topk(k).indices
    return token_records(tokenizer, idx.tolist(), value=[float(v) for v in vector[idx].double().cpu()])


def singular_directions(
    circuit: FactoredMatrix, n_directions: int, k: int, tokenizer
) -> list[dict[str, Any]]:
    """For each of the top ``n_directions`` singular directions of a vocab × vocab circuit: σ_i and
    the top-k query-side (|U[:, i]|) and key-side (|V[:, i]|) tokens."""
    U, S, V = canonical_svd(circuit)
    out = []
    for i in range(min(n_directions, S.shape[0])):
        out.append({
            "index": i,
            "sigma": float(S[i]),
            "query": top_tokens(U[:, i], k, tokenizer),
            "key": top_tokens(V[:, i], k, tokenizer),
        })
    return out
