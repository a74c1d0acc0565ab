"""The token explorer of a head page: a search box over the vocabulary and, for the chosen token,
its lists from the head's explorer artifact (OV: lowered most / raised most; QK: the queries that
attend to it most, the keys it attends to most) and its own ranks.

Static and offline, from ``file://`` as from a web server: the data are classic scripts (``fetch``
is blocked on ``file://``) loaded when the reader first uses the explorer —

* ``assets/explorer/tokens.js``: every token's *visible form* (:func:`report.escaping.visible`,
  computed here, so the page and the tables show a token the same way), one list per site;
* ``assets/explorer/head-L.H.js``: the head's payload as the analysis wrote it (byte planes,
  deflated, base64), inflated in the browser by ``DecompressionStream``;

and ``assets/explorer.js`` draws it, putting token text into the page only through
``textContent``. The standalone ``report.html`` carries the same scripts inline.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib import resources
from typing import Any

from .escaping import Safe, html_text, json_for_script, raw_block, typst_markup, visible
from .outputs import head_slug

ASSET_DIR = "assets/explorer"
EXPLORER_JS = "assets/explorer.js"


def tokens_path() -> str:
    return f"{ASSET_DIR}/tokens.js"


def head_data_path(label: str) -> str:
    return f"{ASSET_DIR}/{head_slug(label)}.js"


def visible_forms(vocabulary: Mapping[str, Any]) -> list[str]:
    raw = vocabulary["bytes_hex"]
    return [visible(text, raw.get(str(i))) for i, text in enumerate(vocabulary["tokens"])]


def _register(key: str, value: Any) -> str:
    return ("(window.headreportExplorer = window.headreportExplorer || {heads: {}})"
            f"{key} = {json_for_script(value)};\n")


def tokens_script(vocabulary: Mapping[str, Any]) -> str:
    return _register(".tokens", visible_forms(vocabulary))


def head_script(payload: Mapping[str, Any]) -> str:
    keep = ("head", "d_vocab", "k", "fields", "shapes", "palettes", "dtype", "encoding", "raw_bytes", "sha256",
            "data")
    return _register(f".heads[{json_for_script(payload['head'])}]", {k: payload[k] for k in keep})


def site_assets(artifacts: Mapping[str, Any]) -> dict[str, str]:
    """Site path → content of the explorer's scripts (empty when no head has explorer data)."""
    explorers = artifacts.get("explorers") or {}
    if not explorers:
        return {}
    out = {EXPLORER_JS: resources.files("headreport.report").joinpath("explorer.js").read_text(encoding="utf-8"),
           tokens_path(): tokens_script(artifacts["vocabulary"])}
    for label, payload in explorers.items():
        out[head_data_path(label)] = head_script(payload)
    return out


def block(label: str, qk_note: str) -> Safe:
    """The explorer's placeholder on a head page (HTML) and, in the PDF, a pointer to the site.
    ``qk_note``: how the QK circuit's two sides were normalised (shown beside the QK rank)."""
    attrs = {"data-head": label, "data-src": head_data_path(label), "data-tokens": tokens_path(),
             "data-qk-note": qk_note}
    attr_text = " ".join(f'{k}="{html_text(v)}"' for k, v in attrs.items())
    html = (f'<div class="hr-explorer" {attr_text}>\n'
            '<noscript><p>The token explorer needs JavaScript.</p></noscript>\n</div>')
    typst = typst_markup(f"The token explorer of head {label} is interactive: it is on this head's page of the "
                         "HTML report.")
    return raw_block(html, typst)
