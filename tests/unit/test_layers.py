"""The data flows one way, and the imports say so:

* ``analysis/`` (installed as ``headreport.analysis``) imports neither ``headreport.report`` nor the
  command-line layer (``headreport``'s own modules): it knows tensors, never HTML;
* ``report/`` (``headreport.report``) imports from ``headreport.analysis`` only the shared base —
  config, errors, artifact I/O and the explorer payload's codec — and never the command-line layer;
* no module of ``report/`` imports another lazily to dodge a cycle: the import graph inside each
  package has no cycle;
* the front end (``analysis/inputs/``, ``analysis/model/``) is torch-free at module level, except the
  model loader: a bad input is refused before torch is imported.

Every import statement counts, at module level or inside a function (module level only for torch).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANALYSIS, REPORT = "headreport.analysis", "headreport.report"
SHARED_BASE = {f"{ANALYSIS}.config", f"{ANALYSIS}.errors", f"{ANALYSIS}.artifacts", f"{ANALYSIS}.explorer_codec"}
#: each installed package and the folder it lives in (pyproject's package-dir)
FOLDERS = {ANALYSIS: "analysis", REPORT: "report", "headreport": "headreport"}
#: the model loaders: of files (loader) and of a model object in memory (memory)
TORCH_AT_MODULE_LEVEL = {f"{ANALYSIS}.model.loader", f"{ANALYSIS}.model.memory"}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / FOLDERS[package]).rglob("*.py")):
        parts = list(path.relative_to(ROOT / FOLDERS[package]).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def is_cli(name: str) -> bool:
    """The command-line layer: ``headreport`` and its own modules, not the two stages under it."""
    return name.split(".")[0] == "headreport" and not any(name == p or name.startswith(p + ".")
                                                            for p in (ANALYSIS, REPORT))


def under(names: set[str], package: str) -> set[str]:
    return {n for n in names if n == package or n.startswith(package + ".")}


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


@pytest.mark.parametrize("name, path", sorted(modules(ANALYSIS).items()))
def test_analysis_imports_neither_report_nor_the_cli(name, path):
    imported = imports_of(name, path)
    bad = under(imported, REPORT) | {n for n in imported if is_cli(n)}
    assert not bad, f"{name} imports {sorted(bad)}"


@pytest.mark.parametrize("name, path", sorted(modules(REPORT).items()))
def test_report_imports_only_the_shared_base_of_analysis(name, path):
    imported = imports_of(name, path)
    assert not {n for n in imported if is_cli(n)}, name
    bad = {n for n in under(imported, ANALYSIS) if not any(n == b or n.startswith(b + ".") for b in SHARED_BASE)}
    assert not bad, f"{name} imports {sorted(bad)} (report/ may use only {sorted(SHARED_BASE)})"


def module_level_imports(path: Path) -> set[str]:
    """Names imported by statements that run when the module is imported (not inside a function)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and not child.level:
                found.add(child.module or "")
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


FRONT_END = {n: p for n, p in modules(ANALYSIS).items()
             if n.startswith((f"{ANALYSIS}.inputs", f"{ANALYSIS}.model"))}


@pytest.mark.parametrize("name, path", sorted(FRONT_END.items()))
def test_the_front_end_imports_torch_only_in_the_model_loader(name, path):
    heavy = {n for n in module_level_imports(path) if n.split(".")[0] in ("torch", "transformers", "transformer_lens")}
    if name in TORCH_AT_MODULE_LEVEL:
        assert "torch" in heavy  # the check below sees a module-level torch import
    else:
        assert not heavy, f"{name} imports {sorted(heavy)} at module level"


def test_the_front_end_is_found():
    assert {f"{ANALYSIS}.inputs.preflight", f"{ANALYSIS}.model.sources"} <= set(FRONT_END)
    assert TORCH_AT_MODULE_LEVEL <= set(FRONT_END)


@pytest.mark.parametrize("package", [ANALYSIS, REPORT])
def test_no_import_cycle_inside_a_package(package):
    mods = modules(package)
    graph = {name: {m for m in under(imports_of(name, path), package) if m in mods and m != name}
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
    """The tests above can fail: a lazy import of report from analysis is reported, and a module-level
    torch import in the front end is seen (a function-level one is not module level)."""
    path = tmp_path / "x.py"
    path.write_text("import os\nif os:\n    import torch.nn\n"
                    "def f():\n    from headreport.report.render import render\n    import transformers\n",
                    encoding="utf-8")
    assert under(imports_of(f"{ANALYSIS}.x", path), REPORT) == {f"{REPORT}.render", f"{REPORT}.render.render"}
    assert module_level_imports(path) == {"os", "torch.nn"}


TEST_MODULES = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in sorted((ROOT / "tests").rglob("*.py"))}


@pytest.mark.parametrize("name, path", sorted({**modules(ANALYSIS), **modules(REPORT), **modules("headreport"),
                                               **TEST_MODULES}.items()))
def test_nothing_imports_the_folders_as_top_level_packages(name, path):
    """``analysis`` and ``report`` exist only as ``headreport.analysis`` / ``headreport.report``: a
    checkout's root on sys.path would otherwise load a second copy of them (or a user's own)."""
    absolute = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            absolute |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            absolute.add(node.module or "")
    bad = {n for n in absolute if n.split(".")[0] in ("analysis", "report")}
    assert not bad, f"{name} imports {sorted(bad)}"
