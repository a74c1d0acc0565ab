"""The staleness key: everything that feeds the numbers of an artifact set, recorded in its manifest
(``manifest.json``, written last) so that ``headreport build`` re-analyses exactly when one changed.

The key holds, as sha256 digests:

* ``config``: the configuration, canonical JSON, without ``output_dir`` (it changes no number);
* ``analysis_code``: the analysis package's source and data;
* ``words.names`` / ``words.generic``: the bytes of each word list (a file edited in place counts);
* ``checkpoint``: every file of the checkpoint that feeds the analysis — weights, ``config.json``,
  tokenizer files — by name and content (a bundled model: the file it ships in).

``checkpoint_files`` keeps each file's size, modification time and sha256, so that the next key
re-hashes only files whose size or time changed: an unchanged build reads no weights.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .artifacts import canonical, code_digest, sha256_file
from .config import Config, ModelConfig
from .inputs.prompt_files import prompt_source_bytes
from .inputs.words import read_word_source
from .model.bundled import BUNDLED_FILES
from .model.checkpoint import checkpoint_files
from .model.gguf import gguf_file, is_gguf_name
from .model.sources import checkpoint_folder

StatCache = dict[str, dict[str, Any]]  # path → {"size", "mtime_ns", "sha256"}


def digest(data: bytes | str) -> str:
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def analysis_code_digest() -> str:
    """sha256 over the analysis package's source and data (:func:`analysis.artifacts.code_digest`)."""
    return code_digest(("headreport.analysis",), (".py", ".c", ".txt", ".json"))


def config_digest(config: dict[str, Any]) -> str:
    comparable = {k: v for k, v in canonical(config).items() if k != "output_dir"}
    return digest(json.dumps(comparable, sort_keys=True, ensure_ascii=False))


def file_hashes(paths: list[Path], cache: StatCache | None = None) -> StatCache:
    """``{path: {size, mtime_ns, sha256}}``, reusing ``cache`` entries whose size and time match."""
    cache = cache or {}
    out: StatCache = {}
    for path in paths:
        st = path.stat()
        key = str(path.resolve())
        old = cache.get(key)
        if old and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            out[key] = old
        else:
            out[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}
    return out


def checkpoint_digest(hashes: StatCache) -> str:
    """One sha256 over the files' names and contents (not their folder, times or sizes)."""
    return digest(json.dumps(sorted((Path(p).name, h["sha256"]) for p, h in hashes.items())))


def model_files(model: ModelConfig) -> list[Path] | None:
    """The files of the configured model at its configured revision that feed the analysis, without
    loading it (None: a bundled model that is not installed). The folder comes from
    :func:`analysis.sources.checkpoint_folder`, the resolution loading uses: a cached pinned
    revision is found offline, and no other branch is asked for."""
    if model.name in BUNDLED_FILES:
        path = BUNDLED_FILES[model.name]()
        return [path] if path is not None else None
    if is_gguf_name(model.name):
        return [gguf_file(model.name, model.revision)]
    folder, _ = checkpoint_folder(model)
    return checkpoint_files(folder)


def input_key(config: Config, checkpoint: StatCache | None = None, cache: StatCache | None = None) -> dict[str, Any]:
    """The staleness key of ``config`` (see the module docstring). ``checkpoint``: the model's file
    hashes when the caller has them (a load records them); else they are computed, reusing
    ``cache`` (the previous key's ``checkpoint_files``)."""
    if checkpoint is None:
        files = model_files(config.model)
        checkpoint = file_hashes(files, cache) if files is not None else {}
    return {
        "config": config_digest(config.to_dict()),
        "analysis_code": analysis_code_digest(),
        "words.names": digest(read_word_source(config.words.names, "words.names")),
        "words.generic": digest(read_word_source(config.words.generic, "words.generic")),
        "prompts": digest(prompt_source_bytes(config.prompts) if config.prompts != "off" else b"off"),
        "checkpoint": checkpoint_digest(checkpoint),
        "checkpoint_files": checkpoint,
    }


#: what each key entry is, in the words a "why re-analyse" message uses
KEY_NAMES = {
    "config": "the config changed",
    "analysis_code": "the analysis code changed",
    "words.names": "the word list words.names changed",
    "words.generic": "the word list words.generic changed",
    "prompts": "the prompts changed",
    "checkpoint": "the model's files changed (weights, config.json or tokenizer)",
}


def changed_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The reasons, in :data:`KEY_NAMES` order, why key ``old`` is not ``new``."""
    return [reason for key, reason in KEY_NAMES.items() if old.get(key) != new.get(key)]
