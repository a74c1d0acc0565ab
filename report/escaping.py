"""Token strings are hostile text: make them visible, then escape them for exactly one target.

A GPT-2 token can be ``<``, ``</``, ``<|endoftext|>``, ``*``, ``#``, ``$``, ``\\``, ``@``, ``{{``, a
lone space, a newline, a right-to-left override or half a UTF-8 character. Two steps, always in
this order:

1. :func:`visible` turns the raw token into a *visible form*: one printable line that shows what
   the token is. Each space becomes ``␣`` (a leading space is how GPT-2 marks a word start), newline
   ``\\n``, tab ``\\t``, carriage return ``\\r``, a backslash ``\\\\`` (so the escapes stay
   unambiguous), other control / format / separator characters ``\\xNN`` (ASCII, below 0x80) /
   ``\\uNNNN`` / ``\\UNNNNNNNN`` (so a U+202E cannot flip the page), a literal ``␣`` ``\\u2423``, and
   bytes that are not valid UTF-8 ``\\x80`` … ``\\xff`` (artifacts carry ``bytes_hex`` when the decoded
   token contains U+FFFD): the raw byte 0xA0 and the character U+00A0 are ``\\xa0`` and ``\\u00a0``.
   The mapping is injective (two different tokens never share a visible form) up to
   :data:`MAX_SHOWN_CHARS` characters; a longer form is cut, with a marker.
2. One escaper per target, applied to text that is *never* interpreted there:

   ========================  =====================================================================
   :func:`html_text`         HTML text and attribute values (``& < > " '``).
   :func:`markdown_text`     Pandoc/Quarto Markdown prose: every ASCII punctuation mark
                             backslash-escaped (so ``*``, ``$``, ``@``, ``<``, ``#``, ``[`` … are
                             literal), line breaks folded to spaces.
   :func:`typst_markup`      Typst markup (captions, table cells): ASCII punctuation escaped.
   :func:`typst_string`      A Typst string literal (``"…"``) for ``raw(…)``; ``{ } < >`` are
                             written as ``\\u{…}`` so no Quarto shortcode (``{{<``) can form.
   :func:`csv_cell`          A CSV text cell: the ``csv`` module quotes; a leading ``= + - @``
                             tab or CR is prefixed with ``'`` (spreadsheet formula injection).
   :func:`json_for_script`   JSON inside an HTML ``<script>`` element (Vega specs, whose data feed
                             the tooltips): ``< > &`` and U+2028/2029 as ``\\uXXXX`` so no
                             ``</script>`` or ``<!--`` can end the element.
   ========================  =====================================================================

The LaTeX exports of the tables have their own two escapers (text mode, monospace) in :mod:`report.latex`.

Tokens inside Markdown pages are never left to the Markdown parser: :func:`markdown_token` emits
a pair of raw inlines, one already escaped for HTML and one for Typst, so pandoc and Quarto copy
them verbatim into the matching output and drop the other.
"""

from __future__ import annotations

import html
import json
import re
import string
import unicodedata
from collections.abc import Mapping
from typing import Any


class Safe(str):
    """Text already escaped for the page's Markdown (raw blocks, escaped prose, formatted numbers).

    The page templates' Jinja environment escapes every value that is *not* a :class:`Safe` with
    :func:`markdown_text` (its ``finalize`` hook), so a string from a config, a path or an artifact
    can never become markup by accident: only the escaping helpers below mark text safe."""

    __slots__ = ()


OPEN_BOX = "\u2423"  # ␣
_NAMED = {" ": OPEN_BOX, "\n": "\\n", "\t": "\\t", "\r": "\\r", "\\": "\\\\", OPEN_BOX: "\\u2423"}
_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"}
_ASCII_PUNCT = frozenset(string.punctuation)
EMPTY_TOKEN = "(empty)"


def _code_point(ch: str) -> str:
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # a raw byte carried through ``surrogateescape``: \x80 … \xff
        return f"\\x{cp - 0xDC00:02x}"
    if cp < 0x80:  # an ASCII control character: \x00 … \x7f (never a raw byte's form)
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


#: a token's visible form is cut after this many characters, with a marker that says how many of
#: the token's characters were left out (a vocabulary's tokens are far shorter; a hostile artifact's
#: 64 KB token must not make every page that shows it 64 KB longer)
MAX_SHOWN_CHARS = 256


def visible(token: str, bytes_hex: str | None = None) -> str:
    """The visible form of a token (see the module docstring); ``bytes_hex``: its raw bytes. Forms
    longer than :data:`MAX_SHOWN_CHARS` are cut and end in ``…(+N characters)``."""
    if bytes_hex:
        token = bytes.fromhex(bytes_hex).decode("utf-8", errors="surrogateescape")
    if token == "":
        return EMPTY_TOKEN
    out: list[str] = []
    shown = 0
    for used, ch in enumerate(token):
        if shown >= MAX_SHOWN_CHARS:
            return "".join(out)[:MAX_SHOWN_CHARS] + f"…(+{len(token) - used} characters)"
        if ch in _NAMED:
            piece = _NAMED[ch]
        elif unicodedata.category(ch) in _INVISIBLE_CATEGORIES:
            piece = _code_point(ch)
        else:
            piece = ch
        out.append(piece)
        shown += len(piece)
    return "".join(out)


def visible_token(record: Mapping[str, Any]) -> str:
    """The visible form of an artifact token record (``{"id", "token", ["bytes_hex"]}``)."""
    return visible(record["token"], record.get("bytes_hex"))


