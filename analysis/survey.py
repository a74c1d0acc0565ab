"""Survey every attention head of a model with the cheap per-head statistics (``survey.json``).

For each head (L, H) — query head H; for grouped-query attention its key/value head is
``H // (n_heads / n_kv_heads)`` — with the same circuits and functions as the per-head analysis
(:mod:`analysis.head`), so a surveyed head gives the per-head analysis's numbers for the same
seed and sample size:

* **spectrum statistics** (:func:`analysis.spectra.spectrum_statistics`: σ₁ share, effective rank...)
  of W_QK = W_Q·W_Kᵀ and of the effective QK circuit q(W_Uᵀ)·k(W_EE)ᵀ. Without QK-norm the latter's
  singular values come from the d_model-sized matrix (R_U·W_Q)(W_Kᵀ·R_EEᵀ), with R_U, R_EE the
  triangular factors of the QR decompositions of W_Uᵀ and W_EE (computed once): exactly the same
  values, never a vocab × vocab matrix. With QK-norm (not linear) the same from the d_head-sized
  square roots of each head's query and each key/value head's key Gram matrices
  (:func:`normed_effective_qk_spectra`).
* **names vs generic words**: :func:`analysis.alignment.compare_groups` without the bootstrap.
* **OV self-suppression** and **QK self-attention** (:func:`analysis.head.head_rank_metrics`):
  for a seeded sample of tokens (or all, ``exact``), the paper's fractions (rank 1, top 10, top 5%),
  their chance levels and the effect-size evidence (:func:`analysis.diagonal.rank_evidence`).
* the **head atlas** (:mod:`analysis.atlas`): copying scores, composition with every earlier head,
  the positional signature and the weights-only candidate types (``heads[].atlas``, ``atlas``).

**Copy-suppression score** (the ranking): ``sqrt(e_OV · e_QK)``, the geometric mean of the two
chance-normalised top-10 excesses e = (f₁₀ − c₁₀) / (1 − c₁₀), each clipped at 0, with chance
c₁₀ = 10 / d_vocab. It is 0 at chance whatever the vocabulary, 1 when every token's own logit is
among the 10 most suppressed and its own key among the 10 most attended, so scores compare across
models. A copy-suppression head needs both halves — it attends to earlier copies of the predicted
token (QK) and pushes that token's logit down (OV) — and the geometric mean is high only when both
are. Ties are broken by the same mean of the top-5% excesses, then by layer and head. A head whose
circuit is degenerate (a dead head: σ₁ = 0) has no score and no rank. A head **beats chance** when
both halves' evidence is supported (the effect-size rule of :func:`analysis.diagonal.rank_evidence`);
``survey.analyze_top`` analyses only heads that beat chance, and the report says when none does.

Definitions and sources: docs/methods.md#survey-of-all-heads.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformer_lens import FactoredMatrix

from . import alignment, atlas, circuits, diagonal, spectra
from .artifacts import SCHEMA_VERSION, merged_timings, write_artifacts
from .config import Config, HeadRef
from .embeddings import Layer0
from .head import LayerCache, head_rank_metrics, subspace_scores_of_words
from .inputs.words import WordLists
from .model.loader import LoadedModel, single_threaded
from .pipeline import artifact_provenance, model_summary, prepare, run_analysis
from .staleness import input_key
from .timings import Timer

RANKING_FORMULA = (
    "copy_suppression_score = sqrt(max(0, e_OV) * max(0, e_QK)), e = (f_top10 - c) / (1 - c), c = 10 / d_vocab "
    "(geometric mean of the chance-normalised top-10 excesses of OV self-suppression and QK self-attention); "
    "ties broken by the same mean of the top-5% excesses, then by layer and head; heads with a degenerate "
    "circuit have no score and no rank"
)

# What the report draws a layer × head heatmap of: (key path in a head record, title, description).
STATISTICS: list[dict[str, str]] = [
    {"key": "copy_suppression_score", "title": "Copy-suppression score",
     "description": "√(e_OV · e_QK), the chance-normalised top-10 excesses: 0 at chance, 1 at most"},
    {"key": "ov_self_suppression.fraction_top10", "title": "OV self-suppression (top-10 fraction)",
     "description": "fraction of tokens whose own logit is among the 10 most suppressed in their row of W_EE·W_OV·W_U"},
    {"key": "ov_self_suppression.median_rank", "title": "OV self-suppression (median rank)",
     "description": "median rank of a token's own logit in its row of W_EE·W_OV·W_U (1 = most negative)"},
    {"key": "qk_self_attention.fraction_top10", "title": "QK self-attention (top-10 fraction)",
     "description": "fraction of tokens whose own key is among the 10 highest for their query"},
    {"key": "qk_self_attention.median_rank", "title": "QK self-attention (median rank)",
     "description": "median rank of a token's own key in its query row (1 = highest)"},
    {"key": "w_qk.sigma1_share", "title": "W_QK σ1 share",
     "description": "σ1 / Σσ of W_Q·W_Kᵀ (1 = rank one)"},
    {"key": "w_qk.effective_rank", "title": "W_QK effective rank",
     "description": "exp(entropy of σ/Σσ) of W_Q·W_Kᵀ, between 1 and d_head"},
    {"key": "effective_qk.sigma1_share", "title": "Effective QK σ1 share",
     "description": "σ1 / Σσ of the effective QK circuit (query W_U, key W_EE)"},
    {"key": "effective_qk.effective_rank", "title": "Effective QK effective rank",
     "description": "exp(entropy of σ/Σσ) of the effective QK circuit"},
    {"key": "subspace.median_ratio", "title": "Names vs generic words (median ratio)",
     "description": "median subspace score of names / median of generic words (random direction ≈ 1 each)"},
]
#: what a head record keeps of a rank summary
RANK_KEYS = ("defined", "reason", "fraction_rank1", "fraction_rank1_ci95", "fraction_top10", "fraction_top10_ci95",
             "fraction_top5pct", "fraction_top5pct_ci95", "median_rank", "mean_rank", "chance", "evidence", "tied_rows")


@torch.no_grad()
def effective_qk_triangular_factors(
    W_U: torch.Tensor, W_EE: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R_U, R_EE)``: d_model × d_model square roots of the Gram matrices, R_Uᵀ R_U = W_U W_Uᵀ and
    R_EEᵀ R_EE = W_EEᵀ W_EE (float64, from their eigendecompositions: exact for rank-deficient
    matrices, such as a W_EE centred by the weight processing), computed once for all heads.

    Then W_Uᵀ = Q_U·R_U and W_EE = Q_EE·R_EE for some Q_U, Q_EE with orthonormal columns, so the
    effective QK circuit W_Uᵀ·W_QK·W_EEᵀ = Q_U·(R_U·W_Q·W_Kᵀ·R_EEᵀ)·Q_EEᵀ has exactly the singular values
    of the d_model × d_model matrix (R_U·W_Q)(W_Kᵀ·R_EEᵀ): its spectrum costs O(d_model·d_head²) per
    head instead of two thin SVDs of d_vocab × d_head factors. The Gram matrices cost one vocab-tall
    GEMM each.
    """
    def root(X: torch.Tensor) -> torch.Tensor:  # rows of X are the vectors: R with RᵀR = XᵀX
        return gram_root(X.T.double() @ X.double())

    return root(W_U.T), root(W_EE)


