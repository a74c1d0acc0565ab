"""Survey every attention head of a model with the cheap per-head statistics (``survey.json``).

For each head (L, H) — query head H; for grouped-query attention its key/value head is
``H // (n_heads / n_kv_heads)`` — with the same circuits and functions as the per-head analysis
(:mod:`analysis.circuits`, :mod:`analysis.diagonal`, :mod:`analysis.alignment`), so a surveyed head
gives the same numbers as ``headreport analyze`` for the same seed and sample size:

* **σ1 share** of a circuit with singular values σ_1 ≥ … ≥ σ_r: ``σ_1 / Σ_i σ_i`` (1 = rank one).
* **effective rank** (Roy & Vetterli 2007): with p_i = σ_i / Σ_j σ_j, ``exp(−Σ_i p_i ln p_i)``
  (0·ln 0 = 0). It lies between 1 (one direction) and r (all σ_i equal; r = d_head here).
  Both are reported for W_QK = W_Q·W_Kᵀ and for the effective QK circuit W_Uᵀ·W_QK·W_EEᵀ (factored:
  two d_vocab × d_head factors, never a d_vocab × d_vocab matrix).
* **names-vs-generic subspace score**: the median over the names list of the subspace-alignment
  score (:func:`analysis.alignment.subspace_scores`: the share of a word's normalised unembedding
  inside the span of W_QK's top ``analysis.subspace_rank`` left singular vectors, × d_model / rank)
  divided by the median over the generic-words list (``median_ratio``; > 1: names lie more in the
  head's query space), with the AUC = P(name score > generic score). No bootstrap per head.
* **QK self-attention**: for each token t of a seeded sample (``survey.sample_size`` tokens, seed
  ``analysis.seed``) — or every token in exact mode — the rank of key t in query row t of
  W_Uᵀ·W_QK·W_EEᵀ, rank 1 = highest (:func:`analysis.diagonal.qk_self_attention`): the fraction of
  rank 1, the median rank.
* **OV self-suppression**: for the same tokens, the rank of t's own logit in row t of W_EE·W_OV·W_U,
  rank 1 = most negative (:func:`analysis.diagonal.ov_self_suppression`).

**Copy-suppression score** (the ranking): ``sqrt(f_OV · f_QK)``, the geometric mean of the two
rank-1 fractions. A copy-suppression head needs both — it attends to earlier copies of the token
being predicted (QK) and pushes that token's logit down (OV) — and the geometric mean is high only
when both are (it is 0 when either is 0, unlike an arithmetic mean). Ties (e.g. all zeros in a
random model) are broken by the geometric mean of the two top-10 fractions, then by layer and head.
``rank`` 1 is the most copy-suppression-like head.

Work shared by all heads (the model, W_EE, the word tokens, the QR factors of W_Uᵀ and W_EE that
give the effective QK spectrum from d_model-sized matrices) is done once. Each head then costs the
two d_vocab × d_model × d_head factor GEMMs of each vocab × vocab circuit (built exactly as the
per-head analysis builds them, so the sampled ranks are bit-for-bit the same) and ``sample_size``
rows of each circuit (:func:`analysis.diagonal.diagonal_ranks`); nothing vocab × vocab is formed.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats
from tqdm.auto import tqdm
from transformer_lens import FactoredMatrix

from . import alignment, circuits, diagonal
from .artifacts import SCHEMA_VERSION, merged_timings, write_artifacts
from .config import Config, HeadRef
from .embeddings import effective_embedding
from .models import LoadedModel, load_model, single_threaded
from .pipeline import Timer, artifact_provenance, load_words, model_summary, run_analysis
from .words import tokenize_words

RANKING_FORMULA = (
    "copy_suppression_score = sqrt(ov_self_suppression.fraction_rank1 * qk_self_attention.fraction_rank1) "
    "(geometric mean of the two rank-1 fractions); ties broken by the geometric mean of the two "
    "fraction_top10 values, then by layer and head"
)

# What the report draws a layer × head heatmap of: (key path in a head record, title, description).
STATISTICS: list[dict[str, str]] = [
    {"key": "copy_suppression_score", "title": "Copy-suppression score",
     "description": "sqrt(OV rank-1 fraction × QK rank-1 fraction): high only when both are high"},
    {"key": "ov_self_suppression.fraction_rank1", "title": "OV self-suppression (rank-1 fraction)",
     "description": "fraction of tokens whose own logit is the most suppressed in their row of W_EE·W_OV·W_U"},
    {"key": "ov_self_suppression.median_rank", "title": "OV self-suppression (median rank)",
     "description": "median rank of a token's own logit in its row of W_EE·W_OV·W_U (1 = most negative)"},
    {"key": "qk_self_attention.fraction_rank1", "title": "QK self-attention (rank-1 fraction)",
     "description": "fraction of tokens whose own key scores highest for their query in W_Uᵀ·W_QK·W_EEᵀ"},
    {"key": "qk_self_attention.median_rank", "title": "QK self-attention (median rank)",
     "description": "median rank of a token's own key in its query row of W_Uᵀ·W_QK·W_EEᵀ (1 = highest)"},
    {"key": "w_qk.sigma1_share", "title": "W_QK σ1 share",
     "description": "σ1 / Σσ of W_Q·W_Kᵀ (1 = rank one)"},
    {"key": "w_qk.effective_rank", "title": "W_QK effective rank",
     "description": "exp(entropy of σ/Σσ) of W_Q·W_Kᵀ, between 1 and d_head"},
    {"key": "effective_qk.sigma1_share", "title": "Effective QK σ1 share",
     "description": "σ1 / Σσ of W_Uᵀ·W_QK·W_EEᵀ"},
    {"key": "effective_qk.effective_rank", "title": "Effective QK effective rank",
     "description": "exp(entropy of σ/Σσ) of W_Uᵀ·W_QK·W_EEᵀ"},
    {"key": "subspace.median_ratio", "title": "Names vs generic words (median ratio)",
     "description": "median subspace score of names / median of generic words (random direction ≈ 1 each)"},
]


def sigma1_share(singular_values: list[float]) -> float:
    """σ_1 / Σ σ_i (0 for an all-zero spectrum)."""
    total = math.fsum(singular_values)
    return singular_values[0] / total if total > 0 else 0.0


def effective_rank(singular_values: list[float]) -> float:
    """exp(−Σ p_i ln p_i) with p_i = σ_i / Σ σ_j (Roy & Vetterli 2007); 0·ln 0 = 0; 0 if all σ = 0."""
    total = math.fsum(singular_values)
    if total <= 0:
        return 0.0
    entropy = -math.fsum(p * math.log(p) for p in (s / total for s in singular_values) if p > 0)
    return math.exp(entropy)


def spectrum_statistics(singular_values: list[float]) -> dict[str, float]:
    return {
        "sigma1": singular_values[0],
        "sigma1_share": sigma1_share(singular_values),
        "effective_rank": effective_rank(singular_values),
    }


@torch.no_grad()
def effective_qk_triangular_factors(
    W_U: torch.Tensor, W_EE: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R_U, R_EE)``: the d_model × d_model triangular factors of the QR decompositions
    W_Uᵀ = Q_U·R_U and W_EE = Q_EE·R_EE (float64), computed once for all heads.

    Then W_Uᵀ·W_QK·W_EEᵀ = Q_U·(R_U·W_Q·W_Kᵀ·R_EEᵀ)·Q_EEᵀ, and as Q_U and Q_EE have orthonormal
    columns, the effective QK circuit has exactly the singular values of the d_model × d_model
    matrix (R_U·W_Q)(W_Kᵀ·R_EEᵀ): its spectrum costs O(d_model·d_head²) per head instead of two
    thin SVDs of d_vocab × d_head factors.
    """
    R_U = torch.linalg.qr(W_U.T.double(), mode="r").R
    R_EE = torch.linalg.qr(W_EE.double(), mode="r").R
    return R_U, R_EE


