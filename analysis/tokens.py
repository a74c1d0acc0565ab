"""Token ids → raw token strings (exactly as the tokenizer decodes them), plus raw bytes where the
decoded string is not the whole story (a byte-level token that is half a UTF-8 character decodes to
U+FFFD; its bytes are kept as hex so the report can show them). Escaping belongs to the report."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-level BPE alphabet (printable bytes map to themselves, the other
    bytes to code points 256 + n, in order): character → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The raw bytes of a byte-level BPE token (GPT-2 style ``Ġ`` pieces, or ``<0xE2>``), else None."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if piece is None:
        return None
    m = _BYTE_TOKEN.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    dec = _byte_decoder()
    if all(ch in dec for ch in piece):
        return bytes(dec[ch] for ch in piece)
    return None


def token_record(tokenizer, token_id: int, **values: Any) -> dict[str, Any]:
    """``{"id", "token", ["bytes_hex"], **values}`` for one token."""
    token_id = int(token_id)
    text = tokenizer.decode([token_id])
    rec: dict[str, Any] = {"id": token_id, "token": text}
    if "\ufffd" in text:
        raw = token_bytes(tokenizer, token_id)
        if raw is not None:
            rec["bytes_hex"] = raw.hex()
    rec.update(values)
    return rec


def token_records(tokenizer, ids: Iterable[int], **columns: Iterable[Any]) -> list[dict[str, Any]]:
    """One :func:`token_record` per id; each keyword is a parallel column of values."""
    ids = list(ids)
    cols = {k: list(v) for k, v in columns.items()}
    return [token_record(tokenizer, i, **{k: v[n] for k, v in cols.items()}) for n, i in enumerate(ids)]