def gram_root(gram: torch.Tensor) -> torch.Tensor:
    """R with RᵀR = ``gram`` (a symmetric positive semi-definite XᵀX): R = Λ^½·Vᵀ from gram = V·Λ·Vᵀ
    (negative rounding noise in Λ clamped to 0). Then X = Q·R for some Q with orthonormal columns on
    X's row space, so X and R have the same singular values and X·Yᵀ those of R_X·R_Yᵀ."""
    values, vectors = torch.linalg.eigh(gram)
    return values.clamp_min(0).sqrt()[:, None] * vectors.T


@dataclass(frozen=True)
class LayerSpectra:
    """Singular values of every query head's W_QK and effective QK circuit in one layer, and the
    left singular vectors of W_QK (the query-side subspace of the names-vs-generic score)."""

    w_qk: torch.Tensor  # [n_heads, d_head], descending
    effective_qk: torch.Tensor  # [n_heads, d_head], descending
    left: torch.Tensor  # [n_heads, d_model, d_head]


@torch.no_grad()
def layer_spectra(model: LoadedModel, layer: int, layer0: Layer0,
                  triangular: tuple[torch.Tensor, torch.Tensor] | None, progress: bool = False) -> LayerSpectra:
    """:class:`LayerSpectra` of ``layer``, batched over its heads. ``triangular``: the QR factors
    (None for a QK-norm model, whose effective circuit is not linear in W_Q: the layer's Gram
    matrices then, :func:`normed_effective_qk_spectra`)."""
    kv = model.kv_index()
    gained = circuits.norm_map(model, layer, "ln1") or (lambda W: W)  # an unfolded input norm, as head_weights
    W_Q = gained(model.weight("W_Q")[layer])  # [n_heads, d_model, d_head]
    W_Kt = gained(model.weight("W_K")[layer])[kv.to(W_Q.device)].transpose(-1, -2)  # [n_heads, d_head, d_model]
    with single_threaded():  # many tiny LAPACK calls: thread barriers cost more than the work
        U, S, _ = FactoredMatrix(W_Q, W_Kt).svd()
        if triangular is not None:
            R_U, R_EE = triangular
            S_eff = FactoredMatrix(R_U @ W_Q.to(R_U.dtype), W_Kt.to(R_EE.dtype) @ R_EE.T).S
    if triangular is None:
        S_eff = normed_effective_qk_spectra(model, layer, layer0.W_EE, progress)
    return LayerSpectra(w_qk=S.double().cpu(), effective_qk=S_eff.double().cpu(), left=U)