@dataclass(frozen=True)
class LayerSpectra:
    """Singular values of every query head's W_QK and effective QK circuit in one layer, and the
    left singular vectors of W_QK (the query-side subspace of the names-vs-generic score)."""

    w_qk: torch.Tensor  # [n_heads, d_head], descending
    effective_qk: torch.Tensor  # [n_heads, d_head], descending
    left: torch.Tensor  # [n_heads, d_model, d_head]


@torch.no_grad()
def layer_spectra(model: LoadedModel, layer: int, triangular: tuple[torch.Tensor, torch.Tensor]) -> LayerSpectra:
    """:class:`LayerSpectra` of ``layer``: batched over its heads (one SVD call per factor).

    The effective QK spectrum comes from the d_model-sized factors (R_U·W_Q)(W_Kᵀ·R_EEᵀ) (see
    :func:`effective_qk_triangular_factors`), in float64."""
    kv = torch.tensor([model.kv_head(h) for h in range(model.n_heads)])
    W_Q = model.weight("W_Q")[layer]  # [n_heads, d_model, d_head]
    W_Kt = model.weight("W_K")[layer][kv].transpose(-1, -2)  # [n_heads, d_head, d_model]
    R_U, R_EE = triangular
    with single_threaded():  # many tiny LAPACK calls: thread barriers cost more than the work
        U, S, _ = FactoredMatrix(W_Q, W_Kt).svd()
        eff = FactoredMatrix(R_U @ W_Q.to(R_U.dtype), W_Kt.to(R_EE.dtype) @ R_EE.T)
        S_eff = eff.S
    return LayerSpectra(w_qk=S.double().cpu(), effective_qk=S_eff.double().cpu(), left=U)


