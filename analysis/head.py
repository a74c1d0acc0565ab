"""The analysis of one attention head: every per-head result of a head artifact (``results``).

``analyze_head`` builds the head's four factored circuits once (:class:`analysis.circuits.HeadCircuits`:
W_QK, the full and the effective QK circuits, W_OV) and every step reads those objects, so each
circuit's SVD (cached on its ``FactoredMatrix``) is computed once per head:

* spectra: all singular values of the four circuits and their shape statistics (:mod:`analysis.spectra`);
* singular directions: the top tokens on the full and effective QK circuits' singular vectors;
* squared cosine: tokens ranked by cos² with W_QK's first left / right singular vectors;
* subspace alignment: names vs generic words in the span of W_QK's top left singular vectors;
* rank metrics: OV self-suppression and QK self-attention (:mod:`analysis.diagonal`) on the layer's
  :class:`analysis.circuits.RankCircuits`, shared with the survey (:mod:`analysis.survey`);
* the most self-suppressed tokens (z-score of each token's own OV entry in its row).

Definitions and sources: docs/methods.md#most-suppressed-tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import alignment, circuits, diagonal, explorer, explorer_codec, spectra
from .config import AnalysisConfig, Config, HeadRef
from .embeddings import Layer0
from .inputs.words import SkippedWord, WordLists, WordToken
from .model.loader import LoadedModel
from .timings import Timer
from .tokens import token_records

#: how many tokens a head's most-suppressed list holds (the comparison page's overlap)
TOP_SUPPRESSED = 50


def with_progress(items: dict[str, Any], desc: str, progress: bool) -> Any:
    """``items``' (name, value) pairs, with a progress bar of one tick each (at a large vocabulary each
    vocab-tall SVD or list merge takes tens of seconds)."""
    return tqdm(items.items(), desc=desc, unit="step", disable=not progress, leave=False)


def head_spectra(c: circuits.HeadCircuits, progress: bool = False) -> dict[str, Any]:
    """All singular values of W_QK, the full and the effective QK circuits and W_OV, and each
    spectrum's shape statistics (:func:`analysis.spectra.spectrum_statistics`)."""
    matrices = {"w_qk": c.qk, "full_qk": c.full_qk, "effective_qk": c.effective_qk, "w_ov": c.ov}
    values = {name: spectra.singular_spectrum(m) for name, m in with_progress(matrices, "spectra", progress)}
    return {**values, "statistics": {k: spectra.spectrum_statistics(v) for k, v in values.items()}}


def head_singular_directions(c: circuits.HeadCircuits, a: AnalysisConfig, tokenizer,
                             progress: bool = False) -> dict[str, Any]:
    """The top ``a.n_directions`` singular directions of the full and the effective QK circuits,
    each with its top ``a.top_k`` query-side and key-side tokens."""
    matrices = {"full_qk": c.full_qk, "effective_qk": c.effective_qk}
    return {name: spectra.singular_directions(m, a.n_directions, a.top_k, tokenizer)
            for name, m in with_progress(matrices, "singular directions", progress)}


def head_squared_cosine(qk_svd, W_U: torch.Tensor, layer0: Layer0, top_k: int, tokenizer) -> dict[str, Any]:
    """Tokens ranked by cos² with W_QK's first left (W_U) and right (W_EE, W_E) singular vectors."""
    U, S, V = qk_svd
    return {
        "w_u": alignment.squared_cosine_topk(U[:, 0], W_U.T, top_k, tokenizer),
        "w_ee": alignment.squared_cosine_topk(V[:, 0], layer0.W_EE, top_k, tokenizer),
        "w_e": alignment.squared_cosine_topk(V[:, 0], layer0.W_E, top_k, tokenizer),
        "sigma": float(S[0]),
    }


