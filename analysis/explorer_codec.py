"""The token explorer's payload format (torch-free, so that reading and checking an artifact needs
no torch): every field as little-endian ``uint16``/``uint32``, the list fields through a palette,
in byte planes, deflated and base64-encoded, with the sha256 of the inflated bytes
(:func:`encode`, :func:`decode`). The lists themselves are collected in :mod:`analysis.explorer`."""

from __future__ import annotations

import base64
import hashlib
import zlib
from typing import Any

import numpy as np

#: the payload's fields: each token's OV and QK self-ranks, then its four lists of ``k`` token ids
FIELDS = ("ov_rank", "qk_rank", "ov_low", "ov_high", "qk_keys", "qk_queries")


def id_dtype(d_vocab: int) -> type:
    return np.uint16 if d_vocab < 1 << 16 else np.uint32  # ranks reach d_vocab


def _planes(data: np.ndarray) -> bytes:
    """Little-endian bytes in byte planes: every value's lowest byte, then every second byte...
    (ids of a trained model's lists repeat, and their high bytes far more: deflate finds more)."""
    le = np.ascontiguousarray(data).view(np.uint8).reshape(-1, data.dtype.itemsize)
    return np.ascontiguousarray(le.T).tobytes()


#: the list fields, stored through a palette (:func:`encode`)
LIST_FIELDS = ("ov_low", "ov_high", "qk_keys", "qk_queries")


def palette(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct ids, most frequent first, ties by smaller id; each id's index in it): a
    trained head's lists repeat a few tokens often, and small indices deflate far better."""
    counts = np.bincount(ids.ravel())
    used = np.nonzero(counts)[0]
    order = used[np.lexsort((used, -counts[used]))]
    index = np.empty(counts.size, dtype=np.int64)
    index[order] = np.arange(order.size)
    return order, index[ids]


def encode(arrays: dict[str, np.ndarray], d_vocab: int, palette_mode: str = "always") -> dict[str, Any]:
    """The explorer payload: every field (:data:`FIELDS`) as little-endian ``uint16``/``uint32``
    (ranks and ids alike fit the vocabulary), each list field as its :func:`palette` (the distinct
    ids, most frequent first) followed by each entry's index in it, every array in byte planes
    (:func:`_planes`), all concatenated in field order, deflated (zlib) and base64-encoded; with the
    layout the reader needs and the sha256 of the inflated bytes. ``palette_mode="when_smaller"`` stores
    a list field plainly where its distinct ids are more than half its entries (a palette would then
    add more than it saves: a slice of a random head's lists); the reader knows both forms."""
    dtype = np.dtype(id_dtype(d_vocab)).newbyteorder("<")
    parts, palettes = [], {}
    for f in FIELDS:
        a = np.asarray(arrays[f])
        if a.size and (a.min() < 0 or a.max() >= max(d_vocab, 1) + (1 if f.endswith("_rank") else 0)):
            raise ValueError(f"explorer field {f}: values outside the vocabulary")
        if f in LIST_FIELDS and (palette_mode == "always" or np.unique(a).size * 2 <= a.size):
            order, codes = palette(a)
            palettes[f] = int(order.size)
            parts += [_planes(order.astype(dtype)), _planes(codes.astype(dtype))]
        else:
            parts.append(_planes(a.astype(dtype)))
    raw = b"".join(parts)
    return {
        "d_vocab": d_vocab,
        "k": int(arrays["ov_low"].shape[1]),
        "fields": list(FIELDS),
        "shapes": {f: list(arrays[f].shape) for f in FIELDS},
        "palettes": palettes,
        "dtype": "uint16" if dtype.itemsize == 2 else "uint32",
        "encoding": "palette+byte-planes+zlib+base64",
        "raw_bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii"),
    }


def decode(payload: dict[str, Any]) -> dict[str, np.ndarray]:
    """The arrays of an :func:`encode` payload (tests and tools)."""
    raw = zlib.decompress(base64.b64decode(payload["data"]))
    if hashlib.sha256(raw).hexdigest() != payload["sha256"]:
        raise ValueError("explorer payload: sha256 mismatch")
    dtype = np.dtype(payload["dtype"]).newbyteorder("<")
    offset = 0

    def take(n: int) -> np.ndarray:
        nonlocal offset
        planes = np.frombuffer(raw, dtype=np.uint8, count=n * dtype.itemsize, offset=offset)
        offset += n * dtype.itemsize
        return np.ascontiguousarray(planes.reshape(dtype.itemsize, n).T).view(dtype).ravel().astype(np.int64)

    out = {}
    for f in payload["fields"]:
        shape = payload["shapes"][f]
        n = int(np.prod(shape))
        if f in payload["palettes"]:
            order = take(payload["palettes"][f])
            out[f] = order[take(n)].reshape(shape)
        else:
            out[f] = take(n).reshape(shape)
    return out
