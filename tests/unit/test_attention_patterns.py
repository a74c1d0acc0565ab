"""The prompts artifact's attention-pattern encoding (analysis/attention_patterns.py): exact to
1/10000, the analysis' tensor path writes the same string as the reference, the report's reader
(report/prompt_data.py) decodes the same rows, and the artifact reader's check refuses anything that
is not an n-token pattern without inflating more than one."""

from __future__ import annotations

import base64
import zlib

import pytest
import torch

from headreport.analysis import attention_patterns as ap
from headreport.analysis.prompts import encoded_pattern
from headreport.report.prompt_data import pattern_rows


def causal_softmax(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(n, n, generator=g, dtype=torch.float64) * 3
    return torch.softmax(scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf")), dim=-1)


@pytest.mark.parametrize("n", [1, 2, 17, 256])
def test_round_trip_is_exact_to_the_stored_unit(n):
    p = causal_softmax(n, seed=n)
    text = encoded_pattern(p)
    assert text == ap.encode(p.tolist())  # the tensor path and the reference agree byte for byte
    rows = ap.decode(text, n)
    assert [len(r) for r in rows] == list(range(1, n + 1))
    assert max(abs(a - b) for q, r in enumerate(rows) for a, b in zip(r, p[q].tolist())) <= 0.5 / ap.SCALE + 1e-12
    assert all(abs(sum(r) - 1) <= (q + 1) * 0.5 / ap.SCALE + 1e-12 for q, r in enumerate(rows))
    assert ap.fits(text, n) and not ap.fits(text, n + 1) and (n == 1 or not ap.fits(text, n - 1))
    # the report reads the format itself, from the artifact's own fields: the same rows
    assert pattern_rows({"pattern_encoding": ap.ENCODING, "pattern_scale": ap.SCALE}, {"pattern": text}, n) == rows


def test_the_stored_values_are_the_weights_times_10000():
    rows = [[1.0], [0.25, 0.75], [0.00004, 0.00005, 0.99991]]
    assert ap.raw_values(ap.encode(rows), 3) == [10000, 2500, 7500, 0, 0, 9999]  # half to even: 0.5 → 0
    assert ap.decode(ap.encode([[1.5], [-1.0, 2.0]]), 2) == [[1.0], [0.0, 1.0]]  # clamped to [0, 1]


def raw_string(values: list[int]) -> str:
    raw = bytes(v & 0xFF for v in values) + bytes(v >> 8 for v in values)
    return base64.b64encode(zlib.compress(raw)).decode("ascii")


@pytest.mark.parametrize("text", [
    "", "not base64!", "AAAA", base64.b64encode(b"not zlib").decode(),
    raw_string([10001, 0, 0]),  # a weight above 1
    raw_string([1, 2, 3, 4]),  # four values where three belong
    raw_string([1, 2, 3]) + "AAAA",  # trailing bytes
    base64.b64encode(zlib.compress(bytes(1 << 24))).decode(),  # 16 MiB of zeros: refused, not inflated
])
def test_the_reader_refuses_what_is_not_a_2_token_pattern(text):
    assert not ap.fits(text, 2)
    with pytest.raises(ValueError):
        ap.raw_values(text, 2)
    assert not ap.fits(None, 2) and not ap.fits([[1.0], [0.5, 0.5]], 2)
