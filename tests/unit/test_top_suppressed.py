"""The most-suppressed tokens come from the factors alone and equal the dense computation; planted
suppression is found."""

from __future__ import annotations

import numpy as np
import torch

from headreport.analysis import diagonal
from headreport.analysis.circuits import TokenCircuit


def test_own_entry_zscores_equal_the_dense_rows():
    g = torch.Generator().manual_seed(0)
    n, k = 500, 6
    A, B = torch.randn(n, k, generator=g, dtype=torch.float64), torch.randn(k, n, generator=g, dtype=torch.float64)
    circuit = TokenCircuit(lambda rows: A[rows], B, n)
    got = diagonal.own_entry_zscores(circuit, batch_size=64)
    C = (A @ B).numpy()
    want = (np.diag(C) - C.mean(axis=1)) / C.std(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def test_planted_suppression_is_listed_first_and_constant_rows_never():
    g = torch.Generator().manual_seed(1)
    n, k = 300, 8
    A, B = torch.randn(n, k, generator=g, dtype=torch.float64), torch.randn(k, n, generator=g, dtype=torch.float64)
    C = A @ B
    planted = [7, 42, 99]
    for i, t in enumerate(planted):
        C[t, t] -= 40 + 10 * i
    C[5] = 1.0  # a constant row: undefined, never listed
    circuit = TokenCircuit(lambda rows: C[rows], torch.eye(n, dtype=torch.float64), n)
    z = diagonal.own_entry_zscores(circuit)
    assert np.isnan(z[5])
    assert set(diagonal.most_suppressed(z, 3)) == set(planted)
    assert 5 not in diagonal.most_suppressed(z, n)