#: bidirectional controls: one of them in a path or a name would reverse the text after it on a page
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def neutral(text: str) -> str:
    """``text`` with every bidirectional control shown as its code point (``\\u202e``): no text that
    reaches a page (a model path, a title, a note) can reverse what follows it."""
    return _BIDI.sub(lambda m: _code_point(m.group()), text)


def html_text(text: str) -> str:
    """Escape for HTML text or a quoted attribute value (bidirectional controls neutralised)."""
    return html.escape(neutral(text), quote=True)


def markdown_text(text: str) -> Safe:
    """Escape for Pandoc/Quarto Markdown prose: every ASCII punctuation mark backslash-escaped.

    Pandoc's ``all_symbols_escapable`` makes ``\\`` + any ASCII punctuation a literal character, so
    emphasis, math, citations (``@x``), raw HTML, headings, links, shortcodes and tables all stay
    text. Line breaks become spaces (a newline could end a table row or start a block).
    """
    text = re.sub(r"[\r\n\u2028\u2029]+", " ", neutral(text))
    return Safe("".join("\\" + ch if ch in _ASCII_PUNCT else ch for ch in text))


def typst_markup(text: str) -> str:
    """Escape for Typst markup: ``\\`` before every ASCII punctuation mark; line breaks → spaces."""
    text = re.sub(r"[\r\n\u2028\u2029]+", " ", neutral(text))
    return "".join("\\" + ch if ch in _ASCII_PUNCT else ch for ch in text)


_TYPST_STRING_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t",
                         "{": "\\u{7b}", "}": "\\u{7d}", "<": "\\u{3c}", ">": "\\u{3e}"}


def typst_string(text: str) -> str:
    """A Typst string literal (with the quotes) whose value is ``text`` (bidirectional controls
    neutralised)."""
    return '"' + "".join(_TYPST_STRING_ESCAPES.get(ch, ch) for ch in neutral(text)) + '"'


def typst_raw(text: str) -> str:
    """Typst markup showing ``text`` in monospace, verbatim. The trailing ``;`` ends the embedded
    expression, so text that follows (``.b``) can never be read as a field access."""
    return f"#raw({typst_string(text)});"


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(text: str) -> str:
    """A CSV text cell that a spreadsheet will not evaluate: ``'`` before a leading ``= + - @``.

    Quoting of commas, quotes and line breaks is left to :mod:`csv` (``QUOTE_MINIMAL``)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


_JSON_SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_for_script(obj: Any) -> str:
    """JSON for an inline ``<script type="application/json">``: no ``</script>``, ``<!--`` or ``]]>``
    can appear, because ``<``, ``>`` and ``&`` are written as ``\\u`` escapes (still the same JSON)."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _JSON_SCRIPT_ESCAPES[m.group(0)], text)


def _backtick_fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * (longest + 1)


def markdown_raw_inline(html_fragment: str, typst_fragment: str) -> Safe:
    """Two Markdown raw inlines (``{=html}`` and ``{=typst}``); each output format keeps its own.

    The fences are longer than any backtick run inside, and a space pads each side so a fragment
    that starts or ends with a backtick stays intact (pandoc strips exactly one padding space)."""
    parts = []
    for fragment, fmt in ((html_fragment, "html"), (typst_fragment, "typst")):
        fence = _backtick_fence(fragment)
        parts.append(f"{fence} {fragment} {fence}{{={fmt}}}")
    return Safe("".join(parts))


def markdown_value(value: Any) -> Safe:
    """Any template value as Markdown: :class:`Safe` as is, integers as digits, anything else
    escaped as text (:func:`markdown_text`). The page templates' ``finalize`` hook."""
    if isinstance(value, Safe):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Safe(str(value))
    if value is None:
        return Safe("")
    return Safe(markdown_text(str(value)))


def markdown_token(record_or_text: Mapping[str, Any] | str) -> Safe:
    """A token inside Markdown prose or a Markdown list: shown in its visible form, in monospace,
    never parsed by Markdown (a pair of raw inlines, see :func:`markdown_raw_inline`).

    A token record is made visible here; a plain string is taken as already-visible text (used
    for verbatim snippets such as commands)."""
    text = record_or_text if isinstance(record_or_text, str) else visible_token(record_or_text)
    return Safe(markdown_raw_inline(f'<code class="tok">{html_text(text)}</code>', typst_raw(text)))


def raw_block(html: str, typst: str) -> Safe:
    """Two fenced raw blocks (``{=html}``, ``{=typst}``); each output format keeps its own and copies
    it verbatim. Each fence is longer than any backtick run in its content, so no content can close it."""
    blocks = []
    for content, fmt in ((html, "html"), (typst, "typst")):
        fence = "`" * max(3, len(_backtick_fence(content)))
        blocks.append(f"{fence}{{={fmt}}}\n{content}\n{fence}")
    return Safe("\n\n".join(blocks))


def code_block(text: str, language: str = "") -> Safe:
    """A verbatim code block (a shell command, a TOML file) that no content can escape: HTML
    ``<pre>`` with every character escaped, and a Typst ``raw(..., block: true)`` string literal.
    Never a Markdown fence, whose end a backtick run in ``text`` could forge."""
    lang = re.sub(r"[^a-z0-9]", "", language.lower())
    cls = f' class="code {lang}"' if lang else ' class="code"'
    typst_lang = f", lang: {typst_string(lang)}" if lang else ""
    return raw_block(f"<pre{cls}><code>{html_text(text)}</code></pre>",
                     f"#raw({typst_string(text)}, block: true{typst_lang})")
