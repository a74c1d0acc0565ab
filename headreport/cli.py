"""The ``headreport`` command line.

Exit codes (what :func:`main` returns; argparse's own exits are 0 for ``--help`` and 2 for a usage error):

* 0 — done;
* 1 — internal error (a bug): the only case that prints a traceback;
* 2 — bad input or environment: the config, a flag, the model unavailable, bad or foreign artifacts, an
  output folder that is not ours or is locked by another headreport, and an environment failure of the
  machine (:data:`ENVIRONMENT_ERRORS`: a full disk, a name too long, a read-only file system...);
* 130 — interrupted (Ctrl-C, SIGINT);
* 143 — terminated (SIGTERM, e.g. by ``timeout`` or a cancelled CI job), when ``main`` runs in the main
  thread (elsewhere no handler can be installed and the signal ends the process as usual).

Every error prints one clear message; nothing is half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

from headreport.analysis.artifacts import check_artifacts_owned, package_versions
from headreport.analysis.config import Config, apply_overrides, load_config, parse_heads
from headreport.analysis.errors import UserError
from headreport.analysis.inputs import preflight as checks
from headreport.analysis.inputs.text import check_output_target, check_path_text, shown

DEFAULT_CONFIG = "report.toml"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML config (default: ./{DEFAULT_CONFIG} if present, else the built-in defaults)")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="model to load: a TransformerLens/HF name, a local checkpoint folder or a bundled id "
                        "(overrides model.name)")
    p.add_argument("--head", metavar="L.H", action="append",
                   help="head to analyse, e.g. 10.7; repeat for several (overrides heads)")
    p.add_argument("--out", metavar="DIR", help="output folder (overrides output_dir); artifacts go to DIR/artifacts")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command-line flags applied on top (one
    :func:`analysis.config.apply_overrides`, so a flag is validated like its config key)."""
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    config = load_config(path)
    if args.head:
        config = config.replace(heads=parse_heads(args.head, key="--head"))
    return apply_overrides(config, {
        "model.name": args.model,
        "output_dir": args.out,
        "survey.mode": getattr(args, "mode", None),
        "survey.sample_size": getattr(args, "sample_size", None),
        "survey.analyze_top": getattr(args, "analyze_top", None),
    })


def _log(message: str) -> None:
    """Progress messages go to stderr; stdout carries only the paths written."""
    print(message, file=sys.stderr)


def _print_paths(paths: list[Path]) -> None:
    for path in paths:
        print(path)


def artifacts_dir(config: Config) -> Path:
    """``output_dir/artifacts``, checked writable, and holding no file of the names headreport writes
    that it did not write, before any heavy work (nothing is created yet)."""
    out = Path(config.output_dir) / "artifacts"
    check_output_target(out, UserError, "--out" if config.output_dir else "output_dir")
    check_artifacts_owned(out)
    return out


def preflight(config: Config) -> Path:
    """Every check that needs no torch, before torch is imported (a bad input fails in a second or
    two): the output folder, the word lists and prompts, the checkpoint (family, headers, shapes,
    finiteness). Returns the artifacts folder."""
    out = artifacts_dir(config)
    checks.preflight(config)  # loading the model reuses the checkpoint's check
    return out


#: the lock file of an output folder (:func:`output_lock`)
LOCK = ".headreport-lock"


@contextlib.contextmanager
def output_lock(root: Path, key: str = "--out") -> Iterator[None]:
    """One headreport at a time writes into an output folder: ``root/.headreport-lock`` is held with
    ``flock`` while the command runs (the system releases it when the process ends, SIGKILL too) and
    removed when the command ends, so it leaves nothing behind. A second command on the same folder
    stops at once (exit 2) instead of silently replacing the first one's report. (A lock taken on a
    lock file that a finishing command removed meanwhile is taken again on the new file.)"""
    created = not root.exists()
    path = root / LOCK
    try:
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(10):
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
                os.close(fd)
                raise UserError(f"{key}: another headreport (pid {holder}) is writing into {shown(str(root))}; "
                                "wait for it to finish, or choose another --out") from None
            mine, now = os.fstat(fd), os.stat(path, follow_symlinks=False) if path.exists() else None
            if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
                break
            os.close(fd)  # the file was removed by a command that just finished: lock the new one
        else:
            raise UserError(f"{key}: cannot take the lock {shown(str(path))} (it keeps being replaced)")
    except OSError as exc:
        raise UserError(f"{key}: cannot create the lock file {shown(str(path))} ({exc.strerror or exc})") from None
    try:
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
            if created and not any(root.iterdir()):
                root.rmdir()
        os.close(fd)


def cmd_analyze(args: argparse.Namespace) -> int:
    config = resolve_config(args)  # before torch is imported: a config error takes well under a second
    out = preflight(config)
    from headreport.analysis.pipeline import run_analysis  # noqa: PLC0415 (torch: only after the input is checked)

    with output_lock(out.parent):
        _print_paths(run_analysis(config, out, progress=not args.no_progress, log=_log))
    return 0


def _add_survey_options(p: argparse.ArgumentParser) -> None:
    _add_run_options(p)
    p.add_argument("--mode", choices=("sampled", "exact"),
                   help="rank a seeded sample of tokens (default) or every token (GPU) (overrides survey.mode)")
    p.add_argument("--sample-size", type=int, metavar="N",
                   help="tokens ranked per head in sampled mode (overrides survey.sample_size)")
    p.add_argument("--analyze-top", type=int, metavar="N",
                   help="then analyse the N most copy-suppression-like heads in full (overrides survey.analyze_top)")


