"""The head on real prompts: its attention pattern and its direct effect on the logits, from the
model's own forward pass (through the bridge's hooks, so every supported family runs its own code).

For each prompt, one forward pass records, for every analysed head h of layer L:

* the attention pattern (``blocks.L.attn.hook_pattern``, query head h), stored compactly
  (:mod:`analysis.attention_patterns`);
* at the final position q, the head's output o = Σ_s a_qs · v_s W_O^h (``hook_v``, the head's
  key/value head under grouped-query attention), and its *direct effect* on the logit of token t:
  o passed through the final norm as the model normalised position q (``cache.apply_ln_to_stack``:
  the norm's own scale, frozen) and projected on t's unembedding. For every source position s,
  the direct effect on the logit of s's token; for the model's top prediction, likewise.
  ``via_source`` is the part that comes from attending s alone (a_qs · v_s W_O^h).

The decomposition is checked on every prompt: the heads' outputs plus the attention bias must give
the layer's attention output (``hook_attn_out``), and the whole residual stream through the same
frozen norm and the unembedding must give the model's logits. Where the second check fails (a final
logit soft-cap, a logit scale), the direct effects are a linearisation, and the artifact and the
report say so.

This is evidence on a handful of prompts, not the dataset-wide numbers of the copy-suppression paper.

Definitions and sources: docs/methods.md#the-head-on-prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from . import attention_patterns
from .config import HeadRef
from .errors import ConfigError, UserError
from .inputs.prompt_files import MAX_PROMPT_TOKENS, PromptSet
from .tokens import token_record, token_records

#: relative error above which a decomposition check fails
CHECK_TOLERANCE = 1e-3
#: how the records' patterns are stored (recorded in the artifact's results)
PATTERN_FORMAT = {"pattern_encoding": attention_patterns.ENCODING, "pattern_scale": attention_patterns.SCALE}


def _relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def rounded(x: float, digits: int = 5) -> float:
    return float(f"{x:.{digits}g}")


def weight(x: torch.Tensor | float, digits: int = 5) -> float:
    """An attention weight, rounded, in [0, 1]."""
    return min(1.0, max(0.0, rounded(float(x), digits)))


def encoded_pattern(pattern: torch.Tensor) -> str:
    """The attention pattern [q, s] as the artifact stores it (:mod:`analysis.attention_patterns`:
    row q's weights of positions 0..q, in units of 1/10000, packed into one string); the same
    rounding as :func:`analysis.attention_patterns.quantize`, on the whole tensor."""
    n = pattern.shape[0]
    rows, cols = torch.tril_indices(n, n)  # row-major: row 0, then row 1, ...
    stored = (pattern.to(torch.float64).clamp(0, 1) * attention_patterns.SCALE).round()[rows, cols].to(torch.int32)
    planes = torch.cat([stored & 0xFF, stored >> 8]).to(torch.uint8)  # low bytes, then high bytes
    return attention_patterns.deflate(planes.numpy().tobytes())


def tokenize(model, text: str) -> torch.Tensor:
    """The prompt's tokens as the model reads them (with its beginning-of-sequence token, when the
    bridge prepends one)."""
    toks = model.bridge.to_tokens(text, truncate=False)  # (truncating would hide a prompt's end)
    n_ctx = int(getattr(model.bridge.cfg, "n_ctx", 0) or 0)
    limit = min(MAX_PROMPT_TOKENS, n_ctx) if n_ctx > 0 else MAX_PROMPT_TOKENS
    if toks.shape[1] > limit:
        context = f" (the model's context is {n_ctx} tokens)" if limit < MAX_PROMPT_TOKENS else ""
        raise ConfigError(f"prompts: {text[:60]!r}… is {toks.shape[1]} tokens; a prompt is at most {limit}{context}")
    return toks


def run_prompt(model, heads: Sequence[HeadRef], toks: torch.Tensor) -> tuple[dict[str, Any], dict[str, float]]:
    """One prompt through the model: per head, the pattern and the final position's direct effects;
    and the two checks' relative errors."""
    bridge = model.bridge
    layers = sorted({h.layer for h in heads})
    names = {f"blocks.{L}.attn.hook_pattern" for L in layers} | {f"blocks.{L}.attn.hook_v" for L in layers} | \
            {f"blocks.{L}.hook_attn_out" for L in layers} | {"ln_final.hook_scale",
                                                              f"blocks.{model.n_layers - 1}.hook_resid_post"}
    with torch.no_grad():
        logits, cache = bridge.run_with_cache(toks, names_filter=lambda name: name in names)
    missing = sorted(n for n in names if n not in cache)
    if missing:
        raise UserError(f"prompts: this model's bridge exposes no {', '.join(missing)} hook, so the head cannot be "
                        "read on prompts; set prompts = \"off\"")
    W_U = model.weight("W_U")  # float32 products: a float64 copy of W_U per prompt cost more than it gave
    q = toks.shape[1] - 1
    final_logits = logits[0, q].to(torch.float64)
    ids = toks[0].tolist()
    top = int(final_logits.argmax())
    # check 2: the residual stream through the frozen final norm and W_U gives the model's logits
    resid = cache[f"blocks.{model.n_layers - 1}.hook_resid_post"][0, q]
    normed = _apply_final_norm(cache, resid, q)
    b_U = model.weight("b_U")
    rebuilt = (normed.to(W_U.dtype) @ W_U + (b_U if b_U is not None else 0)).to(torch.float64)
    checks = {"logits": _relative_error(rebuilt - rebuilt.mean(), final_logits - final_logits.mean())}
    out: dict[str, Any] = {}
    by_layer: dict[int, torch.Tensor] = {}
    for head in heads:
        L, h = head.layer, head.head
        pattern = cache[f"blocks.{L}.attn.hook_pattern"][0, h].to(torch.float64)  # [q, s]
        v = cache[f"blocks.{L}.attn.hook_v"][0].to(torch.float64)  # [s, kv_heads, d_head]
        kv = h if v.shape[1] == model.n_heads else model.kv_head(h)
        W_O = model.weight("W_O")[L, h].to(torch.float64)  # [d_head, d_model]
        per_source = pattern[q][:, None] * (v[:, kv] @ W_O)  # [s, d_model]: a_qs v_s W_O
        if L not in by_layer:
            by_layer[L] = _layer_heads_output(model, cache, L)
        direct = (_apply_final_norm(cache, per_source, q).to(W_U.dtype) @ W_U).to(torch.float64)  # [s, vocab]
        total = direct.sum(dim=0)  # the head's whole output at q → every logit
        sources = [{"pos": s, "weight": weight(pattern[q, s]), "effect": rounded(float(total[ids[s]])),
                    "via_source": rounded(float(direct[s, ids[s]]))} for s in range(q + 1)]
        out[head.label] = {
            "pattern": encoded_pattern(pattern),
            "sources": sources,
            "top_prediction": token_record(model.tokenizer, top, effect=rounded(float(total[top]))),
        }
    for L, heads_out in by_layer.items():
        attn_out = cache[f"blocks.{L}.hook_attn_out"][0].to(torch.float64)
        checks[f"attn_out.{L}"] = _relative_error(heads_out, attn_out)
    return out, checks


