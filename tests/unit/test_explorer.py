"""The explorer's lists, collected during the blocked rank pass, equal a dense top-k, for every block
shape and worker count; the payload round-trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headreport.analysis import explorer, explorer_codec, rowscan
from tests.oracles import dense_reference


@pytest.mark.parametrize("blocking", [rowscan.Blocking(16, 32), rowscan.Blocking(100, 128),
                                      rowscan.Blocking(512, 1024)])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
def test_row_and_column_lists_equal_the_dense_top_k(blocking, workers, fused):
    g = torch.Generator().manual_seed(0)
    n = 300
    A, B = torch.randn(n, 8, generator=g), torch.randn(8, n, generator=g)
    rows = torch.arange(n)
    sample = torch.from_numpy(explorer.sampled(n, seed=2))
    seed_B = B[:, sample].contiguous()
    seeds = explorer.Seeds(lambda sl: A[sl], seed_B)
    high = explorer.RowTopK(n, seeds, largest=True)
    low = explorer.RowTopK(n, seeds, largest=False)
    cols = explorer.ColTopK(n, rows.numpy(), explorer.column_thresholds(lambda r: A[r], B, n))
    rowscan.scan_rows(A, B, [high, low, cols], blocking=blocking, workers=workers, fused=fused)
    ref = dense_reference(A @ B)
    np.testing.assert_array_equal(high.result(), ref["row_high"])
    np.testing.assert_array_equal(low.result(), ref["row_low"])
    np.testing.assert_array_equal(cols.result(), ref["col_high"])


def test_sampled_rows_keep_their_ids():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(200, 4, generator=g), torch.randn(4, 200, generator=g)
    rows = torch.tensor([5, 190, 17, 3, 88])
    cols = explorer.ColTopK(200, rows.numpy(), np.full(200, -np.inf), k=3)
    rowscan.scan_rows(A[rows], B, [cols], blocking=rowscan.Blocking(2, 64))
    M = (A @ B)[rows]
    want = rows.numpy()[np.argsort(-M.numpy(), axis=0, kind="stable")[:3]].T
    np.testing.assert_array_equal(cols.result(), want)


@pytest.mark.parametrize("seed_size", [16, 4096])
def test_seeding_with_few_sampled_columns_is_still_exact(seed_size, monkeypatch):
    """The seeded thresholds are lower bounds: however few columns seed them, the lists are exact."""
    monkeypatch.setattr(explorer, "SEED", seed_size)
    g = torch.Generator().manual_seed(3)
    n = 400
    A, B = torch.randn(n, 6, generator=g), torch.randn(6, n, generator=g)
    sample = torch.from_numpy(explorer.sampled(n, seed=2))
    high = explorer.RowTopK(n, explorer.Seeds(lambda sl: A[sl], B[:, sample].contiguous()))
    cols = explorer.ColTopK(n, np.arange(n), explorer.column_thresholds(lambda r: A[r], B, n))
    rowscan.scan_rows(A, B, [high, cols], blocking=rowscan.Blocking(64, 100))
    ref = dense_reference(A @ B)
    np.testing.assert_array_equal(high.result(), ref["row_high"])
    np.testing.assert_array_equal(cols.result(), ref["col_high"])


def test_payload_round_trips_and_is_compact():
    rng = np.random.default_rng(0)
    V = 50257
    arrays = {f: rng.integers(0, V, size=(V, 10) if f not in ("ov_rank", "qk_rank") else (V,))
              for f in explorer_codec.FIELDS}
    payload = explorer_codec.encode(arrays, V)
    assert payload["dtype"] == "uint16"
    back = explorer_codec.decode(payload)
    for f in explorer_codec.FIELDS:
        np.testing.assert_array_equal(back[f], arrays[f])
    assert explorer_codec.encode(arrays, 70000)["dtype"] == "uint32"


def test_device_collectors_equal_the_dense_top_k():
    """The GPU pass's collectors (torch.topk per block), run here on CPU tensors block by block as the
    device loop of diagonal_ranks feeds them."""
    g = torch.Generator().manual_seed(5)
    n = 700
    M = torch.randn(n, 9, generator=g, dtype=torch.float64) @ torch.randn(9, n, generator=g, dtype=torch.float64)
    high, low = explorer.TorchRowTopK(n, "cpu"), explorer.TorchRowTopK(n, "cpu", largest=False)
    cols = explorer.TorchColTopK(n, torch.arange(n), "cpu")
    for start in range(0, n, 128):
        block = M[start : start + 128]
        for visit in (high, low, cols):
            visit(block, slice(start, start + block.shape[0]), 0)
    ref = dense_reference(M)
    np.testing.assert_array_equal(high.result(), ref["row_high"])
    np.testing.assert_array_equal(low.result(), ref["row_low"])
    np.testing.assert_array_equal(cols.result(), ref["col_high"])


def merge_groups_reference(groups, vals, ids, n_groups, k, largest, pad_limit=512):
    """The merge as it was before it was made linear (a padded row-wise sort, each group past
    ``pad_limit`` candidates sorted on its own by a scan of all candidates), transcribed."""
    counts = np.bincount(groups, minlength=n_groups)
    big = counts > pad_limit
    out_vals = np.empty((n_groups, k), dtype=vals.dtype)
    out_ids = np.empty((n_groups, k), dtype=ids.dtype)
    if big.any():
        in_big = big[groups]
        for g in np.nonzero(big)[0]:
            sel = groups == g
            v, i = explorer._lexsort_groups(np.zeros(int(sel.sum()), dtype=np.int64), vals[sel], ids[sel], 1, k,
                                            largest)
            out_vals[g], out_ids[g] = v[0], i[0]
        groups, vals, ids = groups[~in_big], vals[~in_big], ids[~in_big]
        counts = np.where(big, 0, counts)
    order = np.argsort(groups, kind="stable")
    groups, vals, ids = groups[order], vals[order], ids[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    width = max(int(counts.max()), k)
    pad_key = np.full((n_groups, width), np.inf, dtype=np.float64)
    pad_ids = np.full((n_groups, width), np.iinfo(np.int64).max, dtype=np.int64)
    col = np.arange(groups.size) - starts[groups]
    pad_key[groups, col] = -vals if largest else vals
    pad_ids[groups, col] = ids
    order2 = np.lexsort((pad_ids, pad_key), axis=1)[:, :k]
    keep = ~big
    out_vals[keep] = np.take_along_axis(pad_key, order2, axis=1)[keep] * (-1 if largest else 1)
    out_ids[keep] = np.take_along_axis(pad_ids, order2, axis=1)[keep]
    return out_vals, out_ids


def planted_candidates(n_groups: int, rng: np.random.Generator, k: int = explorer.K):
    """Candidates as the collectors leave them: per group at least ``k``, a few groups far past the
    pad limit, values on a coarse grid (many ties, some at every group's k-th value), a flat group of
    one value, ids unique within a group, shuffled across groups (threads, column chunks)."""
    counts = rng.integers(k, 60, size=n_groups)
    counts[rng.choice(n_groups, size=3, replace=False)] = [700, 2000, 5000]
    groups = np.repeat(np.arange(n_groups, dtype=np.int32), counts)
    vals = (rng.integers(-8, 8, size=groups.size) / 4).astype(np.float32)
    vals[groups == groups[-1]] = 0.5  # a flat group: all tied
    within = np.arange(groups.size) - np.repeat(np.cumsum(counts) - counts, counts)
    ids = rng.permutation(8000)[(within + rng.integers(0, 8000, size=n_groups)[groups]) % 8000].astype(np.int32)
    order = rng.permutation(groups.size)
    return groups[order], vals[order], ids[order]


@pytest.mark.parametrize("n_groups", [300, 70_000])
@pytest.mark.parametrize("largest", [True, False])
def test_linear_merge_equals_the_previous_merge_ties_included(n_groups, largest, monkeypatch):
    """The linear merge's lists are the previous merge's, entry for entry, on planted ties; past
    65,536 groups too, and with a padded block smaller than a group."""
    rng = np.random.default_rng(n_groups + largest)
    groups, vals, ids = planted_candidates(n_groups, rng)
    want = merge_groups_reference(groups, vals, ids, n_groups, explorer.K, largest)
    for block in (explorer.PAD_BLOCK, 1000):
        monkeypatch.setattr(explorer, "PAD_BLOCK", block)
        got = explorer._merge_groups(groups, vals, ids, n_groups, explorer.K, largest)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "numpy"])
def test_lists_with_exact_ties_and_a_kernel_whose_buffers_overflow(fused, monkeypatch):
    """Integer factors (exact products, many ties, broken by the smaller id) and, in the fused
    kernel, list buffers of 16 entries: every batch overflows and is run again with larger ones."""
    monkeypatch.setattr(rowscan, "list_capacity", lambda rows, n_cols, specs: 16)
    g = torch.Generator().manual_seed(5)
    n = 350
    A = torch.randint(-2, 3, (n, 5), generator=g).float()
    B = torch.randint(-2, 3, (5, n), generator=g).float()
    sample = torch.from_numpy(explorer.sampled(n, seed=2))
    seeds = explorer.Seeds(lambda sl: A[sl], B[:, sample].contiguous())
    high, low = explorer.RowTopK(n, seeds, largest=True), explorer.RowTopK(n, seeds, largest=False)
    cols = explorer.ColTopK(n, np.arange(n), explorer.column_thresholds(lambda r: A[r], B, n))
    ranks = rowscan.ranks_cpu(A, B, torch.arange(n), False, visitors=[high, low, cols], fused=fused)
    ref = dense_reference(A @ B)
    np.testing.assert_array_equal(high.result(), ref["row_high"])
    np.testing.assert_array_equal(low.result(), ref["row_low"])
    np.testing.assert_array_equal(cols.result(), ref["col_high"])
    M = (A.double() @ B.double()).numpy()
    np.testing.assert_array_equal(ranks, (M <= np.diag(M)[:, None]).sum(1))  # the counts survive the reruns
