"""The blocked rank kernel equals a plain dense reference on random factors — ties included (integer
factors make every product exact, so ties are exact whatever the summation order) — for every block
shape, worker count, row order and both rank directions; NaN rows rank last."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headreport.analysis import rowscan
from headreport.analysis.diagonal import block_ranks


def reference(A: torch.Tensor, B: torch.Tensor, rows: torch.Tensor, descending: bool) -> np.ndarray:
    M = (A.double() @ B.double())[rows]
    own = M[torch.arange(len(rows)), rows][:, None]
    counts = (M >= own) if descending else (M <= own)
    ranks = counts.sum(1).numpy()  # itself included: ties count against the token
    return np.where(np.isnan(own[:, 0].numpy()), B.shape[1], ranks)


def tied_factors(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    A = torch.randint(-2, 3, (n, k), generator=g).float()
    B = torch.randint(-2, 3, (k, n), generator=g).float()
    B[:, 7] = B[:, 3]  # duplicate columns: exact ties in every row
    return A, B


@pytest.mark.parametrize("blocking", [rowscan.Blocking(8, 16), rowscan.Blocking(64, 50), rowscan.Blocking(300, 512)])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_ranks_equal_the_dense_reference_with_ties(blocking, descending, workers):
    A, B = tied_factors(300, 6, seed=1)
    rows = torch.arange(300)
    got = rowscan.ranks_cpu(A[rows], B, rows, descending, blocking=blocking, workers=workers)
    want = reference(A, B, rows, descending)
    np.testing.assert_array_equal(got, want)
    assert len(np.unique(got)) > 10  # ranks spread out: not a degenerate comparison


@pytest.mark.parametrize("descending", [False, True])
def test_sampled_unordered_rows_and_float_factors(descending):
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(500, 16, generator=g), torch.randn(16, 500, generator=g)
    rows = torch.tensor([499, 0, 17, 17, 250, 3, 42, 201, 128, 77, 5])
    got = rowscan.ranks_cpu(A[rows], B, rows, descending, blocking=rowscan.Blocking(4, 64))
    want = reference(A, B, rows, descending)
    assert (np.abs(got - want) <= 1).all() and (got == want).mean() > 0.9


def test_nan_own_entry_ranks_last():
    A, B = tied_factors(40, 4, seed=3)
    A[5, 0] = float("nan")  # row 5 is NaN everywhere, its own entry too
    got = rowscan.ranks_cpu(A, B, torch.arange(40), False, blocking=rowscan.Blocking(8, 8))
    assert got[5] == 40
    np.testing.assert_array_equal(np.delete(got, 5), np.delete(reference(A, B, torch.arange(40), False), 5))


def test_the_tuned_blocking_is_a_candidate():
    assert rowscan.tune_blocking(64) in rowscan.CANDIDATES


@pytest.mark.parametrize("descending", [False, True])
def test_the_gpu_pass_counting_equals_the_reference_with_ties_and_nan(descending):
    """diagonal.block_ranks (the GPU pass's counting of a computed block; CPU tensors here)."""
    A, B = tied_factors(200, 6, seed=3)
    A[12, 0] = float("nan")  # row 12: a NaN own entry ranks last
    rows = torch.arange(0, 200, 3)
    got = block_ranks(A[rows] @ B, rows, descending).numpy()
    want = reference(A, B, rows, descending)
    np.testing.assert_array_equal(got, want)
    assert got[4] == B.shape[1]  # rows[4] == 12
    assert len(np.unique(got)) > 10
