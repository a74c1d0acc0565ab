"""``headreport build``: analyse (only when needed), then render.

The artifacts in ``<out>/artifacts`` are reused when ``model.json`` exists, every head artifact
loads, and all three inputs recorded in its provenance match the current ones:

* the config (everything except ``output_dir``, which does not change a result);
* the sha256 of each weight file of the model (local folders, hub snapshots, and the file a
  bundled model ships in);
* ``analysis_code_sha256``, the digest of the analysis package's source and data.

Hashing the weights reads the files but loads no model, so an unchanged build costs seconds. If the
model cannot be found (offline, no cached GPT-2 weights), the analysis engine's own message stops
the build, exactly as ``headreport analyze`` would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from analysis.artifacts import ArtifactError, canonical, load_artifacts
from analysis.config import Config
from report.outputs import foreign_files


def _comparable_config(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in canonical(config).items() if k != "output_dir"}


def current_weights_sha256(config: Config) -> dict[str, str] | None:
    """sha256 of the configured model's weight files (see :func:`analysis.models.weights_sha256`)."""
    from analysis.models import weights_sha256

    return weights_sha256(config.model)


def stale_reason(config: Config, artifacts_dir: Path) -> str | None:
    """Why the artifacts must be recomputed, or None when they are up to date."""
    from analysis.pipeline import analysis_code_digest

    if not (artifacts_dir / "model.json").exists():
        return "no artifacts yet"
    try:
        arts = load_artifacts(artifacts_dir)
    except ArtifactError as exc:
        return f"existing artifacts unusable ({exc})"
    model = arts["model"]
    if _comparable_config(model["config"]) != _comparable_config(config.to_dict()):
        return "the config changed"
    if model["provenance"]["analysis_code_sha256"] != analysis_code_digest():
        return "the analysis code changed"
    if model["provenance"].get("weights_sha256") != current_weights_sha256(config):
        return "the model weights changed"
    return None


def build(config: Config, engine: str = "auto", progress: bool = True,
          log: Callable[[str], None] = print, force: bool = False) -> dict[str, Any]:
    """Analyse if :func:`stale_reason` says so, then :func:`report.render.render`. Returns the
    render manifest plus ``analysed`` (bool) and ``analysis_reason``."""
    from analysis.pipeline import run_analysis
    from report.render import render

    out = Path(config.output_dir)
    artifacts_dir = out / "artifacts"
    foreign_files(out, force)  # an output folder that is not ours is refused before the analysis
    reason = stale_reason(config, artifacts_dir)
    if reason is not None:
        log(f"analysing: {reason}")
        run_analysis(config, artifacts_dir, progress=progress, log=log)
    else:
        log("artifacts are up to date (same config, weights and analysis code): skipping the analysis")
    manifest = render(artifacts_dir, out, engine=engine, log=log, force=force)
    manifest["analysed"] = reason is not None
    manifest["analysis_reason"] = reason
    return manifest
