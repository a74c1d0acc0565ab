"""A model already in memory (a notebook's): a transformers ``PreTrainedModel`` or a
``TransformerBridge`` not yet processed, analysed without saving it to disk.

The weight processing is applied to a deep copy, so the caller's object is never modified. Its
provenance says it came from memory and records a sha256 of its weights (:func:`weights_sha256`);
there is no file behind it, so nothing can later tell whether an artifact set is stale against it:
``model.name`` becomes ``memory:<class>``, which the command line refuses with that explanation.
"""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch

from ..config import ModelConfig, ProcessingConfig
from ..errors import ConfigError
from .loader import LoadedModel, boot_loaded, processed_model, resolve_device, single_threaded
from .sources import MEMORY_PREFIX


def memory_name(obj: Any) -> str:
    """The ``model.name`` recorded for an in-memory model: ``memory:<class name>``."""
    return MEMORY_PREFIX + type(obj).__name__


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over the module's state dict: each entry's name, dtype, shape and bytes, in name order
    (shared tensors count under each name, as ``state_dict`` lists them)."""
    state = sorted(module.state_dict().items())
    meta = [name for name, tensor in state if tensor.is_meta]
    if meta:
        raise ConfigError(f"model: {len(meta)} of its weights are not in memory (offloaded or on the meta device, "
                          f"e.g. {meta[0]!r}); load it without device_map offloading")
    h = hashlib.sha256()
    for name, tensor in state:
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 0-dim tensors too: their bytes, as 1-dim
        h.update(f"{name}\0{t.dtype}\0{tuple(tensor.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def hf_model_of(obj: Any) -> tuple[Any, Any]:
    """``(hf_model, tokenizer or None)`` of a transformers model or an unprocessed bridge."""
    if hasattr(obj, "original_model") and hasattr(obj, "enable_compatibility_mode"):  # a TransformerBridge
        if getattr(obj, "compatibility_mode", False):
            raise ConfigError(
                "model: this TransformerBridge has had enable_compatibility_mode() applied, so its weights are already "
                "processed and headreport cannot tell how; pass the bridge before enable_compatibility_mode() (the "
                "processing in [processing] is applied to a copy) or a freshly loaded transformers model")
        return obj.original_model, getattr(obj, "tokenizer", None)
    if isinstance(obj, torch.nn.Module) and hasattr(obj, "config") and hasattr(obj.config, "to_dict"):
        return obj, None
    raise ConfigError(f"model: a {type(obj).__name__} is not a model headreport can analyse; pass a transformers "
                      "PreTrainedModel, a TransformerBridge, a hub name, a checkpoint folder or a .gguf file")


def load_model_object(obj: Any, model_cfg: ModelConfig, processing: ProcessingConfig,
                      tokenizer: Any = None) -> LoadedModel:
    """The :class:`LoadedModel` of an in-memory model, processed on a deep copy of it."""
    import transformers  # noqa: PLC0415 (heavy; loaded with torch, after the arguments are checked)

    hf_model, own_tokenizer = hf_model_of(obj)
    tokenizer = tokenizer if tokenizer is not None else own_tokenizer
    if tokenizer is None:
        raise ConfigError(f"tokenizer: the in-memory {type(obj).__name__} comes without one; pass tokenizer=... "
                          "(the tokenizer the model was trained with)")
    if model_cfg.revision is not None:
        raise ConfigError("model.revision: not used for a model in memory; remove it")
    digest = weights_sha256(hf_model)
    device = resolve_device(model_cfg.device)
    name = getattr(hf_model.config, "_name_or_path", "") or type(hf_model).__name__
    provenance: dict[str, Any] = {
        "requested_name": memory_name(obj), "source": "memory", "name_or_path": name,
        "weights_sha256": {"state_dict": digest}, "checkpoint_sha256": digest,
    }
    transformers.logging.set_verbosity_error()
    with single_threaded():
        bridge = boot_loaded(name, copy.deepcopy(hf_model), copy.deepcopy(tokenizer), device,
                             getattr(torch, model_cfg.dtype))
    hashes = {memory_name(obj): {"sha256": digest, "in_memory": True}}
    return processed_model(bridge, model_cfg, processing, device, provenance, hashes)