def names_vs_generic(basis: torch.Tensor, W_U: torch.Tensor, word_ids: dict[str, torch.Tensor],
                     word_vectors: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Median subspace score of the names over that of the generic words (as in the head analysis).
    ``word_vectors``: ``W_U.T[word_ids[key]]`` when the caller gathered them once for all heads."""
    vectors = word_vectors if word_vectors is not None else {k: W_U.T[ids] for k, ids in word_ids.items()}
    scores = {
        key: alignment.subspace_scores(basis, vectors[key]).double().cpu().numpy() if ids.numel() else np.zeros(0)
        for key, ids in word_ids.items()
    }
    a, b = scores["names"], scores["generic"]
    out: dict[str, Any] = {"n_names": int(a.size), "n_generic": int(b.size)}
    if a.size < 2 or b.size < 2:
        out.update({"median_names": None, "median_generic": None, "median_ratio": None, "auc": None})
        return out
    med_a, med_b = float(np.median(a)), float(np.median(b))
    out.update({
        "median_names": med_a,
        "median_generic": med_b,
        "median_ratio": med_a / med_b if med_b != 0 else None,
        "auc": float(stats.mannwhitneyu(a, b, alternative="two-sided").statistic) / (a.size * b.size),
    })
    return out


def _rank_statistics(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("fraction_rank1", "fraction_rank1_ci95", "fraction_top10", "median_rank", "mean_rank")
    return {k: summary[k] for k in keep}


@torch.no_grad()
def survey_head(
    model: LoadedModel,
    head: HeadRef,
    W_EE: torch.Tensor,
    word_ids: dict[str, torch.Tensor],
    *,
    mode: str,
    sample_size: int,
    seed: int,
    subspace_rank: int | None,
    timer: Timer | None = None,
    layer: LayerSpectra | None = None,
    word_vectors: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The survey statistics of one head (see the module docstring). ``layer``: the head's layer's
    :func:`layer_spectra`, when the caller computed it for all its heads at once."""
    timer = timer if timer is not None else Timer()
    W_U = model.weight("W_U")
    w = circuits.head_weights(model, head)
    if layer is None:
        with timer("survey/spectra"):
            layer = layer_spectra(model, head.layer, effective_qk_triangular_factors(W_U, W_EE))
    h = head.head
    w_qk = spectrum_statistics([float(x) for x in layer.w_qk[h]])
    eff_qk = spectrum_statistics([float(x) for x in layer.effective_qk[h]])
    with timer("survey/subspace"):
        rank = min(subspace_rank or model.d_head, layer.left.shape[-1])
        subspace = names_vs_generic(layer.left[h, :, :rank], W_U, word_ids, word_vectors)
        subspace["rank"] = rank
    with timer("survey/qk_self_attention"):
        eff = circuits.effective_qk_circuit(w, W_U, W_EE)
        qk_self = diagonal.qk_self_attention(eff, mode, sample_size, seed)
    with timer("survey/ov_self_suppression"):
        ov = diagonal.ov_self_suppression(circuits.effective_ov_circuit(w, W_EE, W_U), mode, sample_size, seed)
    return {
        "label": head.label,
        "layer": head.layer,
        "head": head.head,
        "kv_head": w.kv_head,
        "w_qk": w_qk,
        "effective_qk": eff_qk,
        "subspace": subspace,
        "qk_self_attention": _rank_statistics(qk_self),
        "ov_self_suppression": _rank_statistics(ov),
    }


def copy_suppression_score(record: dict[str, Any]) -> tuple[float, float]:
    """(score, tie-break): geometric means of the OV and QK rank-1 and top-10 fractions."""
    ov, qk = record["ov_self_suppression"], record["qk_self_attention"]
    return (math.sqrt(ov["fraction_rank1"] * qk["fraction_rank1"]),
            math.sqrt(ov["fraction_top10"] * qk["fraction_top10"]))


def rank_heads(records: list[dict[str, Any]]) -> list[str]:
    """Add ``copy_suppression_score`` and ``rank`` to every record; return labels, best first."""
    keyed = []
    for r in records:
        score, tie = copy_suppression_score(r)
        r["copy_suppression_score"] = score
        keyed.append((-score, -tie, r["layer"], r["head"], r))
    keyed.sort(key=lambda t: t[:4])
    for i, t in enumerate(keyed, start=1):
        t[-1]["rank"] = i
    return [t[-1]["label"] for t in keyed]


def survey_documents(
    config: Config,
    model: LoadedModel,
    W_EE: torch.Tensor,
    timer: Timer,
    progress: bool = True,
) -> dict[str, Any]:
    """Survey every head of ``model``; the ``survey.json`` document (not yet written)."""
    a, s = config.analysis, config.survey
    word_ids = {}
    for key, words in load_words(config).items():
        kept, _ = tokenize_words(words, model.tokenizer)
        word_ids[key] = torch.tensor([x.token_id for x in kept], dtype=torch.long, device=W_EE.device)
    heads = [HeadRef(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    word_vectors = {key: model.weight("W_U").T[ids] for key, ids in word_ids.items()}
    with timer("survey/qr"):
        triangular = effective_qk_triangular_factors(model.weight("W_U"), W_EE)
    records = []
    layer: LayerSpectra | None = None
    bar = tqdm(heads, desc="survey", unit="head", disable=not progress, file=sys.stderr)
    for head in bar:
        bar.set_postfix_str(head.label, refresh=False)
        if head.head == 0:
            with timer("survey/spectra"):
                layer = layer_spectra(model, head.layer, triangular)
        records.append(survey_head(
            model, head, W_EE, word_ids, mode=s.mode, sample_size=s.sample_size, seed=a.seed,
            subspace_rank=a.subspace_rank, timer=timer, layer=layer, word_vectors=word_vectors,
        ))
    order = rank_heads(records)
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
            },
            "statistics": STATISTICS,
            "ranking": {"formula": RANKING_FORMULA, "order": order},
            "heads": records,
        },
    }


