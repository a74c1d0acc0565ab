"""Word lists and their tokens: the inputs of the names-versus-generic-words comparison.

By default a word is scored as the single token of the bare word (``"Mary"``), as the original
notebook does (``to_single_token(word)``); ``words.form = "space_prefixed"`` scores the token of
``" " + word`` instead, the form a word takes mid-sentence. Words that are not a single token in
the chosen form are skipped and reported with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..config import WordForm, builtin_word_list
from ..errors import ConfigError
from .text import decode_utf8, read_limited, shown

#: a word list file is at most this large (a list of words, not a corpus)
MAX_WORD_LIST_BYTES = 4 << 20
#: words a list may hold: what the artifact schema accepts per list (scored and skipped alike)
MAX_WORDS = 100_000
#: a word is at most this many characters
MAX_WORD_CHARS = 200


@dataclass(frozen=True)
class WordToken:
    word: str
    token_id: int
    token: str  # exactly as the tokenizer decodes the id


@dataclass(frozen=True)
class SkippedWord:
    word: str
    reason: str


#: each word list's key (``names``, ``generic``) → its single-token words and the words it skipped
WordLists = dict[str, tuple[list[WordToken], list[SkippedWord]]]


def parse_word_lines(text: str, source: str, key: str = "words") -> list[str]:
    """One word per line; blank lines and ``#`` comments skipped; duplicates dropped (first kept)."""
    words: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        w = line.strip()
        if not w or w.startswith("#") or w in seen:
            continue
        if "\x00" in w or any(ord(ch) < 32 for ch in w):
            raise ConfigError(f"{key}: {source} line {number} holds a control character (e.g. NUL); "
                              "a word list is plain text, one word per line")
        if len(w) > MAX_WORD_CHARS:
            raise ConfigError(f"{key}: {source} line {number} is {len(w)} characters long; a word is at "
                              f"most {MAX_WORD_CHARS}")
        seen.add(w)
        words.append(w)
    return words


def read_word_source(source: str, key: str = "words") -> bytes:
    """The raw bytes of ``builtin:NAME`` or a word-list file (what the staleness key hashes)."""
    builtin = builtin_word_list(source, key)
    if builtin is not None:
        return resources.files("headreport.analysis.data").joinpath(builtin).read_bytes()
    return read_limited(Path(source), MAX_WORD_LIST_BYTES, ConfigError, key, "word list")


def load_word_list(source: str, key: str = "words") -> list[str]:
    """Words from ``builtin:NAME`` or a UTF-8 text file (one word per line, ``#`` comments);
    errors name ``key`` (``words.names``)."""
    text = decode_utf8(read_word_source(source, key), ConfigError, key, source)
    words = parse_word_lines(text, repr(source), key)
    if not words:
        raise ConfigError(f"{key}: word list {shown(source)} is empty")
    if len(words) > MAX_WORDS:
        raise ConfigError(f"{key}: word list {shown(source)} holds {len(words):,} words; a list holds at most "
                          f"{MAX_WORDS:,} (the artifact records every word, scored or skipped)")
    return words


def word_text(word: str, form: WordForm) -> str:
    """The text that is tokenized for ``word``: the bare word, or ``" " + word``."""
    return " " + word if form == "space_prefixed" else word


def tokenize_words(words: list[str], tokenizer, form: WordForm = "bare") -> tuple[list[WordToken], list[SkippedWord]]:
    """Map each word to the single token of its ``form``; others are skipped with a reason."""
    kept: list[WordToken] = []
    skipped: list[SkippedWord] = []
    for word in words:
        text = word_text(word, form)
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) != 1:
            pieces = [tokenizer.decode([i]) for i in ids]
            skipped.append(SkippedWord(word, f"{text!r} is {len(ids)} tokens: {pieces!r}, not a single token"))
            continue
        kept.append(WordToken(word, int(ids[0]), tokenizer.decode([ids[0]])))
    return kept, skipped
