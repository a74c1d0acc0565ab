"""analysis.model.release: weights that are views of a mapped checkpoint file are copied out of it,
values unchanged, so that the mapping closes; other weights are left alone."""

from __future__ import annotations

import contextlib
import gc
import sys
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens.weight_processing import ProcessWeights

from headreport.analysis.config import ModelConfig, ProcessingConfig
from headreport.analysis.model import loader, release
from tests.families import make_family_checkpoint

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


def resident_kb(path: Path) -> int:
    """Resident kB of this process's mapping of ``path`` (``/proc/self/smaps``)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith(str(path))]
    assert starts, f"{path} is not mapped"
    return sum(next(int(x.split()[1]) for x in lines[i + 1:] if x.startswith("Rss:")) for i in starts)


def test_pages_of_a_mapping_only_read_are_dropped_and_read_back(tmp_path):
    read, written = tmp_path / "read.safetensors", tmp_path / "written.safetensors"
    values = np.arange(2**20, dtype=np.float32)  # 4 MB
    values.tofile(read)
    values.tofile(written)
    a = np.memmap(read, dtype=np.float32, mode="c")  # private mappings, as transformers makes them
    b = np.memmap(written, dtype=np.float32, mode="c")
    assert a.sum() == b.sum()  # every page read: resident
    b[5] = -1.0  # one copy-on-write page: this mapping is not the file any more
    assert b.astype(np.float64).sum() == values.astype(np.float64).sum() - 6  # resident again (a write
    # may unmap the neighbours of a large page)
    assert resident_kb(read) >= 4000 and resident_kb(written) >= 4000
    other = tmp_path / "other"
    other.mkdir()
    release.drop_file_pages(other)  # not the checkpoint these are mapped from: left alone
    assert resident_kb(read) >= 4000
    link = tmp_path / "snapshot"  # a hub snapshot: links to the blobs the mappings name
    link.mkdir()
    (link / "model.safetensors").symlink_to(read)
    (link / "other.safetensors").symlink_to(written)
    release.drop_file_pages(link)
    assert resident_kb(read) < 100  # given back
    assert resident_kb(written) >= 4000  # left alone: dropping it would lose the write
    np.testing.assert_array_equal(a, values)  # read back from the file, unchanged
    assert b[5] == -1.0 and b[6] == 6.0


class Steps:
    """Stand-ins for TransformerLens' processing steps: one that deep-copies its argument (as theirs
    do) and one that reads its argument again after copying it."""

    freed_while_copying: list[bool] = []

    @staticmethod
    def scale(state_dict: dict, factor: float) -> dict:
        out = {}
        for k, v in state_dict.items():
            out[k] = v.clone() * factor
            # the previous entry's original is gone by the time the next one is read
            Steps.freed_while_copying.append(all(r() is None for r in Steps.refs[: len(out) - 1]))
        return out

    @staticmethod
    def rereads(state_dict: dict) -> dict:
        out = {k: v.clone() for k, v in state_dict.items()}
        out["a"] = out["a"] + state_dict.get("b", 0)  # a second read of the argument: empty when handed over
        return out

    @staticmethod
    def drops(state_dict: dict) -> dict:
        out = {k: v.clone() for k, v in state_dict.items()}
        del out["b"]
        return out

    @classmethod
    def not_a_step(cls, state_dict: dict) -> dict:
        return state_dict


def test_copies_are_handed_over_and_the_originals_freed_as_they_are_copied():
    tensors = {f"w{i}": torch.full((4,), float(i)) for i in range(5)}
    Steps.refs = [weakref.ref(t) for t in tensors.values()]
    Steps.freed_while_copying = []
    original = Steps.__dict__["scale"]
    not_a_step = Steps.__dict__["not_a_step"]
    with release.handing_over(Steps, ["scale", "absent", "not_a_step"]) as calls:
        assert Steps.__dict__["scale"] is not original
        assert Steps.__dict__["not_a_step"] is not_a_step  # only static methods are wrapped
        state = tensors
        del tensors
        state = Steps.scale(state, 2.0)
    assert calls == {"scale": 1, "absent": 0, "not_a_step": 0}
    assert Steps.__dict__["scale"] is original  # restored
    assert Steps.freed_while_copying == [True] * 5
    assert {k: v.tolist() for k, v in state.items()} == {f"w{i}": [2.0 * i] * 4 for i in range(5)}


def test_a_step_that_reads_its_argument_again_or_drops_a_key_is_refused():
    state = {"a": torch.zeros(2), "b": torch.ones(2)}
    with release.handing_over(Steps, ["rereads"]), pytest.raises(RuntimeError, match="read its state dict again"):
        Steps.rereads(dict(state))
    assert Steps.rereads(dict(state))["a"].tolist() == [1.0, 1.0]  # restored after the error
    with release.handing_over(Steps, ["drops"]), pytest.raises(RuntimeError, match=r"Steps.drops dropped .*'b'"):
        Steps.drops(dict(state))


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3", "qwen3"])
def test_processing_with_copies_handed_over_gives_the_same_weights_bit_for_bit(family, tmp_path, monkeypatch):
    """TransformerLens' own processing, with and without the hand-over: every processed weight equal
    bit for bit (LayerNorm and RMSNorm families, refactoring where it applies, QK-norm)."""
    folder = make_family_checkpoint(family, tmp_path / family, vocab_size=512)

    def weights() -> dict[str, np.ndarray]:
        model = loader.load_model(ModelConfig(name=str(folder), device="cpu"), ProcessingConfig())
        return {k: v.detach().numpy().copy() for k, v in model.bridge.state_dict().items()}

    assert all(isinstance(ProcessWeights.__dict__.get(name), staticmethod) for name in loader.COPYING_STEPS)
    seen: list[dict[str, int]] = []
    real = release.handing_over

    @contextlib.contextmanager
    def recorded(*args):
        with real(*args) as calls:
            seen.append(calls)
            yield calls

    monkeypatch.setattr(release, "handing_over", recorded)
    lean = weights()
    assert seen and seen[0]["fold_layer_norm"] == 1 and seen[0]["center_unembed"] == 1  # it did run
    monkeypatch.setattr(release, "handing_over", lambda *a: contextlib.nullcontext())
    plain = weights()
    assert lean.keys() == plain.keys() and len(lean) > 10
    for k in plain:
        assert lean[k].tobytes() == plain[k].tobytes(), k
