"""Both rank kernels (the fused C kernel and BLAS plus numpy) equal a plain dense reference on random
factors — ties included (integer factors make every product exact, so ties are exact whatever the
summation order) — for every block shape, worker count, row order and both rank directions; NaN
rows rank last. The fused kernel's own entries are bit-identical to its block's, so on float factors
its ranks equal those counted from its own block exactly."""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch

from headreport.analysis import rankkernel, rowscan
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


FUSED = [pytest.param(True, id="fused"), pytest.param(False, id="numpy")]


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("blocking", [rowscan.Blocking(8, 16), rowscan.Blocking(64, 50), rowscan.Blocking(300, 512)])
@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("workers", [1, 2])
def test_ranks_equal_the_dense_reference_with_ties(blocking, descending, workers, fused):
    A, B = tied_factors(300, 6, seed=1)
    rows = torch.arange(300)
    tied = np.zeros(300, dtype=bool)
    got = rowscan.ranks_cpu(A[rows], B, rows, descending, blocking=blocking, workers=workers, fused=fused,
                            tied=tied, visitors=[lambda *a: None] if blocking.rows == 64 else ())
    want = reference(A, B, rows, descending)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(tied, reference_ties(A, B, rows))
    assert len(np.unique(got)) > 10  # ranks spread out: not a degenerate comparison
    assert tied.any() and not tied.all()


def reference_ties(A: torch.Tensor, B: torch.Tensor, rows: torch.Tensor) -> np.ndarray:
    M = (A.double() @ B.double())[rows]
    own = M[torch.arange(len(rows)), rows][:, None]
    return ((M == own).sum(1) > 1).numpy()


@pytest.mark.parametrize("fused", FUSED)
@pytest.mark.parametrize("descending", [False, True])
def test_sampled_unordered_rows_and_float_factors(descending, fused):
    g = torch.Generator().manual_seed(2)
    A, B = torch.randn(500, 16, generator=g), torch.randn(16, 500, generator=g)
    rows = torch.tensor([499, 0, 17, 17, 250, 3, 42, 201, 128, 77, 5])
    got = rowscan.ranks_cpu(A[rows], B, rows, descending, blocking=rowscan.Blocking(4, 64), fused=fused)
    want = reference(A, B, rows, descending)
    assert (np.abs(got - want) <= 1).all() and (got == want).mean() > 0.9


@pytest.mark.parametrize("fused", FUSED)
def test_nan_own_entry_ranks_last(fused):
    A, B = tied_factors(40, 4, seed=3)
    A[5, 0] = float("nan")  # row 5 is NaN everywhere, its own entry too
    got = rowscan.ranks_cpu(A, B, torch.arange(40), False, blocking=rowscan.Blocking(8, 8), fused=fused)
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


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("shape", [(333, 64, 1000), (50, 256, 777), (29, 3, 45)])
def test_fused_ranks_on_float_factors_equal_its_own_block_exactly(shape, descending):
    """No re-check: the kernel's own entries are its block's entries bit for bit, so ranks counted by
    the kernel equal ranks counted by numpy from the block the same kernel writes, on random float
    factors (where BLAS and a dense float64 product order near-ties differently); and that block is
    the product to float32 rounding."""
    n, K, V = shape
    g = torch.Generator().manual_seed(n)
    A, B = torch.randn(n, K, generator=g), torch.randn(K, V, generator=g)
    rows = torch.randint(0, V, (n,), generator=g)
    block = np.empty((n, V), dtype=np.float32)

    def keep(b: np.ndarray, row_slice: slice, col0: int) -> None:
        block[row_slice, col0 : col0 + b.shape[1]] = b

    got = rowscan.ranks_cpu(A, B, rows, descending, fused=True, visitors=[keep], blocking=rowscan.Blocking(40, 96))
    own = block[np.arange(n), rows.numpy()][:, None]
    want = ((block >= own) if descending else (block <= own)).sum(1)
    np.testing.assert_array_equal(got, want)
    dense = A.double() @ B.double()
    scale = (A.double().abs() @ B.double().abs()).numpy()
    assert (np.abs(block - dense.numpy()) <= 1e-6 * K * scale + 1e-30).all()