#: vocabulary rows per chunk of :func:`normed_effective_qk_spectra` (its memory is a few chunks)
GRAM_CHUNK = 8192


@torch.no_grad()
def normed_effective_qk_spectra(model: LoadedModel, layer: int, W_EE: torch.Tensor,
                                progress: bool = False) -> torch.Tensor:
    """Singular values ``[n_heads, d_head]`` (descending, float64) of every query head's effective QK
    circuit q_h(W_Uᵀ)·k_g(W_EE)ᵀ in a layer with QK-norm (g: the head's key/value head), without a
    thin SVD of a vocab-tall factor.

    With A_h = q_h(W_Uᵀ) and B_g = k_g(W_EE) (``[d_vocab, d_head]``, the norms applied row by row
    by the model's own modules) and R_X the d_head × d_head :func:`gram_root` of XᵀX, the circuit
    A_h·B_gᵀ = Q_A·(R_{A_h}·R_{B_g}ᵀ)·Q_Bᵀ has the singular values of R_{A_h}·R_{B_g}ᵀ. The Gram
    matrices are accumulated in float64 over :data:`GRAM_CHUNK`-row slices of the vocabulary: each
    head's queries once and each key/value head's keys once per layer (d_vocab·d_model·d_head +
    d_vocab·d_head² multiply-adds each), then one d_head × d_head SVD per head. (A norm rescales
    each row by its own projection's length, so no factor shared by the heads gives A_h: a head's
    queries are the least vocabulary-sized work its exact spectrum needs.)"""
    heads = [circuits.head_weights(model, HeadRef(layer, h)) for h in range(model.n_heads)]
    key_heads = {w.kv_head: w for w in heads}  # one reader of each key/value head (its keys: w.keys)
    query_rows = circuits.unembedding(model).T  # [d_vocab, d_model]
    d, n = model.d_head, query_rows.shape[0]
    zeros = lambda: torch.zeros(d, d, dtype=torch.float64, device=query_rows.device)
    G_q, G_k = [zeros() for _ in heads], {g: zeros() for g in key_heads}
    for c0 in tqdm(range(0, n, GRAM_CHUNK), desc=f"spectra, layer {layer}", unit="chunk", leave=False,
                   disable=not progress, file=sys.stderr):
        queries, keys = query_rows[c0 : c0 + GRAM_CHUNK], W_EE[c0 : c0 + GRAM_CHUNK]
        for G, w in zip(G_q, heads):
            A = w.queries(queries).double()
            G += A.T @ A
        for g, w in key_heads.items():
            B = w.keys(keys).double()
            G_k[g] += B.T @ B
    R_k = {g: gram_root(G) for g, G in G_k.items()}
    return torch.stack([torch.linalg.svdvals(gram_root(G) @ R_k[w.kv_head].T) for G, w in zip(G_q, heads)])


def names_vs_generic(basis: torch.Tensor, W_U: torch.Tensor, word_lists: WordLists) -> dict[str, Any]:
    """Median subspace score of the names over that of the generic words, and the AUC: the head
    analysis's :func:`analysis.alignment.compare_groups`, without the bootstrap."""
    scores = subspace_scores_of_words(basis, W_U, word_lists)
    comp = alignment.compare_groups(scores["names"], scores["generic"], n_resamples=0)
    return {
        "n_names": int(scores["names"].size), "n_generic": int(scores["generic"].size),
        **{k: comp.get(k) for k in ("median_names", "median_generic", "median_ratio", "auc")},
    }


