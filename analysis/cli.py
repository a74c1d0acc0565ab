"""The ``headreport`` command line.

Exit codes: 0 ok; 2 bad input (config, flags, model unavailable, bad artifacts); 1 internal error;
130 interrupted. Errors print one clear message, no traceback; nothing is half-written.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import traceback
from pathlib import Path
from typing import Callable

from .config import Config, HeadRef, load_config
from .errors import ConfigError, UserError

DEFAULT_CONFIG = "report.toml"


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE",
                   help=f"TOML config (default: ./{DEFAULT_CONFIG} if present, else the built-in defaults)")
    p.add_argument("--model", metavar="NAME_OR_PATH",
                   help="model to load: a TransformerLens/HF name, a local checkpoint folder or a bundled id (overrides model.name)")
    p.add_argument("--head", metavar="L.H", action="append",
                   help="head to analyse, e.g. 10.7; repeat for several (overrides heads)")
    p.add_argument("--out", metavar="DIR", help="output folder (overrides output_dir); artifacts go to DIR/artifacts")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def resolve_config(args: argparse.Namespace) -> Config:
    """The config file (or defaults) with the command-line flags applied on top."""
    path = args.config
    if path is None and Path(DEFAULT_CONFIG).is_file():
        path = DEFAULT_CONFIG
    config = load_config(path)
    changes = {}
    if args.model:
        changes["model"] = dataclasses.replace(config.model, name=args.model)
    if args.head:
        heads = tuple(HeadRef.parse(h, key="--head") for h in args.head)
        if len(set(heads)) != len(heads):
            raise ConfigError(f"--head: duplicate head in {args.head}")
        changes["heads"] = heads
    if args.out:
        changes["output_dir"] = args.out
    return config.replace(**changes) if changes else config


def artifacts_dir(config: Config) -> Path:
    return Path(config.output_dir) / "artifacts"


def cmd_analyze(args: argparse.Namespace) -> int:
    from .pipeline import run_analysis

    config = resolve_config(args)
    out = artifacts_dir(config)
    written = run_analysis(config, out, progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))
    for path in written:
        print(path)
    return 0


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "analyze": (_add_run_options, cmd_analyze, "compute every analysis of the configured heads into JSON artifacts"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="headreport",
        description="Weights-based analysis of attention heads, as JSON artifacts and an HTML/PDF report.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_options, func, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_options(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"headreport: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("headreport: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("headreport: internal error (a bug): please report it with the traceback above", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
