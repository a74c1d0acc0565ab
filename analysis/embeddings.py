"""What each token looks like to the rest of the model, through the model's own layer 0.

For every token t, a one-token context at position 0 (absolute position embeddings excluded, as the
notebook does; rotary embeddings are the identity at position 0), the model's own forward pass
through block 0 gives (TransformerLens hook names):

    W_E[t]    blocks.0.hook_resid_pre   what the residual stream receives: the embedding row, scaled
                                        by √d_model for Gemma (by Granite's multiplier), through
                                        Bloom's embedding LayerNorm...
    a[t]      blocks.0.hook_attn_out    layer 0's attention contribution to the residual stream
                                        (every head attends only to t)
    W_EE[t]   blocks.0.hook_mlp_out     variant "mlp_after_attention" (the notebook's): the MLP's
                                        contribution to the residual stream (after Gemma 2/3's and
                                        OLMo 2's post-MLP norm, times Granite's residual multiplier)
              blocks.0.hook_mlp_out     variant "mlp_only": the same with a zeroed
              blocks.0.hook_resid_post  variant "residual": block 0's output

Parallel attention + MLP (GPT-NeoX, GPT-J, Phi), sandwich norms (Gemma 2/3, OLMo 2), embedding
scaling, MoE and gated MLPs are whatever the model's own forward does: nothing of a family's block is
written here.

``attention_bias = False`` (the default: the notebook's and the copy-suppression paper's numbers)
subtracts the attention output's bias constant c = Σ_h b_V[0, h]·W_O[0, h] + b_O[0] from a, in
TransformerLens' processed parametrisation (``fold_ln`` puts ln1's bias into b_V), so that
a = Σ_h ln1(x)·W_V[0, h]·W_O[0, h], the sum the notebook forms. ``True`` keeps what the model computes.

Speed: the forward pass also computes layer 0's queries and keys, which a one-token context does not
need. When block 0 is a plain sequential pre-norm block, the *factored* path computes the same
numbers with one d_model × d_model GEMM for the attention (a = ln1(x)·Σ_h W_V W_O + c) and the model's
own ln2 and MLP modules. It is used only after it has been checked against the forward pass on a
seeded sample of tokens (:data:`PROBE_TOKENS`); otherwise, or when the check fails, the forward pass
computes everything. :class:`Layer0` records which path ran and the check's error.

Definitions and sources: docs/methods.md#effective-embedding-w_ee.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from .config import EMBEDDING_VARIANTS, EmbeddingVariant
from .errors import ConfigError
from .model.loader import LoadedModel

HOOK_POS_EMBED = "hook_pos_embed"
HOOK_RESID_PRE = "blocks.0.hook_resid_pre"
HOOK_ATTN_OUT = "blocks.0.hook_attn_out"  # not attn.hook_out: Bloom's includes the residual
HOOK_MLP_OUT = "blocks.0.hook_mlp_out"
HOOK_RESID_POST = "blocks.0.hook_resid_post"
#: tokens on which the factored path is checked against the forward pass
PROBE_TOKENS = 256
#: the factored path is used only if it matches the forward pass to this relative error
PROBE_TOLERANCE = 1e-4


@dataclass
class Layer0:
    """The token-level embeddings of one model and how they were computed.

    ``W_E``: what the residual stream receives (``[d_vocab, d_model]``); ``W_EE``: the effective
    embedding of ``variant`` (the notebook's analyses); ``W_EE_rank``: that of ``rank_variant`` (the
    rank metrics: the copy-suppression paper's block-0 residual by default), the same tensor when the
    two variants agree; ``method``: "forward" or "factored"; ``check``: the factored path's check
    against the forward pass (``tokens``, ``max_relative_error``), or why it was not used."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_EE: Float[Tensor, "d_vocab d_model"]
    variant: EmbeddingVariant
    attention_bias: bool
    method: str
    check: dict[str, Any] = field(default_factory=dict)
    W_EE_rank: Float[Tensor, "d_vocab d_model"] | None = None
    rank_variant: EmbeddingVariant | None = None

    def __post_init__(self) -> None:
        if self.W_EE_rank is None:
            self.W_EE_rank, self.rank_variant = self.W_EE, self.variant

    def describe(self) -> dict[str, Any]:
        """Plain data for the artifacts."""
        return {"variant": self.variant, "rank_variant": self.rank_variant, "attention_bias": self.attention_bias,
                "method": self.method, "check": self.check}


def attention_bias_constant(model: LoadedModel) -> Float[Tensor, "d_model"]:
    """c = Σ_h b_V[0, kv(h)]·W_O[0, h] + b_O[0]: layer 0's attention output on a one-token context
    minus its linear part (zeros for bias-free models)."""
    W_O = model.weight("W_O")[0]
    c = torch.zeros(model.d_model, dtype=W_O.dtype, device=W_O.device)
    b_V, b_O = model.weight("b_V"), model.weight("b_O")
    if b_V is not None:
        c = c + torch.einsum("he,hef->f", b_V[0][model.kv_index(W_O.device)], W_O)
    if b_O is not None:
        c = c + b_O[0]
    return c


def layer0_ov(model: LoadedModel) -> Float[Tensor, "d_model d_model"]:
    """Σ_h W_V[0, kv(h)]·W_O[0, h]: layer 0's summed OV map for a token attending only to itself."""
    W_V, W_O = model.weight("W_V")[0], model.weight("W_O")[0]
    return torch.einsum("hde,hef->df", W_V[model.kv_index(W_V.device)], W_O)


def _capture(store: dict[str, Tensor], name: str) -> Callable:
    def hook(x: Tensor, hook: Any) -> Tensor:
        store[name] = x[:, 0]
        return x
    return hook


#: where each variant is read in block 0's forward pass
VARIANT_HOOKS = {"mlp_after_attention": HOOK_MLP_OUT, "mlp_only": HOOK_MLP_OUT, "residual": HOOK_RESID_POST}


@torch.no_grad()
def forward_block0(
    model: LoadedModel, ids: Tensor, variants: tuple[EmbeddingVariant, ...], attention_bias: bool,
) -> dict[str, Tensor]:
    """Block 0 of the model's own forward pass on one-token contexts ``ids``: ``W_E`` (resid_pre) and
    each of ``variants``, every one ``[len(ids), d_model]``, from the same pass ("mlp_only", which
    zeroes the attention, only alone)."""
    if "mlp_only" in variants and len(variants) > 1:
        raise ValueError("the mlp_only variant needs a pass of its own (its attention output is zeroed)")
    bridge = model.bridge
    store: dict[str, Tensor] = {}
    hooks: list[tuple[str, Callable]] = []
    if model.positional == "standard":  # absolute positions: excluded, as in the notebook
        # (rotary models list hook_pos_embed as an alias that never fires: nothing to exclude)
        hooks.append((HOOK_POS_EMBED, lambda x, hook: torch.zeros_like(x)))
    if variants == ("mlp_only",):
        hooks.append((HOOK_ATTN_OUT, lambda x, hook: torch.zeros_like(x)))
    elif not attention_bias:
        c = attention_bias_constant(model)
        if bool(c.any()):
            _check_bias_is_additive(model)
            hooks.append((HOOK_ATTN_OUT, lambda x, hook: x - c.to(x.dtype)))
    hooks.append((HOOK_RESID_PRE, _capture(store, "W_E")))
    for variant in variants:
        hooks.append((VARIANT_HOOKS[variant], _capture(store, variant)))
    bridge.run_with_hooks(ids[:, None].to(model.device), fwd_hooks=hooks, stop_at_layer=1, return_type=None)
    return store


def _check_bias_is_additive(model: LoadedModel) -> None:
    """Subtracting c from the attention's contribution is the bias-free attention only when nothing
    (a post-attention norm) sits between the output projection and the residual stream."""
    block = model.bridge.blocks[0]
    if getattr(block, "ln1_post", None) is not None:
        raise ConfigError(
            "effective_embedding.attention_bias: false is not defined for this model: its attention "
            "biases pass through a norm after the attention, so they cannot be dropped from its output; "
            "set attention_bias = true")


def _factored_block(model: LoadedModel):
    """Block 0's ln1, ln2 and MLP modules, when it has them (else None: the factored path is out)."""
    block = model.bridge.blocks[0]
    modules = [getattr(block, name, None) for name in ("ln1", "ln2", "mlp")]
    return None if any(m is None for m in modules) else modules


@torch.no_grad()
def factored_block0(
    model: LoadedModel, x: Tensor, variants: tuple[EmbeddingVariant, ...], attention_bias: bool,
    W_OV: Tensor, c: Tensor, modules,
) -> dict[str, Tensor]:
    """Each of ``variants`` for embeddings ``x`` and a sequential pre-norm block 0: a = ln1(x)·W_OV
    (+ c), then the model's own ln2 and MLP modules. Used only when checked against
    :func:`forward_block0`."""
    ln1, ln2, mlp = modules
    out: dict[str, Tensor] = {}
    if "mlp_only" in variants:
        out["mlp_only"] = mlp(ln2(x[:, None]))[:, 0]
    if set(variants) - {"mlp_only"}:
        resid = x + ln1(x[:, None])[:, 0] @ W_OV
        if attention_bias:
            resid = resid + c
        mlp_out = mlp(ln2(resid[:, None]))[:, 0]
        out["mlp_after_attention"], out["residual"] = mlp_out, mlp_out + resid
    return {v: out[v] for v in variants}


def _relative_error(got: Tensor, ref: Tensor) -> float:
    scale = ref.norm().item()
    return (got - ref).norm().item() / scale if scale > 0 else (got - ref).norm().item()


def _probe_ids(d_vocab: int, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    n = min(PROBE_TOKENS, d_vocab)
    return torch.randperm(d_vocab, generator=g)[:n].sort().values


def _passes(variants: tuple[EmbeddingVariant, ...]) -> list[tuple[EmbeddingVariant, ...]]:
    """The forward passes that compute ``variants``: one, and another for "mlp_only"."""
    others = tuple(v for v in variants if v != "mlp_only")
    return [p for p in (others, ("mlp_only",) if "mlp_only" in variants else ()) if p]


def factored_check(model: LoadedModel, variants: tuple[str, ...], attention_bias: bool, modules, W_OV: Tensor,
                   c: Tensor) -> dict[str, Any]:
    """How well the factored block-0 path matches the model's forward pass on :func:`_probe_ids`:
    ``tokens`` and ``max_relative_error``, and a ``reason`` whenever the forward pass must compute
    W_EE instead (the modules cannot run alone, or the error exceeds :data:`PROBE_TOLERANCE`)."""
    bridge_W_E = model.weight("W_E")
    ids = _probe_ids(bridge_W_E.shape[0])
    rows = bridge_W_E[ids.to(bridge_W_E.device)]
    try:
        got = {v: t for p in _passes(variants)
               for v, t in factored_block0(model, rows, p, attention_bias, W_OV, c, modules).items()}
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:  # modules not callable alone
        return {"reason": f"block 0's modules cannot run on their own ({type(exc).__name__}): the "
                          "forward pass computes W_EE"}
    errors = []
    for p in _passes(variants):
        ref = forward_block0(model, ids, p, attention_bias)
        errors.append(_relative_error(rows, ref["W_E"]))
        errors += [_relative_error(got[v], ref[v]) for v in p]
    check: dict[str, Any] = {"tokens": int(ids.numel()), "max_relative_error": max(errors)}
    if check["max_relative_error"] > PROBE_TOLERANCE:
        check["reason"] = ("block 0 is not a plain sequential pre-norm block (or its embedding is "
                           "transformed): the forward pass computes W_EE")
    return check


@torch.no_grad()
def effective_embedding(
    model: LoadedModel,
    variant: EmbeddingVariant = "mlp_after_attention",
    batch_size: int = 1024,
    progress: bool = True,
    attention_bias: bool = False,
    method: str = "auto",
    rank_variant: EmbeddingVariant | None = None,
) -> Layer0:
    """W_E, W_EE (``variant``) and the rank metrics' W_EE (``rank_variant``; None: the same) for the
    whole vocabulary (see the module docstring), batched over the vocabulary; both variants come
    from the same pass over block 0 (unless one of them is "mlp_only").

    ``method``: "auto" (the factored path when it checks out, else the forward pass), "forward" or
    "factored" (still checked; an error if it does not match)."""
    for v in (variant, rank_variant or variant):
        if v not in EMBEDDING_VARIANTS:
            raise ValueError(f"unknown effective-embedding variant {v!r}; choose one of {EMBEDDING_VARIANTS}")
    variants = tuple(dict.fromkeys([variant, rank_variant or variant]))
    check: dict[str, Any] = {}
    W_OV = c = None
    modules = _factored_block(model) if method != "forward" else None
    if modules is not None:
        W_OV, c = layer0_ov(model), attention_bias_constant(model)
        check = factored_check(model, variants, attention_bias, modules, W_OV, c)
    elif method != "forward":
        check = {"reason": "block 0 has no separate ln1/ln2/MLP modules: the forward pass computes W_EE"}
    use_factored = modules is not None and "reason" not in check
    if method == "factored" and not use_factored:
        raise ValueError(f"the factored path does not match the forward pass: {check}")
    block0 = (lambda rows, ids, p: factored_block0(model, rows, p, attention_bias, W_OV, c, modules)) if use_factored \
        else (lambda rows, ids, p: forward_block0(model, ids, p, attention_bias))
    W_E, out = embed_vocabulary(model, variants, block0, use_factored, batch_size, progress)
    return Layer0(W_E=W_E, W_EE=out[variant], variant=variant, attention_bias=attention_bias,
                  method="factored" if use_factored else "forward", check=check,
                  W_EE_rank=out[rank_variant or variant], rank_variant=rank_variant or variant)


def embed_vocabulary(model: LoadedModel, variants: tuple[str, ...], block0: Callable, factored: bool,
                     batch_size: int, progress: bool) -> tuple[Tensor, dict[str, Tensor]]:
    """W_E and every variant's W_EE for the whole vocabulary, ``batch_size`` tokens at a time:
    ``block0(rows, ids, variants)`` is the factored block 0 on W_E's rows (``factored``: W_E is the
    model's own) or the forward pass on the token ids (which also returns the W_E it received)."""
    bridge_W_E = model.weight("W_E")
    d_vocab = bridge_W_E.shape[0]
    out = {v: torch.empty_like(bridge_W_E) for v in variants}
    W_E = bridge_W_E if factored else torch.empty_like(bridge_W_E)
    starts = range(0, d_vocab, batch_size)
    for start in tqdm(starts, desc="effective embedding", unit="batch", disable=not progress, leave=False):
        stop = min(start + batch_size, d_vocab)
        for p in _passes(variants):
            got = block0(bridge_W_E[start:stop], torch.arange(start, stop), p)
            if not factored:
                W_E[start:stop] = got.pop("W_E")
            for v in p:
                out[v][start:stop] = got[v]
    return W_E, out
