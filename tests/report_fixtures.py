"""Session fixtures for the report tests (loaded by conftest's ``pytest_plugins``): one end-to-end
build of the tiny checkpoint, one render of a hostile-token copy of its artifacts, and a headless
Chromium. Every report test reuses these, so the suite builds the report exactly twice."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from headreport.cli import main
from headreport.report.render import render
from tests.checkpoints import make_copy_suppression_checkpoint

#: Token strings that would execute, restyle or break a page if any target failed to escape them.
HOSTILE_TOKENS = [
    "<script>alert(1)</script>", "</div>", "*a*", "#set page(width: 1pt)", "$x$", "\\", "@fig",
    "{{ x }}", "<|endoftext|>", "\n",
]
#: A token whose bytes are half a UTF-8 character (U+2014 is e2 80 94): shown as hex.
PARTIAL_UTF8 = {"token": " \ufffd", "bytes_hex": "20e280"}


@pytest.fixture(scope="session")
def report_build(tmp_path_factory, tiny_config_text) -> Path:
    """``headreport build`` (analysis + render, pandoc engine) of the tiny checkpoint; the out dir."""
    root = tmp_path_factory.mktemp("report_build")
    config = root / "tiny.toml"
    config.write_text(tiny_config_text, encoding="utf-8")
    out = root / "build"
    assert main(["build", "--config", str(config), "--out", str(out), "--no-progress", "--engine", "pandoc"]) == 0
    return out


def reseal(folder: Path, add: tuple[str, ...] = ()) -> None:
    """Record the current sha256 of every file the artifact manifest lists (and of ``add``, which
    joins the set): for tests that edit or assemble artifact sets by hand to reach a check behind
    the manifest's (render refuses a changed file and reads no unlisted one)."""
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                         for name in [*manifest["files"], *add] if (folder / name).is_file()}
    path.write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n", encoding="utf-8")


def hostile_copy(src: Path, dst: Path) -> Path:
    """A copy of an artifacts folder whose first head's top tokens are :data:`HOSTILE_TOKENS`.

    Rewritten: the query side of the effective circuit's first direction, the top W_U tokens of the
    squared-cosine ranking (both reach prose, tables, charts and CSV), a half-UTF-8 W_EE token
    and one name's word and token. The
    documents stay schema-valid (checked by ``load_artifacts`` when the report reads them)."""
    shutil.copytree(src, dst)
    model = json.loads((dst / "model.json").read_text(encoding="utf-8"))
    path = dst / f"head_{model['results']['heads'][0]}.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    r = doc["results"]
    for tokens in (r["singular_directions"]["effective_qk"][0]["query"], r["squared_cosine"]["w_u"]):
        assert len(tokens) >= len(HOSTILE_TOKENS)
        for tok, text in zip(tokens, HOSTILE_TOKENS):
            tok.pop("bytes_hex", None)
            tok["token"] = text
    r["squared_cosine"]["w_ee"][0].update(PARTIAL_UTF8)
    r["subspace_alignment"]["groups"]["names"]["words"][0].update(word="<b>Bold</b>", token="<i>")
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=1), encoding="utf-8")
    reseal(dst)
    return dst


@pytest.fixture(scope="session")
def hostile_artifacts(tmp_path_factory, tiny_artifacts) -> Path:
    return hostile_copy(tiny_artifacts, tmp_path_factory.mktemp("hostile") / "artifacts")


@pytest.fixture(scope="session")
def hostile_build(hostile_artifacts) -> tuple[Path, dict]:
    """The hostile artifacts rendered with the pandoc engine: (out dir, manifest)."""
    out = hostile_artifacts.parent / "build"
    return out, render(hostile_artifacts, out, engine="pandoc")


def skip_unless_ci(reason: str) -> None:
    """Skip on a developer's machine that lacks a tool; in CI (``CI`` set) a missing tool is a failure,
    so a broken install step cannot hide behind skipped tests."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: .ci/run must install it")
    pytest.skip(reason)


def pdf_text(pdf: Path) -> str:
    if not shutil.which("pdftotext"):
        skip_unless_ci("pdftotext (poppler-utils) is not installed")
    return subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout


def compile_latex(folder: Path, inputs: list[str]) -> Path:
    """One pdflatex run over ``folder/doc.tex``: an article loading booktabs and headreport (its
    ``headreport.sty`` must be in ``folder``) that ``\\input``s each of ``inputs``, a page each (so
    floats never pile up). No shell escape; the first error stops it and fails the test. The PDF."""
    exe = shutil.which("pdflatex")
    if not exe:
        skip_unless_ci("pdflatex (texlive-latex-base) is not installed")
    body = "".join(f"\\input{{{name}}}\n\\clearpage\n" for name in inputs)
    (folder / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage{headreport}\n"
                                    f"\\begin{{document}}\n{body}\\end{{document}}\n", encoding="ascii")
    proc = subprocess.run([exe, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
                          cwd=folder, capture_output=True, text=True, errors="replace", timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return folder / "doc.pdf"


def pdflatex_view(text: str) -> str:
    """What pdftotext reads back of monospace ``text`` typeset by pdflatex with the default fonts:
    ``headreport.sty``'s ``<U+XXXX>`` for a character outside ASCII but ``␣`` (a glyph of the font),
    and curly quotes for the typewriter font's quote and backquote."""
    shown = {"'": "\u2019", "`": "\u2018", "\u2423": "\u2423"}
    return "".join(shown.get(ch, ch if ch.isascii() else f"<U+{ord(ch):04X}>") for ch in text)


def pdf_pages(pdf: Path) -> int:
    if not shutil.which("pdfinfo"):
        skip_unless_ci("pdfinfo (poppler-utils) is not installed")
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright (no downloaded browser); skipped if absent."""
    try:
        import playwright.sync_api as playwright_api  # noqa: PLC0415 (optional: skipped without it)
    except ImportError:
        skip_unless_ci("the playwright package is not installed (the dev extra has it)")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        skip_unless_ci("chromium is not installed (CI installs the Debian package)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="session")
def everywhere_checkpoint(tmp_path_factory) -> tuple[Path, dict]:
    """The small-vocabulary checkpoint whose head 1.2 is copy suppression for every token."""
    return make_copy_suppression_checkpoint(tmp_path_factory.mktemp("everywhere_ckpt"))


def everywhere_config(folder: Path, extra: str = "") -> str:
    """Exact ranks (so the explorer's lists are collected) of heads 1.2 (planted) and 0.1 (dead)."""
    return f"""
heads = ["1.2", "0.1"]
compare = [["1.2", "0.1"]]
[model]
name = "{folder}"
device = "cpu"
[effective_embedding]
variant = "residual"
[analysis]
ov_mode = "exact"
bootstrap_resamples = 200
{extra}"""


@pytest.fixture(scope="session")
def explorer_build(tmp_path_factory, everywhere_checkpoint) -> Path:
    """``headreport build --standalone`` of the copy-suppression-everywhere checkpoint; the out dir."""
    root = tmp_path_factory.mktemp("explorer_build")
    config = root / "everywhere.toml"
    config.write_text(everywhere_config(everywhere_checkpoint[0]), encoding="utf-8")
    out = root / "build"
    assert main(["build", "--config", str(config), "--out", str(out), "--no-progress", "--engine", "pandoc",
                 "--standalone"]) == 0
    return out
