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
def test_row_and_column_lists_equal_the_dense_top_k(blocking, workers):
    g = torch.Generator().manual_seed(0)
    n = 300
    A, B = torch.randn(n, 8, generator=g), torch.randn(8, n, generator=g)
    rows = torch.arange(n)
    sample = torch.from_numpy(explorer.sampled(n, seed=2))
    seed = lambda sl: (A[sl] @ B[:, sample]).numpy()
    high, low = explorer.RowTopK(n, seed, largest=True), explorer.RowTopK(n, seed, largest=False)
    cols = explorer.ColTopK(n, rows.numpy(), explorer.column_thresholds(lambda r: A[r], B, n))
    rowscan.scan_rows(A, B, [high, low, cols], blocking=blocking, workers=workers)
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
    high = explorer.RowTopK(n, lambda sl: (A[sl] @ B[:, sample]).numpy())
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
