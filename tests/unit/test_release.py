"""analysis.model.release: weights that are views of a mapped checkpoint file are copied out of it,
values unchanged, so that the mapping closes; other weights are left alone."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headreport.analysis.model import release

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps")


def mapped(path: Path) -> bool:
    return str(path) in Path("/proc/self/maps").read_text()


def test_a_mapped_weight_is_copied_out_and_the_mapping_closes(tmp_path):
    path = tmp_path / "model.safetensors"
    values = np.arange(4096, dtype=np.float32).reshape(64, 64)
    values.tofile(path)
    module = torch.nn.Linear(64, 64)
    own_bias = module.bias
    view = np.memmap(path, dtype=np.float32, mode="c", shape=(64, 64))  # private mapping of the file
    with torch.no_grad():
        module.weight.data = torch.from_numpy(np.asarray(view))
    del view
    gc.collect()
    assert mapped(path)
    copied = release.detach_from_files(module)
    assert copied == 64 * 64 * 4  # the weight only: the bias was never a view of the file
    assert module.bias is own_bias
    np.testing.assert_array_equal(module.weight.detach().numpy(), values)
    gc.collect()
    assert not mapped(path)


def test_nothing_mapped_nothing_copied():
    module = torch.nn.Linear(8, 8)
    before = module.weight.data_ptr()
    assert release.detach_from_files(module) == 0
    assert module.weight.data_ptr() == before
    release.trim()  # harmless anywhere
