"""Where each token's own entry ranks in its row of a factored vocab × vocab circuit.

* OV self-suppression (copy suppression): in row s of W_EE · W_OV · W_U (attending to source token s,
  the head's direct effect on every logit), the rank of s's own logit, rank 1 = most negative.
* QK self-attention: in query row t of the effective QK circuit, the rank of key t, rank 1 = highest.

Ranks never flatter a token: ties count *against* it (rank = the number of entries at least as
extreme as its own, itself included), and a NaN own entry ranks last. A head whose circuit is
degenerate (σ₁ = 0, non-finite entries, or most rows with no spread) gets no score at all
(:func:`circuit_degeneracy`), rather than the best or worst one.

The summaries carry the copy-suppression paper's metrics (McDougall et al. 2023): the fraction of
tokens ranked 1, in the top 10 and in the top 5% of their row (for OV: "among the 10 most negative",
"in the bottom 5%"), their chance values under a random ranking (k / n), and an effect-size verdict
(:func:`rank_evidence`) that the report's sentences and the survey ranking both use.

The circuit is ``A @ B`` with A: ``[d_vocab, d_head]``, B: ``[d_head, d_vocab]``; rows are computed in
batches, never the whole matrix. Exact mode ranks every row; sampled mode ranks a seeded uniform
sample of rows and gives Wilson 95% CIs for the fractions.

Definitions and sources: docs/methods.md#ov-self-suppression-and-qk-self-attention-the-rank-metrics.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import FactoredMatrix

from . import gpurank, rowscan
from .circuits import TokenCircuit

log = logging.getLogger("headreport")

#: the paper's cut-offs: rank 1, top 10, top 5% of the row
TOP_K = 10
TOP_SHARE = 0.05
#: an effect is claimed only when the median rank lies within this share of the row (the typical
#: token's own entry is in the best 5%; chance: the middle) ...
MAX_MEDIAN_SHARE = 0.05
#: ... and the top-10 fraction is at least this many times its chance value (the lower end of its
#: 95% interval, in sampled mode): the effect reaches the very top of the row
MIN_LIFT = 10.0
#: a row whose standard deviation is below this fraction of its root-mean-square entry counts as
#: flat (no spread): float32 rounding leaves ~1e-7, a real row has spread of its own size
FLAT_ROW_TOLERANCE = 1e-4
#: a circuit with more than this share of flat rows is degenerate: no score
MAX_FLAT_SHARE = 0.5


@torch.no_grad()
def diagonal_ranks(
    circuit: FactoredMatrix | TokenCircuit,
    rows: Int[Tensor, "n"] | None = None,
    descending: bool = False,
    batch_size: int = 1024,
    progress: bool = False,
    visitors: Sequence[Callable] = (),
    tied: np.ndarray | None = None,
) -> Int[Tensor, "n"]:
    """1-based rank of entry (r, r) within row r, for each r in ``rows`` (all rows if None).

    ``descending=False``: rank 1 = smallest (most negative) entry; ``True``: rank 1 = largest.
    Ties count against the token: rank = #{j : x_j ≤ x_r} (``≥`` when descending), itself included,
    so a constant row ranks every token last. A NaN own entry ranks last (n_cols); NaN elsewhere
    in the row never beats it. On CPU the pass is :func:`analysis.rowscan.ranks_cpu` (cache-sized
    blocks, shapes tuned at run time); on GPU it is the fused Triton kernel (:func:`fused_ranks`,
    3×TF32) where Triton is installed and no visitor reads the blocks, else ``batch_size`` rows are
    computed at once, in full float32 (TF32 switched off for the pass, whatever the caller set).
    ``visitors``: further readers of every block in the same pass (:mod:`analysis.explorer`; numpy
    blocks on CPU, device tensors on GPU). ``tied``: a boolean array of ``len(rows)``, filled with
    whether each row's own entry equals another entry of its row exactly.
    """
    circuit = TokenCircuit.of(circuit)
    B = circuit.B
    if rows is None:
        rows = torch.arange(circuit.n_rows)
    if B.device.type == "cpu":
        rows = rows if rows.device.type == "cpu" else rows.cpu()
        return torch.from_numpy(rowscan.ranks_cpu(circuit.rows_of(rows), B, rows, descending, progress=progress,
                                                  visitors=visitors, tied=tied))
    rows = rows.to(B.device)
    if not visitors and B.dtype == torch.float32 and gpurank.available(B.device):
        try:
            return fused_ranks(circuit.rows_of(rows), B, rows, descending, tied=tied, batch_size=batch_size)
        except gpurank.KernelUnavailable as e:  # Triton could not build it for this GPU: the block pass
            log.warning("the fused GPU rank kernel did not run (%s): the rank passes use torch blocks", e)
    return block_pass(lambda s: circuit.rows_of(rows[s]), B, rows, descending, batch_size=batch_size, tied=tied,
                      visitors=visitors, progress=progress)


def block_pass(factor: Callable[[slice], Tensor], B: Tensor, rows: Tensor, descending: bool, *,
               batch_size: int = 1024, tied: np.ndarray | None = None, visitors: Sequence[Callable] = (),
               progress: bool = False) -> Tensor:
    """The GPU block pass: ``batch_size`` of ``rows`` (their own columns) at a time, ``factor(s)``
    the row factor of positions ``s``, each block computed in full float32 and ranked by
    :func:`block_ranks` (``tied``, ``visitors`` as in :func:`diagonal_ranks`)."""
    out = torch.empty(rows.shape[0], dtype=torch.int64)
    starts = range(0, rows.shape[0], batch_size)
    with full_float32():
        for start in tqdm(starts, desc="diagonal ranks", unit="batch", disable=not progress, leave=False):
            s = slice(start, min(start + batch_size, rows.shape[0]))
            r = rows[s]
            block = factor(s) @ B
            out[s] = block_ranks(block, r, descending).cpu()
            if tied is not None:
                tied[s] = block_ties(block, r).cpu().numpy()
            for visit in visitors:
                visit(block, s, 0)
    return out


def fused_ranks(A_rows: Tensor, B: Tensor, rows: Tensor, descending: bool, *, tied: np.ndarray | None = None,
                counts: gpurank.Counts | None = None, batch_size: int = 1024) -> Tensor:
    """The GPU pass on the fused Triton kernel (:mod:`analysis.gpurank`): ranks with ties against the
    token, a NaN own entry last. A row whose finite own entry the kernel's tile did not reproduce in
    its own column (the kernel's own check; never seen in the tests) is recomputed in blocks of
    ``batch_size`` rows, so a rank is never off by its own column. ``counts``: the kernel's result,
    when the caller has it already."""
    c = counts if counts is not None else gpurank.counts(A_rows, B, rows, descending)
    ranks = torch.where(c.own.isnan(), B.shape[1], c.le)
    ties = (c.eq > 1).numpy()
    redo = c.unmatched.nonzero()[:, 0]
    if redo.numel():
        log.warning("the fused GPU rank kernel did not reproduce %d rows' own entries: recomputed", redo.numel())
        idx = redo.to(B.device)
        redone = np.zeros(redo.numel(), dtype=np.bool_)
        ranks[redo] = block_pass(lambda s: A_rows[idx[s]], B, rows[idx], descending, batch_size=batch_size,
                                 tied=redone)
        ties[redo.numpy()] = redone
    if tied is not None:
        tied[:] = ties & ~c.own.isnan().numpy()
    return ranks


def block_ranks(block: Tensor, own_cols: Tensor, descending: bool) -> Tensor:
    """Ranks within each row of a computed block (the GPU pass): row i's own entry is in column
    ``own_cols[i]``; rank = #{j : x_j ≤ own} (``≥`` when descending), ties against the token; a NaN
    own entry ranks last (the row's length), a NaN elsewhere never beats it."""
    own = block.gather(1, own_cols[:, None])
    counts = ((block >= own) if descending else (block <= own)).sum(dim=1)
    return torch.where(own[:, 0].isnan(), block.shape[1], counts)


def block_ties(block: Tensor, own_cols: Tensor) -> Tensor:
    """Whether each row's own entry (column ``own_cols[i]``) equals another entry of its row exactly."""
    own = block.gather(1, own_cols[:, None])
    return (block == own).sum(dim=1) > 1


@contextlib.contextmanager
def full_float32():
    """CUDA float32 products in full float32 (no TF32 tensor-core rounding) inside the block: a caller
    or library that allowed TF32 globally must not change which entries tie."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = previous


@torch.no_grad()
def circuit_degeneracy(circuit: FactoredMatrix | TokenCircuit, rows: Tensor | None = None,
                       A_rows: Tensor | None = None) -> str | None:
    """Why ranks on ``circuit`` would mean nothing, or None when they are meaningful.

    Degenerate: non-finite entries; σ₁ = 0 (a dead head: W_O = 0 or W_Q = 0); or more than
    :data:`MAX_FLAT_SHARE` of the (given) rows with no spread. A row's spread is its standard
    deviation across columns relative to its root-mean-square entry, from the d_head × d_head Gram
    matrices B_c B_cᵀ (B_c: B minus its column mean) and B Bᵀ — no vocab × vocab product. ``A_rows``: the rows' factor,
    when the caller computed it already."""
    circuit = TokenCircuit.of(circuit)
    if rows is None:
        rows = torch.arange(circuit.n_rows)
    A = circuit.rows_of(rows) if A_rows is None else A_rows
    B = circuit.B
    mean = B.mean(dim=1, keepdim=True)  # NaN or ±inf anywhere in B reaches the mean
    B_c = B - mean
    spread_gram = (B_c @ B_c.T).double()
    mean = mean.double()
    size_gram = spread_gram + B.shape[1] * (mean @ mean.T)  # B Bᵀ, without its cancellation
    if not (torch.isfinite(A).all() and torch.isfinite(size_gram).all()):
        return "the circuit has non-finite (NaN or infinite) entries"
    if A.norm() == 0 or size_gram.abs().max() == 0:
        return "the circuit is zero (σ₁ = 0): the head writes or reads nothing"
    A = A.double()
    spread = ((A @ spread_gram) * A).sum(dim=1).clamp_min(0)  # n · variance of each row
    size = ((A @ size_gram) * A).sum(dim=1).clamp_min(0)  # n · mean square of each row
    # flat: the spread is float rounding of the row's own size (or the row is all zeros)
    flat = (spread <= FLAT_ROW_TOLERANCE**2 * size).double().mean().item()
    if flat > MAX_FLAT_SHARE:
        return (f"{flat:.0%} of the circuit's rows are constant (no spread across tokens): every token "
                "would tie with every other")
    return None


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> list[float]:
    """Wilson score 95% interval for a binomial proportion."""
    if n == 0:
        return [0.0, 1.0]
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return [max(0.0, centre - half), min(1.0, centre + half)]


def rank_histogram(ranks: np.ndarray, d_vocab: int) -> dict[str, list]:
    """Counts of ranks in bins [1], [2], [3, 5], [6, 10], [11, 20], [21, 50], ... up to d_vocab."""
    edges = [1, 2, 3]  # bins [1], [2]; then upper bounds 5, 10, 20, 50, 100, 200, 500, ...
    upper, steps = 5, (2, 2.5, 2)
    i = 0
    while upper < d_vocab:
        edges.append(upper + 1)
        upper = int(upper * steps[i % 3])
        i += 1
    edges.append(d_vocab + 1)
    counts, _ = np.histogram(ranks, bins=np.asarray(edges) - 0.5)
    labels = [str(lo) if hi - lo == 1 else f"{lo}–{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    return {"edges": edges, "labels": labels, "counts": [int(c) for c in counts]}


def top_share_cutoff(n_tokens: int) -> int:
    """The largest 1-based rank inside the top :data:`TOP_SHARE` of a row of ``n_tokens``, as the
    copy-suppression paper's code counts it: a token fails when its 0-based rank exceeds 0.05·n, so
    it passes up to 1-based rank ⌊0.05·n⌋ + 1 (2,513 of GPT-2's 50,257; ⌈0.05·n⌉ unless 20 divides
    n). Exact integer arithmetic (5·n // 100)."""
    return (n_tokens * round(TOP_SHARE * 100)) // 100 + 1


def chance_levels(n_tokens: int) -> dict[str, float]:
    """What a random ranking gives: P(rank ≤ k) = k / n, median (n + 1) / 2."""
    return {
        "fraction_rank1": 1 / n_tokens,
        "fraction_top10": min(TOP_K, n_tokens) / n_tokens,
        "fraction_top5pct": top_share_cutoff(n_tokens) / n_tokens,
        "median_rank": (n_tokens + 1) / 2,
    }


def excess_over_chance(fraction: float, chance: float) -> float:
    """(f − c) / (1 − c): 0 at chance, 1 when every token is in; comparable across vocabularies."""
    return (fraction - chance) / (1 - chance) if chance < 1 else 0.0


def rank_evidence(summary: dict[str, Any]) -> dict[str, Any]:
    """Whether a rank summary shows the effect, by effect size and not by a p-value alone.

    Supported when the median rank lies in the best :data:`MAX_MEDIAN_SHARE` of the row (chance:
    the middle) *and* the top-10 fraction is at least :data:`MIN_LIFT` times its chance value (in
    sampled mode, the lower end of its 95% interval is). ``excess`` is the chance-normalised top-10
    excess (f − c) / (1 − c), the survey score's ingredient; ``excess_low`` the same of the lower
    bound. ``reason`` names the rule that decided, not the numbers: the sentence that shows it
    prints them, once, in one form (:func:`report.findings.rank_sentence`)."""
    if not summary.get("defined", True):
        return {"supported": False, "excess": None, "excess_low": None,
                "reason": f"undefined: {summary.get('reason', 'degenerate circuit')}"}
    n = summary["n_tokens"]
    chance = chance_levels(n)["fraction_top10"]
    ci = summary.get("fraction_top10_ci95")
    low = ci[0] if ci else summary["fraction_top10"]
    excess, excess_low = excess_over_chance(summary["fraction_top10"], chance), excess_over_chance(low, chance)
    needed = min(MIN_LIFT * chance, 0.5)
    if summary["median_rank"] > MAX_MEDIAN_SHARE * n:
        reason = f"the median rank is not within the best {MAX_MEDIAN_SHARE:.0%} of the row"
        supported = False
    elif low < needed:
        reason = (f"the top-10 fraction{' (the lower end of its 95% interval)' if ci else ''} is below "
                  f"{min(MIN_LIFT, 0.5 / chance):g} times its chance value")
        supported = False
    else:
        reason = (f"the median rank is within the best {MAX_MEDIAN_SHARE:.0%} of the row and the top-10 "
                  f"fraction is at least {min(MIN_LIFT, 0.5 / chance):g} times chance")
        supported = True
    return {"supported": supported, "excess": excess, "excess_low": excess_low, "reason": reason}


def rank_summary(
    ranks: np.ndarray, d_vocab: int, mode: str, sample_size: int | None, seed: int | None,
    tied_rows: int | None = None,
) -> dict[str, Any]:
    """The fractions (rank 1, top 10, top 5%), with Wilson CIs in sampled mode, chance levels, the
    median and mean rank, the histogram, :func:`rank_evidence` and ``tied_rows`` (how many ranked
    rows had another entry exactly equal to their own: the rows where ties-against-the-token
    mattered)."""
    n = int(ranks.size)
    sampled = mode == "sampled"
    counts = {"fraction_rank1": int((ranks <= 1).sum()), "fraction_top10": int((ranks <= TOP_K).sum()),
              "fraction_top5pct": int((ranks <= top_share_cutoff(d_vocab)).sum())}
    out: dict[str, Any] = {
        "defined": True,
        "mode": mode,
        "n_tokens": d_vocab,
        "n_ranked": n,
        "sample_size": sample_size,
        "seed": seed,
        "top5pct_cutoff": top_share_cutoff(d_vocab),
        "median_rank": float(np.median(ranks)),
        "mean_rank": float(ranks.mean()),
        "chance": chance_levels(d_vocab),
        "histogram": rank_histogram(ranks, d_vocab),
        "tied_rows": tied_rows,
    }
    for key, k in counts.items():
        out[key] = k / n
        out[f"{key}_ci95"] = wilson_interval(k, n) if sampled else None
    out["evidence"] = rank_evidence(out)
    return out


def undefined_summary(reason: str, d_vocab: int, mode: str, sample_size: int | None,
                      seed: int | None) -> dict[str, Any]:
    """The summary of a degenerate circuit: no fractions, no ranks, the reason."""
    out: dict[str, Any] = {
        "defined": False, "reason": reason, "mode": mode, "n_tokens": d_vocab, "n_ranked": 0,
        "sample_size": sample_size, "seed": seed, "top5pct_cutoff": top_share_cutoff(d_vocab),
        "median_rank": None, "mean_rank": None, "chance": chance_levels(d_vocab), "histogram": None,
        "tied_rows": None,
    }
    for key in ("fraction_rank1", "fraction_top10", "fraction_top5pct"):
        out[key] = None
        out[f"{key}_ci95"] = None
    out["evidence"] = rank_evidence(out)
    return out


def sample_rows(d_vocab: int, sample_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(d_vocab, size=min(sample_size, d_vocab), replace=False))


def rank_pass(
    circuit: FactoredMatrix | TokenCircuit,
    mode: str,
    *,
    descending: bool,
    sample_size: int = 2000,
    seed: int = 0,
    progress: bool = False,
    visitors: Sequence[Callable] = (),
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Rank every row (``mode="exact"``) or a seeded sample of rows (``"sampled"``): the summary and
    the ranks (None for a degenerate circuit, whose summary is undefined: :func:`circuit_degeneracy`).
    ``visitors`` ride along the same pass (the explorer's lists)."""
    circuit = TokenCircuit.of(circuit)
    d_vocab = circuit.n_rows
    if mode == "exact":
        rows, size, seed_used = None, None, None
    elif mode == "sampled":
        rows = torch.from_numpy(sample_rows(d_vocab, sample_size, seed))
        size, seed_used = int(rows.shape[0]), seed
    else:
        raise ValueError(f"mode must be 'exact' or 'sampled', got {mode!r}")
    all_rows = rows if rows is not None else torch.arange(d_vocab)
    A_rows = circuit.rows_of(all_rows.to(circuit.B.device))  # once: the check and the ranks share it
    reason = circuit_degeneracy(circuit, all_rows, A_rows)
    if reason is not None:
        return undefined_summary(reason, d_vocab, mode, size, seed_used), None
    known = TokenCircuit(lambda r: A_rows if r is all_rows else circuit.rows_of(r), circuit.B, d_vocab)
    tied = np.zeros(all_rows.shape[0], dtype=np.bool_)
    ranks = diagonal_ranks(known, all_rows, descending=descending, progress=progress, visitors=visitors,
                           tied=tied).numpy()
    return rank_summary(ranks, d_vocab, mode, size, seed_used, int(tied.sum())), ranks


@torch.no_grad()
def own_entry_zscores(circuit: FactoredMatrix | TokenCircuit, batch_size: int = 8192) -> np.ndarray:
    """For every row r, ``(C[r, r] − mean of row r) / std of row r``: how far a token's own entry
    stands from the rest of its row, in the row's standard deviations (NaN for a constant row).
    From the factors alone (``C = A B``): the diagonal is Σ_k A[r,k] B[k,r], the row mean
    A (B 1 / n) and the row's mean square A (B Bᵀ / n) Aᵀ on the diagonal; O(n k²), no n × n matrix."""
    circuit = TokenCircuit.of(circuit)
    B = circuit.B.double()
    n = B.shape[1]
    mean_col, gram = B.mean(dim=1), (B @ B.T) / n
    out = np.empty(circuit.n_rows)
    for start in range(0, circuit.n_rows, batch_size):
        rows = torch.arange(start, min(start + batch_size, circuit.n_rows))
        A = circuit.rows_of(rows.to(B.device)).double()
        own = (A * B[:, rows.to(B.device)].T).sum(dim=1)
        mean = A @ mean_col
        var = ((A @ gram) * A).sum(dim=1) - mean**2
        std = var.clamp_min(0).sqrt()
        z = torch.where(std > 1e-12 * (mean.abs() + 1), (own - mean) / std, torch.full_like(std, float("nan")))
        out[start : start + len(rows)] = z.cpu().numpy()
    return out


def most_suppressed(zscores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` tokens whose own OV entry is lowest relative to their row (most negative z; ties
    by smaller id; NaN never listed)."""
    ids = np.arange(zscores.size)
    ok = ~np.isnan(zscores)
    order = np.lexsort((ids[ok], zscores[ok]))
    return ids[ok][order[:k]]
