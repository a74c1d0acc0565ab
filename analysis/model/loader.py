"""Load a model through TransformerLens' ``TransformerBridge`` with the configured processing.

Three kinds of ``model.name``:

* a local Hugging Face checkpoint folder (``config.json`` + weights + tokenizer files);
* a TransformerLens / Hugging Face hub name (``gpt2-small``, ``gpt2``): the local hub cache is
  looked at first; only when the weights are not cached do we go online, and when that is not
  possible (``HF_HUB_OFFLINE=1`` or no network) we stop at once with one clear message;
* a bundled model id (see :data:`BUNDLED_MODELS`), for fully offline use.

Whatever the source, the weights are loaded from a local folder with the hub offline, so a load
never hangs on network retries.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.utilities import softcap_enabled
from transformer_lens.weight_processing import ProcessWeights

from .. import gpurank, rankkernel
from ..artifacts import package_versions
from ..config import ModelConfig, ProcessingConfig
from ..errors import ConfigError, ModelUnavailableError
from ..inputs.preflight import resolve_source
from . import release
from .bundled import SMOLLM2_ID, smollm2_135m_instruct
from .families import FamilyFacts, family_facts
from .gguf import load_gguf

LIBRARIES = ("torch", "transformer-lens", "transformers", "numpy", "scipy", "headreport")


@dataclass
class LoadedModel:
    """A processed model and what is needed to analyse it.

    ``bridge`` is the ``TransformerBridge`` after ``enable_compatibility_mode`` (so ``W_Q``,
    ``W_E``... are the processed weights); ``provenance`` is plain JSON data.
    """

    bridge: Any
    tokenizer: Any
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    normalization: str  # "LN" or "RMS" (the kind of norm before attention / MLP)
    positional: str  # "standard", "rotary", "alibi", ...
    provenance: dict[str, Any] = field(default_factory=dict)
    family: FamilyFacts = field(default_factory=FamilyFacts)  # what the analysis must know of the family
    checkpoint_hashes: dict[str, dict[str, Any]] = field(default_factory=dict)  # staleness.file_hashes
    _weights: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def weight(self, name: str) -> torch.Tensor:
        """A processed weight (``"W_E"``, ``"W_Q"``, ``"b_O"``...), stacked over layers, detached.

        The bridge assembles its stacked weights on every access; this reads each once.
        """
        if name not in self._weights:
            with torch.no_grad():
                try:
                    value = getattr(self.bridge, name)
                except AttributeError:
                    # bias-free projections (Llama family): the bridge has no stacked b_Q/b_V/...
                    if not name.startswith("b_"):
                        raise
                    value = None
                self._weights[name] = value.detach() if value is not None else None
        return self._weights[name]

    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (grouped-query attention)."""
        return head // (self.n_heads // self.n_kv_heads)

    def kv_index(self, device: Any = None) -> torch.Tensor:
        """``kv_head(h)`` for every query head h, as an index tensor."""
        return torch.tensor([self.kv_head(h) for h in range(self.n_heads)], device=device)

    @property
    def device(self) -> torch.device:
        return self.weight("W_E").device


# Bundled models: id -> callable returning (hf_model, tokenizer, provenance extras). See bundled.py.
BUNDLED_MODELS: dict[str, Callable[[ModelConfig], tuple[Any, Any, dict[str, Any]]]] = {
    SMOLLM2_ID: smollm2_135m_instruct,
}


# refactor_factored_attn_matrices rewrites W_Q/W_K by an invertible d_head × d_head change of basis,
# which does not commute with the rotary rotation: TransformerLens refuses it for rotary models.
# "auto" skips it there (with a note); an explicit `true` stops with a clear error (exit 2).
_ROTARY_REFACTOR_MESSAGE = (
    "processing.refactor_factored_attn_matrices: cannot be true for {name!r}, which uses rotary position "
    "embeddings (the refactoring does not commute with the rotation, and TransformerLens refuses it); "
    "set it to \"auto\" (the default) or false in [processing]. The QK/OV spectra do not depend on it."
)
REFACTOR_SKIPPED_NOTE = (
    "refactor_factored_attn_matrices was skipped (\"auto\"): TransformerLens cannot refactor the "
    "attention weights of a rotary model. The circuits' products and spectra do not depend on it."
)


