"""Reading what a user hands us — a config, a word list, an artifact, a checkpoint's config.json —
as untrusted input: one place that refuses a folder, a missing or unreadable file, a symlink loop or
a file larger than its kind can be, with one message that names the key (or flag) and the path."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError


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
    import os
    import tempfile

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
