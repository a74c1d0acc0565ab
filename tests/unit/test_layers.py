"""The data flows one way, and the imports say so:

* ``analysis/`` imports neither ``report`` nor ``headreport`` (it knows tensors, never HTML);
* ``report/`` imports from ``analysis`` only the shared base — config, errors, artifact I/O —
  and never ``headreport``;
* no module of ``report/`` imports another lazily to dodge a cycle: the import graph inside each
  package has no cycle.

Every import statement counts, at module level or inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED_BASE = {"analysis.config", "analysis.errors", "analysis.artifacts"}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports_of(name: str, path: Path) -> set[str]:
    """Absolute names of every module ``name`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                prefix = ".".join(base)
                mod = f"{prefix}.{node.module}" if node.module else prefix
            else:
                mod = node.module or ""
            found.add(mod)
            found |= {f"{mod}.{alias.name}" for alias in node.names}  # `from . import charts`
    return found


def first_party(names: set[str], roots: tuple[str, ...]) -> set[str]:
    return {n for n in names if n.split(".")[0] in roots}


@pytest.mark.parametrize("name, path", sorted(modules("analysis").items()))
def test_analysis_imports_neither_report_nor_the_cli(name, path):
    bad = first_party(imports_of(name, path), ("report", "headreport"))
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name, path", sorted(modules("report").items()))
def test_report_imports_only_the_shared_base_of_analysis(name, path):
    imported = imports_of(name, path)
    assert not first_party(imported, ("headreport",)), name
    from_analysis = {n for n in first_party(imported, ("analysis",))}
    bad = {n for n in from_analysis if not any(n == b or n.startswith(b + ".") for b in SHARED_BASE)}
    assert not bad, f"{name} imports {sorted(bad)} (report/ may use only {sorted(SHARED_BASE)})"


@pytest.mark.parametrize("package", ["analysis", "report"])
def test_no_import_cycle_inside_a_package(package):
    mods = modules(package)
    graph = {name: {m for m in first_party(imports_of(name, path), (package,)) if m in mods and m != name}
             for name, path in mods.items()}
    # a package's __init__ importing its submodules is not a cycle of theirs
    for name in graph:
        graph[name].discard(package)
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' → '.join(trail + [node, nxt])}")
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_the_checker_sees_a_forbidden_import(tmp_path):
    """The test above can fail: a module importing report from analysis is reported."""
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from report.render import render\n", encoding="utf-8")
    assert first_party(imports_of("analysis.x", path), ("report",)) == {"report.render", "report.render.render"}
