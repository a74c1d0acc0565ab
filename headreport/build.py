"""``headreport build``: analyse only when an input changed, then render only what changed.

The artifacts in ``<out>/artifacts`` are reused when their set is complete — the manifest
(``manifest.json``, written last) lists ``model.json`` and every configured head's file, each with
the sha256 it was written with — and the staleness key recorded there equals the current one
(:mod:`analysis.staleness`: the config, the analysis code, both word lists' contents, every file of
the checkpoint). Computing the key loads no model and re-hashes only files whose size or time
changed. If the model cannot be found (offline, no cached weights), the analysis engine's own
message stops the build, exactly as ``headreport analyze`` would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from headreport.analysis.artifacts import (
    check_artifacts_owned,
    head_filename,
    read_manifest,
    sha256_file,
)
from headreport.analysis.config import Config
from headreport.analysis.inputs.preflight import preflight
from headreport.analysis.staleness import changed_inputs, input_key
from headreport.report import render as rendering
from headreport.report.outputs import check_output_dir, foreign_files


def stale_reason(config: Config, artifacts_dir: Path) -> str | None:
    """Why the artifacts must be recomputed, or None when they are up to date."""
    if not (artifacts_dir / "model.json").exists():
        return "no artifacts yet"
    manifest = read_manifest(artifacts_dir)
    if manifest is None:
        return "the artifact set has no manifest (an interrupted write, or artifacts from elsewhere)"
    needed = ["model.json", *(head_filename(h.label) for h in config.analysed_heads),
              *(["prompts.json"] if config.prompts != "off" else [])]
    for name in dict.fromkeys([*needed, *manifest["files"]]):
        recorded = manifest["files"].get(name)
        path = artifacts_dir / name
        if recorded is None or not path.is_file() or sha256_file(path) != recorded:
            return f"the artifact set is incomplete or changed ({name})"
    old = manifest["inputs"]
    reasons = changed_inputs(old, input_key(config, cache=old.get("checkpoint_files")))
    return "; ".join(reasons) if reasons else None


def build(config: Config, engine: str = "auto", progress: bool = True,
          log: Callable[[str], None] = print, force: bool = False, standalone: bool = False) -> dict[str, Any]:
    """Analyse if :func:`stale_reason` says so, then :func:`report.render.render`. Returns the
    render manifest plus ``analysed`` (bool) and ``analysis_reason``."""
    out = Path(config.output_dir)
    artifacts_dir = out / "artifacts"
    check_output_dir(out)
    foreign_files(out, force)  # an output folder that is not ours is refused before the analysis
    check_artifacts_owned(artifacts_dir)
    reason = stale_reason(config, artifacts_dir)
    if reason is not None:
        preflight(config)  # bad word lists, prompts or checkpoints fail before torch is imported
        from headreport.analysis.pipeline import run_analysis  # noqa: PLC0415 (torch and the model only when analysing)

        log(f"analysing: {reason}")
        run_analysis(config, artifacts_dir, progress=progress, log=log)
    else:
        log("artifacts are up to date (same config, code, word lists and model files): skipping the analysis")
    manifest = rendering.render(artifacts_dir, out, engine=engine, log=log, force=force, standalone=standalone)
    manifest["analysed"] = reason is not None
    manifest["analysis_reason"] = reason
    return manifest
