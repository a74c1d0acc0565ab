"""Tiny random checkpoints of many decoder-only families, saved with the real GPT-2 tokenizer.

``make_family_checkpoint(family, folder)`` builds one with ``transformers``' own config and model
classes (2 layers, d_model 64, 4 query heads of d_head 16, 2 key/value heads where the family has
grouped-query attention, MLP width 128, untied embeddings where the config allows), randomises every
norm gain and every bias (:func:`randomize_norms_and_biases`), and saves model and tokenizer in
``folder``, so that it loads through exactly the code path of a hub checkpoint.

Required families: see :data:`FAMILIES`; the optional ones (:data:`OPTIONAL_FAMILIES`) are built the
same way: ``from tests.families import make_family_checkpoint``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

from tests.checkpoints import gpt2_tokenizer_files

N_LAYERS, D_MODEL, N_HEADS, N_KV_HEADS, D_MLP, N_CTX = 2, 64, 4, 2, 128, 64
D_HEAD = D_MODEL // N_HEADS


def _rope(partial: float | None = None, theta: float = 10000.0) -> dict[str, Any]:
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": theta}
    if partial is not None:
        rope["partial_rotary_factor"] = partial
    return rope


def _llama_like(**extra: Any) -> dict[str, Any]:
    """The keyword arguments every Llama-style config (hidden_size, num_key_value_heads...) shares."""
    kw: dict[str, Any] = dict(
        hidden_size=D_MODEL, intermediate_size=D_MLP, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS,
        num_key_value_heads=N_KV_HEADS, max_position_embeddings=N_CTX,
    )
    kw.update(extra)
    return kw


#: family -> (config class name, model class name, config keyword arguments)
_SPECS: dict[str, tuple[str, str, Callable[[], dict[str, Any]]]] = {
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", lambda: dict(
        n_layer=N_LAYERS, n_head=N_HEADS, n_embd=D_MODEL, n_inner=D_MLP, n_positions=N_CTX)),
    "gptj": ("GPTJConfig", "GPTJForCausalLM", lambda: dict(
        n_layer=N_LAYERS, n_head=N_HEADS, n_embd=D_MODEL, n_inner=D_MLP, n_positions=N_CTX,
        rotary_dim=D_HEAD // 2)),
    "neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", lambda: dict(
        hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, intermediate_size=D_MLP,
        max_position_embeddings=N_CTX, rope_parameters=_rope(partial=0.25), use_parallel_residual=True)),
    "opt": ("OPTConfig", "OPTForCausalLM", lambda: dict(
        hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, ffn_dim=D_MLP,
        word_embed_proj_dim=D_MODEL, max_position_embeddings=N_CTX)),
    "bloom": ("BloomConfig", "BloomForCausalLM", lambda: dict(  # MLP width is fixed at 4·d_model
        hidden_size=D_MODEL, n_layer=N_LAYERS, n_head=N_HEADS)),
    "llama": ("LlamaConfig", "LlamaForCausalLM", lambda: _llama_like(head_dim=D_HEAD)),
    "mistral": ("MistralConfig", "MistralForCausalLM", lambda: _llama_like(head_dim=D_HEAD, sliding_window=N_CTX)),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", lambda: _llama_like(
        head_dim=D_HEAD, sliding_window=N_CTX, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", lambda: _llama_like()),  # q/k/v biases
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", lambda: _llama_like(head_dim=D_HEAD)),  # QK-norm
    "phi3": ("Phi3Config", "Phi3ForCausalLM", lambda: _llama_like(original_max_position_embeddings=N_CTX)),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", lambda: _llama_like(
        head_dim=D_HEAD, hidden_act="gelu_pytorch_tanh")),
    # query_pre_attn_scalar != d_head on purpose: the query scaling is then not the default 1/sqrt(d_head)
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", lambda: _llama_like(
        head_dim=D_HEAD, query_pre_attn_scalar=32, sliding_window=N_CTX // 2,
        layer_types=["sliding_attention", "full_attention"])),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", lambda: _llama_like(
        head_dim=D_HEAD, query_pre_attn_scalar=32, sliding_window=N_CTX // 2,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={"sliding_attention": _rope(theta=10000.0), "full_attention": _rope(theta=1000000.0)})),
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", lambda: _llama_like()),
    # optional families
    "phi": ("PhiConfig", "PhiForCausalLM", lambda: _llama_like(
        num_key_value_heads=N_HEADS, rope_parameters=_rope(partial=0.5))),
    "falcon": ("FalconConfig", "FalconForCausalLM", lambda: dict(  # falcon-7b style: multi-query, parallel
        hidden_size=D_MODEL, num_hidden_layers=N_LAYERS, num_attention_heads=N_HEADS, ffn_hidden_size=D_MLP,
        multi_query=True, parallel_attn=True, new_decoder_architecture=False, alibi=False, bias=False,
        max_position_embeddings=N_CTX)),
    "olmo": ("OlmoConfig", "OlmoForCausalLM", lambda: _llama_like()),  # non-parametric LayerNorm
    # Granite's multipliers set away from 1 (as in the released models) so that each is exercised
    "granite": ("GraniteConfig", "GraniteForCausalLM", lambda: _llama_like(
        embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=1 / 32, logits_scaling=8.0)),
    "codegen": ("CodeGenConfig", "CodeGenForCausalLM", lambda: dict(
        n_layer=N_LAYERS, n_head=N_HEADS, n_embd=D_MODEL, n_inner=D_MLP, n_positions=N_CTX, n_ctx=N_CTX,
        rotary_dim=D_HEAD // 2)),
    "gpt_neo": ("GPTNeoConfig", "GPTNeoForCausalLM", lambda: dict(
        hidden_size=D_MODEL, num_layers=N_LAYERS, num_heads=N_HEADS, intermediate_size=D_MLP,
        max_position_embeddings=N_CTX, attention_types=[[["global", "local"], N_LAYERS // 2]], window_size=32)),
    "cohere": ("CohereConfig", "CohereForCausalLM", lambda: _llama_like(logit_scale=0.0625)),
}

#: the families every change is checked on
FAMILIES: tuple[str, ...] = ("gpt2", "gptj", "neox", "opt", "bloom", "llama", "mistral", "mixtral", "qwen2",
                             "qwen3", "phi3", "gemma", "gemma2", "gemma3", "olmo2")
#: further families :func:`make_family_checkpoint` builds
OPTIONAL_FAMILIES: tuple[str, ...] = ("phi", "falcon", "olmo", "granite", "codegen", "gpt_neo", "cohere")


def _norm_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """Every normalisation module with parameters (LayerNorm, RMSNorm and the families' own)."""
    return [(name, m) for name, m in model.named_modules()
            if (isinstance(m, torch.nn.LayerNorm) or "norm" in type(m).__name__.lower())
            and any(True for _ in m.parameters(recurse=False))]


def is_offset_norm(module: torch.nn.Module) -> bool:
    """Whether the norm multiplies by ``1 + weight`` (Gemma's RMSNorm) instead of ``weight``: with a
    zero weight (and bias) such a norm still passes its input through, a plain one outputs 0."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return False
    saved = {n: p.detach().clone() for n, p in module.named_parameters(recurse=False)}
    try:
        with torch.no_grad():
            for p in module.parameters(recurse=False):
                p.zero_()
            x = torch.randn(2, weight.shape[-1], generator=torch.Generator().manual_seed(0)).to(weight.dtype)
            return bool(module(x).abs().max() > 1e-3)
    finally:
        with torch.no_grad():
            for n, p in module.named_parameters(recurse=False):
                p.copy_(saved[n])


def randomize_norms_and_biases(model: torch.nn.Module, seed: int) -> dict[str, list[str]]:
    """Give every norm gain a random value (``1 + 0.2·N(0,1)``; ``0.2·N(0,1)`` for a ``1 + weight``
    norm, the same effective gain) and every bias ``0.1·N(0,1)``. HF initialises them to 1 (0 for
    Gemma) and 0, which would make weight folding a no-op. Returns the parameter names touched, as
    ``{"gain": [...], "offset_gain": [...], "bias": [...]}``."""
    g = torch.Generator().manual_seed(seed)
    gains: dict[str, bool] = {}  # parameter name -> offset norm?
    for mod_name, module in _norm_modules(model):
        offset = is_offset_norm(module)
        for p_name, _ in module.named_parameters(recurse=False):
            if p_name == "weight":
                gains[f"{mod_name}.{p_name}" if mod_name else p_name] = offset
    touched: dict[str, list[str]] = {"gain": [], "offset_gain": [], "bias": []}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in gains:
                noise = 0.2 * torch.randn(p.shape, generator=g)
                p.copy_(noise if gains[name] else 1.0 + noise)
                touched["offset_gain" if gains[name] else "gain"].append(name)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
                touched["bias"].append(name)
    return touched


def family_config(family: str, tokenizer: Any) -> Any:
    """The ``transformers`` config of ``family``'s tiny checkpoint for ``tokenizer``."""
    if family not in _SPECS:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES + OPTIONAL_FAMILIES)}")
    config_name, _, kwargs = _SPECS[family]
    kw = kwargs()
    kw.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
              pad_token_id=None, tie_word_embeddings=False)
    return getattr(transformers, config_name)(**kw)


def make_family_checkpoint(family: str, folder: Path, seed: int = 0, vocab_size: int | None = None) -> Path:
    """A tiny random ``family`` checkpoint with the real GPT-2 tokenizer (or its first
    ``vocab_size`` tokens: :func:`tests.checkpoints.gpt2_tokenizer_files`), saved in ``folder``."""
    folder = Path(folder)
    gpt2_tokenizer_files(folder, vocab_size)
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(folder))
    config = family_config(family, tokenizer)
    torch.manual_seed(seed)
    model = getattr(transformers, _SPECS[family][1])(config)
    randomize_norms_and_biases(model, seed)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