def word_group(words: list[WordToken], skipped: list[SkippedWord], scores: np.ndarray) -> dict[str, Any]:
    """One word list's scored words, its skipped words and the summary of its scores."""
    return {
        "words": [{"word": w.word, "id": w.token_id, "token": w.token, "score": float(s)}
                  for w, s in zip(words, scores)],
        "skipped": [{"word": s.word, "reason": s.reason} for s in skipped],
        "summary": alignment.summarize(scores),
    }


def subspace_scores_of_words(basis: torch.Tensor, W_U: torch.Tensor, word_lists: WordLists) -> dict[str, np.ndarray]:
    """Each word list's :func:`analysis.alignment.subspace_scores` of its words' unembeddings in
    the span of ``basis`` (orthonormal columns)."""
    out = {}
    for key, (kept, _) in word_lists.items():
        ids = torch.tensor([x.token_id for x in kept], dtype=torch.long, device=W_U.device)
        out[key] = (alignment.subspace_scores(basis, W_U.T[ids]).double().cpu().numpy() if kept else np.zeros(0))
    return out


def head_subspace_alignment(U: torch.Tensor, W_U: torch.Tensor, d_model: int, word_lists: WordLists,
                            rank: int, n_resamples: int, seed: int, form: str) -> dict[str, Any]:
    """Names vs generic words inside the span of W_QK's top-``rank`` left singular vectors."""
    scores = subspace_scores_of_words(U[:, :rank], W_U, word_lists)
    return {
        "rank": rank,
        "scale": d_model / rank,
        "random_baseline": 1.0,
        "word_form": form,
        "groups": {key: word_group(kept, skipped, scores[key]) for key, (kept, skipped) in word_lists.items()},
        "comparison": alignment.compare_groups(scores["names"], scores["generic"], n_resamples, seed),
    }


def head_rank_metrics(circuits_of_layer: circuits.RankCircuits, head: int, *, mode: str, sample_size: int,
                      seed: int, qk_normalization: str, timer: Timer, tag: str,
                      progress: bool = False, explore: bool = False) -> dict[str, Any]:
    """OV self-suppression and QK self-attention ranks, with the paper's fractions and evidence;
    with ``explore`` (exact mode), the token explorer's lists collected in the same two passes
    (``"explorer"``: the :func:`analysis.explorer_codec.encode` payload, None when a circuit is degenerate)."""
    ov_circuit, qk_circuit = circuits_of_layer.ov(head), circuits_of_layer.qk(head)
    lists = explorer.collectors(ov_circuit, qk_circuit) if explore and mode == "exact" else None
    with timer(f"{tag}/ov_self_suppression"):
        ov, ov_ranks = diagonal.rank_pass(ov_circuit, mode, descending=False, sample_size=sample_size, seed=seed,
                                          progress=progress,
                                          visitors=[lists["ov_low"], lists["ov_high"]] if lists else ())
    with timer(f"{tag}/qk_self_attention"):
        qk, qk_ranks = diagonal.rank_pass(qk_circuit, mode, descending=True, sample_size=sample_size, seed=seed,
                                          progress=progress,
                                          visitors=[lists["qk_keys"], lists["qk_queries"]] if lists else ())
    qk["normalization"] = qk_normalization
    out: dict[str, Any] = {"ov_self_suppression": ov, "qk_self_attention": qk}
    if lists is not None:
        with timer(f"{tag}/explorer"):
            ok = ov_ranks is not None and qk_ranks is not None
            out["explorer"] = (explorer_codec.encode(explorer.arrays_of(lists, ov_ranks, qk_ranks, progress),
                                                     ov_circuit.n_rows) if ok else None)
    return out