@torch.no_grad()
def survey_head(
    model: LoadedModel, head: HeadRef, layer0: Layer0, word_lists: WordLists, *, mode: str, sample_size: int,
    seed: int, subspace_rank: int | None, qk_normalization: str, timer: Timer | None = None,
    layer: LayerSpectra | None = None, layers: LayerCache | None = None,
) -> dict[str, Any]:
    """The survey statistics of one head (see the module docstring). ``layer``: the head's layer's
    :func:`layer_spectra`, when the caller computed it for all its heads at once; ``layers``: the
    rank circuits of the layers (shared by the heads of a layer)."""
    timer = timer if timer is not None else Timer()
    W_U = circuits.unembedding(model)
    w = circuits.head_weights(model, head)
    layers = layers or LayerCache(model, layer0, qk_normalization, timer, "survey")
    if layer is None:
        with timer("survey/spectra"):
            triangular = None if model.family.qk_norm else effective_qk_triangular_factors(W_U, layer0.W_EE)
            layer = layer_spectra(model, head.layer, layer0, triangular)
    h = head.head
    with timer("survey/subspace"):
        rank = min(subspace_rank or model.d_head, layer.left.shape[-1])
        subspace = names_vs_generic(layer.left[h, :, :rank], W_U, word_lists)
        subspace["rank"] = rank
    ranks = head_rank_metrics(layers[head.layer], head.head, mode=mode, sample_size=sample_size, seed=seed,
                              qk_normalization=qk_normalization, timer=timer, tag="survey")
    return {
        "label": head.label,
        "layer": head.layer,
        "head": head.head,
        "kv_head": w.kv_head,
        "w_qk": spectra.spectrum_statistics([float(x) for x in layer.w_qk[h]]),
        "effective_qk": spectra.spectrum_statistics([float(x) for x in layer.effective_qk[h]]),
        "subspace": subspace,
        **{key: {k: ranks[key][k] for k in RANK_KEYS if k in ranks[key]}
           for key in ("qk_self_attention", "ov_self_suppression")},
    }


def _excess(summary: dict[str, Any], fraction: str) -> float | None:
    if not summary.get("defined", True) or summary.get(fraction) is None:
        return None
    return max(0.0, diagonal.excess_over_chance(summary[fraction], summary["chance"][fraction]))


def copy_suppression_score(record: dict[str, Any]) -> tuple[float | None, float | None]:
    """(score, tie-break): geometric means of the chance-normalised OV and QK top-10 and top-5%
    excesses, each clipped at 0; (None, None) when either circuit is degenerate."""
    ov, qk = record["ov_self_suppression"], record["qk_self_attention"]
    parts = [(_excess(ov, f), _excess(qk, f)) for f in ("fraction_top10", "fraction_top5pct")]
    if any(x is None for pair in parts for x in pair):
        return None, None
    return math.sqrt(parts[0][0] * parts[0][1]), math.sqrt(parts[1][0] * parts[1][1])


def rank_heads(records: list[dict[str, Any]]) -> list[str]:
    """Add ``copy_suppression_score``, ``beats_chance`` and ``rank`` to every record; return the
    labels of the ranked heads, best first (heads with no score are not ranked)."""
    keyed = []
    for r in records:
        score, tie = copy_suppression_score(r)
        r["copy_suppression_score"] = score
        r["beats_chance"] = bool(score is not None and r["ov_self_suppression"]["evidence"]["supported"]
                                 and r["qk_self_attention"]["evidence"]["supported"])
        r["rank"] = None
        if score is not None:
            keyed.append((-score, -tie, r["layer"], r["head"], r))
    keyed.sort(key=lambda t: t[:4])
    for i, t in enumerate(keyed, start=1):
        t[-1]["rank"] = i
    return [t[-1]["label"] for t in keyed]