def test_fused_kernel_builds_on_this_machine():
    """CI's machines have a C compiler (.ci/run installs one): the fused kernel must build there."""
    kernel = rankkernel.load()
    assert kernel is not None and rankkernel.name().startswith("fused-")
    assert kernel.isa in {"avx512", "avx2", "portable"} and kernel.mr > 0 and kernel.nr % 8 == 0


def test_fused_pass_refuses_float64_when_required():
    A, B = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fused rank kernel is not available"):
        rowscan.ranks_cpu(A, B, torch.arange(4), False, fused=True)
    assert (rowscan.ranks_cpu(A, B, torch.arange(4), False) >= 1).all()  # None: BLAS plus numpy


def _supports_avx2() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


@pytest.mark.skipif(platform.machine() not in {"x86_64", "AMD64"}, reason="x86-64 instruction sets")
def test_fused_kernel_gives_the_same_bits_on_every_instruction_set(tmp_path, monkeypatch):
    """The same fused multiply-add chain per entry on AVX-512, AVX2 and the portable tile: the blocks
    and the ranks are bit-identical whichever the machine builds."""
    monkeypatch.setenv("HEADREPORT_CACHE", str(tmp_path))
    cc = rankkernel.compiler()
    assert cc is not None
    kernels = [rankkernel.load(), rankkernel.bind(rankkernel.build(cc, "x86-64"))]
    if _supports_avx2():
        kernels.append(rankkernel.bind(rankkernel.build(cc, "x86-64-v3")))
    assert {"portable"} <= {k.isa for k in kernels}
    g = torch.Generator().manual_seed(7)
    A, B = torch.randn(61, 40, generator=g), torch.randn(40, 203, generator=g)
    cols = torch.randint(0, 203, (61,), generator=g).numpy()
    hi, lo, col = np.full(61, 4.0, np.float32), np.full(61, -4.0, np.float32), np.linspace(3, 6, 203, dtype=np.float32)
    results = []
    for k in kernels:
        Ap, Bp = k.pack_a(A.numpy()), k.pack_b(B.numpy())
        own = k.own(Ap, Bp, 40, cols)
        le, eq = np.zeros(61, dtype=np.int64), np.zeros(61, dtype=np.int64)
        out = np.empty((61, 203), dtype=np.float32)
        lists = rankkernel.Lists(61 * 203)
        for kind, values in (("row_hi", hi), ("row_lo", lo), ("col_hi", col)):
            lists.set_thresholds(kind, values)
        lists.reset()
        k.scan(Ap, 0, 61, Bp, 40, 0, 203, own=own, descending=False, le=le, eq=eq, out=out, lists=lists)
        entries = {kind: sorted(zip(*(a.tolist() for a in lists.entries(kind)))) for kind in rankkernel.Lists.KINDS}
        results.append((k.isa, out, own, le, entries))
    for isa, out, own, le, entries in results[1:]:
        assert out.tobytes() == results[0][1].tobytes(), isa
        assert own.tobytes() == results[0][2].tobytes(), isa
        np.testing.assert_array_equal(le, results[0][3])
        assert entries == results[0][4], isa
    block, entries = results[0][1], results[0][4]
    np.testing.assert_array_equal(results[0][2], block[np.arange(61), cols])
    for kind, mask in (("row_hi", block >= hi[:, None]), ("row_lo", block <= lo[:, None]), ("col_hi", block >= col)):
        r, c = np.nonzero(mask)
        assert entries[kind] == sorted(zip(r.tolist(), c.tolist(), block[r, c].tolist())), kind
        assert 0 < len(entries[kind]) < mask.size