class LayerCache:
    """The :class:`analysis.circuits.RankCircuits` of the layers in use, built once per layer."""

    def __init__(self, model: LoadedModel, layer0: Layer0, qk_normalization: str, timer: Timer, tag: str):
        self.model, self.layer0, self.qk_normalization = model, layer0, qk_normalization
        self.timer, self.tag = timer, tag
        self.layers: dict[int, circuits.RankCircuits] = {}

    def __getitem__(self, layer: int) -> circuits.RankCircuits:
        if layer not in self.layers:
            self.layers.clear()  # one layer at a time: its factors are vocabulary-sized
            with self.timer(f"{self.tag}/layer_factors"):
                self.layers[layer] = circuits.RankCircuits(self.model, layer, self.layer0.W_EE_rank,
                                                          self.qk_normalization)
        return self.layers[layer]


def top_suppressed(ov_circuit, tok, ov_summary: dict[str, Any]) -> dict[str, Any] | None:
    """The tokens whose own logit the head lowers most, relative to the rest of the row, when it
    attends to them (z-score of the OV circuit's diagonal entry in its row); None when the OV
    circuit is degenerate."""
    if not ov_summary.get("defined", True):
        return None
    z = diagonal.own_entry_zscores(ov_circuit)
    ids = diagonal.most_suppressed(z, TOP_SUPPRESSED)
    return {"k": TOP_SUPPRESSED, "measure": "z-score of the token's own entry in its row of the OV circuit",
            "tokens": token_records(tok, ids, value=[round(float(z[i]), 4) for i in ids])}


def weight_results(model: LoadedModel, c: circuits.HeadCircuits, W_U: torch.Tensor, layer0: Layer0,
                   config: Config, word_lists: WordLists, timer: Timer, tag: str,
                   progress: bool = False) -> dict[str, Any]:
    """The results read from the head's :class:`analysis.circuits.HeadCircuits`: spectra, singular
    directions, squared cosines and subspace alignment."""
    a, tok = config.analysis, model.tokenizer
    with timer(f"{tag}/spectra"):
        spectra_out = head_spectra(c, progress)
    with timer(f"{tag}/singular_directions"):
        directions = head_singular_directions(c, a, tok, progress)
    with timer(f"{tag}/squared_cosine"):
        qk_svd = spectra.canonical_svd(c.qk)
        cosine = head_squared_cosine(qk_svd, W_U, layer0, a.top_k, tok)
    with timer(f"{tag}/subspace_alignment"):
        subspace = head_subspace_alignment(qk_svd[0], W_U, model.d_model, word_lists,
                                           a.subspace_rank or model.d_head, a.bootstrap_resamples,
                                           a.seed, config.words.form)
    return {"spectra": spectra_out, "singular_directions": directions, "squared_cosine": cosine,
            "subspace_alignment": subspace}


def analyze_head(model: LoadedModel, head: HeadRef, layer0: Layer0, config: Config, word_lists: WordLists,
                 timer: Timer, progress: bool = True, layers: LayerCache | None = None) -> dict[str, Any]:
    """All per-head results as plain data (the ``results`` block of a head artifact)."""
    a = config.analysis
    W_U = circuits.unembedding(model)
    tag = head.label
    with torch.no_grad():
        c = circuits.HeadCircuits.of(circuits.head_weights(model, head), W_U, layer0.W_E, layer0.W_EE)
        weights = weight_results(model, c, W_U, layer0, config, word_lists, timer, tag, progress)
        layers = layers or LayerCache(model, layer0, a.qk_normalization, timer, tag)
        ranks = head_rank_metrics(layers[head.layer], head.head, mode=a.ov_mode, sample_size=a.ov_sample_size,
                                  seed=a.seed, qk_normalization=a.qk_normalization, timer=timer, tag=tag,
                                  progress=progress, explore=a.explorer)
        with timer(f"{tag}/top_suppressed"):
            suppressed = top_suppressed(layers[head.layer].ov(head.head), model.tokenizer,
                                        ranks["ov_self_suppression"])
    return {
        "head": {"label": head.label, "layer": head.layer, "head": head.head, "kv_head": c.weights.kv_head},
        **weights,
        **ranks,
        "top_suppressed": suppressed,
    }
