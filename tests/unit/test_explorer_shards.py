"""The explorer's shards (report/explorer.py) at a 262,144-token vocabulary, random lists (the
incompressible worst case): they hold exactly the unsharded data, a first view (the vocabulary and
one shard) loads at most 2 MB, and the whole set grows linearly with the vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
import transformers

from headreport.analysis import explorer_codec
from headreport.report import explorer
from tests.checkpoints import gpt2_tokenizer_files

K = 10


def random_payload(d_vocab: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {f: rng.integers(1, d_vocab + 1, d_vocab) for f in ("ov_rank", "qk_rank")}
    arrays |= {f: rng.integers(0, d_vocab, (d_vocab, K)) for f in explorer_codec.LIST_FIELDS}
    return {**explorer_codec.encode(arrays, d_vocab), "head": "3.1"}, arrays


def real_vocabulary(d_vocab: int, folder) -> dict:
    """GPT-2's real 50,257 tokens, decoded, repeated with a numbered suffix up to ``d_vocab`` (each
    repeat lies far beyond deflate's 32 KB window: about a real vocabulary's compressibility)."""
    files = gpt2_tokenizer_files(folder)
    tok = transformers.GPT2TokenizerFast(vocab_file=str(files / "vocab.json"), merges_file=str(files / "merges.txt"))
    base = [tok.decode([i]) for i in range(len(tok))]
    return {"tokens": [base[i % len(base)] + (str(i // len(base)) if i >= len(base) else "") for i in range(d_vocab)],
            "bytes_hex": {}}


@pytest.fixture(scope="module")
def big():
    payload, arrays = random_payload(262_144)
    scripts = {s["shard"]: explorer.shard_script(s) for s in explorer.shards(payload)}
    return payload, arrays, scripts


def test_shards_hold_exactly_the_unsharded_data(big):
    payload, arrays, _ = big
    parts = explorer.shards(payload)
    assert [p["start"] for p in parts] == list(range(0, 262_144, explorer.SHARD_TOKENS))
    assert all(p["stop"] - p["start"] == explorer.SHARD_TOKENS for p in parts)
    for f in explorer_codec.FIELDS:
        np.testing.assert_array_equal(np.concatenate([explorer_codec.decode(p)[f] for p in parts]), arrays[f])


def test_a_first_view_loads_at_most_2_mb_and_the_set_is_linear(big, tmp_path):
    payload, _, scripts = big
    tokens = explorer.tokens_script(real_vocabulary(262_144, tmp_path))
    first_view = len(tokens.encode()) + max(len(s.encode()) for s in scripts.values())
    assert first_view <= 2_000_000, first_view
    total = sum(len(s.encode()) for s in scripts.values())
    # linear: within 10% of the unsharded payload (one encoding of the same lists), at a quarter of
    # the vocabulary a quarter of the bytes per token within 10%
    assert total <= 1.1 * len(payload["data"]), (total, len(payload["data"]))
    small, _ = random_payload(65_536 * 2)
    small_total = sum(len(explorer.shard_script(s).encode()) for s in explorer.shards(small))
    assert abs(total / 262_144 - small_total / 131_072) <= 0.1 * small_total / 131_072
