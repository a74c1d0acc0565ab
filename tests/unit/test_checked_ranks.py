"""The GPU's fast rank pass (low-precision products, near-ties re-checked in float32) gives exactly
the ranks of the plain float32 pass. Here its products are bfloat16 on the CPU — coarser than the
GPU's TF32, so more entries are re-checked — against a float64 reference, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analysis.diagonal import checked_ranks, exact_dots

BF16_UNIT_ROUNDOFF = 2.0**-8


def bf16_matmul(A, B):
    return (A.bfloat16() @ B.bfloat16()).float()


def reference(A, B, own_cols, descending):
    M = A.double() @ B.double()
    own = M.gather(1, own_cols[:, None])
    return ((M >= own) if descending else (M <= own)).sum(dim=1)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checked_ranks_equal_the_reference_with_ties(descending, seed):
    g = torch.Generator().manual_seed(seed)
    n_rows, k, n_cols = 300, 16, 2000
    B = torch.randn(k, n_cols, generator=g)
    B[:, 10:20] = B[:, 0:1]  # ten columns equal to column 0: exact ties
    B[:, 1500] = 0.0  # a zero column
    A = torch.randn(n_rows, k, generator=g) * torch.logspace(-2, 2, n_rows)[:, None]  # rows of every scale
    A[5] = 0.0  # a zero row: every entry ties, the token ranks last
    own_cols = torch.randint(0, n_cols, (n_rows,), generator=g)
    own_cols[:40] = torch.arange(40) % 25  # own entries among the tied columns
    got = checked_ranks(A, B, own_cols, descending, bf16_matmul, BF16_UNIT_ROUNDOFF)
    want = reference(A, B, own_cols, descending)
    assert got[5] == n_cols
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_fast_products_alone_would_be_wrong_and_nan_ranks_last():
    """The check matters: bfloat16 products alone misrank near-ties, the checked ranks do not."""
    g = torch.Generator().manual_seed(7)
    A, B = torch.randn(200, 32, generator=g), torch.randn(32, 3000, generator=g)
    own_cols = torch.arange(200)
    block = bf16_matmul(A, B)
    naive = (block <= block.gather(1, own_cols[:, None])).sum(dim=1)
    want = reference(A, B, own_cols, False)
    assert (naive != want).any()
    np.testing.assert_array_equal(checked_ranks(A, B, own_cols, False, bf16_matmul, BF16_UNIT_ROUNDOFF).numpy(),
                                  want.numpy())
    A[3, 0] = float("nan")
    assert checked_ranks(A, B, own_cols, False, bf16_matmul, BF16_UNIT_ROUNDOFF)[3] == 3000


def test_exact_dots_keep_ties_of_equal_columns():
    g = torch.Generator().manual_seed(3)
    A, B = torch.randn(4, 64, generator=g), torch.randn(64, 5, generator=g)
    B[:, 3] = B[:, 1]
    v = exact_dots(A, B, torch.tensor([0, 0, 2, 2]), torch.tensor([1, 3, 1, 3]))
    assert v[0] == v[1] and v[2] == v[3]