def run_survey(config: Config, out_dir: Path, progress: bool = True, log=print) -> list[Path]:
    """Survey every head; write ``survey.json`` (and merge ``timings.json``) into ``out_dir``.

    With ``survey.analyze_top = N > 0``, then run the full analysis (``model.json`` and one
    ``head_L.H.json`` per head) on the N top-ranked heads, reusing the loaded model and W_EE."""
    timer = Timer()
    torch.manual_seed(config.analysis.seed)
    with timer("survey/load_model"):
        model = load_model(config.model, config.processing)
    ee = config.effective_embedding
    with timer("survey/effective_embedding"):
        W_EE = effective_embedding(model, ee.variant, ee.batch_size, progress=progress)
    with timer("survey/total_heads"):
        doc = survey_documents(config, model, W_EE, timer, progress)
    log(f"surveyed {len(doc['results']['heads'])} heads in {timer.seconds['survey/total_heads']:.1f} s; "
        f"most copy-suppression-like: " + ", ".join(doc["results"]["ranking"]["order"][:5]))
    written = write_artifacts(out_dir, {
        "survey.json": doc,
        "timings.json": merged_timings(out_dir, timer.seconds, model.provenance.get("device")),
    })
    n = config.survey.analyze_top
    if n > 0:
        top = tuple(HeadRef.parse(label) for label in doc["results"]["ranking"]["order"][:n])
        log(f"analysing the {len(top)} top-ranked heads: {', '.join(h.label for h in top)}")
        written_heads = run_analysis(
            config.replace(heads=top), out_dir, progress=progress, log=log, model=model, W_EE=W_EE, timer=timer,
        )
        written = [p for p in written if p.name != "timings.json"] + written_heads
    return written
