"""Nothing changed → nothing done: the render key, and the figure cache.

A render is keyed on everything that can change its output: the bytes of every artifact file, the
report's own code, templates and assets, the engine and its tools' versions, and the render options.
The key is recorded in the manifest ``report.json``; when it matches and every file the manifest
lists is still there, ``render`` does nothing (an unchanged ``headreport build`` takes about a
second: no page is built, no figure exported, no PDF compiled).

Each figure is exported once per content: its exports are kept in ``<out>/.headreport-cache/
figures/<sha256>/`` keyed on its Vega-Lite spec, its data and the exporter's version, so a render
that changes one head re-exports only that head's figures.

Light on purpose (hashlib and json only): the up-to-date check runs before anything heavy is imported.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from headreport.analysis.artifacts import code_digest, package_versions

from .outputs import MANIFEST, OUTPUT_DIRS, previous_files

CACHE_DIR = ".headreport-cache"
ARTIFACT_NAMES = ("model.json", "survey.json", "timings.json", "vocabulary.json")
#: every package whose files can change a render (pyproject.toml's report packages): the render key
#: hashes their code, templates and assets
REPORT_PACKAGES = ("headreport.report", "headreport.report.engines", "headreport.report.pages",
                   "headreport.report.templates")


def report_code_digest() -> str:
    """sha256 over the report package's code and assets and the templates."""
    return code_digest(REPORT_PACKAGES, (".py", ".j2", ".css", ".js", ".typ", ".sty"))


def artifact_files(artifacts_dir: Path) -> list[Path]:
    return sorted(p for p in artifacts_dir.iterdir()
                  if p.is_file() and (p.name in ARTIFACT_NAMES
                                      or (p.name.startswith(("head_", "explorer_")) and p.suffix == ".json")))


def render_key(artifacts_dir: Path, engine: str, options: dict[str, Any]) -> str:
    """The key of a render of ``artifacts_dir`` (see the module docstring). ``engine`` is the
    resolved engine; its tools' versions are part of the key."""
    h = hashlib.sha256()
    for path in artifact_files(artifacts_dir):
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    versions = package_versions(
        ("headreport", "altair", "vl-convert-python", "jinja2", "pypandoc-binary", "typst"), "-")
    h.update(json.dumps({"engine": engine, "versions": versions, "options": options,
                         "code": report_code_digest()}, sort_keys=True).encode())
    return h.hexdigest()


def current_manifest(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The previous render's manifest when it was made with ``key`` and all its files are there."""
    try:
        doc = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("render_key") != key:
        return None
    files = previous_files(out_dir)
    if not files or not all((out_dir / f).is_file() for f in files):
        return None
    if not all((out_dir / d).is_dir() for d in ("site", "pdf")):
        return None
    return doc


def figure_key(spec: dict[str, Any], csv: str, png_scale: float) -> str:
    """A figure's content key: its spec, its data and the exporter."""
    exporter = package_versions(["vl-convert-python"], "-")["vl-convert-python"]
    h = hashlib.sha256()
    h.update(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode())
    h.update(csv.encode())
    h.update(f"{exporter}/{png_scale}".encode())
    return h.hexdigest()


def cache_dir(out_dir: Path) -> Path:
    return out_dir / CACHE_DIR / "figures"


__all__ = ["OUTPUT_DIRS", "cache_dir", "current_manifest", "figure_key", "render_key"]
