"""The fused GPU rank kernel (``analysis/gpurank.py``), run here in Triton's interpreter on the CPU: the
same kernel source a GPU compiles, checked against a dense reference.

Integer factors make every product exact whatever the summation order, so the counts (ranks with
ties against the token, and exact ties) must equal the reference exactly, for tile shapes that do
not divide the sizes, a K step that does not divide d_head, columns split over several programs
(atomic adds), both directions, repeated own columns and NaN rows. On float factors the own entry
comes from the kernel's own tiles, so every finite own entry is matched (``eq ≥ 1``) and each rank
lies within the reference's float32 rounding. On a machine with no GPU, tests/conftest.py sets
``TRITON_INTERPRET=1`` before anything imports Triton, and the kernel runs in the interpreter, whose
``tl.dot`` is numpy's float32 product whatever the precision: the indexing, masks, splits and counts
are tested here, the tensor-core arithmetic only on a GPU (here where there is one, and
``bench/gpu_check.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("triton")

from headreport.analysis import diagonal, gpurank

SMALL = gpurank.Tiling(block=16, k=16)
#: compiled on a GPU where there is one, else in Triton's interpreter
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def factors(m: int, n: int, k: int, seed: int, integer: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if integer:
        A = torch.randint(-2, 3, (m, k), generator=g).float()
        B = torch.randint(-2, 3, (k, n), generator=g).float()
        B[:, 7] = B[:, 3]  # duplicate columns: exact ties in every row
    else:
        A, B = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    rows = torch.randint(0, n, (m,), generator=g)
    rows[:4] = torch.tensor([3, 7, 3, n - 1])  # repeated and last own columns
    return A.to(DEVICE), B.to(DEVICE), rows.to(DEVICE)


def reference(A, B, rows, descending):
    A, B, rows = A.cpu(), B.cpu(), rows.cpu()
    C = A.double() @ B.double()
    own = C[torch.arange(len(rows)), rows][:, None]
    le = ((C >= own) if descending else (C <= own)).sum(1)
    return le, (C == own).sum(1), own[:, 0]


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("splits", [1, 3])
@pytest.mark.parametrize("shape", [(70, 300, 40), (16, 16, 16), (5, 33, 7)])
def test_counts_equal_the_dense_reference_with_ties(descending, splits, shape):
    m, n, k = shape
    A, B, rows = factors(m, n, k, seed=m + n, integer=True)
    A[min(5, m - 1)] = float("nan")  # a NaN row: own entry NaN, counted nowhere
    c = gpurank.counts(A, B, rows, descending, tiling=SMALL, splits=splits)
    le, eq, own = reference(A, B, rows, descending)
    nan = own.isnan()
    assert torch.equal(c.own.isnan(), nan)
    assert torch.equal(c.own[~nan].double(), own[~nan])
    assert torch.equal(c.le[~nan], le[~nan]) and torch.equal(c.eq[~nan], eq[~nan])
    assert (c.le[nan] == 0).all() and not c.unmatched.any()
    if m > 16:
        assert (eq[~nan] > 1).any() and len(le.unique()) > 10  # real ties, ranks spread out


@pytest.mark.parametrize("descending", [False, True])
def test_fused_ranks_are_the_dense_ranks_on_float_factors(descending):
    A, B, rows = factors(50, 200, 24, seed=3, integer=False)
    A[9] = float("nan")
    tied = np.zeros(50, dtype=bool)
    got = diagonal.fused_ranks(A, B, rows, descending, tied=tied)
    c = gpurank.counts(A, B, rows, descending)
    assert not c.unmatched.any()  # every finite own entry equals itself in its own tile
    A, B, rows = A.cpu(), B.cpu(), rows.cpu()
    C = (A @ B).double()
    own = C[torch.arange(50), rows][:, None]
    slack = 1e-5 * C.abs().amax(1, keepdim=True)  # float32 rounding of the reference
    strict = ((C > own + slack) if descending else (C < own - slack)).sum(1)
    loose = ((C >= own - slack) if descending else (C <= own + slack)).sum(1)
    ok = ~own[:, 0].isnan()
    assert ((got[ok] >= strict[ok]) & (got[ok] <= loose[ok])).all()
    assert got[9] == 200 and not tied[9]
    assert not tied[ok.numpy()].any()  # no exact ties among Gaussian products


def test_unmatched_rows_are_recomputed_as_blocks():
    """The fallback for a row whose own entry no tile reproduced: its rank and tie come from a block
    of its row, as the block path gives them."""
    A, B, rows = factors(40, 120, 16, seed=5, integer=True)
    c = gpurank.counts(A, B, rows, False, tiling=SMALL)
    bad = torch.zeros(40, dtype=torch.bool)
    bad[[2, 17]] = True
    wrong = gpurank.Counts(le=c.le.clone(), eq=c.eq.clone(), own=c.own, unmatched=bad)
    wrong.le[bad] = -1
    wrong.eq[bad] = 0
    tied = np.zeros(40, dtype=bool)
    got = diagonal.fused_ranks(A, B, rows, False, tied=tied, counts=wrong, batch_size=1)  # one block a row
    block = A @ B
    assert torch.equal(got, diagonal.block_ranks(block, rows, False).cpu())
    assert np.array_equal(tied, diagonal.block_ties(block, rows).cpu().numpy())


def test_bad_arguments_are_refused():
    A, B, rows = factors(8, 20, 4, seed=0, integer=True)
    with pytest.raises(ValueError, match="precision"):
        gpurank.counts(A, B, rows, False, precision="tf32")
    with pytest.raises(ValueError, match="float32"):
        gpurank.counts(A.double(), B.double(), rows, False)
    with pytest.raises(ValueError, match="do not fit"):
        gpurank.counts(A, B[:3], rows, False)
    with pytest.raises(ValueError, match="outside"):
        gpurank.counts(A, B, rows + 20, False)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's switch")
def test_available_only_where_it_can_run(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.delenv("HEADREPORT_RANK_KERNEL", raising=False)
    assert not gpurank.available("cpu")  # a CPU tensor runs only in the interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert gpurank.available("cpu")
    monkeypatch.setenv("HEADREPORT_RANK_KERNEL", "numpy")
    assert not gpurank.available("cpu")


def test_the_counting_launch_catches_an_own_entry_its_tile_does_not_reproduce():
    """The check behind ``unmatched``: a counting launch given own entries one float step off
    counts, for those rows, no entry of the own column equal to them (even where another column of
    the row holds that exact value)."""
    A, B, rows = factors(32, 64, 16, seed=8, integer=True)
    C = (A @ B).cpu()
    own = C[torch.arange(32), rows.cpu()].contiguous()
    off = own.clone()
    off[:8] = torch.nextafter(off[:8], torch.tensor(float("inf")))
    other = C[8, (int(rows[8]) + 1) % 64]
    off[8] = other if other != own[8] else off[8] + 1  # another column's value
    out = torch.zeros((32, 3), dtype=torch.int32, device=DEVICE)
    kernel = gpurank._kernel(DEVICE == "cpu")
    kernel[(2, 1)](A, B, rows.to(torch.int32), off.to(DEVICE), out, 32, 64, 16, 64, OWN=False, DESC=False, BM=16,
                   BN=16, BK=16, PRECISION="ieee")
    out = out.cpu()
    assert (out[:9, 2] == 0).all() and (out[9:, 2] == 1).all()
    assert out[8, 1] >= 1  # eq alone would have passed it
