"""Singular spectra of factored circuits, their shape statistics, and the tokens on their top
singular directions.

Shape statistics of a spectrum σ₁ ≥ σ₂ ≥ … ≥ σ_r ≥ 0 (:func:`spectrum_statistics`), computed here
once for the head pages and the survey alike:

* σ₁ share ``σ₁ / Σ σ_i`` (1 = rank one);
* σ₁/σ₂, the gap to the second direction (None when σ₂ = 0);
* energy share ``σ₁² / Σ σ_i²``, the part of the squared Frobenius norm in direction 1;
* effective rank (Roy & Vetterli 2007) ``exp(−Σ p_i ln p_i)`` with ``p_i = σ_i / Σ_j σ_j``
  (0·ln 0 = 0), between 1 (one direction) and r (all equal); 0 for an all-zero spectrum.

Every function here reads a circuit's SVD through ``FactoredMatrix.S`` / ``.svd()``, which
TransformerLens caches on the object: a caller that builds each circuit once
(:class:`analysis.circuits.HeadCircuits`) decomposes it once, however many of these read it.

Definitions and sources: docs/methods.md#spectra-and-their-shape-statistics.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix

from .tokens import token_records


def singular_spectrum(circuit: FactoredMatrix) -> list[float]:
    """All singular values of ``circuit`` (d_head of them for a per-head circuit), descending."""
    return [float(s) for s in circuit.S.double().cpu()]


def sigma1_share(singular_values: list[float]) -> float:
    """σ_1 / Σ σ_i (0 for an all-zero spectrum)."""
    total = math.fsum(singular_values)
    return singular_values[0] / total if total > 0 else 0.0


def effective_rank(singular_values: list[float]) -> float:
    """exp(−Σ p_i ln p_i) with p_i = σ_i / Σ σ_j (Roy & Vetterli 2007); 0·ln 0 = 0; 0 if all σ = 0."""
    total = math.fsum(singular_values)
    if total <= 0:
        return 0.0
    entropy = -math.fsum(p * math.log(p) for p in (s / total for s in singular_values) if p > 0)
    return math.exp(entropy)


def spectrum_statistics(singular_values: list[float]) -> dict[str, Any]:
    """The shape statistics of a spectrum (see the module docstring)."""
    s = singular_values
    energy = math.fsum(x * x for x in s)
    return {
        "sigma1": s[0],
        "sigma1_share": sigma1_share(s),
        "ratio12": s[0] / s[1] if len(s) > 1 and s[1] > 0 else None,
        "energy1": s[0] ** 2 / energy if energy > 0 else None,
        "effective_rank": effective_rank(s),
        "n": len(s),
    }


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
