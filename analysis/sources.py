"""Where a model's files are: a local Hugging Face checkpoint folder, a hub snapshot (the local
cache first; a download only when that is possible), or a bundled model. No heavy import: a missing
model fails in a second, and the staleness key can find the files without loading anything.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from .bundled import BUNDLED_FILES
from .checkpoint import WEIGHT_SUFFIXES
from .errors import ModelUnavailableError


def _network_reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_help(what: str) -> str:
    bundled = ", ".join(sorted(BUNDLED_FILES)) or "none installed"
    return (
        f"{what}\n"
        "How to fix it, any one of:\n"
        "  * connect to the internet once, so the weights are downloaded into the Hugging Face cache;\n"
        "  * point model.name (or --model) at a local checkpoint folder "
        "(config.json, weights and tokenizer files);\n"
        f"  * use a bundled offline model (`make demo`; bundled ids: {bundled})."
    )


def resolve_model_alias(name: str) -> str | None:
    """TransformerLens' official HF name for an alias (``gpt2-small`` → ``gpt2``), else None.

    Reads TransformerLens' alias table directly: importing transformer_lens takes seconds, and an
    offline user with no cached weights should get the error message at once.
    """
    import importlib.util
    import json

    spec = importlib.util.find_spec("transformer_lens")
    for location in (spec.submodule_search_locations or []) if spec else []:
        table = Path(location) / "tools" / "model_registry" / "data" / "model_aliases.json"
        if table.is_file():
            for official, aliases in json.loads(table.read_text(encoding="utf-8"))["aliases"].items():
                if name in aliases:
                    return official
            return None
    from transformer_lens.tools.model_registry.registry_io import resolve_model_alias as tl_resolve

    return tl_resolve(name)


def resolve_local_folder(name: str, revision: str | None) -> tuple[Path, dict[str, Any]]:
    """Find the local folder holding ``name``'s checkpoint, downloading it only when possible."""
    path = Path(name).expanduser()
    looks_like_path = name.startswith((".", "/", "~")) or os.sep in name.strip("/") and path.exists()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelUnavailableError(
                f"model.name: folder {str(path)!r} is not a Hugging Face checkpoint (no config.json in it)"
            )
        return path.resolve(), {"source": "local_folder", "path": str(path.resolve())}
    if looks_like_path or path.suffix in WEIGHT_SUFFIXES:
        raise ModelUnavailableError(f"model.name: checkpoint folder {name!r} does not exist")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    repo = resolve_model_alias(name) or name
    patterns = ["*.json", "*.txt", "*.model", "*.safetensors", "merges.txt", "vocab.*"]
    try:
        folder = snapshot_download(repo, revision=revision, local_files_only=True, allow_patterns=patterns)
        cached = any(p.name.endswith(WEIGHT_SUFFIXES) for p in Path(folder).iterdir())
    except HFValidationError:
        raise ModelUnavailableError(f"model.name: {name!r} is neither a checkpoint folder nor a valid hub model name") from None
    except Exception:  # not in the cache (LocalEntryNotFoundError and friends)
        folder, cached = None, False
    if not cached:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            raise ModelUnavailableError(_offline_help(
                f"Model {name!r} ({repo}) is not in the local Hugging Face cache and HF_HUB_OFFLINE is set, "
                "so it cannot be downloaded."
            ))
        if not _network_reachable():
            raise ModelUnavailableError(_offline_help(
                f"Model {name!r} ({repo}) is not in the local Hugging Face cache and the hub cannot be reached "
                "(no network)."
            ))
        try:
            folder = snapshot_download(repo, revision=revision, allow_patterns=patterns)
        except Exception as exc:
            raise ModelUnavailableError(_offline_help(f"Downloading model {name!r} ({repo}) failed: {exc}")) from None
    folder_path = Path(folder)
    return folder_path, {"source": "hub", "repo_id": repo, "revision": folder_path.name}