def cmd_survey(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    out = preflight(config)
    from headreport.analysis.survey import run_survey  # noqa: PLC0415 (torch: only after the input is checked)

    with output_lock(out.parent):
        _print_paths(run_survey(config, out, progress=not args.no_progress, log=_log))
    return 0


def _add_render_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifacts", metavar="DIR", default="build/artifacts",
                   help="artifacts folder to read (default: build/artifacts)")
    p.add_argument("--out", metavar="DIR", default="build",
                   help="output folder: site/, pdf/, figures/, tables/ are written here (default: build)")
    _add_report_options(p)


def _add_report_options(p: argparse.ArgumentParser) -> None:
    """The options of rendering the report: its engine, its outputs and the output folder's ownership."""
    _add_engine_option(p)
    _add_output_options(p)


def _add_engine_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", choices=("auto", "quarto", "pandoc"), default="auto",
                   help="auto (default): quarto when on PATH, else pandoc (HTML) + typst (PDF)")


def _add_output_options(p: argparse.ArgumentParser) -> None:
    """What the report writes (``--standalone``) and whether it may write over files it did not write
    (``--force``)."""
    p.add_argument("--standalone", action="store_true",
                   help="also write site/report.html: the whole report in one self-contained HTML file")
    p.add_argument("--force", action="store_true",
                   help="write into output folders that hold files headreport did not write (same-named "
                        "files are overwritten; nothing the tool did not write is ever deleted)")


def _add_build_options(p: argparse.ArgumentParser) -> None:
    _add_run_options(p)
    _add_report_options(p)


def _print_report(manifest: dict) -> None:
    print(manifest["site"])
    print(manifest["pdf"])
    if manifest.get("up_to_date"):
        print(f"engine: {manifest['engine']}; up to date, nothing rendered", file=sys.stderr)
    else:
        print(f"engine: {manifest['engine']}; {manifest['seconds']['total']:.1f} s", file=sys.stderr)


def cmd_render(args: argparse.Namespace) -> int:
    check_path_text(str(args.artifacts), "--artifacts", UserError)
    check_path_text(str(args.out), "--out", UserError)
    check_output_target(Path(args.out), UserError)
    from headreport.report.render import render  # noqa: PLC0415 (the report stack: only after the flags are checked)

    with output_lock(Path(args.out)):
        _print_report(render(args.artifacts, args.out, engine=args.engine, log=_log, force=args.force,
                             standalone=args.standalone))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    config = resolve_config(args)
    artifacts_dir(config)  # the output folder is checked before anything heavy
    from .build import build  # noqa: PLC0415 (the report stack, torch-free: only after the config is checked)

    with output_lock(Path(config.output_dir)):
        _print_report(build(config, engine=args.engine, progress=not args.no_progress,
                            log=_log, force=args.force, standalone=args.standalone))
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "analyze": (_add_run_options, cmd_analyze, "compute every analysis of the configured heads into JSON artifacts"),
    "render": (_add_render_options, cmd_render,
               "render the HTML site, the PDF and the figures from existing artifacts"),
    "build": (_add_build_options, cmd_build,
              "analyse (only if the config, weights or analysis code changed) and render"),
    "survey": (_add_survey_options, cmd_survey,
               "cheap statistics for every head and a copy-suppression ranking, into survey.json"),
}


def version_text() -> str:
    """``headreport X (TransformerLens Y, torch Z)``, read from the installed metadata (no torch import)."""
    versions = package_versions(["headreport", "transformer-lens", "torch"])
    return "headreport {} (TransformerLens {}, torch {})".format(*versions.values())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headreport",
        description="Weights-based analysis of attention heads, as JSON artifacts and an HTML/PDF report.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print the versions of headreport, TransformerLens and torch, and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_options, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_options(p)
        p.set_defaults(func=func)
    return parser


#: failures of the machine, not of headreport: errno → what to do about it
ENVIRONMENT_ERRORS = {
    errno.ENOSPC: "no space left on the device; free some space (or choose another --out) and run again",
    errno.EDQUOT: "the disk quota is exhausted; free some space (or choose another --out) and run again",
    errno.ENAMETOOLONG: "a path or a name in it is too long for the file system; choose a shorter one",
    errno.EROFS: "the file system is read-only; choose an --out you can write to",
    errno.EACCES: "permission denied; choose an --out you can write to",
    errno.EIO: "an input/output error of the device",
}


def environment_error(exc: OSError) -> str | None:
    """One line for an environment failure (a full disk, a name too long...): what failed, where, and
    what to do; nothing half-written is left (every write goes through a temp file). None for other
    errors (a bug)."""
    advice = ENVIRONMENT_ERRORS.get(exc.errno)
    if advice is None:
        return None
    where = f" writing {shown(str(exc.filename), 160)}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}: {advice}; nothing half-written was left behind"


class Terminated(KeyboardInterrupt):
    """SIGTERM (a `timeout`, a cancelled CI job), raised where the process is, so that the same
    clean-up as for Ctrl-C runs: temp files and staging folders are removed, nothing half-written."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    # Idle OpenMP threads sleep instead of spinning (read when torch loads, so before any import of
    # it): on a busy 2-core machine spinning threads steal the core their partner needs and a run
    # gets several times slower; on an idle one the cost is negligible. An explicit setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = (signal.signal(signal.SIGTERM, _on_sigterm)
                if threading.current_thread() is threading.main_thread() else None)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"headreport: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("headreport: terminated (SIGTERM); nothing half-written was left behind", file=sys.stderr)
        return 143
    except OSError as exc:
        message = environment_error(exc)
        if message is None:
            traceback.print_exc()
            print("headreport: internal error (a bug): please report it with the traceback above", file=sys.stderr)
            return 1
        print(f"headreport: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headreport: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("headreport: internal error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
