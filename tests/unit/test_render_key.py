"""The render key hashes every package of the report: a change to any of its code, templates or
assets renders again (:mod:`report.incremental`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from headreport.report.incremental import REPORT_PACKAGES, report_code_digest

ROOT = Path(__file__).resolve().parents[2]


def test_render_key_hashes_every_report_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]
    installed = {p for p in packages if p == "headreport.report" or p.startswith("headreport.report.")}
    assert set(REPORT_PACKAGES) == installed
    sub_packages = {"headreport.report." + ".".join(p.parent.relative_to(ROOT / "report").parts)
                    for p in (ROOT / "report").rglob("__init__.py") if p.parent != ROOT / "report"}
    assert {"headreport.report.engines", "headreport.report.pages"} <= sub_packages <= installed
    assert len(report_code_digest()) == 64
