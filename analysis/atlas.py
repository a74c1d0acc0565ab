"""The head atlas: every head's weights-only signatures and the head types they support
(docs/methods.md#head-atlas). Pure functions: a loaded model and its :class:`analysis.embeddings.Layer0`
in, plain numbers and lists out. All circuits come from :mod:`analysis.circuits` (norm gains, GQA's
query head → key/value head), never from a re-implemented block.

* **Copying score** (Elhage et al. 2021, the OV eigenvalue analysis): for the full OV circuit
  W_E·W_OV·W_U and the effective one W_EE·W_OV·W_U (W_EE: the rank metrics' embedding, the
  copy-suppression paper's block-0 residual by default), with λ the non-zero eigenvalues,

      copying = Σ Re λ / Σ |λ|  ∈ [−1, 1]     (+1: the head copies what it attends to; −1: it suppresses it).

  The eigenvalues are those of ``FactoredMatrix.eigenvalues``, the d_head × d_head product BA: for
  X·W_V·W_O·W_U (X = W_E or W_EE) the non-zero eigenvalues are those of W_O·(W_U·X)·W_V, where the
  d_model × d_model matrix W_U·X is computed once per model — the same numbers, no vocab-sized
  product per head. An eigenvalue counts as zero below :data:`ZERO_EIGENVALUE` times the largest |λ|.
* **Composition** (Elhage et al.; TransformerLens' own ``utilities.composition_scores``): for an
  earlier head A and a later head B, ‖W_OV^A · M^B‖_F / (‖W_OV^A‖_F ‖M^B‖_F) with M^B = W_Q·W_Kᵀ
  (Q-composition: A's output read by B's queries), (W_Q·W_Kᵀ)ᵀ = W_K·W_Qᵀ (K: by its keys) or
  W_V·W_O (V). **Baseline**: the score's analytic expectation for independent Gaussian factors of
  the same shapes, 1/√d_model (:func:`composition_baseline`; a seeded simulation checks it); the
  atlas reports each score's excess over it and their ratio. Raw scores of unrelated trained heads
  are far from 0; the baseline says how far random matrices of those shapes already are.
* **Positional signature** (learned absolute positions only): the attention pattern the head gives
  the position embeddings alone, softmax(mask(q(n(W_pos))·k(n(W_pos))ᵀ / s)) with the causal mask,
  s the model's attention scale and n the pre-attention norm's action on a residual stream that holds
  only W_pos (centred for LayerNorm, rows scaled to norm √d_model; its gain is in W_Q, W_K). The
  **previous-token score** is the mean over positions i ≥ 1 of the attention to i − 1, the
  **first-token score** the mean of the attention to position 0. For rotary (and any non-learned)
  positions the positional pattern is not a function of the weights alone: the atlas records why,
  and no number.
* **Head types** (:func:`head_types`), each a "weights-only candidate" assigned only by its stated
  rule (:data:`TYPE_RULES`); a dead head (W_OV = 0 or W_QK = 0) has no signatures and no types.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
from torch import Tensor
from transformer_lens import FactoredMatrix
from transformer_lens.utilities import composition_scores

from . import circuits, diagonal
from .config import HeadRef
from .embeddings import Layer0
from .model.loader import LoadedModel, single_threaded

#: an eigenvalue with |λ| below this share of the largest |λ| counts as zero
ZERO_EIGENVALUE = 1e-6
#: pairs of random Gaussian factors :func:`simulated_baseline` averages over, and their seed
BASELINE_SAMPLES = 64
BASELINE_SEED = 0
#: the composition modes, in TransformerLens' names
MODES = ("Q", "K", "V")
#: how many upstream partners per mode a head record keeps, and how many edges the survey keeps
TOP_PARTNERS = 3
TOP_EDGES = 50
#: the rules' thresholds
COPYING_MIN = 0.7
PREVIOUS_TOKEN_MIN = 0.5
#: "in excess": a composition score at least this many times its random baseline
COMPOSITION_MIN_RATIO = 2.0
CANDIDATE = "weights-only candidate"
ROTARY_REASON = "not defined from the weights for rotary positions"

TYPE_RULES: list[dict[str, str]] = [
    {"type": "copy_suppression", "title": "Copy suppression",
     "rule": "the survey's rule: both OV self-suppression and QK self-attention supported by the evidence rule "
             f"(median rank within the best {diagonal.MAX_MEDIAN_SHARE:.0%} of the row and the top-10 fraction "
             f"at least {diagonal.MIN_LIFT:g} times chance)"},
    {"type": "copying", "title": "Copying",
     "rule": f"effective copying score ≥ {COPYING_MIN} and OV self-promotion (a token's own logit among the "
             "highest of its row of W_EE·W_OV·W_U) supported by the same evidence rule"},
    {"type": "previous_token", "title": "Previous token",
     "rule": f"previous-token score ≥ {PREVIOUS_TOKEN_MIN} (learned absolute positions only)"},
    {"type": "induction", "title": "Induction candidate",
     "rule": "copying, and K-composition with an earlier previous-token head at least "
             f"{COMPOSITION_MIN_RATIO:g} times its random baseline"},
]


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def dead_reason(w: circuits.HeadWeights) -> str | None:
    """Why the head is dead (W_OV = 0: it writes nothing; W_QK = 0: it reads nothing), or None."""
    if not bool(w.W_O_out.any()) or not bool(w.W_V.any()):
        return "dead head: W_OV = 0 (it writes nothing)"
    if not bool(w.W_Q.any()) or not bool(w.W_K.any()):
        return "dead head: W_QK = 0 (its attention reads nothing)"
    return None


def copying_score(eigenvalues: Tensor) -> dict[str, Any]:
    """Σ Re λ / Σ |λ| over the non-zero eigenvalues (|λ| > :data:`ZERO_EIGENVALUE`·max |λ|), and those
    eigenvalues as ``[re, im]`` pairs (largest |λ| first); undefined when every λ is zero."""
    lam = eigenvalues.to(torch.complex128)
    size = lam.abs()
    if size.numel() == 0 or float(size.max()) == 0.0:
        return {"score": None, "reason": "every eigenvalue is zero", "n_nonzero": 0, "eigenvalues": []}
    keep = lam[size > ZERO_EIGENVALUE * size.max()]
    keep = keep[torch.argsort(keep.abs(), descending=True, stable=True)]
    score = float(keep.real.sum() / keep.abs().sum())
    return {"score": _finite(score), "reason": None, "n_nonzero": int(keep.numel()),
            "eigenvalues": [[float(z.real), float(z.imag)] for z in keep]}


def readouts(model: LoadedModel, layer0: Layer0) -> dict[str, Tensor]:
    """W_U·W_E and W_U·W_EE (the rank metrics' W_EE), d_model × d_model, once per model: vocab-long
    products in float32 at least (a float64 GEMM would double the atlas's largest cost), kept in float64."""
    W_U = circuits.unembedding(model)
    dtype = torch.promote_types(W_U.dtype, torch.float32)
    with torch.no_grad():
        return {key: (W_U.to(dtype) @ X.to(dtype)).double()
                for key, X in (("full", layer0.W_E), ("effective", layer0.W_EE_rank))}


def head_copying(w: circuits.HeadWeights, reads: dict[str, Tensor]) -> dict[str, dict[str, Any]]:
    """The copying score of the full and the effective OV circuit (module docstring)."""
    out = {}
    for key, readout in reads.items():
        fm = FactoredMatrix(w.W_V.double(), w.W_O_out.double() @ readout)
        out[key] = copying_score(fm.eigenvalues)
    return out


def attention_scale(model: LoadedModel) -> float:
    """The divisor of the model's attention scores: cfg.attn_scale when set, else √d_head (1 when
    ``use_attn_scale`` is off)."""
    cfg = model.bridge.cfg
    if not getattr(cfg, "use_attn_scale", True):
        return 1.0
    scale = float(getattr(cfg, "attn_scale", -1.0) or -1.0)
    return scale if scale > 0 else math.sqrt(model.d_head)


def positional_inputs(model: LoadedModel) -> Tensor | None:
    """n(W_pos): the rows the pre-attention norm gives a residual stream holding only the position
    embedding (centred for LayerNorm, each row scaled to norm √d_model); None unless positions are
    learned absolute embeddings."""
    if model.positional != "standard":
        return None
    W_pos = model.weight("W_pos")
    if model.normalization == "LN":
        W_pos = W_pos - W_pos.mean(dim=-1, keepdim=True)
    return circuits.scale_rows(W_pos)


def causal_mask(n: int, device=None) -> Tensor:
    """``[n, n]``: 0 where key j ≤ query i, −inf above the diagonal (added to the scores)."""
    return torch.zeros(n, n, device=device).masked_fill_(torch.ones(n, n, dtype=torch.bool, device=device).triu(1),
                                                         float("-inf"))


def positional_signature(w: circuits.HeadWeights, rows: Tensor | None, scale: float, positional: str,
                         mask: Tensor | None = None) -> dict[str, Any]:
    """Previous-token and first-token scores of the head's positional pattern (module docstring);
    the reason and no numbers for non-learned positions. ``mask``: :func:`causal_mask` of the rows
    (built here when not given)."""
    if rows is None:
        reason = ROTARY_REASON if positional == "rotary" else f"not defined from the weights for {positional} positions"
        return {"defined": False, "reason": reason, "previous_token": None, "first_token": None, "n_positions": None}
    n = rows.shape[0]
    if n < 2:
        return {"defined": False, "reason": "a single position", "previous_token": None, "first_token": None,
                "n_positions": n}
    with torch.no_grad():
        dtype = torch.promote_types(rows.dtype, torch.float32)
        q, k = w.queries(rows).to(dtype), w.keys(rows).to(dtype)
        mask = causal_mask(n, rows.device) if mask is None else mask
        scores = torch.addmm(mask.to(dtype), q, k.T, alpha=1 / scale)  # mask + q·kᵀ / s
        lse = torch.logsumexp(scores, dim=-1)  # the causal softmax's normaliser of each query row
        i = torch.arange(1, n, device=scores.device)
        # means of softmax weights exp(score − lse): in [0, 1], up to float rounding
        previous = min(1.0, float((scores[i, i - 1] - lse[i]).double().exp().mean()))
        first = min(1.0, float((scores[i, 0] - lse[i]).double().exp().mean()))
    return {"defined": True, "reason": None, "previous_token": previous, "first_token": first, "n_positions": int(n)}


def composition_baseline(d_model: int) -> dict[str, Any]:
    """The analytic baseline of a composition score: for independent standard Gaussian factors,
    M₁ = A·B and M₂ = C·D (A, C: d_model × d_head; B, D: d_head × d_model),
    E‖M₁M₂‖²_F = d_model³·d_head² and E‖M₁‖²_F = E‖M₂‖²_F = d_model²·d_head, so the score
    ‖M₁M₂‖_F / (‖M₁‖_F‖M₂‖_F) concentrates at 1/√d_model (whatever d_head; the same for Q, K and V,
    whose matrices all have these shapes). :func:`simulated_baseline` checks it."""
    return {"mean": 1 / math.sqrt(d_model),
            "method": "analytic expectation for independent standard Gaussian factors of the same shapes: "
                      f"1/√d_model = 1/√{d_model}"}


def simulated_baseline(d_model: int, d_head: int, samples: int = BASELINE_SAMPLES,
                       seed: int = BASELINE_SEED) -> tuple[float, float]:
    """Mean and standard deviation of ``composition_scores`` over ``samples`` seeded pairs of
    standard Gaussian factored matrices (d_model × d_head)·(d_head × d_model): what
    :func:`composition_baseline` states analytically."""
    g = torch.Generator().manual_seed(seed)

    def gaussian() -> FactoredMatrix:
        return FactoredMatrix(torch.randn(samples, d_model, d_head, generator=g, dtype=torch.float64),
                              torch.randn(samples, d_head, d_model, generator=g, dtype=torch.float64))

    scores = composition_scores(gaussian(), gaussian(), broadcast_dims=False)
    return float(scores.mean()), float(scores.std())


def composition_matrices(heads: list[circuits.HeadWeights]) -> dict[str, FactoredMatrix]:
    """The stacked ``[n, d_model, d_model]`` factored matrices the modes compose: ``"OV"`` (the
    writer side, W_V·W_O with the post-attention gain), ``"Q"`` (W_Q·W_Kᵀ), ``"K"`` ((W_Q·W_Kᵀ)ᵀ),
    ``"V"`` (W_V·W_O), in float32 at least."""
    dtype = torch.promote_types(heads[0].W_Q.dtype, torch.float32)

    def stack(name: str) -> Tensor:
        return torch.stack([getattr(w, name) for w in heads]).to(dtype)

    qk = FactoredMatrix(stack("W_Q"), stack("W_K").transpose(-1, -2))
    ov = FactoredMatrix(stack("W_V"), stack("W_O_out"))
    return {"OV": ov, "Q": qk, "K": qk.T, "V": ov}


@torch.no_grad()
def all_compositions(heads: list[circuits.HeadWeights], dead: list[bool]) -> dict[str, Tensor]:
    """For each mode, the ``[n, n]`` scores of writer head a (row) into reader head b (column) for
    a in an earlier layer than b (NaN elsewhere and for dead heads), from TransformerLens'
    ``composition_scores``: one call per reader head, mode and earlier layer, against the stack of
    that layer's heads. Each side's factored matrix is built once (TransformerLens caches its SVD on
    the object), so every head's SVD is computed once per side, only earlier-layer pairs are
    multiplied, and no pair-sized copy of the factors is made."""
    mats = composition_matrices(heads)
    layers = torch.tensor([w.head.layer for w in heads])
    n = len(heads)
    out = {mode: torch.full((n, n), float("nan"), dtype=torch.float64) for mode in MODES}
    index = {layer: (layers == layer).nonzero()[:, 0] for layer in sorted(set(layers.tolist()))}
    writers = {layer: FactoredMatrix(mats["OV"].A[idx], mats["OV"].B[idx]) for layer, idx in index.items()}
    with single_threaded():  # small SVDs and GEMMs: thread barriers cost more than the work
        for b in range(n):
            earlier = [layer for layer in index if layer < int(layers[b])]
            for mode in MODES if earlier else ():
                right = FactoredMatrix(mats[mode].A[b], mats[mode].B[b])
                for layer in earlier:
                    out[mode][index[layer], b] = composition_scores(
                        writers[layer], right, broadcast_dims=False).double()
    mask = torch.tensor(dead, dtype=torch.bool)
    for scores in out.values():
        scores[mask, :] = float("nan")
        scores[:, mask] = float("nan")
    return out


def upstream_partners(scores: dict[str, Tensor], index: int, labels: list[str], baseline: float,
                      k: int = TOP_PARTNERS) -> dict[str, list[dict[str, Any]]]:
    """The ``k`` earlier heads that compose most with head ``index`` in each mode: label, score,
    excess over the baseline and the score's ratio to it (highest score first; ties by label order)."""
    out = {}
    for mode, s in scores.items():
        col = s[:, index]
        ok = (~col.isnan()).nonzero()[:, 0].tolist()
        ok.sort(key=lambda a: (-float(col[a]), a))
        out[mode] = [{"label": labels[a], "score": float(col[a]), "excess": float(col[a]) - baseline,
                      "ratio": float(col[a]) / baseline} for a in ok[:k]]
    return out


def strongest_edges(scores: dict[str, Tensor], labels: list[str], baseline: float,
                    k: int = TOP_EDGES) -> list[dict[str, Any]]:
    """The ``k`` composition edges with the largest excess over the baseline, over all modes."""
    edges = []
    for mode, s in scores.items():
        for a, b in (~s.isnan()).nonzero().tolist():
            edges.append((-float(s[a, b]), MODES.index(mode), a, b, mode))
    edges.sort(key=lambda e: e[:4])
    return [{"source": labels[a], "target": labels[b], "mode": mode, "score": -neg, "excess": -neg - baseline,
             "ratio": -neg / baseline} for neg, _, a, b, mode in edges[:k]]


def layer_composition(scores: dict[str, Tensor], layers: list[int], n_layers: int,
                      baseline: float) -> dict[str, list[list[float | None]]]:
    """For each mode, the ``n_layers × n_layers`` map of the strongest composition from a head of
    layer i (row, the writer) into a head of layer j (column, the reader), as a ratio to the baseline:
    the maximum over every pair of live heads (None where j ≤ i, or no pair is live)."""
    index = torch.tensor(layers)
    out = {}
    for mode, s in scores.items():
        grid: list[list[float | None]] = [[None] * n_layers for _ in range(n_layers)]
        for i in range(n_layers):
            for j in range(i + 1, n_layers):
                block = s[index == i][:, index == j]
                block = block[~block.isnan()]
                grid[i][j] = float(block.max()) / baseline if block.numel() else None
        out[mode] = grid
    return out


def head_types(record: dict[str, Any], previous_token_heads: set[str], copy_suppression: bool,
               self_promotion: dict[str, Any] | None) -> list[dict[str, str]] | None:
    """The types whose rule (:data:`TYPE_RULES`) the signatures in ``record`` (an atlas head record)
    meet, each with its evidence, or None for a dead head (undefined). ``copy_suppression``: the
    survey's ``beats_chance``; ``self_promotion``: the OV self-promotion rank summary (None when the
    copying score is below :data:`COPYING_MIN`, where it is not needed)."""
    if record["dead"]:
        return None
    types = []
    if copy_suppression:
        types.append({"type": "copy_suppression", "label": CANDIDATE,
                      "evidence": "OV self-suppression and QK self-attention both supported"})
    eff = record["copying"]["effective"]["score"]
    copying = (eff is not None and eff >= COPYING_MIN and self_promotion is not None
               and self_promotion["evidence"]["supported"])
    if copying:
        types.append({"type": "copying", "label": CANDIDATE,
                      "evidence": f"effective copying score {eff:.3f} ≥ {COPYING_MIN}; OV self-promotion top-10 "
                                  f"fraction {self_promotion['fraction_top10']:.3f} "
                                  f"(chance {self_promotion['chance']['fraction_top10']:.2g})"})
    prev = record["positional"]["previous_token"]
    if prev is not None and prev >= PREVIOUS_TOKEN_MIN:
        types.append({"type": "previous_token", "label": CANDIDATE,
                      "evidence": f"previous-token score {prev:.3f} ≥ {PREVIOUS_TOKEN_MIN}"})
    if copying:
        hits = [p for p in record["composition"]["K"]["all_previous_token"]
                if p["ratio"] >= COMPOSITION_MIN_RATIO]
        if hits:
            best = hits[0]
            types.append({"type": "induction", "label": CANDIDATE,
                          "evidence": f"copying, and K-composition with previous-token head {best['label']} "
                                      f"{best['score']:.3f} = {best['ratio']:.2f} × baseline"})
    return types


@torch.no_grad()
def self_promotion(model: LoadedModel, w: circuits.HeadWeights, W_EE: Tensor, mode: str, sample_size: int,
                   seed: int) -> dict[str, Any]:
    """OV self-promotion: in row s of the effective OV circuit W_EE·W_V·W_O·W_U (the rank metrics'
    circuit), the rank of s's own logit, rank 1 =
    highest; the row factor of the ranked rows only, the column factor W_O·W_U once."""
    W_U = circuits.unembedding(model)
    circuit = circuits.TokenCircuit(lambda rows: W_EE[rows.to(W_EE.device)] @ w.W_V, w.W_O_out @ W_U, W_EE.shape[0])
    return diagonal.rank_pass(circuit, mode, descending=True, sample_size=sample_size, seed=seed)[0]


def head_records(refs: list[HeadRef], labels: list[str], dead: list[str | None], copying: list, positional: list,
                 scores: dict[str, Tensor], baseline: float) -> dict[str, dict[str, Any]]:
    """Each head's signatures (a dead head's marked undefined, with the reason), before its types."""
    records: dict[str, dict[str, Any]] = {}
    for i, (ref, d) in enumerate(zip(refs, dead)):
        partners = upstream_partners(scores, i, labels, baseline)
        records[ref.label] = {
            "dead": d is not None, "reason": d,
            "copying": copying[i] or {key: {"score": None, "reason": d, "n_nonzero": 0, "eigenvalues": []}
                                      for key in ("full", "effective")},
            "positional": positional[i] or {"defined": False, "reason": d, "previous_token": None,
                                            "first_token": None, "n_positions": None},
            "composition": {m: {"top": partners[m]} for m in MODES},
        }
    return records


def assign_types(records: dict[str, dict[str, Any]], labels: list[str], previous: set[str],
                 scores: dict[str, Tensor], baseline: float, copy_suppression: dict[str, bool], promotion) -> None:
    """Each head's K-composition with the previous-token heads, its OV self-promotion (``promotion(i)``,
    run only for heads whose copying score meets :data:`COPYING_MIN`) and its candidate types."""
    for i, label in enumerate(labels):
        r = records[label]
        col = scores["K"][:, i]
        hits = sorted((a for a in range(len(labels)) if labels[a] in previous and not col[a].isnan()),
                      key=lambda a: (-float(col[a]), a))
        r["composition"]["K"]["all_previous_token"] = [
            {"label": labels[a], "score": float(col[a]), "excess": float(col[a]) - baseline,
             "ratio": float(col[a]) / baseline} for a in hits]
        eff = r["copying"]["effective"]["score"]
        promo = promotion(i) if eff is not None and eff >= COPYING_MIN else None
        r["ov_self_promotion"] = (None if promo is None else
                                  {k: promo[k] for k in ("defined", "fraction_top10", "median_rank", "chance",
                                                         "evidence") if k in promo})
        r["types"] = head_types(r, previous, copy_suppression.get(label, False), promo)
        r["composition"]["K"]["previous_token"] = r["composition"]["K"].pop("all_previous_token")[:TOP_PARTNERS]


def atlas(model: LoadedModel, layer0: Layer0, *, copy_suppression: dict[str, bool], mode: str,
          sample_size: int, seed: int, timer=None) -> dict[str, Any]:
    """Every head's atlas record (``"heads"``: label → record) and the model-wide part (the rules,
    the composition baseline, the strongest edges). ``copy_suppression``: label → the survey's
    ``beats_chance``; ``mode``, ``sample_size``, ``seed``: the survey's ranking settings, which the
    OV self-promotion check uses (for heads whose copying score meets :data:`COPYING_MIN` only, so
    the cost stays linear in heads); ``timer``: a :class:`analysis.timings.Timer`."""

    def step(name):
        return timer(f"survey/atlas/{name}") if timer is not None else contextlib.nullcontext()

    refs = [HeadRef(layer, h) for layer in range(model.n_layers) for h in range(model.n_heads)]
    labels = [r.label for r in refs]
    heads = [circuits.head_weights(model, r) for r in refs]
    dead = [dead_reason(w) for w in heads]
    with step("copying"):
        reads = readouts(model, layer0)
        with single_threaded():  # d_head-sized eigenproblems
            copying = [None if d else head_copying(w, reads) for w, d in zip(heads, dead)]
    with step("positional"):
        rows, scale = positional_inputs(model), attention_scale(model)
        mask = None if rows is None else causal_mask(rows.shape[0], rows.device)
        with single_threaded():  # n_ctx-sized products and row reductions, one head at a time
            positional = [None if d else positional_signature(w, rows, scale, model.positional, mask)
                          for w, d in zip(heads, dead)]
    with step("composition"):
        baseline = composition_baseline(model.d_model)
        scores = all_compositions(heads, [d is not None for d in dead])
    records = head_records(refs, labels, dead, copying, positional, scores, baseline["mean"])
    previous = {label for label, r in records.items()
                if (r["positional"]["previous_token"] or 0.0) >= PREVIOUS_TOKEN_MIN and not r["dead"]}
    with step("types"):
        assign_types(records, labels, previous, scores, baseline["mean"], copy_suppression,
                     lambda i: self_promotion(model, heads[i], layer0.W_EE_rank, mode, sample_size, seed))
    return {
        "heads": records,
        "rules": TYPE_RULES,
        "candidate_label": CANDIDATE,
        "composition_baseline": baseline,
        "edges": strongest_edges(scores, labels, baseline["mean"]),
        "layer_composition": layer_composition(scores, [r.layer for r in refs], model.n_layers, baseline["mean"]),
        "attention_scale": scale,
        "positional": model.positional,
        "zero_eigenvalue": ZERO_EIGENVALUE,
        "effective_embedding": layer0.rank_variant,
    }
