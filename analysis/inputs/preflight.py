"""The checks the inputs get before anything heavy (no torch): the word lists and prompts, where the weights are, the
family (unsupported ones refused from config.json), the checkpoint's integrity (headers, shapes,
finiteness: :mod:`analysis.checkpoint`) and the files' hashes for the staleness key. The command
line runs them before importing torch, so bad input fails in a second or two; loading the model
runs them again, reusing the result while no file has changed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..config import Config, ModelConfig
from ..model.bundled import BUNDLED_FILES
from ..model.checkpoint import WEIGHT_SUFFIXES, check_checkpoint, checkpoint_files
from ..model.families import read_checkpoint_config, refuse_unsupported
from ..model.gguf import gguf_file, gguf_provenance, is_gguf_name
from ..model.sources import checkpoint_folder
from ..staleness import checkpoint_digest, file_hashes
from .prompt_files import load_prompts
from .words import load_word_list

#: (name, revision) → (the files' stat signature, the result): the CLI checks a checkpoint before
#: importing torch, and loading it then reuses that check unless a file changed in between
_resolved: dict[tuple[str, str | None], tuple[tuple, tuple[Path, dict[str, Any], dict[str, Any]]]] = {}


def resolve_source(model_cfg: ModelConfig) -> tuple[Path | None, dict[str, Any], dict[str, Any]]:
    """Where the weights are (a local folder, a GGUF file, or None for a bundled model), the provenance of that
    source and the file hashes of the staleness key — before anything heavy (no torch): an
    unsupported family is refused from config.json, a damaged or mismatched checkpoint by
    :mod:`analysis.checkpoint`, a damaged GGUF by its header (:func:`analysis.model.gguf.gguf_provenance`).
    The result is kept while no file changes, so loading after the CLI's check hashes nothing again."""
    provenance: dict[str, Any] = {"requested_name": model_cfg.name}
    if model_cfg.name in BUNDLED_FILES:
        path = BUNDLED_FILES[model_cfg.name]()
        hashes = file_hashes([path]) if path is not None else {}
        return None, provenance, hashes
    gguf = is_gguf_name(model_cfg.name)
    if gguf:
        folder, source = gguf_file(model_cfg.name, model_cfg.revision), {}
        files = [folder]
    else:
        folder, source = checkpoint_folder(model_cfg)  # the staleness key finds the files the same way
        files = checkpoint_files(folder)
    stats = [p.stat() for p in files]
    signature = tuple((str(p), st.st_size, st.st_mtime_ns) for p, st in zip(files, stats, strict=True))
    memo = _resolved.get((model_cfg.name, model_cfg.revision))
    if memo is not None and memo[0] == signature:
        return copy.deepcopy(memo[1])
    if gguf:  # the header checked and summarised: architecture, quantisation types
        provenance.update(gguf_provenance(folder))
        folder = folder.resolve()
    else:
        provenance.update(source)
        config = read_checkpoint_config(folder)
        refuse_unsupported(config, repr(str(folder)))
        check_checkpoint(folder, config)
    hashes = file_hashes(files)
    # by the checkpoint's file names: in the hub cache a snapshot's files are links to blobs named by hash
    provenance["weights_sha256"] = {p.name: hashes[str(p.resolve())]["sha256"] for p in files
                                    if p.name.endswith(WEIGHT_SUFFIXES)}
    provenance["checkpoint_sha256"] = checkpoint_digest(hashes)
    result = (folder, provenance, hashes)
    _resolved[(model_cfg.name, model_cfg.revision)] = (signature, copy.deepcopy(result))
    return result


def check_inputs(config: Config) -> None:
    """The word lists and the prompt file read and checked, each error naming its file (and line)."""
    load_word_list(config.words.names, "words.names")
    load_word_list(config.words.generic, "words.generic")
    if config.prompts != "off":
        load_prompts(config.prompts)


def preflight(config: Config) -> None:
    """Every check of the inputs that needs no torch: word lists, prompts, then the checkpoint."""
    check_inputs(config)
    resolve_source(config.model)