@pytest.mark.parametrize("fused", FUSED)
def test_factors_and_rows_that_do_not_fit_are_refused_before_the_kernel(fused):
    A, B = torch.randn(10, 4), torch.randn(4, 30)
    with pytest.raises(ValueError, match="do not fit"):
        rowscan.ranks_cpu(A, B, torch.arange(5), False, fused=fused)
    with pytest.raises(ValueError, match="do not fit"):
        rowscan.ranks_cpu(A, torch.randn(3, 30), torch.arange(10), False, fused=fused)
    with pytest.raises(ValueError, match="outside"):
        rowscan.ranks_cpu(A, B, torch.arange(25, 35), False, fused=fused)


@pytest.mark.skipif(platform.machine() not in {"x86_64", "AMD64"}, reason="x86-64 instruction sets")
@pytest.mark.parametrize("descending", [False, True])
def test_every_instruction_set_counts_ties_and_nans_as_the_reference(tmp_path, monkeypatch, descending):
    """The counts (≤ or ≥ the own entry, and == it) of every build's tile compare, on integer factors
    (exact ties everywhere) with a NaN row and a width that no tile divides, equal numpy's on the block."""
    monkeypatch.setenv("HEADREPORT_CACHE", str(tmp_path))
    cc = rankkernel.compiler()
    kernels = [rankkernel.load(), rankkernel.bind(rankkernel.build(cc, "x86-64"))]
    if _supports_avx2():
        kernels.append(rankkernel.bind(rankkernel.build(cc, "x86-64-v3")))
    A, B = tied_factors(203, 5, seed=4)
    A = A[:70].clone()
    A[9] = float("nan")
    cols = np.arange(70) * 2
    block = (A.double() @ B.double()).numpy().astype(np.float32)
    own = block[np.arange(70), cols][:, None]
    want_le = ((block >= own) if descending else (block <= own)).sum(1)
    want_eq = (block == own).sum(1)
    assert (want_eq[~np.isnan(own[:, 0])] > 1).any()
    for k in kernels:
        Ap, Bp = k.pack_a(A.numpy()), k.pack_b(B.numpy())
        got_own = k.own(Ap, Bp, 5, cols)
        rows = -(-70 // k.mr) * k.mr  # whole panels: the padding rows count into their own slots
        le, eq = np.zeros(rows, dtype=np.int64), np.zeros(rows, dtype=np.int64)
        own_p = np.zeros(rows, dtype=np.float32)
        own_p[:70] = got_own
        k.scan(Ap, 0, 70, Bp, 5, 0, 203, own=own_p, descending=descending, le=le, eq=eq)
        np.testing.assert_array_equal(le[:70], want_le, err_msg=k.isa)
        np.testing.assert_array_equal(eq[:70], want_eq, err_msg=k.isa)


@pytest.mark.parametrize("shape", [(203, 40), (64, 16), (35, 7)])
def test_packing_is_the_same_copy_whatever_the_layout(shape):
    """hr_pack reads a factor along its unit stride (a transposed key matrix, a row-major one): the
    panels are the same bytes as from a contiguous copy, zero padding included."""
    kernel = rankkernel.load()
    if kernel is None:
        pytest.skip("no C compiler")
    n, K = shape
    keys = np.random.default_rng(n).standard_normal((n, K), dtype=np.float32)  # n × K, row-major
    B_t, B_c = keys.T, np.ascontiguousarray(keys.T)  # K × n: unit stride along K, and along n
    assert B_t.strides[0] == 4 and B_c.strides[1] == 4
    packed = kernel.pack_b(B_c)
    assert packed.tobytes() == kernel.pack_b(B_t).tobytes()
    panels = packed.reshape(-1, K, kernel.nr)  # panel q: K × nr, columns q·nr …
    want = np.zeros((panels.shape[0] * kernel.nr, K), dtype=np.float32)
    want[:n] = keys
    np.testing.assert_array_equal(panels.transpose(0, 2, 1).reshape(-1, K), want)
    assert kernel.pack_a(keys).tobytes() == kernel.pack_a(np.asfortranarray(keys)).tobytes()