def library_versions() -> dict[str, str]:
    """The installed versions of the libraries that produce the numbers (the artifacts' provenance)."""
    return package_versions(LIBRARIES)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailableError(
            "model.device: 'cuda' was asked for but no CUDA device is available; use 'auto' or 'cpu'")
    return device


@contextlib.contextmanager
def _hub_offline():
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            del os.environ["HF_HUB_OFFLINE"]
        else:
            os.environ["HF_HUB_OFFLINE"] = old


#: TransformerLens' processing steps that deep-copy the state dict they are given: run with their
#: copies handed over (:func:`release.handing_over`), so one copy of the weights is alive, not two
COPYING_STEPS = ("fold_layer_norm", "center_unembed", "fold_value_biases", "refactor_factored_attn_matrices")


@contextlib.contextmanager
def single_threaded():
    """Run the load and the weight processing on one intra-op thread. Processing is hundreds of
    small ops and batched d_model × d_head SVDs (refactor_factored_attn_matrices) that gain nothing
    from more threads and, on a busy 2-core machine, lose 3-30× to threads waiting on each other
    (measured: 3.5 s on one thread against 10-90 s on two). It also makes the processed W_Q/W_K/W_V/W_O
    factors (SVD signs) independent of the machine's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def processing_applied(bridge: Any, processing: ProcessingConfig, rotary: bool) -> dict[str, bool]:
    """The weight processing TransformerLens will really apply for ``processing`` (what provenance
    records): it skips centring for RMSNorm models, fold_ln / centring for adapters that do not
    support them, centre_unembed under final-logit soft-capping; "auto" refactoring skips rotary."""
    cfg, adapter = bridge.cfg, getattr(bridge, "adapter", None)
    norm = str(getattr(cfg, "normalization_type", "LN") or "LN")
    refactor = processing.refactor_factored_attn_matrices
    return {
        "fold_ln": processing.fold_ln and getattr(adapter, "supports_fold_ln", True),
        "center_writing_weights": (processing.center_writing_weights
                                   and getattr(adapter, "supports_center_writing_weights", True)
                                   and norm in ("LN", "LNPre") and not getattr(cfg, "final_rms", False)),
        "center_unembed": (processing.center_unembed
                           and not softcap_enabled(getattr(cfg, "output_logits_soft_cap", None))),
        "fold_value_biases": True,
        "refactor_factored_attn_matrices": (not rotary) if refactor == "auto" else bool(refactor),
    }


def boot(folder: Path | None, model_cfg: ModelConfig, device: str, provenance: dict[str, Any]) -> Any:
    """The ``TransformerBridge`` of the checkpoint folder, GGUF file or bundled model (``folder`` None),
    loaded with the hub offline."""
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    dtype = getattr(torch, model_cfg.dtype)
    with _hub_offline(), single_threaded():  # local from here on: never a network retry loop
        if folder is None or folder.is_file():
            if folder is None:
                hf_model, tokenizer, extra = BUNDLED_MODELS[model_cfg.name](model_cfg)
                provenance.update(extra)
            else:  # a GGUF file, checked by the preflight
                hf_model, tokenizer = load_gguf(folder)
            return boot_loaded(provenance.get("hf_name", str(folder or model_cfg.name)), hf_model, tokenizer,
                               device, dtype)
        try:
            return TransformerBridge.boot_transformers(str(folder), device=device, dtype=dtype)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise ModelUnavailableError(f"model.name: cannot load the checkpoint in {str(folder)!r}: "
                                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def boot_loaded(name: str, hf_model: Any, tokenizer: Any, device: str, dtype: torch.dtype) -> Any:
    """The ``TransformerBridge`` of a transformers model already loaded (bundled, GGUF, in memory).
    TransformerLens uses such a model as it is, so it is first put on ``device`` in ``dtype``."""
    return TransformerBridge.boot_transformers(name, hf_model=hf_model.to(device=device, dtype=dtype),
                                               tokenizer=tokenizer, device=device, dtype=dtype)


def process(bridge: Any, processing: ProcessingConfig, name: str,
            files: Path | None = None) -> tuple[dict[str, bool], list[str]]:
    """Apply the configured weight processing; return what was applied and the notes about it.
    ``files``: the checkpoint (folder or file) the bridge's weights were mapped from, whose pages
    are given back once processing has copied them."""
    rotary = str(bridge.cfg.positional_embedding_type) == "rotary"
    if processing.refactor_factored_attn_matrices is True and rotary:
        raise ConfigError(_ROTARY_REFACTOR_MESSAGE.format(name=name))
    applied = processing_applied(bridge, processing, rotary)
    notes = []
    if processing.refactor_factored_attn_matrices == "auto" and rotary:
        notes.append(REFACTOR_SKIPPED_NOTE)
    if processing.center_writing_weights and not applied["center_writing_weights"]:
        notes.append("center_writing_weights was requested but not applied: TransformerLens centres the "
                     "writing weights of LayerNorm models only (a centred vector is not invariant under "
                     "RMSNorm).")
    try:
        after_copy = (lambda: release.drop_file_pages(files)) if files is not None else (lambda: None)
        with single_threaded(), release.handing_over(ProcessWeights, COPYING_STEPS, after_copy):
            bridge.enable_compatibility_mode(
                fold_ln=processing.fold_ln,
                center_writing_weights=processing.center_writing_weights,
                center_unembed=processing.center_unembed,
                refactor_factored_attn_matrices=applied["refactor_factored_attn_matrices"],
            )
    except AssertionError as exc:  # TransformerLens asserts on combinations it cannot process
        if applied["refactor_factored_attn_matrices"]:
            raise ConfigError(f"{_ROTARY_REFACTOR_MESSAGE.format(name=name)} ({exc})") from None
        raise
    bridge.eval()
    return applied, notes


def dimensions(bridge: Any, provenance: dict[str, Any]) -> LoadedModel:
    """The :class:`LoadedModel` of a processed bridge: its dimensions and family facts."""
    cfg = bridge.cfg
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    norm = str(getattr(cfg, "normalization_type", "") or "")
    return LoadedModel(
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        n_kv_heads=n_kv,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_vocab=bridge.W_E.shape[0],
        normalization="RMS" if "RMS" in norm or getattr(cfg, "uses_rms_norm", False) else "LN",
        positional=str(cfg.positional_embedding_type),
        provenance=provenance,
        family=family_facts(bridge, cfg.n_heads, n_kv),
    )


def load_model(model_cfg: ModelConfig, processing: ProcessingConfig) -> LoadedModel:
    """Load ``model_cfg.name`` and apply ``processing``; raise a clear :class:`UserError` otherwise.

    resolve (no heavy imports; unsupported families refused) → boot → process → dimensions."""
    device = resolve_device(model_cfg.device)
    folder, provenance, hashes = resolve_source(model_cfg)
    bridge = boot(folder, model_cfg, device, provenance)
    return processed_model(bridge, model_cfg, processing, device, provenance, hashes, files=folder)


def processed_model(bridge: Any, model_cfg: ModelConfig, processing: ProcessingConfig, device: str,
                    provenance: dict[str, Any], hashes: dict[str, dict[str, Any]],
                    files: Path | None = None) -> LoadedModel:
    """Apply ``processing`` to a booted bridge and record what was done: the :class:`LoadedModel`.
    ``files``: as in :func:`process`."""
    applied, notes = process(bridge, processing, model_cfg.name, files)
    release.detach_from_files(bridge)  # the checkpoint's mapping closes (see analysis/model/release.py)
    release.trim()
    provenance.update({
        "architecture": type(bridge.original_model).__name__,
        "processing": applied,
        "processing_requested": {
            "fold_ln": processing.fold_ln,
            "center_writing_weights": processing.center_writing_weights,
            "center_unembed": processing.center_unembed,
            "refactor_factored_attn_matrices": processing.refactor_factored_attn_matrices,
        },
        "processing_notes": notes,
        "device": device,
        "dtype": model_cfg.dtype,
        "libraries": library_versions(),
    })
    if str(device).startswith("cpu"):
        provenance["rank_kernel"] = rankkernel.name() if model_cfg.dtype == "float32" else "numpy"
    else:  # the fused Triton kernel runs the passes that no explorer list reads
        provenance["rank_kernel"] = (gpurank.name() if model_cfg.dtype == "float32" and gpurank.available(device)
                                     else "torch")
    model = dimensions(bridge, provenance)
    model.checkpoint_hashes = hashes
    return model
