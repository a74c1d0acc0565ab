"""The token explorer of a head page: a search box over the vocabulary and, for the chosen token,
its lists from the head's explorer artifact (OV: lowered most / raised most; QK: the queries that
attend to it most, the keys it attends to most) and its own ranks.

Static and offline, from ``file://`` as from a web server: the data are classic scripts (``fetch``
is blocked on ``file://``) loaded when the reader first needs them —

* ``assets/explorer/tokens.js``, when the reader first uses the explorer: every token's *visible
  form* (:func:`report.escaping.visible`, computed here, so the page and the tables show a token the
  same way), one list per site, as JSON deflated and base64-encoded (``json+zlib+base64``);
* ``assets/explorer/head-L.H/NNNNN.js``, when the reader first shows a token of its range: shard
  ``NNNNN`` of the head's data, the :data:`SHARD_TOKENS` tokens from ``NNNNN · SHARD_TOKENS`` on, in
  the analysis's encoding (:func:`headreport.analysis.explorer_codec.encode`: byte planes, deflated,
  base64), inflated in the browser by ``DecompressionStream``;

and ``assets/explorer.js`` draws it, putting token text into the page only through
``textContent``. A first view loads the tokens and one shard: at 262,144 tokens about 1.7 MB (GPT-2's
real token texts, repeated; random weights' incompressible lists), where the whole head is 35 MB. The
standalone ``report.html`` carries the same scripts inline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from headreport.analysis.explorer_codec import FIELDS, decode, encode

from .escaping import Safe, html_text, json_for_script, raw_block, typst_markup, visible
from .outputs import head_slug

ASSET_DIR = "assets/explorer"
EXPLORER_JS = "assets/explorer.js"


def tokens_path() -> str:
    return f"{ASSET_DIR}/tokens.js"


#: tokens per shard of a head's explorer data (at 262,144 tokens a random head's shard is 0.27 MB)
SHARD_TOKENS = 2048


def head_data_dir(label: str) -> str:
    return f"{ASSET_DIR}/{head_slug(label)}"


def shard_path(label: str, index: int) -> str:
    """Shard ``index`` of head ``label``'s data (explorer.js builds the same name)."""
    return f"{head_data_dir(label)}/{index:05d}.js"


def visible_forms(vocabulary: Mapping[str, Any]) -> list[str]:
    raw = vocabulary["bytes_hex"]
    return [visible(text, raw.get(str(i))) for i, text in enumerate(vocabulary["tokens"])]


def _register(key: str, value: Any) -> str:
    return ("(window.headreportExplorer = window.headreportExplorer || {heads: {}})"
            f"{key} = {json_for_script(value)};\n")


def tokens_script(vocabulary: Mapping[str, Any]) -> str:
    """The visible forms as one deflated JSON list (explorer.js inflates and parses it)."""
    raw = json.dumps(visible_forms(vocabulary), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return _register(".tokenData", {"encoding": "json+zlib+base64", "raw_bytes": len(raw),
                                    "sha256": hashlib.sha256(raw).hexdigest(),
                                    "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")})


def shards(payload: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The head's payload cut into :data:`SHARD_TOKENS`-token shards by token id, each in the
    payload's own encoding (same dtype; a palette of its own where one is smaller) with its
    ``start`` and ``stop``."""
    arrays = decode(dict(payload))
    d_vocab = int(payload["d_vocab"])
    out = []
    for index, start in enumerate(range(0, d_vocab, SHARD_TOKENS)):
        stop = min(start + SHARD_TOKENS, d_vocab)
        part = encode({f: arrays[f][start:stop] for f in FIELDS}, d_vocab, palette_mode="when_smaller")
        out.append({**part, "head": payload["head"], "shard": index, "start": start, "stop": stop})
    return out


def shard_script(shard: Mapping[str, Any]) -> str:
    keep = ("head", "shard", "start", "stop", "d_vocab", "k", "fields", "shapes", "palettes", "dtype", "encoding",
            "raw_bytes", "sha256", "data")
    head = json_for_script(shard["head"])
    index = json_for_script(shard["shard"])  # a shard's number, or "whole"
    return ("(function (r) { var h = r.heads[" + head + "] = r.heads[" + head + "] || {shards: {}}; "
            f"h.shards[{index}] = {json_for_script({k: shard[k] for k in keep})}; }})"
            "(window.headreportExplorer = window.headreportExplorer || {heads: {}});\n")


def whole_script(payload: Mapping[str, Any]) -> str:
    """The head's payload as one script (a page that carries its data inline: shards would only add
    their per-shard overhead there), registered as ``heads[label].whole``."""
    return shard_script({**payload, "shard": "whole", "start": 0, "stop": payload["d_vocab"]})


def site_assets(artifacts: Mapping[str, Any], inline: bool = False) -> dict[str, str]:
    """Site path → content of the explorer's scripts (empty when no head has explorer data):
    each head's data in shards, or, for a page that carries them ``inline``, in one script."""
    explorers = artifacts.get("explorers") or {}
    if not explorers:
        return {}
    out = {EXPLORER_JS: resources.files("headreport.report").joinpath("explorer.js").read_text(encoding="utf-8"),
           tokens_path(): tokens_script(artifacts["vocabulary"])}
    for label, payload in explorers.items():
        if inline:
            out[f"{head_data_dir(label)}/whole.js"] = whole_script(payload)
            continue
        for shard in shards(payload):
            out[shard_path(label, shard["shard"])] = shard_script(shard)
    return out


def block(label: str, qk_note: str) -> Safe:
    """The explorer's placeholder on a head page (HTML) and, in the PDF, a pointer to the site.
    ``qk_note``: how the QK circuit's two sides were normalised (shown beside the QK rank)."""
    attrs = {"data-head": label, "data-shards": head_data_dir(label), "data-shard-tokens": str(SHARD_TOKENS),
             "data-tokens": tokens_path(), "data-qk-note": qk_note}
    attr_text = " ".join(f'{k}="{html_text(v)}"' for k, v in attrs.items())
    html = (f'<div class="hr-explorer" {attr_text}>\n'
            '<noscript><p>The token explorer needs JavaScript.</p></noscript>\n</div>')
    typst = typst_markup(f"The token explorer of head {label} is interactive: it is on this head's page of the "
                         "HTML report.")
    return raw_block(html, typst)
