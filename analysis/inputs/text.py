"""Reading what a user hands us — a config, a word list, an artifact, a checkpoint's config.json —
as untrusted input: one place that refuses a folder, a missing or unreadable file, a symlink loop or
a file larger than its kind can be, with one message that names the key (or flag) and the path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ..errors import ConfigError, UserError

#: the longest path (bytes, with its terminating NUL) and file name the system takes (Linux: 4096, 255)
PATH_MAX = os.pathconf("/", "PC_PATH_MAX") if hasattr(os, "pathconf") else 4096
NAME_MAX = os.pathconf("/", "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
#: how much of a value an error message shows
SHOWN_CHARS = 120


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)``, cut after ``limit`` characters with a count of the rest: an error message is
    one line, never the whole of a 900 KB value."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


#: the prefix of a built-in data file's name in a config value (``words.names = "builtin:ioi_names"``)
BUILTIN = "builtin:"


def builtin_file(value: str, table: Mapping[str, str], key: str, what: str, otherwise: str) -> str | None:
    """The data file (in ``headreport.analysis.data``) of a ``builtin:NAME`` value, ``table`` mapping
    each NAME to its file; None when ``value`` is not ``builtin:...`` (a path, say). An unknown NAME
    is a :class:`ConfigError` naming ``key``, the built-in ``what`` ("word list") and every choice,
    then ``otherwise`` (the other values ``key`` takes)."""
    if not value.startswith(BUILTIN):
        return None
    name = value.removeprefix(BUILTIN)
    if name not in table:
        choices = ", ".join(f'"{BUILTIN}{n}"' for n in table)
        raise ConfigError(f"{key}: unknown built-in {what} {shown(value)}; choose {choices}, {otherwise}")
    return table[name]


def check_path_text(value: str, key: str, error: type[UserError]) -> None:
    """A path the system can take: no NUL character, no name longer than :data:`NAME_MAX` bytes, the
    whole shorter than :data:`PATH_MAX` bytes; else ``error`` naming ``key``, before any file is touched."""
    if "\x00" in value:
        raise error(f"{key}: {shown(value)} contains a NUL character, which no path can hold")
    try:
        encoded = os.fsencode(value)
    except UnicodeError:
        raise error(f"{key}: {shown(value)} cannot be encoded as a file name on this system") from None
    if len(encoded) >= PATH_MAX:
        raise error(f"{key}: the path is {len(encoded):,} bytes long; this system takes at most {PATH_MAX - 1:,} "
                    f"({shown(value, 60)})")
    for part in Path(value).parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise error(f"{key}: the name {shown(part, 60)} in the path is {len(os.fsencode(part)):,} bytes long; "
                        f"a file or folder name is at most {NAME_MAX} bytes")


def read_limited(path: Path, max_bytes: int, error: type[UserError], key: str, what: str) -> bytes:
    """The bytes of ``path`` (a ``what``: "TOML file", "word list"...), or ``error`` whose message
    starts with ``key``."""
    try:
        if path.is_dir():
            raise error(f"{key}: {str(path)!r} is a folder, not a {what}")
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{key}: {str(path)!r} is {size:,} bytes; a {what} is at most {max_bytes:,} bytes")
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{key}: {what} {str(path)!r} does not exist") from None
    except OSError as exc:  # permission, symlink loop (ELOOP), I/O error
        raise error(f"{key}: cannot read {str(path)!r} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:  # grew while we read it
        raise error(f"{key}: {str(path)!r} is larger than {max_bytes:,} bytes; a {what} is at most that")
    return data


def decode_utf8(data: bytes, error: type[UserError], key: str, path: Path | str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{key}: {str(path)!r} is not UTF-8 text") from None


def check_output_target(path: Path, error: type[UserError], key: str = "--out") -> None:
    """``path`` is, or can be created as, a folder we can write to — checked before any heavy work by
    writing and removing a probe file in it (or in its nearest existing parent, so that nothing is
    created yet)."""
    target = Path(path)
    probe_dir = target
    while not probe_dir.exists():
        if probe_dir.is_symlink():
            raise error(f"{key}: {str(probe_dir)!r} is a link that points nowhere")
        if probe_dir.parent == probe_dir:
            break
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        what = "the output folder" if probe_dir == target else "a parent of the output folder"
        raise error(f"{key}: {str(probe_dir)!r} ({what}) exists and is not a folder; give a folder to write to")
    try:
        fd, probe = tempfile.mkstemp(dir=probe_dir, prefix=".headreport-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise error(f"{key}: cannot write in {str(probe_dir)!r} ({exc.strerror or exc}); give a folder you can "
                    "write to") from None