def survey_documents(config: Config, model: LoadedModel, layer0: Layer0, word_lists: WordLists, timer: Timer,
                     progress: bool = True) -> dict[str, Any]:
    """Survey every head of ``model``; the ``survey.json`` document (not yet written)."""
    a, s = config.analysis, config.survey
    heads = [HeadRef(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    triangular = None
    if not model.family.qk_norm:
        with timer("survey/qr"):
            triangular = effective_qk_triangular_factors(circuits.unembedding(model), layer0.W_EE)
    records = []
    layer: LayerSpectra | None = None
    layers = LayerCache(model, layer0, a.qk_normalization, timer, "survey")
    bar = tqdm(heads, desc="survey", unit="head", disable=not progress, file=sys.stderr)
    for head in bar:
        bar.set_postfix_str(head.label, refresh=False)
        if head.head == 0:
            with timer("survey/spectra"):
                layer = layer_spectra(model, head.layer, layer0, triangular, progress)
        records.append(survey_head(
            model, head, layer0, word_lists, mode=s.mode, sample_size=s.sample_size, seed=a.seed,
            subspace_rank=a.subspace_rank, qk_normalization=a.qk_normalization, timer=timer, layer=layer,
            layers=layers,
        ))
    order = rank_heads(records)
    with timer("survey/atlas"):  # analysis/atlas.py; composition is n_heads² products, each d_head-sized
        head_atlas = atlas.atlas(model, layer0, copy_suppression={r["label"]: r["beats_chance"] for r in records},
                                 mode=s.mode, sample_size=s.sample_size, seed=a.seed, timer=timer)
    atlas_heads = head_atlas.pop("heads")
    for r in records:
        r["atlas"] = atlas_heads[r["label"]]
    beating = [label for label in order if next(r for r in records if r["label"] == label)["beats_chance"]]
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "survey",
        "config": config.to_dict(),
        "provenance": artifact_provenance(model, a.seed),
        "results": {
            "model": model_summary(model),
            "settings": {
                "mode": s.mode,
                "sample_size": s.sample_size if s.mode == "sampled" else None,
                "n_ranked": min(s.sample_size, model.d_vocab) if s.mode == "sampled" else model.d_vocab,
                "seed": a.seed if s.mode == "sampled" else None,
                "subspace_rank": a.subspace_rank or model.d_head,
                "effective_embedding_variant": config.effective_embedding.variant,
                "rank_embedding": a.rank_embedding,
                "qk_normalization": a.qk_normalization,
                "evidence_rule": {"min_lift": diagonal.MIN_LIFT, "max_median_share": diagonal.MAX_MEDIAN_SHARE},
            },
            "statistics": STATISTICS,
            "ranking": {"formula": RANKING_FORMULA, "order": order, "beats_chance": beating},
            "heads": records,
            "atlas": head_atlas,
        },
    }


def run_survey(config: Config, out_dir: Path, progress: bool = True, log=print) -> list[Path]:
    """Survey every head; write ``survey.json`` (and merge ``timings.json``) into ``out_dir``.

    With ``survey.analyze_top = N > 0``, then run the full analysis (``model.json`` and one
    ``head_L.H.json`` per head) on the N top-ranked heads that beat chance, reusing the loaded model
    and W_EE; when no head beats chance, none is analysed and the log says why."""
    timer = Timer()
    torch.manual_seed(config.analysis.seed)
    model, layer0, word_lists = prepare(config, timer, progress, log, survey=True)
    with timer("survey/total_heads"):
        doc = survey_documents(config, model, layer0, word_lists, timer, progress)
    ranking = doc["results"]["ranking"]
    log(f"surveyed {len(doc['results']['heads'])} heads in {timer.seconds['survey/total_heads']:.1f} s; "
        + (f"beating chance, most copy-suppression-like first: {', '.join(ranking['beats_chance'][:5])}"
           if ranking["beats_chance"] else "no head beats chance"))
    written = write_artifacts(out_dir, {
        "survey.json": doc,
        "timings.json": merged_timings(out_dir, timer.seconds, model.provenance.get("device")),
    }, inputs=input_key(config, model.checkpoint_hashes))
    n = config.survey.analyze_top
    if n > 0 or config.compare:
        top = tuple(HeadRef.parse(label) for label in ranking["beats_chance"][:n]) if n > 0 else ()
        if not top and not config.compare:
            log(f"survey.analyze_top = {n}: no head beats chance (both its OV self-suppression and its QK "
                "self-attention supported by the evidence rule), so no head is analysed")
            return written
        if top:
            log(f"analysing the {len(top)} top-ranked heads that beat chance: {', '.join(h.label for h in top)}")
        if config.compare:
            log("analysing the heads to compare: "
                + ", ".join(f"{a.label} with {b.label}" for a, b in config.compare))
        written_heads = run_analysis(
            config.replace(heads=top), out_dir, progress=progress, log=log, model=model, layer0=layer0, timer=timer,
            key_config=config,
        )
        written = [p for p in written if p.name != "timings.json"] + written_heads
    return written
