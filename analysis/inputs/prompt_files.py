"""Prompt sets: ``builtin:NAME`` or a UTF-8 file, read and checked without the model (and without
torch), so the staleness check can hash them cheaply. :mod:`analysis.prompts` runs them."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..config import builtin_prompt_set
from ..errors import ConfigError
from .text import decode_utf8, read_limited

#: a prompt file is at most this large, holds at most this many prompts of at most this many tokens
MAX_PROMPT_FILE_BYTES = 1 << 20
MAX_PROMPTS = 200
MAX_PROMPT_TOKENS = 256


@dataclass(frozen=True)
class PromptSet:
    source: str  # "builtin:ioi" or a path
    texts: tuple[str, ...]
    sha256: str  # of the file's bytes


def prompt_source_bytes(source: str, key: str = "prompts") -> bytes:
    """The raw bytes of ``builtin:NAME`` or a prompt file (what the staleness key hashes)."""
    builtin = builtin_prompt_set(source, key)
    if builtin is not None:
        return resources.files("headreport.analysis.data").joinpath(builtin).read_bytes()
    return read_limited(Path(source), MAX_PROMPT_FILE_BYTES, ConfigError, key, "prompt file")


def load_prompts(source: str, key: str = "prompts") -> PromptSet:
    """Prompts from ``builtin:NAME`` or a UTF-8 file: one prompt per line, blank lines and lines
    starting with ``#`` skipped, trailing whitespace kept off (a prompt's end is where the head is read)."""
    raw = prompt_source_bytes(source, key)
    text = decode_utf8(raw, ConfigError, key, source)
    texts = []
    for number, line in enumerate(text.splitlines(), start=1):
        p = line.rstrip()
        if not p.strip() or p.lstrip().startswith("#"):
            continue
        if any(ord(ch) < 32 and ch != "\t" for ch in p):
            raise ConfigError(f"{key}: {source} line {number} holds a control character; a prompt file is plain "
                              "text, one prompt per line")
        texts.append(p)
    if not texts:
        raise ConfigError(f"{key}: {source} holds no prompt (one prompt per line; # starts a comment)")
    if len(texts) > MAX_PROMPTS:
        raise ConfigError(f"{key}: {source} holds {len(texts)} prompts; at most {MAX_PROMPTS}")
    return PromptSet(source, tuple(texts), hashlib.sha256(raw).hexdigest())
