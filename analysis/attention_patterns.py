"""An attention pattern as the prompts artifact stores it (``prompts.json``: ``records[].pattern``).

A head's causal pattern on an n-token prompt has n(n+1)/2 weights: row q holds the weights of
source positions 0..q. The artifact stores them as one string per prompt and head:

* each weight w ∈ [0, 1] rounded to a multiple of 1/:data:`SCALE` (w · 10000 as an unsigned 16-bit
  integer: an absolute error of at most 5e-5, finer than the page shows);
* the integers row by row (row 0, then row 1, …), little-endian, in byte planes (every value's low
  byte, then every value's high byte: the high bytes of a long prompt are mostly zero);
* deflated (zlib) and base64-encoded, like the token explorer's payload.

At the documented maximum (200 prompts of 256 tokens, two heads) that is about 20 MB of JSON where
lists of numbers took 260 MB, and the schema checks one string per record instead of 13 million
numbers. The report reads the format from the artifact like any other field (it imports no
analysis module beyond the shared base): ``report/prompt_data.py`` decodes the first prompt's for
the static figures and hands every string to the browser unchanged, where ``report/prompts.js``
inflates it with ``DecompressionStream``.

Plain Python (no torch, no numpy): :mod:`analysis.artifacts` checks every pattern with
:func:`fits` when it reads the artifact.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Sequence

#: the encoding's name, recorded in the artifact (``results.pattern_encoding``)
ENCODING = "uint16-byte-planes+zlib+base64"
#: a stored value v stands for the weight v / SCALE (``results.pattern_scale``)
SCALE = 10_000


def n_weights(n: int) -> int:
    """The weights of an n-token causal pattern: n(n+1)/2."""
    return n * (n + 1) // 2


def quantize(weight: float) -> int:
    """An attention weight as the stored integer (clamped to [0, 1], then rounded)."""
    return int(round(min(1.0, max(0.0, float(weight))) * SCALE))


def encode(rows: Sequence[Sequence[float]]) -> str:
    """The artifact's string for a pattern: ``rows[q][s]`` is query q's weight on source s (only
    s ≤ q is stored; a square matrix may be passed as lists)."""
    values = [quantize(w) for q, row in enumerate(rows) for w in row[: q + 1]]
    if len(values) != n_weights(len(rows)):
        raise ValueError(f"pattern row q must hold at least q + 1 weights ({len(values)} for {len(rows)} rows)")
    return pack(values)


def pack(values: Sequence[int]) -> str:
    """The artifact's string for the stored integers of a pattern, rows 0..n-1 concatenated (each
    0..:data:`SCALE`, as :func:`quantize` makes them)."""
    if any(v < 0 or v > SCALE for v in values):
        raise ValueError(f"stored pattern values are 0..{SCALE}")
    return deflate(bytes(v & 0xFF for v in values) + bytes(v >> 8 for v in values))


def deflate(planes: bytes) -> str:
    """The artifact's string for a pattern's byte planes (all low bytes, then all high bytes)."""
    return base64.b64encode(zlib.compress(planes, 6)).decode("ascii")


def raw_values(text: str, n: int) -> list[int]:
    """The stored integers of an n-token pattern; :class:`ValueError` unless ``text`` holds exactly
    n(n+1)/2 of them, each at most :data:`SCALE` (inflating at most that many bytes: a string that
    inflates to more is refused, not expanded)."""
    m = n_weights(n)
    try:
        packed = base64.b64decode(text, validate=True)
        inflater = zlib.decompressobj()
        raw = inflater.decompress(packed, 2 * m + 1)
    except (binascii.Error, zlib.error, TypeError) as exc:
        raise ValueError(f"not an encoded attention pattern ({exc})") from None
    if len(raw) != 2 * m or not inflater.eof or inflater.unconsumed_tail or inflater.unused_data:
        raise ValueError(f"an encoded attention pattern of {n} tokens holds {m} weights")
    values = [lo | (hi << 8) for lo, hi in zip(raw[:m], raw[m:])]
    if values and max(values) > SCALE:
        raise ValueError(f"an attention weight above 1 (stored values are at most {SCALE})")
    return values


def decode(text: str, n: int) -> list[list[float]]:
    """The pattern of an n-token prompt as rows: row q, the weights of sources 0..q."""
    values = raw_values(text, n)
    return [[v / SCALE for v in values[n_weights(q): n_weights(q + 1)]] for q in range(n)]


def fits(text: object, n: int) -> bool:
    """Whether ``text`` is an encoded pattern of an n-token prompt (the artifact reader's check)."""
    if not isinstance(text, str):
        return False
    try:
        raw_values(text, n)
    except ValueError:
        return False
    return True
