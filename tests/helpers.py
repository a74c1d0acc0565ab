"""The tests' shared setup: a config from TOML text; the tiny analysis of a checkpoint (in the
fixtures, the session's tiny GPT-2), with overrides, run through the real pipeline; the fast
``[analysis]`` table of the command-line tests."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from headreport.analysis.config import Config, config_from_dict
from headreport.analysis.pipeline import run_analysis

#: Fast analysis settings for command-line runs whose numbers no test reads.
FAST_ANALYSIS = """
[analysis]
top_k = 5
n_directions = 1
bootstrap_resamples = 100
ov_mode = "sampled"
ov_sample_size = 50
"""


def tiny_toml(checkpoint: Path | str) -> str:
    """The tiny analysis as TOML: heads 1.3 and 0.1 of ``checkpoint``, prompts off, fast sampled ranks."""
    return f"""
heads = ["1.3", "0.1"]
prompts = "off"
[model]
name = "{checkpoint}"
device = "cpu"
[analysis]
top_k = 10
bootstrap_resamples = 1000
ov_mode = "sampled"
ov_sample_size = 500
"""


def config_of(text: str, **replace: Any) -> Config:
    """The :class:`Config` a TOML text reads as (``config_from_dict(tomllib.loads(text))``), with the
    fields ``replace`` names replaced."""
    return config_from_dict(tomllib.loads(text)).replace(**replace)


def tiny_config(checkpoint: Path | str, **overrides: Any) -> Config:
    """:func:`tiny_toml` of ``checkpoint`` with ``overrides`` in the TOML's terms: a dict merges into
    the table of its name (``analysis={"top_k": 5}``), any other value replaces the key
    (``heads=["1.3"]``, ``output_dir="..."``); validated like a config file."""
    raw = tomllib.loads(tiny_toml(checkpoint))
    for key, value in overrides.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(raw)


def artifacts_of(config: Config, folder: Path) -> Path:
    """Run the analysis of ``config`` (``run_analysis``, the pipeline of ``headreport analyze``)
    into ``folder``, quietly; ``folder``."""
    run_analysis(config, folder, progress=False, log=lambda m: None)
    return folder


def analysed(out: Path, checkpoint: Path | str, **overrides: Any) -> Path:
    """The tiny analysis of ``checkpoint`` with ``overrides`` (:func:`tiny_config`; ``output_dir``
    is ``out`` unless overridden), run into ``out/artifacts``; that folder."""
    return artifacts_of(tiny_config(checkpoint, **{"output_dir": str(out), **overrides}), out / "artifacts")
