"""The prompt menu of a head page: the attention heatmap and the final-position chart show one
prompt at a time, and each prompt's data are loaded only when the reader chooses it.

Static and offline, from ``file://`` as from a web server (the token explorer's scheme,
:mod:`report.explorer`): one classic script per head and prompt, loaded on first use —

* ``assets/prompts/head-L.H/<i>.js`` (i = 1, 2, …): prompt i's position labels and tokens in their
  *visible form* (computed here, as on the axes of the static exports), the final position's
  weights and direct effects, and the head's attention pattern as the artifact stores it
  (``results.pattern_encoding``: byte planes, deflated, base64; :mod:`analysis.attention_patterns`
  writes it), inflated in the browser;

and ``assets/prompts.js`` builds the menu and, when a prompt is chosen, replaces the charts' data
sets (:data:`report.charts.ATTENTION_DATA`, :data:`report.charts.FINAL_DATA`) with its rows. Token
and prompt text reach the page only through ``textContent`` (the menu) and Vega's SVG text (the
axes). The page itself holds the first prompt's rows (inline in the two specs) and the menu's
labels, never the other prompts' data; the standalone ``report.html`` carries the scripts inline.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from importlib import resources
from typing import Any

from .charts import ATTENTION_DATA, FINAL_DATA, position_label, prompt_label
from .escaping import Safe, html_text, json_for_script, raw_block, typst_markup, visible_token
from .outputs import head_slug

ASSET_DIR = "assets/prompts"
PROMPTS_JS = "assets/prompts.js"


def pattern_rows(results: Mapping[str, Any], record: Mapping[str, Any], n: int) -> list[list[float]]:
    """A record's attention pattern on an n-token prompt as rows (row q: the weights of sources
    0..q), decoded as ``results.pattern_encoding`` says: base64, zlib, little-endian uint16 in byte
    planes, each value v the weight v / ``results.pattern_scale`` (the artifact reader checked it)."""
    m = n * (n + 1) // 2
    inflater = zlib.decompressobj()
    raw = inflater.decompress(base64.b64decode(record["pattern"]), 2 * m + 1)
    if len(raw) != 2 * m:
        raise ValueError(f"an attention pattern of {n} tokens holds {m} weights")
    scale = results["pattern_scale"]
    values = [(lo | hi << 8) / scale for lo, hi in zip(raw[:m], raw[m:])]
    return [values[q * (q + 1) // 2: (q + 1) * (q + 2) // 2] for q in range(n)]


def data_dir(label: str) -> str:
    return f"{ASSET_DIR}/{head_slug(label)}"


def data_path(label: str, index: int) -> str:
    """The data script of prompt ``index`` (0-based) of head ``label``."""
    return f"{data_dir(label)}/{index + 1}.js"


def payload(label: str, index: int, prompt: Mapping[str, Any], record: Mapping[str, Any],
            scale: int) -> dict[str, Any]:
    """What the browser needs to draw prompt ``index`` for head ``label`` (the rows of
    :func:`report.charts.attention_rows` and :func:`report.charts.final_position_rows`); the
    pattern as the artifact stores it, ``scale`` its ``pattern_scale``."""
    tokens = prompt["tokens"]
    sources = record["sources"]
    return {"head": label, "prompt": index + 1, "n": len(tokens), "scale": scale, "pattern": record["pattern"],
            "labels": [position_label(j, t) for j, t in enumerate(tokens)],
            "tokens": [visible_token(t) for t in tokens],
            "weight": [s["weight"] for s in sources], "effect": [s["effect"] for s in sources],
            "via_source": [s["via_source"] for s in sources]}


def data_script(label: str, index: int, prompt: Mapping[str, Any], record: Mapping[str, Any], scale: int) -> str:
    key = json_for_script(f"{label}/{index + 1}")
    return (f"(window.headreportPrompts = window.headreportPrompts || {{}})[{key}] = "
            f"{json_for_script(payload(label, index, prompt, record, scale))};\n")


def has_menu(artifacts: Mapping[str, Any]) -> bool:
    """Whether the head pages have a prompt menu (the prompts artifact holds records)."""
    doc = artifacts.get("prompts")
    return doc is not None and bool(doc["results"]["heads"])


def site_assets(artifacts: Mapping[str, Any]) -> dict[str, str]:
    """Site path → content of the prompt menu's script and data (empty without prompt records)."""
    if not has_menu(artifacts):
        return {}
    results = artifacts["prompts"]["results"]
    out = {PROMPTS_JS: resources.files("headreport.report").joinpath("prompts.js").read_text(encoding="utf-8")}
    for label, h in results["heads"].items():
        for i, (prompt, record) in enumerate(zip(results["prompts"], h["records"])):
            out[data_path(label, i)] = data_script(label, i, prompt, record, results["pattern_scale"])
    return out


def menu_block(label: str, prompts: list[Mapping[str, Any]], attention_id: str, final_id: str) -> Safe:
    """The menu's placeholder (HTML: its settings and the prompts' labels; ``assets/prompts.js``
    puts the menu itself at the top of the attention figure) and, in the PDF, what the figures show."""
    attrs = {"data-head": label, "data-n": str(len(prompts)), "data-base": data_dir(label) + "/",
             "data-attention": attention_id, "data-attention-data": ATTENTION_DATA,
             "data-final": final_id, "data-final-data": FINAL_DATA}
    attr_text = " ".join(f'{k}="{html_text(v)}"' for k, v in attrs.items())
    labels = [prompt_label(i, p["text"]) for i, p in enumerate(prompts)]
    html = (f'<div class="hr-prompts" {attr_text}>\n'
            f'<script type="application/json" class="hr-prompt-labels">{json_for_script(labels)}</script>\n'
            "<noscript><p>Choosing another prompt needs JavaScript; the two charts below show prompt 1."
            "</p></noscript>\n</div>")
    n = len(prompts)
    typst = typst_markup(
        f"The HTML report draws the attention pattern and the final position of one prompt at a time, chosen "
        f"from a menu of all {n} prompt{'s' if n != 1 else ''}; this PDF shows prompt {labels[0]}. The table "
        f"after them lists every prompt.")
    return raw_block(html, typst)
