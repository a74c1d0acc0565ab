"""No production function is longer than 60 lines (its ``def`` line to its last line): a longer
one is split into named steps (issue 19)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60


def long_functions(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


@pytest.mark.parametrize("path", sorted(p for folder in ("analysis", "report", "headreport")
                                        for p in (ROOT / folder).rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_production_function_is_over_60_lines(path):
    assert long_functions(path) == [], f"split these into named steps: {long_functions(path)}"


def test_the_check_sees_a_long_function(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n" + "    x = 1\n" * MAX_LINES, encoding="utf-8")
    assert long_functions(path) == [("f", MAX_LINES + 1)]
