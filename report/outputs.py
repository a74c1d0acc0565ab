"""The report's output folders are owned through a manifest: never delete or overwrite what the tool
did not write.

``render`` writes ``site/``, ``pdf/``, ``figures/``, ``tables/`` and ``source/`` under ``--out`` and
lists every file it wrote, as a path relative to ``--out``, in the manifest ``report.json``. The rules:

* a rebuild replaces or removes only files listed in the previous manifest; any other file in those
  folders (a user's ``source/thesis.tex``) is left alone;
* an output folder that holds files but has no manifest beside it, or a file the new report would
  overwrite that the previous manifest does not list, is refused with one message (exit 2) before
  anything is written, unless ``force`` is given. ``force`` overwrites such same-named files; it
  still deletes nothing the tool did not write.

Everything is rendered into a staging folder first; only then are the files moved into place (each
move a rename) and the manifest written last, atomically.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from headreport.analysis.artifacts import atomic_write_text
from headreport.analysis.errors import UserError

OUTPUT_DIRS = ("site", "pdf", "figures", "tables", "source")
MANIFEST = "report.json"
GENERATOR = "headreport"


#: names Windows reserves (a published site may be checked out there)
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
MAX_SLUG = 120


def slug(text: str) -> str:
    """A file-name stem made of ``text``: ASCII letters, digits, ``.``, ``_`` and ``-`` only; never
    ``/``, ``..``, a leading ``-`` or ``.``, an empty or a reserved name; at most 120 characters.
    Every file and folder name the report derives from artifact data goes through it."""
    out = re.sub(r"[^A-Za-z0-9._-]+", "-", text)
    out = re.sub(r"\.{2,}", ".", out).strip("-.")[:MAX_SLUG].strip("-.")
    if not out:
        out = "x"
    if out.split(".")[0].lower() in RESERVED:
        out = "_" + out
    return out


def head_slug(label: str, part: str | None = None) -> str:
    """The names of head ``label`` (a schema-validated ``L.H``): its page and its asset files
    ``head-L.H``; with ``part``, one of its figures or tables, ``head-L-H-<part>`` (no dot, which a
    file name would read as an extension). Every name of a head is made here."""
    if part is None:
        return slug(f"head-{label}")
    return slug(f"head-{label.replace('.', '-')}-{part}")


def anchor(page_slug: str) -> str:
    """A label/id for a page: ``page-`` + slug with anything but letters, digits and ``-`` → ``-``."""
    return "page-" + re.sub(r"[^A-Za-z0-9-]", "-", page_slug)


class OutputError(UserError):
    """The output folder cannot be used (not a folder, or holds files the tool did not write)."""


def relative_files(root: Path, folders: Iterable[str] = OUTPUT_DIRS) -> set[str]:
    """Every file (or link, or other non-folder) under ``root/<folder>``, as POSIX paths relative
    to ``root``. Links are listed, never followed."""
    found: set[str] = set()
    for name in folders:
        top = root / name
        if top.is_symlink() or (top.exists() and not top.is_dir()):
            found.add(name)
            continue
        if not top.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            base = Path(dirpath)
            for entry in filenames + [d for d in dirnames if (base / d).is_symlink()]:
                found.add((base / entry).relative_to(root).as_posix())
    return found


def previous_files(out_dir: Path) -> set[str] | None:
    """The files the previous render listed in ``out_dir/report.json``; None without a manifest
    written by headreport (missing, unreadable, or someone else's ``report.json``)."""
    try:
        doc = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("generator") != GENERATOR or not isinstance(doc.get("files"), list):
        return None
    return {f for f in doc["files"] if isinstance(f, str) and _is_inside(f)}


def _is_inside(rel: str) -> bool:
    parts = Path(rel).parts
    return bool(parts) and parts[0] in OUTPUT_DIRS and ".." not in parts and not Path(rel).is_absolute()


def check_output_dir(out_dir: Path) -> None:
    """``out_dir`` is (or can be) a folder; the report's own subfolders are folders."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out: {str(out_dir)!r} exists and is not a folder; give a folder for the report")
    if (out_dir / MANIFEST).is_dir():
        raise OutputError(f"--out: {str(out_dir / MANIFEST)!r} is a folder; headreport writes its manifest there")


def foreign_files(out_dir: Path, force: bool = False) -> set[str]:
    """Files in the output folders that the previous render did not write. Without a manifest, any
    such file is an error unless ``force``: the folder is not the tool's to write into."""
    check_output_dir(out_dir)
    previous = previous_files(out_dir)
    present = relative_files(out_dir)
    foreign = present - (previous or set())
    if previous is None and foreign and not force:
        folders = sorted({Path(f).parts[0] for f in foreign})
        raise OutputError(
            f"--out: {', '.join(str(out_dir / f) for f in folders)} already hold{'s' if len(folders) == 1 else ''} "
            f"files that headreport did not write (there is no manifest {MANIFEST} beside "
            f"{'it' if len(folders) == 1 else 'them'}), e.g. {str(out_dir / sorted(foreign)[0])!r}. "
            "headreport never overwrites or deletes files it did not write: choose another --out, move "
            "those files away, or pass --force (same-named files are then overwritten; nothing is deleted)"
        )
    return foreign


def install(stage: Path, out_dir: Path, new_files: set[str], force: bool = False,
            manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move the staged files (``new_files``, relative paths under ``stage``) into ``out_dir``,
    remove the files of the previous render that this one no longer writes, and write the manifest
    last. Refuses, before moving anything, to overwrite a file the tool did not write (unless
    ``force``). Returns the manifest written (``files`` = ``new_files``, sorted)."""
    foreign = foreign_files(out_dir, force)
    previous = previous_files(out_dir) or set()
    blocked = sorted((b, f) for f in new_files if (b := _blocked_by(out_dir, f, previous)) is not None)
    if blocked:
        what, rel = blocked[0]
        raise OutputError(f"--out: {str(out_dir / what)!r} is in the way of {str(out_dir / rel)!r}, a file the report "
                          "writes (a folder where a file goes, or a file or link where a folder goes); move it away")
    clashes = sorted(f for f in new_files if f in foreign)
    if clashes and not force:
        raise OutputError(
            f"--out: the report would overwrite {str(out_dir / clashes[0])!r}"
            + (f" and {len(clashes) - 1} more file(s)" if len(clashes) > 1 else "")
            + ", which headreport did not write; move it away, choose another --out, or pass --force"
        )
    for rel in sorted(new_files):
        src, dst = stage / rel, out_dir / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_symlink() or (dst.exists() and not dst.is_dir()):
            dst.unlink()  # ours (previous manifest) or, with --force, a same-named file
        os.replace(src, dst)
    for rel in sorted(previous - new_files, reverse=True):
        if _through_link(out_dir, rel):
            continue  # a link in its folders leads out of --out (or elsewhere in it): not ours to follow
        path = out_dir / rel
        if path.is_symlink() or path.is_file():
            path.unlink()  # the entry itself (a link is removed, never its target)
        _remove_empty_parents(path.parent, out_dir)
    doc = {"generator": GENERATOR, **(manifest or {}), "files": sorted(new_files)}
    atomic_write_text(out_dir / MANIFEST, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    return doc


def _through_link(out_dir: Path, rel: str) -> bool:
    """Whether a folder on the way from ``out_dir`` to ``rel`` is a link (or not a folder): then
    ``out_dir / rel`` is not the file the manifest means, and nothing is deleted through it."""
    folder = out_dir
    for part in Path(rel).parts[:-1]:
        folder = folder / part
        if folder.is_symlink() or not folder.is_dir():
            return True
    return False


def _blocked_by(out_dir: Path, rel: str, previous: set[str]) -> str | None:
    """What stands in the way of new file ``rel`` (a path relative to ``out_dir``): a folder where the
    file goes, or a non-folder (a file, a link) where one of its folders goes; None when nothing does."""
    target = out_dir / rel
    if target.is_dir() and not target.is_symlink():
        return rel
    for parent in reversed(Path(rel).parents):
        if parent == Path("."):
            continue
        p = out_dir / parent
        if (p.is_symlink() or (p.exists() and not p.is_dir())) and parent.as_posix() not in previous:
            return parent.as_posix()
    return None


def _remove_empty_parents(folder: Path, out_dir: Path) -> None:
    """Remove ``folder`` and its parents while they are empty real folders, staying below
    ``out_dir``'s output folders (an output folder itself is kept). Paths are taken as written,
    never resolved: a link is never followed, nor removed here."""
    rel = folder.relative_to(out_dir)
    while len(rel.parts) > 1:
        path = out_dir / rel
        if path.is_symlink() or not path.is_dir():
            return
        try:
            path.rmdir()
        except OSError:
            return
        rel = rel.parent
