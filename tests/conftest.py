"""Shared fixtures: no network (HF_HUB_OFFLINE=1), small checkpoints built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# without a GPU, the fused GPU rank kernel runs on CPU tensors in Triton's interpreter
# (tests/unit/test_gpurank.py), which is chosen when Triton is first imported, and importing
# transformers imports it; with one, the tests run it compiled on the GPU
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from headreport.analysis.config import ModelConfig, ProcessingConfig
from headreport.analysis.embeddings import effective_embedding
from headreport.analysis.model.loader import load_model
from tests.checkpoints import make_gpt2_checkpoint
from tests.helpers import analysed, tiny_toml

pytest_plugins = ["tests.report_fixtures"]  # the report tests' shared build (tests/report_fixtures.py)


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    """GPT-2 architecture, real 50257-token tokenizer, 2 layers × 4 heads, d_model 64, d_head 16."""
    return make_gpt2_checkpoint(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_config_text(tiny_gpt2) -> str:
    return tiny_toml(tiny_gpt2)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory, tiny_gpt2) -> Path:
    """Artifacts of the tiny checkpoint (heads 1.3 and 0.1), computed once per session."""
    return analysed(tmp_path_factory.mktemp("tiny_build"), tiny_gpt2)


@pytest.fixture(scope="session")
def tiny_model(tiny_gpt2):
    """``tiny_gpt2`` loaded through ``headreport.analysis.model.loader.load_model`` with all four processing flags."""
    return load_model(ModelConfig(name=str(tiny_gpt2), device="cpu"), ProcessingConfig())


@pytest.fixture(scope="session")
def tiny_model_unprocessed(tiny_gpt2):
    """``tiny_gpt2`` loaded with every processing flag off."""
    return load_model(ModelConfig(name=str(tiny_gpt2), device="cpu"), ProcessingConfig(False, False, False, False))


@pytest.fixture(scope="session")
def tiny_layer0(tiny_model):
    """W_E, W_EE (notebook variant) and the rank metrics' W_EE (the paper's block-0 residual) of
    ``tiny_model`` for the whole vocabulary, computed once."""
    return effective_embedding(tiny_model, "mlp_after_attention", batch_size=4096, progress=False,
                               rank_variant="residual")


@pytest.fixture(scope="session")
def tiny_W_EE(tiny_layer0):
    return tiny_layer0.W_EE


@pytest.fixture(scope="session")
def tiny_W_EE_rank(tiny_layer0):
    return tiny_layer0.W_EE_rank
