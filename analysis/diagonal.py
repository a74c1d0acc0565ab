"""Where each token's own entry ranks in its row of a factored vocab × vocab circuit.

* OV self-suppression (copy suppression): in row s of W_EE · W_OV · W_U (attending to source token s,
  the head's direct effect on every logit), the rank of s's own logit, rank 1 = most negative.
* QK self-attention: in query row t of W_Uᵀ · W_QK · W_EEᵀ, the rank of key t, rank 1 = highest.

The circuit is ``A @ B`` with A: ``[d_vocab, d_head]``, B: ``[d_head, d_vocab]``; rows are computed in
batches (batch × d_vocab floats at a time), never the whole matrix. Exact mode ranks every row;
sampled mode ranks a seeded uniform sample of rows and gives a Wilson 95% CI for the rank-1 fraction.
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import FactoredMatrix

# CPU: rows per batch of each worker (a batch × d_vocab float32 block is ~13 MB for GPT-2: it stays
# in the last-level cache between the GEMM that writes it and the comparison that reads it).
CPU_BATCH_ROWS = 64


@torch.no_grad()
def diagonal_ranks(
    circuit: FactoredMatrix,
    rows: Int[Tensor, "n"] | None = None,
    descending: bool = False,
    batch_size: int = 1024,
    progress: bool = False,
) -> Int[Tensor, "n"]:
    """1-based rank of entry (r, r) within row r, for each r in ``rows`` (all rows if None).

    ``descending=False``: rank 1 = smallest (most negative) entry; ``True``: rank 1 = largest.
    Ties count in the token's favour (rank = 1 + number of entries strictly beyond it).
    ``batch_size`` bounds the rows computed at once (on CPU, each worker thread takes at most
    ``min(batch_size, CPU_BATCH_ROWS)`` rows).
    """
    A, B = circuit.A, circuit.B
    n_rows = A.shape[0]
    if rows is None:
        rows = torch.arange(n_rows, device=A.device)
    rows = rows.to(A.device)
    if A.device.type == "cpu":
        return _diagonal_ranks_cpu(A, B, rows, descending, min(batch_size, CPU_BATCH_ROWS), progress)
    out = torch.empty(rows.shape[0], dtype=torch.int64)
    starts = range(0, rows.shape[0], batch_size)
    for start in tqdm(starts, desc="diagonal ranks", unit="batch", disable=not progress, leave=False):
        r = rows[start : start + batch_size]
        block = A[r] @ B
        own = block.gather(1, r[:, None])
        counts = ((block > own) if descending else (block < own)).sum(dim=1).cpu()
        out[start : start + r.shape[0]] = counts + 1
    return out


def _diagonal_ranks_cpu(
    A: Tensor, B: Tensor, rows: Tensor, descending: bool, batch_size: int, progress: bool = False,
    workers: int | None = None, count: bool = True,
) -> Tensor:
    """CPU path of :func:`diagonal_ranks`: ``workers`` threads (default: torch's thread count), each
    running single-threaded GEMMs on its own row batches and counting in numpy right after — the
    block is still in cache, and the threads never wait on each other (no OpenMP barriers).
    ``count=False`` only runs the GEMMs (the benchmark's GEMM-alone time)."""
    n_cols = B.shape[1]
    workers = max(1, workers or torch.get_num_threads())
    B = B.contiguous()
    rows_np = rows.numpy()
    out = np.empty(rows.shape[0], dtype=np.int64)
    # per-row counts < n_cols: uint16 sums are exact (and ~5x faster than int64 ones) below 2**16
    count_dtype = np.uint16 if n_cols < 2**16 else np.uint32
    compare = np.greater if descending else np.less
    local = threading.local()

    def rank_batch(start: int) -> int:
        n = min(batch_size, rows.shape[0] - start)
        if not hasattr(local, "block"):
            local.block = torch.empty(batch_size, n_cols, dtype=A.dtype)
            local.mask = np.empty((batch_size, n_cols), dtype=np.bool_)
        block = torch.mm(A[rows[start : start + n]], B, out=local.block[:n]).numpy()
        if count:
            r = rows_np[start : start + n]
            own = block[np.arange(n), r][:, None]
            mask = compare(block, own, out=local.mask[:n])
            out[start : start + n] = mask.view(np.uint8).sum(axis=1, dtype=count_dtype)
        return n

    starts = range(0, rows.shape[0], batch_size)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one BLAS thread per worker: `workers` GEMMs run side by side
    try:
        with ThreadPoolExecutor(workers) as pool, tqdm(
            total=rows.shape[0], desc="diagonal ranks", unit="row", disable=not progress, leave=False
        ) as bar:
            for n in pool.map(rank_batch, starts):
                bar.update(n)
    finally:
        torch.set_num_threads(threads)
    return torch.from_numpy(out + 1)


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


def rank_summary(
    ranks: np.ndarray, d_vocab: int, mode: str, sample_size: int | None, seed: int | None
) -> dict[str, Any]:
    n = int(ranks.size)
    top1 = int((ranks == 1).sum())
    top10 = int((ranks <= 10).sum())
    return {
        "mode": mode,
        "n_tokens": d_vocab,
        "n_ranked": n,
        "sample_size": sample_size,
        "seed": seed,
        "fraction_rank1": top1 / n,
        "fraction_rank1_ci95": wilson_interval(top1, n) if mode == "sampled" else None,
        "fraction_top10": top10 / n,
        "median_rank": float(np.median(ranks)),
        "mean_rank": float(ranks.mean()),
        "histogram": rank_histogram(ranks, d_vocab),
    }


def sample_rows(d_vocab: int, sample_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(d_vocab, size=min(sample_size, d_vocab), replace=False))


def diagonal_rank_score(
    circuit: FactoredMatrix,
    mode: str,
    descending: bool,
    sample_size: int = 2000,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Rank every row (``mode="exact"``) or a seeded sample of rows (``"sampled"``) and summarise."""
    d_vocab = circuit.A.shape[0]
    if mode == "exact":
        rows, size, seed_used = None, None, None
    elif mode == "sampled":
        rows = torch.from_numpy(sample_rows(d_vocab, sample_size, seed))
        size, seed_used = int(rows.shape[0]), seed
    else:
        raise ValueError(f"mode must be 'exact' or 'sampled', got {mode!r}")
    ranks = diagonal_ranks(circuit, rows, descending=descending, progress=progress).numpy()
    return rank_summary(ranks, d_vocab, mode, size, seed_used)


def ov_self_suppression(circuit: FactoredMatrix, mode: str = "exact", sample_size: int = 2000,
                        seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Copy suppression on the effective OV circuit W_EE·W_OV·W_U: rank 1 = own logit most negative."""
    return diagonal_rank_score(circuit, mode, descending=False, sample_size=sample_size, seed=seed, progress=progress)


def qk_self_attention(circuit: FactoredMatrix, mode: str = "sampled", sample_size: int = 2000,
                      seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Effective QK circuit W_Uᵀ·W_QK·W_EEᵀ: rank 1 = a token's own key scores highest for its query."""
    return diagonal_rank_score(circuit, mode, descending=True, sample_size=sample_size, seed=seed, progress=progress)
