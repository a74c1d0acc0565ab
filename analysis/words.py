"""Word lists and their tokens: the inputs of the names-versus-generic-words comparison.

A word is scored as the single token of ``" " + word`` (with its leading space, as it appears
mid-sentence). Words that are not a single token are skipped and reported with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConfigError

BUILTIN_LISTS = {
    "names": "names.txt",
    "common_words": "common_words.txt",
}


@dataclass(frozen=True)
class WordToken:
    word: str
    token_id: int
    token: str  # exactly as the tokenizer decodes the id


@dataclass(frozen=True)
class SkippedWord:
    word: str
    reason: str


def _parse_lines(text: str) -> list[str]:
    words: list[str] = []
    seen: set[str] = set()
    for line in text.splitlines():
        w = line.strip()
        if not w or w.startswith("#") or w in seen:
            continue
        seen.add(w)
        words.append(w)
    return words


def load_word_list(source: str) -> list[str]:
    """Words from ``builtin:NAME`` or a UTF-8 text file (one word per line, ``#`` comments)."""
    if source.startswith("builtin:"):
        name = source.removeprefix("builtin:")
        if name not in BUILTIN_LISTS:
            raise ConfigError(f"words: unknown built-in list {name!r}")
        text = resources.files("analysis.data").joinpath(BUILTIN_LISTS[name]).read_text("utf-8")
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"words: cannot read word list {source!r} ({exc})") from None
    words = _parse_lines(text)
    if not words:
        raise ConfigError(f"words: word list {source!r} is empty")
    return words


def tokenize_words(words: list[str], tokenizer) -> tuple[list[WordToken], list[SkippedWord]]:
    """Map each word to the single token of ``" " + word``; others are skipped with a reason."""
    kept: list[WordToken] = []
    skipped: list[SkippedWord] = []
    for word in words:
        ids = tokenizer.encode(" " + word, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            skipped.append(
                SkippedWord(word, f"' {word}' is {len(ids)} tokens: {pieces!r}, not a single token")
            )
            continue
        kept.append(WordToken(word, int(ids[0]), tokenizer.decode([ids[0]])))
    return kept, skipped