def _apply_final_norm(cache, vectors: torch.Tensor, q: int) -> torch.Tensor:
    """``vectors`` (..., d_model) through the final norm as the model normalised position ``q``: the
    cache's own linearisation (centring for a LayerNorm, then the frozen scale)."""
    stack = vectors.reshape(-1, 1, vectors.shape[-1]).to(cache["ln_final.hook_scale"].dtype)
    return cache.apply_ln_to_stack(stack, layer=None, pos_slice=q).reshape(vectors.shape)


def _layer_heads_output(model, cache, L: int) -> torch.Tensor:
    """The layer's attention output rebuilt from its heads: Σ_h (pattern_h · v) W_O^h + b_O."""
    pattern = cache[f"blocks.{L}.attn.hook_pattern"][0].to(torch.float64)  # [h, q, s]
    v = cache[f"blocks.{L}.attn.hook_v"][0].to(torch.float64)  # [s, kv, d_head]
    v_full = v.repeat_interleave(model.n_heads // v.shape[1], dim=1)  # [s, h, d_head]
    z = torch.einsum("hqs,shd->qhd", pattern, v_full)
    W_O = model.weight("W_O")[L].to(torch.float64)  # [h, d_head, d_model]
    out = torch.einsum("qhd,hdm->qm", z, W_O)
    b_O = model.weight("b_O")
    return out + b_O[L].to(torch.float64) if b_O is not None else out


def largest_source(sources: list[dict[str, Any]], bos: bool) -> dict[str, Any]:
    """The source position with the largest attention weight, the beginning-of-sequence token
    excluded when the model prepends one (ties: the earlier position)."""
    candidates = sources[1:] if bos and len(sources) > 1 else sources
    return max(candidates, key=lambda r: (r["weight"], -r["pos"]))


def summary(records: list[dict[str, Any]], bos: Sequence[bool]) -> dict[str, Any]:
    """Across prompts: how often the largest-attention source token's logit is pushed down
    (``bos``: per prompt, whether the model prepended a beginning-of-sequence token)."""
    n = len(records)
    negative = sum(1 for r, b in zip(records, bos) if largest_source(r["sources"], b)["effect"] < 0)
    return {"n_prompts": n, "n_negative": negative, "share_negative": negative / n if n else None}


def analyze_prompts(model, heads: Sequence[HeadRef], prompts: PromptSet, timer=None) -> dict[str, Any]:
    """The ``results`` of a prompts artifact: the prompts as tokenized, and per head one record per
    prompt (pattern, final-position sources, top prediction) and the summary."""
    tok = model.tokenizer
    bos_id = getattr(tok, "bos_token_id", None)
    per_head: dict[str, list[dict[str, Any]]] = {h.label: [] for h in heads}
    listed, worst = [], {"logits": 0.0, "attn_out": 0.0}
    bos_flags = []
    for text in prompts.texts:
        toks = tokenize(model, text)
        ids = toks[0].tolist()
        bos = bos_id is not None and len(ids) > 1 and ids[0] == bos_id and \
            tok.encode(text, add_special_tokens=False)[:1] != [bos_id]
        bos_flags.append(bos)
        records, checks = run_prompt(model, heads, toks)
        attn_error = max(v for k, v in checks.items() if k.startswith("attn_out"))
        if attn_error > CHECK_TOLERANCE:  # not separable per head: say so instead of guessing
            family = model.provenance.get("architecture") or "this model"
            return {"source": prompts.source, "sha256": prompts.sha256, "prompts": [], "heads": {}, **PATTERN_FORMAT,
                    "checks": {"attn_out_max_relative_error": rounded(attn_error, 3),
                               "logits_max_relative_error": rounded(checks["logits"], 3),
                               "direct_effects_exact": False},
                    "note": f"Not computed: on {family} the heads' outputs do not add up to the layer's attention "
                            f"output (relative error {attn_error:.2g}; for example a norm applied after attention), "
                            "so a single head's direct effect on the logits is not defined by its output alone."}
        for label, rec in records.items():
            rec["largest"] = largest_source(rec["sources"], bos)
            per_head[label].append(rec)
        worst["logits"] = max(worst["logits"], checks["logits"])
        worst["attn_out"] = max([worst["attn_out"]] + [v for k, v in checks.items() if k.startswith("attn_out")])
        listed.append({"text": text, "bos": bos, "tokens": token_records(tok, ids)})
    exact = worst["logits"] <= CHECK_TOLERANCE
    return {
        "source": prompts.source,
        "sha256": prompts.sha256,
        "prompts": listed,
        "heads": {label: {"records": recs, "summary": summary(recs, bos_flags)} for label, recs in per_head.items()},
        **PATTERN_FORMAT,
        "checks": {"attn_out_max_relative_error": rounded(worst["attn_out"], 3),
                   "logits_max_relative_error": rounded(worst["logits"], 3),
                   "direct_effects_exact": exact},
        "note": ("Direct effects: the head's output through the final norm with the scale the model used at that "
                 "position, projected on the unembedding; biases of the unembedding excluded."
                 + ("" if exact else " On this model the logits are not a linear function of the final residual "
                    "stream (for example a final soft-cap or a logit scale), so the direct effects are a "
                    "linearisation.")),
    }
